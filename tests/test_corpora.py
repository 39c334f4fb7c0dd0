"""KGFact and KGFunc: deterministic, well-formed, and faithful to their definitions."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections import Counter

import pytest

from corpora import kgfact, kgfunc
from corpora.operations import TRAINED, UNSEEN
from corpora.relations import RELATIONS, paraphrase_templates
from corpora.schema import load_jsonl

BOXED = re.compile(r"\\boxed\{(.*)\}$")


def run_cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "corpora", *args], capture_output=True, text=True, cwd=cwd)


def test_kgfact_cli_is_byte_identical_across_runs(tmp_path):
    for name in ("A", "B"):
        result = run_cli("kgfact", "--size", "small", "--seed", "0", "--out", str(tmp_path / name))
        assert result.returncode == 0, result.stderr
        assert "train" in result.stdout and "compositional" in result.stdout
    files = sorted(p.name for p in (tmp_path / "A").iterdir())
    assert files == [
        "compositional.jsonl",
        "paraphrase.jsonl",
        "retrieval.jsonl",
        "stats.json",
        "train.jsonl",
        "world.json",
    ]
    for name in files:
        assert (tmp_path / "A" / name).read_bytes() == (tmp_path / "B" / name).read_bytes(), name


def test_kgfact_seed_changes_the_world(tmp_path):
    a = kgfact.build_world(kgfact.KGFactConfig(out="", seed=0))[1]
    b = kgfact.build_world(kgfact.KGFactConfig(out="", seed=1))[1]
    assert [f.subject for f in a] != [f.subject for f in b]


@pytest.mark.parametrize("size,domains,entities", [("small", 5, 10), ("large", 7, 25)])
def test_kgfact_sizes(size, domains, entities):
    ents, facts = kgfact.build_world(kgfact.KGFactConfig(out="", size=size, seed=3))
    assert len(ents) == domains and all(len(v) == entities for v in ents.values())
    names = [n.lower() for v in ents.values() for n in v]
    assert len(names) == len(set(names)), "entity names must be unique"
    assert facts


def test_kgfact_splits_are_consistent(kgfact_small):
    world = json.loads((kgfact_small / "world.json").read_text())
    objects = {f["index"]: f["object"] for f in world["facts"]}
    train = load_jsonl(kgfact_small / "train.jsonl")
    assert len(train) == len(world["facts"])
    for e in train:
        assert e.answer == f"The answer is {e.clear_answer}.\n\n\\boxed{{{e.clear_answer}}}"
        assert BOXED.search(e.answer).group(1) == e.clear_answer == objects[e.meta["fact"]]
        assert e.subject in e.question
    paraphrases = load_jsonl(kgfact_small / "paraphrase.jsonl")
    train_questions = {e.meta["fact"]: e.question for e in train}
    for e in paraphrases:
        assert e.clear_answer == objects[e.meta["fact"]]
        assert e.question != train_questions[e.meta["fact"]]
    for e in load_jsonl(kgfact_small / "compositional.jsonl"):
        first, second = e.meta["facts"]
        assert world["facts"][first]["object"] == world["facts"][second]["subject"] == e.meta["bridge"]
        assert e.clear_answer == objects[second]
        assert e.meta["bridge"] not in e.question  # the bridge entity must be inferred, not read
    for e in load_jsonl(kgfact_small / "retrieval.jsonl"):
        statements = e.context.split("\n")
        assert len(statements) == 51
        assert world["facts"][e.meta["fact"]]["statement"] in statements


def test_every_relation_has_ten_paraphrase_templates():
    for relation in RELATIONS:
        templates = paraphrase_templates(relation)
        assert len(set(templates)) >= 10, relation.name
        assert relation.questions[0] not in templates


def test_kgfunc_cli_is_byte_identical_and_targets_are_correct(tmp_path):
    for name in ("A", "B"):
        result = run_cli("kgfunc", "--seed", "0", "--out", str(tmp_path / name), "--train_per_op", "30")
        assert result.returncode == 0, result.stderr
    for path in (tmp_path / "A").iterdir():
        assert path.read_bytes() == (tmp_path / "B" / path.name).read_bytes(), path.name
    ops = {op.name: op for op in TRAINED + UNSEEN}
    for split in ("train", "test", "unseen"):
        for e in load_jsonl(tmp_path / "A" / f"{split}.jsonl"):
            (name,) = e.meta["operations"]
            assert int(e.clear_answer) == ops[name](e.meta["input"])
            assert BOXED.search(e.answer).group(1) == e.clear_answer
            shots = re.findall(rf"^{name}\((\d+)\) = (\d+)$", e.question, re.M)
            assert len(shots) == 10 and all(ops[name](int(x)) == int(y) for x, y in shots)


def test_kgfunc_splits_are_disjoint_and_even_over_lengths():
    splits = kgfunc.build(kgfunc.KGFuncConfig(out="", seed=0, train_per_op=200, test_per_op=50))
    for op in TRAINED:
        train = {e.meta["input"] for e in splits["train"] if e.subject == op.name}
        test = {e.meta["input"] for e in splits["test"] if e.subject == op.name}
        assert not train & test
    lengths = Counter(len(str(e.meta["input"])) for e in splits["train"])
    assert set(lengths) == {1, 2, 3, 4, 5}
    # One-digit inputs run out (10 per op), so only lengths 2-5 can stay even.
    assert max(lengths[k] for k in (2, 3, 4, 5)) < 1.4 * min(lengths[k] for k in (2, 3, 4, 5))
    assert not {e.subject for e in splits["unseen"]} & {op.name for op in TRAINED}


def test_kgfunc_chains_evaluate_correctly():
    ops = {op.name: op for op in TRAINED}
    for e in kgfunc.build(kgfunc.KGFuncConfig(out="", seed=0, train_per_op=1, compositional=20))["compositional"]:
        outer, middle, inner, x, a, b = re.fullmatch(
            r"(\w)\((\w)\((\w)\((\d+)\) \+ (\d+)\) - (\d+)\)", e.subject
        ).groups()
        value = ops[outer](ops[middle](ops[inner](int(x)) + int(a)) - int(b))
        assert int(e.clear_answer) == value
