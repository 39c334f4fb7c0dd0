"""External held-out benchmarks for real-scale runs: GSM8K, MATH-500, MMLU, HumanEval, AIME-2024.

`--benchmarks gsm8k=PATH,mmlu=PATH` reads local JSONL, JSON or Parquet files; a value that is not an
existing path is taken as a Hugging Face hub data set id (`name=org/dataset` or `name=org/dataset:split`).
Each record is checked as it is read; a bad one is reported by file, line (row) and field.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from corpora.readers import read_records
from corpora.schema import CorpusError
from evaluate.probes import Item
from mixsd.config import ConfigError

_HUB_ID = re.compile(r"[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+(:[A-Za-z0-9_.-]+)?")
BENCHMARKS = ("gsm8k", "math500", "mmlu", "humaneval", "aime2024")


class BenchmarkError(CorpusError):
    """Bad benchmark input, located by file, line (row) and field like any other input file."""


def parse_spec(spec: str) -> dict[str, str]:
    """'gsm8k=a.jsonl,mmlu=b.parquet' -> {'gsm8k': 'a.jsonl', 'mmlu': 'b.parquet'}."""
    found = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        name, _, source = part.partition("=")
        if name not in BENCHMARKS or not source:
            raise ConfigError(f"--benchmarks: expected NAME=PATH with NAME in {BENCHMARKS}, got {part!r}")
        found[name] = source
    return found


def load_benchmark(name: str, source: str, limit: int = 0) -> list[Item]:
    records = _records(source)
    build = _BUILDERS[name]
    items = []
    for line, record in records:
        if limit and len(items) >= limit:
            break
        if not isinstance(record, dict):
            raise BenchmarkError(source, line, None, f"expected an object, got {type(record).__name__}")
        items.append(build(_Row(record, source, line), len(items)))
    if not items:
        raise BenchmarkError(source, None, None, f"no {name} records")
    return items


def _records(source: str) -> list[tuple[int, Any]]:
    path = Path(source)
    if not path.exists():
        return _hub_records(source)
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        return list(enumerate(pq.read_table(path).to_pylist(), start=1))
    return list(read_records(path))  # a JSON array or JSON Lines, each record with the line it starts on


def _hub_records(source: str) -> list[tuple[int, Any]]:
    if not _HUB_ID.fullmatch(source) or Path(source).suffix in (".jsonl", ".json", ".parquet"):
        raise BenchmarkError(source, None, None, "no such file (and not a hub data set id org/name[:split])")
    from datasets import load_dataset

    name, _, split = source.partition(":")
    try:
        return list(enumerate(load_dataset(name, split=split or "test"), start=1))
    except Exception as err:  # the hub's many failure types; the message says which
        raise BenchmarkError(source, None, None, f"could not load from the hub: {err}") from None


class _Row:
    """One record and where it came from, so every complaint names the file, line and field."""

    def __init__(self, record: dict, source: str, line: int):
        self.record, self.source, self.line = record, source, line

    def get(self, *names: str):
        """The first of `names` present (hub data sets capitalize some fields)."""
        for name in names:
            if name in self.record:
                return self.record[name]
        raise self.fail(names[0], "missing required field")

    def fail(self, name: str, message: str) -> BenchmarkError:
        return BenchmarkError(self.source, self.line, name, message)


def _gsm8k(row: _Row, k: int) -> Item:
    answer = str(row.get("answer"))
    final = answer.split("####")[-1].strip().replace(",", "")
    return Item(
        f"gsm8k-{k:05d}",
        "gsm8k",
        f"{row.get('question')}\nPut the final number within \\boxed{{}}.",
        (final,),
        "boxed_or_last_number",
    )


def _math500(row: _Row, k: int) -> Item:
    return Item(
        f"math500-{k:05d}",
        "math500",
        f"{row.get('problem')}\nPut the final answer within \\boxed{{}}.",
        (str(row.get("answer")),),
        "boxed",
    )


def _aime(row: _Row, k: int) -> Item:
    problem, answer = row.get("problem", "Problem"), row.get("answer", "Answer")
    return Item(
        f"aime2024-{k:05d}",
        "aime2024",
        f"{problem}\nPut the final answer within \\boxed{{}}.",
        (str(answer),),
        "boxed_or_last_number",
    )


def _mmlu(row: _Row, k: int) -> Item:
    choices, answer = row.get("choices"), row.get("answer")
    if not isinstance(choices, list) or not 2 <= len(choices) <= 10:
        raise row.fail("choices", "expected a list of 2 to 10 choices")
    letters = "ABCDEFGHIJ"[: len(choices)]
    if isinstance(answer, int) or (isinstance(answer, str) and answer.isdigit()):
        if not 0 <= int(answer) < len(choices):
            raise row.fail("answer", f"index {answer} is out of range for {len(choices)} choices")
        answer = letters[int(answer)]
    elif str(answer).strip().upper() not in letters:
        raise row.fail("answer", f"expected a choice index or one of the letters {letters}, got {answer!r}")
    lines = "\n".join(f"{letter}. {choice}" for letter, choice in zip(letters, choices))
    prompt = f"{row.get('question')}\n{lines}\nAnswer with the letter of the correct choice."
    return Item(f"mmlu-{k:05d}", "mmlu", prompt, (str(answer).strip().upper(),), "choice")


def _humaneval(row: _Row, k: int) -> Item:
    prompt = row.get("prompt")
    # The program to run is carried in `answers`: the test code and the entry point (see evaluate.sandbox).
    return Item(
        f"humaneval-{k:05d}",
        "humaneval",
        f"Complete the following Python function. Reply with the whole function in a code block.\n\n{prompt}",
        (row.get("test"), row.get("entry_point"), prompt),
        "code",
    )


_BUILDERS = {"gsm8k": _gsm8k, "math500": _math500, "mmlu": _mmlu, "humaneval": _humaneval, "aime2024": _aime}
