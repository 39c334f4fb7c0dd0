"""Converters: small fixture files in every external format, written by the tests."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter

import pytest

from corpora.schema import load_jsonl

ZSRE = [
    {
        "subject": "Watts Humphrey",
        "src": "What university did Watts Humphrey attend?",
        "answers": ["Illinois Institute of Technology"],
        "alt": "University of Michigan",
        "rephrase": "What university did Watts Humphrey take part in?",
        "loc": "nq question: who played desmond doss father in hacksaw ridge",
        "loc_ans": "Hugo Weaving",
    }
]
COUNTERFACT = [
    {
        "case_id": 0,
        "requested_rewrite": {
            "prompt": "The mother tongue of {} is",
            "subject": "Danielle Darrieux",
            "target_new": {"str": "English"},
            "target_true": {"str": "French"},
        },
        "paraphrase_prompts": ["Danielle Darrieux, a native", "Danielle Darrieux spoke the language"],
        "neighborhood_prompts": ["The mother tongue of Léon Blum is"],
    }
]
MQUAKE = [
    {
        "case_id": 1,
        "requested_rewrite": [
            {
                "prompt": "{} is a citizen of",
                "subject": "Ellie Kemper",
                "target_new": {"str": "Croatia"},
                "target_true": {"str": "United States of America"},
                "question": "What is the country of citizenship of Ellie Kemper?",
            }
        ],
        "questions": [
            "What is the capital of the country of citizenship of Ellie Kemper?",
            "Which city is the capital of the country Ellie Kemper is a citizen of?",
        ],
        "new_answer": "Zagreb",
    }
]
DUNE = [
    {
        "edits": ["Pluto was reclassified as a planet in 2031."],
        "test_inputs": [
            {"question": "How many planets are there?", "answer": "nine"},
            {"input": "Is Pluto a planet?", "target": "yes"},
        ],
    }
]
SIMPLEQA = 'metadata,problem,answer\n"{}","Who won the 2010 Zorblax prize?","Ada Quell"\n"{}","What year?","1999"\n'
GSM8K = [{"question": "Tom has 3 apples and buys 2 more. How many?", "answer": "He has 3+2=<<3+2=5>>5.\n#### 5"}]


@pytest.mark.parametrize(
    "fmt,content,suffix,expected",
    [
        ("zsre", json.dumps(ZSRE, indent=2), ".json", {"train": 1, "paraphrase": 1, "locality": 1}),
        ("counterfact", json.dumps(COUNTERFACT), ".json", {"train": 1, "paraphrase": 2, "locality": 1}),
        ("mquake", json.dumps(MQUAKE), ".json", {"train": 1, "compositional": 2}),
        ("dune", json.dumps(DUNE), ".json", {"train": 2}),
        ("simpleqa", SIMPLEQA, ".csv", {"train": 2}),
        ("gsm8k", "\n".join(json.dumps(r) for r in GSM8K) + "\n", ".jsonl", {"train": 1}),
    ],
)
def test_convert_cli(tmp_path, fmt, content, suffix, expected):
    src = tmp_path / f"input{suffix}"
    src.write_text(content)
    out = tmp_path / "out.jsonl"
    result = subprocess.run(
        [sys.executable, "-m", "corpora", "convert", "--format", fmt, "--input", str(src), "--out", str(out)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    examples = load_jsonl(out)
    assert dict(Counter(e.split for e in examples)) == expected
    assert all(e.answer.endswith(f"\\boxed{{{e.clear_answer}}}") for e in examples)


def test_converted_content(tmp_path):
    src = tmp_path / "z.json"
    src.write_text(json.dumps(ZSRE))
    subprocess.run(
        [
            sys.executable,
            "-m",
            "corpora",
            "convert",
            "--format",
            "zsre",
            "--input",
            str(src),
            "--out",
            str(tmp_path / "z.jsonl"),
        ],
        check=True,
        capture_output=True,
    )
    train, para, loc = load_jsonl(tmp_path / "z.jsonl")
    assert (train.question, train.clear_answer) == (ZSRE[0]["src"], "University of Michigan")
    assert para.question == ZSRE[0]["rephrase"]
    assert (loc.question, loc.clear_answer) == ("who played desmond doss father in hacksaw ridge", "Hugo Weaving")

    src = tmp_path / "g.jsonl"
    src.write_text(json.dumps(GSM8K[0]) + "\n")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "corpora",
            "convert",
            "--format",
            "gsm8k",
            "--input",
            str(src),
            "--out",
            str(tmp_path / "g.out.jsonl"),
        ],
        check=True,
        capture_output=True,
    )
    (example,) = load_jsonl(tmp_path / "g.out.jsonl")
    assert example.answer == "He has 3+2=5.\n\n\\boxed{5}" and example.clear_answer == "5"

    src = tmp_path / "d.json"
    src.write_text(json.dumps(DUNE))
    subprocess.run(
        [
            sys.executable,
            "-m",
            "corpora",
            "convert",
            "--format",
            "dune",
            "--input",
            str(src),
            "--out",
            str(tmp_path / "d.jsonl"),
        ],
        check=True,
        capture_output=True,
    )
    assert all(e.expert_context == DUNE[0]["edits"][0] for e in load_jsonl(tmp_path / "d.jsonl"))
