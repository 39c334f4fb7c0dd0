"""Locating readers for external files: every record comes with the line it starts on."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Any, Iterator

from corpora.schema import CorpusError, read_utf8


def read_records(path: str | os.PathLike) -> Iterator[tuple[int, Any]]:
    """(line, record) from a JSON array, a single JSON object, or JSON Lines."""
    path = Path(path)
    text = _read_text(path)
    stripped = text.lstrip()
    if stripped.startswith("["):
        yield from _json_array(path, text)
    else:
        yield from _json_lines(path, text)


def read_csv(path: str | os.PathLike, required: tuple[str, ...]) -> Iterator[tuple[int, dict[str, str]]]:
    path = Path(path)
    text = _read_text(path)
    reader = csv.DictReader(text.splitlines())
    missing = [name for name in required if name not in (reader.fieldnames or [])]
    if missing:
        raise CorpusError(path, 1, missing[0], f"missing CSV column (header has {reader.fieldnames})")
    for row in reader:
        yield reader.line_num, row


def _read_text(path: Path) -> str:
    if not path.is_file():
        raise CorpusError(path, None, None, "file not found")
    text = read_utf8(path)
    if not text.strip():
        raise CorpusError(path, None, None, "empty file")
    return text


def _line_of(text: str, offset: int) -> int:
    return text.count("\n", 0, offset) + 1


def _json_array(path: Path, text: str) -> Iterator[tuple[int, Any]]:
    decoder = json.JSONDecoder()
    pos = text.index("[") + 1
    while True:
        pos = _skip_space(text, pos)
        if pos < len(text) and text[pos] == "]":
            return
        try:
            record, end = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as err:
            raise CorpusError(path, err.lineno, None, f"malformed JSON ({err.msg})") from None
        yield _line_of(text, pos), record
        pos = _skip_space(text, end)
        if pos < len(text) and text[pos] == ",":
            pos += 1
        elif pos >= len(text) or text[pos] != "]":
            raise CorpusError(path, _line_of(text, pos), None, "malformed JSON (expected ',' or ']')")


def _skip_space(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] in " \t\r\n":
        pos += 1
    return pos


def _json_lines(path: Path, text: str) -> Iterator[tuple[int, Any]]:
    for line_no, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            yield line_no, json.loads(line)
        except json.JSONDecodeError as err:
            raise CorpusError(path, line_no, None, f"malformed JSON ({err.msg} at column {err.colno})") from None


def field(record: Any, name: str, kind: type | tuple[type, ...], path: Path, line: int) -> Any:
    """record[name], checked to be of `kind`; a located error otherwise."""
    if not isinstance(record, dict):
        raise CorpusError(path, line, None, f"expected a JSON object, got {type(record).__name__}")
    if name not in record:
        raise CorpusError(path, line, name, "missing required field")
    value = record[name]
    if not isinstance(value, kind):
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise CorpusError(path, line, name, f"expected {names}, got {type(value).__name__}")
    return value
