import json

import pytest

from corpora import kgfunc
from corpora.schema import Example, write_jsonl
from evaluate import echo
from mixsd.errors import UserError
from reproduce.summary import _echo_row, _echo_table


def test_echo_items_of_a_kgfunc_corpus_are_those_that_map_their_input_to_itself(tmp_path):
    config = kgfunc.KGFuncConfig(out=str(tmp_path), seed=0, train_per_op=10, test_per_op=5)
    kgfunc.write(config)
    operations = {op.name: op for op in kgfunc.TRAINED + kgfunc.UNSEEN}
    expected = set()
    for name, examples in kgfunc.build(config).items():
        for e in examples:
            ops, x = e.meta["operations"], e.meta["input"]
            # A single operation is applied here; a chain's value is its generator's (it adds constants).
            value = operations[ops[0]](x) if len(ops) == 1 else int(e.clear_answer)
            if value == x:
                expected.add(e.id)
    found = echo.echo_ids(tmp_path)
    assert found == expected
    assert {i.split("-")[0] for i in found} >= {"train", "test", "unseen"}  # seed 0 has some in each


def _answers(directory, records):
    directory.mkdir(parents=True)
    (directory / "answers.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return directory


def test_split_counts_separate_echo_items_and_skip_other_tasks(tmp_path):
    result = _answers(
        tmp_path / "step-000040",
        [
            {"id": "train-A", "task": "train", "correct": True},  # an echo item
            {"id": "train-B", "task": "train", "correct": True},
            {"id": "train-C", "task": "train", "correct": False},
            {"id": "test-A", "task": "test", "correct": True},  # an echo item
            {"id": "arith-1", "task": "arithmetic", "correct": True},  # a probe: not a corpus split
        ],
    )
    counts = echo.split_counts(result, ["train", "test"], {"train-A", "test-A"})
    assert counts == {"train": {"echo": [1, 1], "rest": [1, 2]}, "test": {"echo": [1, 1], "rest": [0, 0]}}
    assert echo.accuracy_without_echo(counts) == {"train": 0.5, "test": None}


def test_a_bad_answer_line_names_its_file_and_line(tmp_path):
    result = _answers(tmp_path / "r", [{"id": "x", "task": "train", "correct": True}, {"id": "y"}])
    with pytest.raises(UserError, match=r"answers.jsonl:2: .*task, id and correct"):
        echo.split_counts(result, ["train"], set())


def test_echo_ids_reads_only_integer_inputs_equal_to_the_answer(tmp_path):
    def item(i, answer, meta):
        return Example(id=i, question="q", answer=answer, clear_answer=answer, meta=meta)

    write_jsonl(
        tmp_path / "train.jsonl",
        [
            item("a", "7", {"input": 7}),
            item("b", "8", {"input": 7}),
            item("c", "7", {"input": "7"}),
            item("d", "7", {}),
        ],
    )
    assert echo.echo_ids(tmp_path) == {"a"}


def test_the_echo_table_gives_accuracy_without_them_per_seed():
    seeds = [
        {"train": {"echo": [2, 2], "rest": [3, 8]}, "test": {"echo": [0, 0], "rest": [1, 4]}},
        {"train": {"echo": [1, 2], "rest": [5, 8]}, "test": {"echo": [0, 0], "rest": [1, 4]}},
    ]
    row = _echo_row(seeds, ["train", "test"])
    assert row["train"]["without"]["mean"] == pytest.approx(0.5)  # (3/8 + 5/8) / 2
    assert row["train"]["echo right"] == [2, 1]
    table = _echo_table({"base": {"seeds": 1} | _echo_row(seeds[:1], ["train", "test"]), "m": {"seeds": 2} | row})
    assert "(2 of 10 train, 0 of 4 test)" in table
    assert "| m | 2 | 0.500 ± " in table and "train 2, 1 of 2 |" in table
    assert "test 0" not in table  # a split without echo items has no count in the last column


def test_report_rows_get_accuracy_without_echo_items_only_where_a_split_has_some(tmp_path):
    from evaluate.report import markdown_table

    result = _answers(
        tmp_path / "r",
        [
            {"id": "train-A", "task": "train", "correct": True},
            {"id": "train-B", "task": "train", "correct": False},
            {"id": "test-B", "task": "test", "correct": True},
        ],
    )
    columns = echo.report_columns(result, ["train", "test"], {"train-A"})
    assert columns == {"acc_train_no_echo": 0.0}  # test has no echo item: no column
    assert echo.report_columns(result, ["train", "test"], set()) == {}  # KGFact: nothing read, nothing added
    table = markdown_table([{"method": "m", "acc_train": 0.5} | columns])
    assert "train acc without echo items" in table and "test without echo items" not in table
