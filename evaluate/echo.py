"""Items a reply gets right by repeating its input.

Some KGFunc items map their input to itself (G(3) = 3¹ = 3, B(1) = 1 × 1; a chain can too): under the
last-number rule a reply that only echoes the input, such as a loop of "The digits of 3 are 3.", is scored
right on them without any function computed. They are 5 of 80 train and 6 of 40 test items at seed 0, enough
to move a split's accuracy by several points, so the report gives accuracy without them beside the usual one.
"""

from __future__ import annotations

import json
from pathlib import Path

from corpora.schema import load_jsonl
from evaluate.results import ANSWERS
from mixsd.errors import UserError


def echo_ids(corpus_dir: Path) -> set[str]:
    """The ids of a corpus's items (every split file) whose clear answer is the number in `meta["input"]`."""
    ids = set()
    for path in sorted(Path(corpus_dir).glob("*.jsonl")):
        for example in load_jsonl(path):
            given = example.meta.get("input")
            if isinstance(given, int) and str(given) == example.clear_answer.strip():
                ids.add(example.id)
    return ids


def split_counts(result_dir: Path, splits: list[str], echo: set[str]) -> dict[str, dict[str, list[int]]]:
    """{split: {"echo": [correct, n], "rest": [correct, n]}} over one evaluation's answers."""
    counts = {split: {"echo": [0, 0], "rest": [0, 0]} for split in splits}
    path = Path(result_dir) / ANSWERS
    for line_no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        try:
            record = json.loads(line)
            split, item, correct = record["task"], record["id"], record["correct"]
        except (json.JSONDecodeError, KeyError, TypeError) as error:
            raise UserError(f"{path}:{line_no}: not an answer record with task, id and correct ({error})") from None
        if split in counts:
            side = counts[split]["echo" if item in echo else "rest"]
            side[0] += bool(correct)
            side[1] += 1
    return counts


def accuracy_without_echo(counts: dict[str, dict[str, list[int]]]) -> dict[str, float | None]:
    """{split: accuracy over the items that are not echoes} (None for a split with none)."""
    return {split: (c["rest"][0] / c["rest"][1] if c["rest"][1] else None) for split, c in counts.items()}


def report_columns(result_dir: Path, splits: list[str], echo: set[str]) -> dict[str, float | None]:
    """A report row's columns {"acc_<split>_no_echo": accuracy without the echo items} for the splits that have
    some; {} when there are none (a KGFact corpus)."""
    if not echo:
        return {}
    counts = split_counts(result_dir, splits, echo)
    without = accuracy_without_echo(counts)
    return {f"acc_{split}_no_echo": without[split] for split in splits if counts[split]["echo"][1]}
