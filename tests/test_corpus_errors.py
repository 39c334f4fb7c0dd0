"""Bad corpus input stops with the file, the line and the field, and leaves no partial output."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from corpora.convert import converter
from corpora.schema import CorpusError, Example, load_jsonl, write_jsonl

GOOD = {"id": "a", "question": "Q?", "answer": "A", "clear_answer": "A"}


def write_lines(path, lines):
    path.write_text("".join(line + "\n" for line in lines))
    return path


@pytest.mark.parametrize(
    "bad_line,field,message",
    [
        ('{"id": "b", "question": "Q?", "answer": "A"', None, "malformed JSON"),
        (json.dumps({"id": "b", "question": "Q?", "answer": "A"}), "clear_answer", "missing required field"),
        (json.dumps({"id": "b", "question": 7, "answer": "A", "clear_answer": "A"}), "question", "expected a string"),
        (
            json.dumps({"id": "b", "question": "Q", "answer": "A", "clear_answer": "A", "meta": []}),
            "meta",
            "expected an object",
        ),
        (
            json.dumps({"id": "b", "question": "Q", "answer": "A", "clear_answer": "A", "colour": "x"}),
            "colour",
            "unknown field",
        ),
        (json.dumps(GOOD), "id", "duplicate id"),
    ],
)
def test_bad_lines_name_file_line_and_field(tmp_path, bad_line, field, message):
    path = write_lines(tmp_path / "c.jsonl", [json.dumps(GOOD), "", bad_line])
    with pytest.raises(CorpusError) as info:
        load_jsonl(path)
    err = info.value
    assert (err.path, err.line, err.field) == (str(path), 3, field)
    assert message in str(err) and str(path) in str(err) and "line 3" in str(err)


def test_empty_corpus_is_an_error(tmp_path):
    path = write_lines(tmp_path / "empty.jsonl", [""])
    with pytest.raises(CorpusError, match="empty"):
        load_jsonl(path)


def test_check_cli_reports_location_and_exit_code(tmp_path):
    path = write_lines(tmp_path / "c.jsonl", [json.dumps(GOOD), json.dumps({"id": "x"})])
    result = subprocess.run([sys.executable, "-m", "corpora", "check", str(path)], capture_output=True, text=True)
    assert result.returncode == 2
    assert f"{path}, line 2: field 'question': missing required field" in result.stderr


def test_failed_write_keeps_the_previous_file(tmp_path):
    out = tmp_path / "out.jsonl"
    write_jsonl(out, [Example(**GOOD)])
    before = out.read_bytes()
    bad = [Example(**GOOD), Example(**GOOD)]  # duplicate id: fails on the second record
    with pytest.raises(CorpusError, match="duplicate id"):
        write_jsonl(out, bad)
    assert out.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["out.jsonl"]


def test_convert_errors_leave_no_output(tmp_path):
    src = write_lines(
        tmp_path / "gsm.jsonl",
        [json.dumps({"question": "1+1?", "answer": "2 #### 2"}), json.dumps({"question": "2+2?", "answer": "four"})],
    )
    out = tmp_path / "out.jsonl"
    result = subprocess.run(
        [sys.executable, "-m", "corpora", "convert", "--format", "gsm8k", "--input", str(src), "--out", str(out)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert f"{src}, line 2: field 'answer'" in result.stderr
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["gsm.jsonl"]


def test_unknown_format_is_named(tmp_path):
    with pytest.raises(CorpusError, match="unknown format 'squad'.*zsre"):
        converter("squad")
    src = write_lines(tmp_path / "in.json", ["[]"])
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "corpora",
            "convert",
            "--format",
            "squad",
            "--input",
            str(src),
            "--out",
            str(tmp_path / "out.jsonl"),
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2 and f"{src}: field 'format': unknown format 'squad'" in result.stderr
    assert not (tmp_path / "out.jsonl").exists()


def test_json_array_errors_point_at_the_record_line(tmp_path):
    path = tmp_path / "zsre.json"
    path.write_text(
        '[\n  {"src": "a?", "answers": ["x"], "rephrase": "b?", "loc": "c?", "loc_ans": "y"},\n'
        '  {"src": "d?", "answers": "x", "rephrase": 5, "loc": "c?", "loc_ans": "y"}\n]\n'
    )
    with pytest.raises(CorpusError) as info:
        list(converter("zsre")(path))
    assert (info.value.line, info.value.field) == (3, "rephrase")
