"""Failures a user can cause get a clear, located answer; a bug keeps its traceback; nothing stale is reused."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from corpora.schema import CorpusError, load_jsonl
from mixsd.checksums import cached_file_sha256, model_fingerprint
from mixsd.cli import run_cli
from mixsd.debug_model import DebugModelConfig, write_debug_model
from mixsd.errors import UserError
from mixsd.models import ModelLoadError, load_tokenizer
from tests.generate_helpers import first_records

ROOT = Path(__file__).resolve().parent.parent
GOOD = {"id": "a", "question": "Q?", "answer": "A", "clear_answer": "A"}


def test_cli_turns_only_user_errors_into_exit_2(capsys):
    def user_error():
        raise UserError("data/x.jsonl, line 2: bad")

    def bug():
        raise ValueError("a bug, not bad input")

    with pytest.raises(SystemExit) as info:
        run_cli(user_error, [])
    assert info.value.code == 2 and "error: data/x.jsonl, line 2: bad" in capsys.readouterr().err
    with pytest.raises(ValueError, match="a bug"):  # not swallowed into a one-line "error:"
        run_cli(bug, [])


def test_a_real_bug_in_a_stage_keeps_its_traceback(tiny_model_dir, kgfact_small, tmp_path):
    """A shard that pyarrow cannot read although its checksum matches (the bug is in whatever wrote it) is
    not bad input: the trainer must show pyarrow's ArrowInvalid (a ValueError, which the CLIs used to turn
    into a one-line "error:") with its traceback."""
    from generate.config import GenerateConfig
    from generate.runner import Generator
    from mixsd.checksums import file_sha256

    (run,) = Generator(
        GenerateConfig(
            model=str(tiny_model_dir),
            corpus=str(kgfact_small / "train.jsonl"),
            out=str(tmp_path / "gen"),
            method="sft",
            progress=False,
        )
    ).run_all()
    manifest = json.loads((run / "manifest.json").read_text())
    shard = run / manifest["shards"][0]["file"]
    shard.write_bytes(b"not parquet at all")
    manifest["shards"][0]["sha256"] = file_sha256(shard)
    (run / "manifest.json").write_text(json.dumps(manifest))
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "train",
            "--model",
            str(tiny_model_dir),
            "--shards",
            str(run),
            "--out",
            str(tmp_path / "train"),
            "--method",
            "sft",
            "--progress",
            "false",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=os.environ | {"PYTHONPATH": str(ROOT)},
    )
    assert done.returncode == 1, done.stderr[-2000:]
    assert "Traceback" in done.stderr and "ArrowInvalid" in done.stderr


def test_non_utf8_corpus_names_file_line_and_byte(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_bytes(json.dumps(GOOD).encode() + b'\n{"id": "b\xff"}\n')
    with pytest.raises(CorpusError) as info:
        load_jsonl(path)
    assert str(info.value).startswith(f"{path}, line 2: not UTF-8 text (byte 0xff at column 10)")


def test_model_directory_without_tokenizer_says_so(tiny_model_dir, tmp_path):
    bare = tmp_path / "bare"
    bare.mkdir()
    for name in ("config.json", "model.safetensors"):
        (bare / name).write_bytes((Path(tiny_model_dir) / name).read_bytes())
    with pytest.raises(ModelLoadError, match=f"--model '{bare}': no tokenizer in this model directory"):
        load_tokenizer(str(bare))


def test_weight_hash_is_cached_by_path_size_and_mtime(tmp_path):
    path = tmp_path / "w.bin"
    path.write_bytes(b"a" * 100)
    first = cached_file_sha256(path)
    cache = json.loads(Path(os.environ["MIXSD_CACHE"], "sha256.json").read_text())
    assert first in cache.values()
    os.utime(path, ns=(1, 1))  # same size, new mtime, new bytes: hashed again
    path.write_bytes(b"b" * 100)
    os.utime(path, ns=(2, 2))
    assert cached_file_sha256(path) != first


def test_retrained_model_at_the_same_path_is_a_new_model(tiny_model_dir, kgfact_small, tmp_path):
    """Same shape, same path, other weights: generation must not say "complete, nothing to do" and an
    evaluation sweep must not reuse the old result."""
    from evaluate.config import EvalConfig
    from evaluate.results import read_result, write_result
    from generate.config import GenerateConfig
    from generate.runner import Generator

    model = write_debug_model(tmp_path / "model", DebugModelConfig(seed=1))
    corpus = first_records(kgfact_small / "train.jsonl", 4, tmp_path / "c.jsonl")
    config = GenerateConfig(
        model=str(model),
        corpus=str(corpus),
        out=str(tmp_path / "gen"),
        backend="hf",
        dtype="float32",
        max_new_tokens=4,
        progress=False,
    )
    (before,) = Generator(config).run_all()
    eval_config = EvalConfig(model=str(model), base=str(model), corpus=str(kgfact_small))
    write_result(tmp_path / "eval", eval_config, str(model), {"accuracy": {}}, [])
    assert read_result(tmp_path / "eval", eval_config, str(model)) is not None

    fingerprint = model_fingerprint(model)
    write_debug_model(model, DebugModelConfig(seed=2))  # retrained in place: same files, same sizes
    assert model_fingerprint(model) != fingerprint
    (after,) = Generator(config).run_all()
    assert after != before and before.exists()
    assert read_result(tmp_path / "eval", eval_config, str(model)) is None


def test_evaluation_skips_and_counts_items_longer_than_the_model(kgfact_small, tmp_path):
    """A model with 256 positions: the default max_model_len is the model's, and the retrieval items (50
    distractor facts) are skipped and counted per split instead of ending the run in an error."""
    from evaluate.config import EvalConfig
    from evaluate.evaluator import Evaluator

    model = write_debug_model(tmp_path / "short", DebugModelConfig(max_position_embeddings=256))
    config = EvalConfig(
        model=str(model),
        base=str(model),
        corpus=str(kgfact_small),
        split_limit=4,
        splits=["train", "retrieval"],
        in_context_probes=2,
        arithmetic_probes=2,
        general_knowledge_probes=2,
        fisher_examples=0,
        max_new_tokens=8,
        drift_tokens=4,
        backend="hf",
        dtype="float32",
        progress=False,
    )
    evaluator = Evaluator(config)
    assert evaluator.max_model_len == 256
    metrics, records = evaluator.evaluate(str(model))
    assert metrics["skipped_too_long"] == {"retrieval": 4}
    assert "retrieval" not in metrics["accuracy"] and "train" in metrics["accuracy"]
    assert not any(r["task"] == "retrieval" for r in records)
