"""Evaluation building blocks without a model: scoring rules, error modes, probes, benchmark files, sandbox."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from corpora.schema import CorpusError
from evaluate import sandbox
from evaluate.benchmarks import BenchmarkError, load_benchmark, parse_spec
from evaluate.probes import arithmetic_items, general_knowledge_items, in_context_items, probe_items
from evaluate.scoring import chosen_letter, error_mode, item_correct

ENTITIES = {"Luzhistad", "Stouputh Nostir", "Zyvenholm"}


def test_rules():
    assert item_correct("Paris is the capital.", ("Paris",), "contains")
    assert not item_correct("Parisian food.", ("Paris",), "contains")  # whole phrases only
    assert item_correct("17 + 25 = 42", ("42",), "last_number") and not item_correct("42 or 43", ("42",), "last_number")
    assert item_correct("so \\boxed{1,000}", ("1000",), "boxed") and not item_correct("1000", ("1000",), "boxed")
    assert item_correct("it is 7", ("7",), "boxed_or_last_number")
    assert item_correct("The answer is Luzhistad.\n\n\\boxed{Luzhistad}", ("Luzhistad",), "auto")
    assert not item_correct("\\boxed{Zyvenholm} not Luzhistad", ("Luzhistad",), "auto")  # the box decides
    assert [chosen_letter(r) for r in ("B", "(C) because", "The answer is d.", "Answer: A", "I think so")] == [
        "B",
        "C",
        "D",
        "A",
        None,
    ]
    with pytest.raises(ValueError, match="unknown scoring rule"):
        item_correct("x", ("x",), "nope")


def test_error_modes_follow_the_written_order():
    prompt = "What is the capital of France?"
    assert error_mode("the the the the the the the the", prompt, ("Paris",), "contains", ENTITIES) == "collapse"
    assert error_mode("It is Luzhistad.", prompt, ("Paris",), "contains", ENTITIES) == "leakage"
    # An injected name that the prompt itself mentions is not leakage.
    assert error_mode("Luzhistad.", "Is Luzhistad in France?", ("Paris",), "contains", ENTITIES) == "genuine"
    assert error_mode("", prompt, ("Paris",), "contains", ENTITIES) == "format"
    assert error_mode("I do not know.", "What is 2 + 3?", ("5",), "last_number", ENTITIES) == "format"
    assert error_mode("It is Lyon.", prompt, ("Paris",), "contains", ENTITIES) == "genuine"
    words = " ".join(["alpha", "beta"] * 15)
    assert error_mode(words, prompt, ("Paris",), "contains", ENTITIES) == "collapse"


def test_probes_are_deterministic_and_correct():
    a, b = probe_items(0, ENTITIES), probe_items(0, ENTITIES)
    assert a == b and len({i.id for i in a}) == len(a)
    assert probe_items(1, ENTITIES) != a
    for item in arithmetic_items(240, 0):
        expression = item.prompt.removeprefix("What is ").removesuffix("? Give the number.")
        assert str(eval(expression)) == item.answers[0]  # noqa: S307 -- our own generated expressions
        assert int(item.answers[0]) >= 0
    taken = {n for i in in_context_items(40, 0, set()) for n in i.answers}
    avoided = in_context_items(40, 0, taken)
    assert avoided and not taken & {n for i in avoided for n in i.answers}
    for item in in_context_items(40, 0, ENTITIES):
        assert item.answers[0] in item.prompt  # the fact is in the context
    every = general_knowledge_items()
    assert len(every) >= 100
    sample = general_knowledge_items(10, seed=0)  # a cheaper run's subset: seeded, in order, ids kept
    assert len(sample) == 10 and sample == general_knowledge_items(10, seed=0) != general_knowledge_items(10, seed=1)
    assert [i.id for i in sample] == sorted(i.id for i in sample) and set(sample) <= set(every)
    assert general_knowledge_items(10_000) == every


def _write_jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return str(path)


def test_benchmark_files_in_each_format(tmp_path):
    gsm = _write_jsonl(tmp_path / "gsm8k.jsonl", [{"question": "2+2?", "answer": "2+2=4\n#### 4"}])
    math = tmp_path / "math500.json"
    math.write_text(json.dumps([{"problem": "x^2=4, x>0", "answer": "2"}]))
    mmlu = tmp_path / "mmlu.parquet"
    pq.write_table(pa.Table.from_pylist([{"question": "Sky?", "choices": ["red", "blue"], "answer": 1}]), mmlu)
    human = _write_jsonl(
        tmp_path / "he.jsonl",
        [{"prompt": "def add(a, b):\n", "test": "def check(f):\n    assert f(1, 2) == 3\n", "entry_point": "add"}],
    )
    aime = _write_jsonl(tmp_path / "aime.jsonl", [{"Problem": "Find 1+1.", "Answer": 2}])
    spec = parse_spec(f"gsm8k={gsm},math500={math},mmlu={mmlu},humaneval={human},aime2024={aime}")
    items = {name: load_benchmark(name, source) for name, source in spec.items()}
    assert items["gsm8k"][0].answers == ("4",) and item_correct("\\boxed{4}", ("4",), items["gsm8k"][0].rule)
    assert items["math500"][0].answers == ("2",) and items["mmlu"][0].answers == ("B",)
    assert "A. red\nB. blue" in items["mmlu"][0].prompt and items["aime2024"][0].answers == ("2",)
    code = items["humaneval"][0]
    assert item_correct("```python\ndef add(a, b):\n    return a + b\n```", code.answers, code.rule)
    assert not item_correct("```python\ndef add(a, b):\n    return a - b\n```", code.answers, code.rule)
    assert item_correct("    return a + b\n", code.answers, code.rule)  # a bare completion of the prompt


@pytest.mark.parametrize(
    "records, match",
    [
        ([{"question": "q"}], r"gsm8k.jsonl, line 1: field 'answer': missing"),
        ([{"question": "q", "answer": "#### 1"}, "not an object"], r"line 2: expected an object"),
    ],
)
def test_bad_benchmark_records_are_located(tmp_path, records, match):
    path = _write_jsonl(tmp_path / "gsm8k.jsonl", records)
    with pytest.raises(BenchmarkError, match=match):
        load_benchmark("gsm8k", path)


def test_bad_benchmark_files_are_named(tmp_path):
    broken = tmp_path / "mmlu.jsonl"
    broken.write_text('{"question": "q", "choices": ["a", "b"], "answer": 1}\n{"question": \n')
    with pytest.raises(CorpusError, match=r"mmlu.jsonl, line 2: malformed JSON"):  # the corpus readers' check
        load_benchmark("mmlu", str(broken))
    array = tmp_path / "mmlu.json"
    array.write_text('[\n  {"question": "q", "choices": ["a", "b"], "answer": 1},\n  {"question": "q"}\n]\n')
    with pytest.raises(BenchmarkError, match=r"mmlu.json, line 3: field 'choices'"):  # located in a JSON array too
        load_benchmark("mmlu", str(array))
    wrong = _write_jsonl(tmp_path / "m.jsonl", [{"question": "q", "choices": ["a", "b"], "answer": 5}])
    with pytest.raises(BenchmarkError, match=r"m.jsonl, line 1: field 'answer': index 5"):
        load_benchmark("mmlu", wrong)
    with pytest.raises(BenchmarkError, match="no such file"):
        load_benchmark("gsm8k", str(tmp_path / "absent.jsonl"))
    with pytest.raises(BenchmarkError, match="no such file"):
        load_benchmark("gsm8k", "data/absent.jsonl")  # relative, with a slash: still a file, not a hub id
    with pytest.raises(ValueError, match="NAME=PATH"):
        parse_spec("gsm9k=x")


def test_sandbox_limits():
    test = "def check(f):\n    assert f() == 1\n"
    assert sandbox.passes("def f():\n    return 1\n", test, "f")
    assert not sandbox.passes("def f():\n    while True:\n        pass\n", test, "f", timeout_s=2)
    assert not sandbox.passes("def f():\n    return bytearray(4 << 30)\n", test, "f")  # over the memory limit
    # Passes only if opening a socket fails inside the sandbox.
    network = (
        "import socket\ndef f():\n    try:\n        socket.socket()\n    except OSError:\n        return 1\n"
        "    return 0\n"
    )
    assert sandbox.passes(network, test, "f")
    writes = (
        "import os\ndef f():\n    open('left.txt', 'w').write('x')\n"
        "    return 1 if os.getcwd().startswith('/tmp') else 0\n"
    )
    assert sandbox.passes(writes, test, "f")  # it runs in a throwaway directory


def test_arithmetic_replies_are_read_at_their_first_equation():
    """The base model answers "2 * 7 = 14" and goes on about 2 and 7: the last number would score it wrong."""
    from evaluate.scoring import error_mode, item_correct

    rule = "equation_or_last_number"
    assert {i.rule for i in arithmetic_items(240, 0)} == {rule}
    rambling = "2 * 7 = 14\n\nIn mathematics, 2 * 7 is a product of 2 and 7."
    assert item_correct(rambling, ("14",), rule) and not item_correct(rambling, ("14",), "last_number")
    assert item_correct("To find 9 - 2, subtract 2 from 9, which is 7.", ("7",), rule)  # no "=": the last number
    assert not item_correct("To find 71 - 6, we compute 71 - 6 = 49.", ("65",), rule)
    assert error_mode("I cannot say.", "q", ("14",), rule, set()) == "format"
