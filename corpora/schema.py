"""The one record every corpus is made of, and its validated JSONL reader and writer."""

from __future__ import annotations

import dataclasses
import json
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

from mixsd.atomic import atomic_path
from mixsd.errors import UserError


class CorpusError(UserError, ValueError):
    """Bad corpus input, located by file, line and field."""

    def __init__(self, path: str | os.PathLike, line: int | None, field_name: str | None, message: str):
        self.path, self.line, self.field = str(path), line, field_name
        where = self.path + (f", line {line}" if line is not None else "")
        what = f"field '{field_name}': " if field_name else ""
        super().__init__(f"{where}: {what}{message}")


@dataclass(frozen=True)
class Example:
    """One knowledge-injection item: the prompt x (question), the target y* (answer), what a verifier compares."""

    id: str
    question: str
    answer: str
    clear_answer: str
    context: str | None = None  # what the expert conditional sees; defaults to `answer`
    subject: str | None = None
    split: str = "train"
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def expert_context(self) -> str:
        return self.answer if self.context is None else self.context

    def to_json(self) -> str:
        record = {k: v for k, v in dataclasses.asdict(self).items() if v is not None and v != {}}
        return json.dumps(record, ensure_ascii=False, sort_keys=True)


_REQUIRED = ("id", "question", "answer", "clear_answer")
_OPTIONAL_TEXT = ("context", "subject", "split")


def example_from_dict(record: Any, path: str | os.PathLike, line: int | None) -> Example:
    """Validate one decoded record; every problem names the file, line and field."""
    if not isinstance(record, dict):
        raise CorpusError(path, line, None, f"expected a JSON object, got {type(record).__name__}")
    for name in _REQUIRED:
        if name not in record:
            raise CorpusError(path, line, name, "missing required field")
        if not isinstance(record[name], str):
            raise CorpusError(path, line, name, f"expected a string, got {type(record[name]).__name__}")
        if not record[name].strip():
            raise CorpusError(path, line, name, "must not be empty")
    for name in _OPTIONAL_TEXT:
        if name in record and record[name] is not None and not isinstance(record[name], str):
            raise CorpusError(path, line, name, f"expected a string, got {type(record[name]).__name__}")
    if "meta" in record and not isinstance(record["meta"], dict):
        raise CorpusError(path, line, "meta", f"expected an object, got {type(record['meta']).__name__}")
    unknown = sorted(set(record) - set(_REQUIRED) - set(_OPTIONAL_TEXT) - {"meta"})
    if unknown:
        raise CorpusError(path, line, unknown[0], "unknown field")
    return Example(
        id=record["id"],
        question=record["question"],
        answer=record["answer"],
        clear_answer=record["clear_answer"],
        context=record.get("context"),
        subject=record.get("subject"),
        split=record.get("split") or "train",
        meta=dict(record.get("meta") or {}),
    )


def read_utf8(path: str | os.PathLike) -> str:
    """A whole text file; bytes that are not UTF-8 are reported with their line and column."""
    data = Path(path).read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        line_start = data.rfind(b"\n", 0, err.start) + 1
        raise _not_utf8(
            path, data.count(b"\n", 0, err.start) + 1, data[err.start], err.start - line_start + 1
        ) from None


def read_jsonl(path: str | os.PathLike) -> Iterator[Example]:
    """Yield validated Examples; stop at the first bad line with its location. Empty files are errors."""
    path = Path(path)
    if not path.is_file():
        raise CorpusError(path, None, None, "file not found")
    seen_ids: dict[str, int] = {}
    count = 0
    with path.open("rb") as handle:
        for line_no, raw in enumerate(handle, start=1):
            text = _decode_line(raw, path, line_no)
            if not text.strip():
                continue
            try:
                record = json.loads(text)
            except json.JSONDecodeError as err:
                raise CorpusError(path, line_no, None, f"malformed JSON ({err.msg} at column {err.colno})") from None
            example = example_from_dict(record, path, line_no)
            if example.id in seen_ids:
                raise CorpusError(
                    path, line_no, "id", f"duplicate id {example.id!r} (first on line {seen_ids[example.id]})"
                )
            seen_ids[example.id] = line_no
            count += 1
            yield example
    if count == 0:
        raise CorpusError(path, None, None, "empty corpus: no examples")


def _decode_line(raw: bytes, path: Path, line_no: int) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise _not_utf8(path, line_no, raw[err.start], err.start + 1) from None


def _not_utf8(path, line: int, byte: int, column: int) -> CorpusError:
    return CorpusError(
        path, line, None, f"not UTF-8 text (byte 0x{byte:02x} at column {column}); convert the file to UTF-8"
    )


def load_jsonl(path: str | os.PathLike) -> list[Example]:
    return list(read_jsonl(path))


def write_jsonl(path: str | os.PathLike, examples: Iterable[Example]) -> int:
    """Write atomically after re-validating every record; returns the number written."""
    count = 0
    seen: set[str] = set()
    with atomic_path(path) as tmp, tmp.open("w", encoding="utf-8") as handle:
        for index, example in enumerate(examples, start=1):
            example_from_dict(json.loads(example.to_json()), path, index)
            if example.id in seen:
                raise CorpusError(path, index, "id", f"duplicate id {example.id!r}")
            seen.add(example.id)
            handle.write(example.to_json() + "\n")
            count += 1
    return count


def split_counts(examples: Iterable[Example]) -> Counter:
    return Counter(e.split for e in examples)


def format_table(rows: list[tuple[str, Any]], header: tuple[str, str] = ("split", "examples")) -> str:
    width = max([len(header[0])] + [len(str(r[0])) for r in rows])
    lines = [f"{header[0]:<{width}}  {header[1]}", f"{'-' * width}  {'-' * len(header[1])}"]
    lines += [f"{str(name):<{width}}  {value}" for name, value in rows]
    return "\n".join(lines)
