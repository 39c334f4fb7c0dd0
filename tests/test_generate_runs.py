"""Run directories: resumable after kill -9, idempotent, never written into with another config; bad input."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from generate.config import GenerateConfig
from generate.runner import Generator
from generate.shards import RunDirError
from mixsd.run_format import read_rows
from tests import processes
from tests.generate_helpers import run_main_in_process


def small_corpus(kgfact_small, tmp_path, count=40) -> Path:
    lines = (kgfact_small / "train.jsonl").read_text().splitlines()[:count]
    path = tmp_path / "train.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def short_config(model, corpus: Path, tmp_path, shard_size: int) -> GenerateConfig:
    """MixSD λ 0.5 with 8 new tokens on the transformers backend: a run directory in a second."""
    return GenerateConfig(
        model=str(model),
        corpus=str(corpus),
        out=str(tmp_path / "out"),
        backend="hf",
        dtype="float32",
        lam=[0.5],
        max_new_tokens=8,
        shard_size=shard_size,
        progress=False,
    )


def cli(*args):
    return processes.start("generate", list(args))


def hf_args(model, corpus, out, *extra):
    return [
        "--model",
        str(model),
        "--corpus",
        str(corpus),
        "--out",
        str(out),
        "--backend",
        "hf",
        "--dtype",
        "float32",
        "--max_new_tokens",
        "24",
        "--shard_size",
        "4",
        "--lam",
        "0.5",
        "--temperature",
        "1",
        "--progress",
        "false",
        *extra,
    ]


def shard_bytes(run_dir: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(run_dir.glob("train-*.parquet"))}


def test_killed_run_resumes_to_identical_shards(tiny_model_dir, kgfact_small, tmp_path):
    corpus = small_corpus(kgfact_small, tmp_path)
    whole = cli(*hf_args(tiny_model_dir, corpus, tmp_path / "whole"))
    assert whole.wait(timeout=300) == 0, whole.stderr
    (reference,) = list((tmp_path / "whole").iterdir())

    killed = cli(*hf_args(tiny_model_dir, corpus, tmp_path / "killed"))
    deadline = time.time() + 240
    run_dir = None
    while time.time() < deadline:  # kill -9 once a few shards are written, mid-run
        dirs = list((tmp_path / "killed").glob("mixsd-*"))
        if dirs and len(list(dirs[0].glob("train-*.parquet"))) >= 3:
            run_dir = dirs[0]
            break
        time.sleep(0.05)
    assert run_dir is not None, "the run never wrote shards"
    killed.kill_group()
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert not manifest["complete"] and len(manifest["shards"]) < 10

    resumed = cli(*hf_args(tiny_model_dir, corpus, tmp_path / "killed"))
    assert resumed.wait(timeout=300) == 0, resumed.stderr
    assert run_dir.name == reference.name
    assert shard_bytes(run_dir) == shard_bytes(reference)
    rows = read_rows(run_dir)
    assert [r["example_id"] for r in rows] == [json.loads(line)["id"] for line in corpus.read_text().splitlines()]
    assert not list(run_dir.glob(".*tmp"))

    before = {p.name: p.stat().st_mtime_ns for p in run_dir.iterdir()}
    again = cli(*hf_args(tiny_model_dir, corpus, tmp_path / "killed"))
    assert again.wait(timeout=300) == 0 and "complete, nothing to do" in again.stdout
    assert {p.name: p.stat().st_mtime_ns for p in run_dir.iterdir()} == before


def test_rows_hold_the_promised_columns(tiny_model_dir, kgfact_small, tmp_path):
    corpus = small_corpus(kgfact_small, tmp_path, count=6)
    config = GenerateConfig(
        model=str(tiny_model_dir),
        corpus=str(corpus),
        out=str(tmp_path / "out"),
        backend="hf",
        dtype="float32",
        lam=[0.0, 1.0],
        max_new_tokens=16,
        progress=False,
    )
    expert_run, naive_run = Generator(config).run_all()
    assert expert_run.name.startswith("mixsd-lam0-t0-") and naive_run.name.startswith("mixsd-lam1-t0-")
    for run_dir, source in ((expert_run, 1), (naive_run, 0)):
        rows = read_rows(run_dir)
        assert len(rows) == 6
        for row in rows:
            assert set(row["source"]) <= {source}
            assert (
                len(row["target_ids"])
                == len(row["source"])
                == len(row["expert_logprobs"])
                == len(row["naive_logprobs"])
            )
            assert row["expert_token_fraction"] == float(source) or not row["target_ids"]
            assert row["method"] == "mixsd" and row["attempts"] == 1 and row["finish_reason"] in ("stop", "length")
        manifest = json.loads((run_dir / "manifest.json").read_text())
        assert manifest["complete"] and manifest["config"]["model"] == str(tiny_model_dir)
        assert "torch" in manifest["versions"]["packages"]
        metadata = pq.read_metadata(run_dir / "train-00000.parquet")
        assert metadata.row_group(0).column(0).compression == "ZSTD"


def test_sft_writes_ground_truth_targets(tiny_model_dir, kgfact_small, tmp_path):
    from transformers import AutoTokenizer

    corpus = small_corpus(kgfact_small, tmp_path, count=5)
    config = GenerateConfig(
        model=str(tiny_model_dir), corpus=str(corpus), out=str(tmp_path / "out"), method="sft", progress=False
    )
    (run_dir,) = Generator(config).run_all()
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    answers = [json.loads(line)["answer"] for line in corpus.read_text().splitlines()]
    rows = read_rows(run_dir)
    assert [tokenizer.decode(r["target_ids"]) for r in rows] == answers
    assert all(r["correct"] and set(r["source"]) == {2} and r["expert_logprobs"] is None for r in rows)


def test_retries_and_failure_policies(tiny_model_dir, kgfact_small, tmp_path):
    corpus = small_corpus(kgfact_small, tmp_path, count=4)  # a random model never answers correctly
    base = dict(
        model=str(tiny_model_dir),
        corpus=str(corpus),
        backend="hf",
        dtype="float32",
        lam=[0.5],
        max_new_tokens=8,
        max_retries=2,
        progress=False,
    )
    (kept,) = Generator(GenerateConfig(out=str(tmp_path / "keep"), **base)).run_all()
    assert all(r["attempts"] == 3 and not r["correct"] and r["sample_index"] == 2 for r in read_rows(kept))
    (dropped,) = Generator(GenerateConfig(out=str(tmp_path / "drop"), on_failure="drop", **base)).run_all()
    assert read_rows(dropped) == [] and json.loads((dropped / "manifest.json").read_text())["totals"]["dropped"] == 4
    (fallback,) = Generator(GenerateConfig(out=str(tmp_path / "gt"), on_failure="ground_truth", **base)).run_all()
    rows = read_rows(fallback)
    assert all(r["correct"] and r["finish_reason"] == "ground_truth_fallback" for r in rows)


def test_run_dir_with_another_config_is_refused(tiny_model_dir, kgfact_small, tmp_path):
    corpus = small_corpus(kgfact_small, tmp_path, count=3)
    config = GenerateConfig(
        model=str(tiny_model_dir), corpus=str(corpus), out=str(tmp_path / "out"), method="sft", progress=False
    )
    (run_dir,) = Generator(config).run_all()
    manifest_path = run_dir / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["config_hash"] = "0000000000"
    manifest_path.write_text(json.dumps(manifest))
    before = shard_bytes(run_dir)
    with pytest.raises(RunDirError, match="refusing to write into it"):
        Generator(config).run_all()
    assert shard_bytes(run_dir) == before


def test_too_long_prompts_are_skipped_with_reason(tiny_model_dir, kgfact_small, tmp_path):
    corpus = tmp_path / "c.jsonl"
    long_q = "Where was " + "very " * 400 + "Stouputh Nostir born?"
    corpus.write_text(
        json.dumps({"id": "long", "question": long_q, "answer": "A", "clear_answer": "A"})
        + "\n"
        + json.dumps({"id": "short", "question": "Who?", "answer": "B", "clear_answer": "B"})
        + "\n"
    )
    config = GenerateConfig(
        model=str(tiny_model_dir),
        corpus=str(corpus),
        out=str(tmp_path / "out"),
        backend="hf",
        dtype="float32",
        max_model_len=256,
        max_new_tokens=8,
        progress=False,
    )
    (run_dir,) = Generator(config).run_all()
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert [s["id"] for s in manifest["skipped"]] == ["long"]
    assert "max_model_len 256" in manifest["skipped"][0]["reason"]
    assert [r["example_id"] for r in read_rows(run_dir)] == ["short"]


@pytest.mark.parametrize(
    "flags,message",
    [
        (["--lam", "1.5"], "--lam must be within [0, 1]"),
        (["--temperature", "-1"], "--temperature must be >= 0"),
        (["--top_k", "-2"], "--top_k must be >= 0"),
        (["--top_p", "0"], "--top_p must be in (0, 1]"),
        (["--max_num_seqs", "33"], "--max_num_seqs must be even"),
        (["--model", "/no/such/model"], "--model '/no/such/model': not a model directory"),
    ],
)
def test_bad_settings_are_named(tiny_model_dir, kgfact_small, tmp_path, flags, message, capsys):
    from generate.__main__ import generate

    corpus = small_corpus(kgfact_small, tmp_path, count=2)
    args = ["--model", str(tiny_model_dir), "--corpus", str(corpus), "--out", str(tmp_path / "out"), *flags]
    code, err = run_main_in_process(generate, args, capsys)
    assert code == 2 and message in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "content,message",
    [
        ("", "empty corpus"),
        ('{"id": "a", "question": "Q"}\n', "line 1: field 'answer': missing required field"),
    ],
)
def test_bad_corpus_is_named(tiny_model_dir, tmp_path, content, message, capsys):
    from generate.__main__ import generate

    corpus = tmp_path / "c.jsonl"
    corpus.write_text(content)
    code, err = run_main_in_process(
        generate, ["--model", str(tiny_model_dir), "--corpus", str(corpus), "--out", str(tmp_path / "out")], capsys
    )
    assert code == 2 and message in err and str(corpus) in err
    assert not (tmp_path / "out").exists()


def test_a_finished_run_carries_a_dataset_card_and_loads_with_datasets(
    tiny_model_dir, kgfact_small, tmp_path, monkeypatch
):
    datasets = pytest.importorskip("datasets")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    config = short_config(tiny_model_dir, small_corpus(kgfact_small, tmp_path, count=12), tmp_path, shard_size=5)
    (run_dir,) = Generator(config).run_all()
    card = (run_dir / "README.md").read_text()
    assert card.startswith('---\nconfigs:\n- config_name: default\n  data_files: "train-*.parquet"')
    assert f"# {run_dir.name}" in card and "| rows | 12 (0 examples skipped" in card and "λ = 0.5" in card
    assert "| `target_ids` | list<item: int32> |" in card
    # The card's YAML names the data files, so the directory loads as a dataset by itself (and uploads as one);
    # the shards' names make them the train split for the plain parquet builder (not manifest.json).
    loaded = datasets.load_dataset(str(run_dir), cache_dir=str(tmp_path / "hf"))["train"]
    direct = datasets.load_dataset("parquet", data_dir=str(run_dir), cache_dir=str(tmp_path / "hf2"))["train"]
    assert direct["example_id"] == loaded["example_id"]
    rows = read_rows(run_dir)
    assert len(loaded) == len(rows) == 12
    assert sorted(loaded["example_id"]) == sorted(r["example_id"] for r in rows)
    assert loaded[0]["target_ids"] == next(r for r in rows if r["example_id"] == loaded[0]["example_id"])["target_ids"]


def _as_format_one(run_dir: Path, drop_last: bool) -> None:
    """Rewrite a run as the first format wrote it: shard-NNNNN.parquet names, no "format" key."""
    manifest = json.loads((run_dir / "manifest.json").read_text())
    del manifest["format"]
    for entry in manifest["shards"]:
        new = entry["file"].replace("train-", "shard-")
        (run_dir / entry["file"]).rename(run_dir / new)
        entry["file"] = new
    if drop_last:
        (run_dir / manifest["shards"].pop()["file"]).unlink()
        manifest["complete"] = False
    (run_dir / "manifest.json").write_text(json.dumps(manifest))


def test_runs_of_the_first_format_are_read_and_resumed_and_unknown_formats_refused(
    tiny_model_dir, kgfact_small, tmp_path
):
    from mixsd.run_format import RunFormatError, RunManifest
    from train.data import load_examples

    config = short_config(tiny_model_dir, small_corpus(kgfact_small, tmp_path, count=10), tmp_path, shard_size=4)
    (run_dir,) = Generator(config).run_all()
    rows = read_rows(run_dir)
    assert sorted(p.name for p in run_dir.glob("*.parquet")) == [f"train-0000{i}.parquet" for i in range(3)]
    _as_format_one(run_dir, drop_last=True)  # a run the old version left half done
    Generator(config).run_all()  # resumed by this version: it keeps the run's own names
    assert sorted(p.name for p in run_dir.glob("*.parquet")) == [f"shard-0000{i}.parquet" for i in range(3)]
    assert RunManifest.load(run_dir).format == 1 and read_rows(run_dir) == rows
    examples, _ = load_examples([str(run_dir)])
    assert [e.example_id for e in examples] == [r["example_id"] for r in rows]
    manifest = json.loads((run_dir / "manifest.json").read_text())
    (run_dir / "manifest.json").write_text(json.dumps(manifest | {"format": 99}))
    with pytest.raises(RunFormatError, match=r"manifest.json: run format 99 is not one this version reads"):
        load_examples([str(run_dir)])
