"""The training stage on the tiny model: loss, accumulation, resume after kill -9, DDP, OPSD, bad input."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch
from safetensors.torch import load_file

from generate.config import GenerateConfig
from generate.runner import Generator
from mixsd.checkpoints import checkpoints
from mixsd.run_format import RunFormatError
from tests import processes
from tests.generate_helpers import first_records
from tests.processes import EVERY_CORE
from train.config import TrainConfig
from train.data import IGNORE, DataError
from train.opsd import reverse_kl
from train.trainer import TrainingError, train


@pytest.fixture(scope="module")
def sft_run(tiny_model_dir, kgfact_small, tmp_path_factory):
    out = tmp_path_factory.mktemp("shards")
    config = GenerateConfig(
        model=str(tiny_model_dir),
        corpus=str(kgfact_small / "train.jsonl"),
        out=str(out),
        method="sft",
        shard_size=32,
        progress=False,
    )
    (run_dir,) = Generator(config).run_all()
    return run_dir


def config(model, shards, out, **overrides) -> TrainConfig:
    settings = dict(
        model=str(model),
        shards=[str(s) for s in shards],
        out=str(out),
        lr=1e-3,
        batch_size=8,
        micro_batch_size=4,
        epochs=1,
        warmup_steps=2,
        dtype="float32",
        progress=False,
    )
    return TrainConfig(**(settings | overrides))


def weights(step_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(step_dir / "model.safetensors")


def metrics(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_loss_falls_and_checkpoints_load(tiny_model_dir, sft_run, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    final = train(config(tiny_model_dir, [sft_run], tmp_path / "out", epochs=4, save_every=5, keep_last=2))
    rows = metrics(tmp_path / "out")
    assert len(rows) == 4 * (90 // 8) and final.name == "step-000044"
    first, last = sum(r["loss"] for r in rows[:5]) / 5, sum(r["loss"] for r in rows[-5:]) / 5
    assert last < 0.7 * first, (first, last)
    assert all(
        set(r) >= {"step", "epoch", "loss", "lr", "grad_norm", "tokens_per_s", "padding_fraction", "tokens", "seconds"}
        for r in rows
    )
    assert [r["lr"] for r in rows[:3]] == pytest.approx([5e-4, 1e-3, 1e-3])  # warmup 2 steps, then constant
    assert sorted(p.name for p in (tmp_path / "out").glob("step-*")) == ["step-000040", "step-000044"]
    model = AutoModelForCausalLM.from_pretrained(final)
    tokenizer = AutoTokenizer.from_pretrained(final)
    assert tokenizer.chat_template and model.config.vocab_size == len(tokenizer)
    saved = json.loads((final / "checkpoint.json").read_text())
    assert saved["config"]["lr"] == 1e-3 and "torch" in saved["versions"]["packages"]


def test_accumulation_normalizes_by_target_tokens(tiny_model_dir, sft_run, tmp_path):
    one = train(config(tiny_model_dir, [sft_run], tmp_path / "a", micro_batch_size=8, max_steps=3))
    four = train(config(tiny_model_dir, [sft_run], tmp_path / "b", micro_batch_size=2, max_steps=3))
    a, b = weights(one), weights(four)
    assert all(torch.allclose(a[k], b[k], atol=1e-5, rtol=1e-4) for k in a)
    la, lb = metrics(tmp_path / "a"), metrics(tmp_path / "b")
    assert all(abs(x["loss"] - y["loss"]) < 1e-5 for x, y in zip(la, lb))


def _cli_args(model, shards, out, *extra):
    return [
        "--model",
        str(model),
        "--shards",
        str(shards),
        "--out",
        str(out),
        "--lr",
        "1e-3",
        "--batch_size",
        "8",
        "--micro_batch_size",
        "4",
        "--epochs",
        "2",
        "--dtype",
        "float32",
        "--progress",
        "false",
        *extra,
    ]


def _ok(done: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def _ranks_ok(ranks: list[subprocess.CompletedProcess]) -> None:
    for done in ranks:
        _ok(done)


def test_killed_training_resumes_to_identical_weights(tiny_model_dir, sft_run, tmp_path):
    _ok(processes.run("train", _cli_args(tiny_model_dir, sft_run, tmp_path / "whole", "--save_every", "3")))

    out = tmp_path / "killed"
    killed = processes.start("train", _cli_args(tiny_model_dir, sft_run, out, "--save_every", "3"))
    deadline = time.time() + 240
    while time.time() < deadline and not (out / "step-000009" / "trainer_state.pt").exists():
        time.sleep(0.02)
    killed.kill_group()
    assert not (out / "step-000022").exists(), "killed too late to test anything"
    assert len(metrics(out)) >= 9

    refused = processes.run("train", _cli_args(tiny_model_dir, sft_run, out, "--save_every", "3"))
    assert refused.returncode == 2 and "pass --resume" in refused.stderr
    _ok(processes.run("train", _cli_args(tiny_model_dir, sft_run, out, "--save_every", "3", "--resume", "true")))
    a, b = weights(tmp_path / "whole" / "step-000022"), weights(out / "step-000022")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [r["loss"] for r in metrics(out)] == [r["loss"] for r in metrics(tmp_path / "whole")]

    other = processes.run(
        "train", _cli_args(tiny_model_dir, sft_run, out, "--save_every", "3", "--resume", "true", "--lr", "2e-3")
    )
    assert other.returncode == 2 and "trained with other settings (lr)" in other.stderr


@pytest.fixture(scope="module")
def one_process_run(tiny_model_dir, sft_run, tmp_path_factory) -> Path:
    """Four steps in one process, checkpoints at steps 2 and 4: what DDP and FSDP on two must reproduce."""
    out = tmp_path_factory.mktemp("one-process") / "out"
    _ok(processes.run("train", _cli_args(tiny_model_dir, sft_run, out, "--max_steps", "4", "--save_every", "2")))
    return out


@EVERY_CORE
def test_ddp_on_two_processes_matches_one(tiny_model_dir, sft_run, one_process_run, tmp_path):
    """The one test that goes through `torchrun` itself; the other multi-process tests fork their ranks with
    the same environment (tests/processes.py), which saves an interpreter start and imports per rank."""
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "train"]
    _ok(
        subprocess.run(
            torchrun + _cli_args(tiny_model_dir, sft_run, tmp_path / "two", "--max_steps", "4"),
            capture_output=True,
            text=True,
            timeout=300,
        )
    )
    a, b = weights(one_process_run / "step-000004"), weights(tmp_path / "two" / "step-000004")
    assert all(torch.allclose(a[k], b[k], atol=1e-5, rtol=1e-4) for k in a)
    la, lb = metrics(one_process_run), metrics(tmp_path / "two")
    assert all(abs(x["loss"] - y["loss"]) < 1e-4 for x, y in zip(la, lb)) and len(la) == len(lb) == 4


@EVERY_CORE
def test_opsd_under_ddp_and_fsdp_matches_one_process(tiny_model_dir, kgfact_small, tmp_path):
    """OPSD with 2 processes, DDP or FSDP (each micro-batch's rollouts, forward and backward inside no_sync),
    gives the weights of 1 process: rollouts are keyed by example, not by rank or batch position."""
    corpus = first_records(kgfact_small / "train.jsonl", 8, tmp_path / "eight.jsonl")
    (shards,) = Generator(
        GenerateConfig(
            model=str(tiny_model_dir), corpus=str(corpus), out=str(tmp_path / "g"), method="sft", progress=False
        )
    ).run_all()

    def opsd(out):  # micro-batches of one example: 4 per step in one process, 2 per process in two
        return [
            "--model",
            str(tiny_model_dir),
            "--shards",
            str(shards),
            "--out",
            str(out),
            "--method",
            "opsd",
            "--lr",
            "1e-3",
            "--max_steps",
            "2",
            "--batch_size",
            "4",
            "--micro_batch_size",
            "1",
            "--rollouts",
            "2",
            "--rollout_max_new_tokens",
            "8",
            "--dtype",
            "float32",
            "--progress",
            "false",
        ]

    _ok(processes.run("train", opsd(tmp_path / "one")))
    a, la = weights(tmp_path / "one" / "step-000002"), metrics(tmp_path / "one")
    base = weights_of_model(tiny_model_dir)
    assert any(not torch.equal(a[k], base[k]) for k in a)  # it trained
    for name, extra in (("ddp", []), ("fsdp", ["--fsdp", "true"])):
        _ranks_ok(processes.run_ranks("train", opsd(tmp_path / name) + extra))
        b = weights(tmp_path / name / "step-000002")
        assert all(torch.allclose(a[k], b[k], atol=1e-5, rtol=1e-4) for k in a), name
        lb = metrics(tmp_path / name)
        assert all(abs(x["loss"] - y["loss"]) < 1e-5 for x, y in zip(la, lb)) and len(la) == len(lb) == 2, name


def weights_of_model(model_dir) -> dict[str, torch.Tensor]:
    return load_file(Path(model_dir) / "model.safetensors")


def test_non_finite_loss_stops_and_keeps_the_last_checkpoint(tiny_model_dir, sft_run, tmp_path):
    with pytest.raises(TrainingError, match=r"non-finite loss .* at step \d+"):
        train(config(tiny_model_dir, [sft_run], tmp_path / "out", lr=1e30, warmup_steps=0, save_every=1, max_steps=6))
    saved = sorted((tmp_path / "out").glob("step-*"))
    assert saved and all((p / "trainer_state.pt").exists() for p in saved)
    assert all(torch.isfinite(t).all() for t in weights(saved[0]).values())


def test_reverse_kl():
    logits = torch.randn(3, 5, 40)
    p = torch.log_softmax(logits, -1)
    assert torch.allclose(reverse_kl(p, p, 0), torch.zeros(3, 5), atol=1e-6)
    q = torch.log_softmax(torch.randn(3, 5, 40), -1)
    expected = (p.exp() * (p - q)).sum(-1)
    assert torch.allclose(reverse_kl(p, q, 0), expected, atol=1e-6) and bool((expected > 0).all())
    assert bool((reverse_kl(p, q, 8) >= -1e-6).all())


def test_completion_logprobs_match_each_sequence_alone(tiny_model_dir):
    """The batched pass that runs each distinct prompt once and shares its KV cache among the prompt's rows gives
    each row's completion distributions as a pass over that row alone does: repeated and distinct prompts of
    different lengths (left padding), completions of different lengths, one of a single token."""
    from transformers import AutoModelForCausalLM

    from train.opsd import completion_logprobs

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    prompts = [[1, 5, 9, 14, 20]] * 3 + [[1, 7]] * 2 + [[1, 30, 31]]
    completions = [[40, 41], [43, 44, 45, 46], [47], [50, 51, 52], [53], [54, 55, 56, 57]]
    with torch.no_grad():
        batched, valid = completion_logprobs(model, prompts, completions, pad_id=0)
        for row, (p, c) in enumerate(zip(prompts, completions)):
            alone = model(torch.tensor([p + c])).logits[0, len(p) - 1 : len(p) - 1 + len(c)]
            assert torch.allclose(batched[row, : len(c)], torch.log_softmax(alone, -1), atol=1e-5)
            assert valid[row].tolist() == [True] * len(c) + [False] * (4 - len(c))
        single, _ = completion_logprobs(model, prompts[:1], [[47]], pad_id=0)
        assert torch.allclose(single[0, 0], batched[2, 0], atol=1e-5)


def test_completion_logprobs_gradient_through_a_shared_prompt(tiny_model_dir):
    """The student's gradient when its rollouts share one prompt pass is the sum of one pass per rollout: the
    shared prompt's activations receive every rollout's gradient."""
    from transformers import AutoModelForCausalLM

    from train.opsd import completion_logprobs

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    prompts = [[1, 5, 9, 14, 20]] * 3 + [[1, 7]]
    completions = [[40, 41, 42], [43, 44], [45], [50, 51]]
    targets = torch.randn(4, 3, model.config.vocab_size, generator=torch.Generator().manual_seed(0))

    def gradients(rows):
        model.zero_grad()
        for group in rows:
            logp, valid = completion_logprobs(model, [prompts[r] for r in group], [completions[r] for r in group], 0)
            width = logp.shape[1]
            (logp * targets[group, :width] * valid[..., None]).sum().backward()
        return {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}

    shared, separate = gradients([[0, 1, 2, 3]]), gradients([[0], [1], [2], [3]])
    assert shared.keys() == separate.keys() and len(shared) > 0
    for name in shared:  # float32 sums in another order: equal to ~1e-6 of the gradient's norm
        assert (shared[name] - separate[name]).norm() <= 1e-5 * separate[name].norm(), name


def _mean_reverse_kl(student, teacher, examples, completions, tokenizer) -> float:
    """Reverse KL(student on the naive prompt || teacher on the expert prompt) over fixed completions."""
    from train.opsd import completion_logprobs

    pad = tokenizer.pad_token_id
    with torch.no_grad():
        s, valid = completion_logprobs(student, [e.prompt_ids for e in examples], completions, pad)
        t, _ = completion_logprobs(teacher, [e.expert_prompt_ids for e in examples], completions, pad)
    return float((reverse_kl(s, t, 0) * valid).sum() / valid.sum())


def test_opsd_rollouts_sampled_for_the_whole_step_train_the_same_model(tiny_model_dir, sft_run, tmp_path):
    """--rollout_batch_size decodes every rollout of a step together (wider decode passes) instead of one
    micro-batch's at a time: the same draws (keyed by example, sample and position), so on this tiny model the
    same rollouts, losses and weights (on a real model rounding of the logits, which depends on the batch's
    shape, can flip a token: README), and another step's rollouts differ (they are really sampled)."""
    from train.data import load_examples
    from train.opsd import rollouts

    def run(name, **overrides):
        settings = dict(method="opsd", max_steps=2, batch_size=8, micro_batch_size=2, rollouts=3)
        settings |= dict(rollout_max_new_tokens=6, save_every=0, kl_top_k=0) | overrides
        return train(config(tiny_model_dir, [sft_run], tmp_path / name, **settings))

    per_group, whole_step = run("per-group"), run("whole-step", rollout_batch_size=5)
    a, b = weights(per_group), weights(whole_step)
    assert all(torch.allclose(a[k], b[k], atol=1e-6, rtol=1e-5) for k in a)
    losses = [[r["loss"] for r in metrics(tmp_path / name)] for name in ("per-group", "whole-step")]
    assert losses[0] == pytest.approx(losses[1], rel=1e-5) and len(losses[0]) == 2

    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    examples = load_examples([str(sft_run)])[0][:4]
    settings = config(tiny_model_dir, [sft_run], tmp_path / "x", rollouts=3, rollout_max_new_tokens=6)
    together = rollouts(model, examples, tokenizer, settings, step=1)
    for rows in (1, 5):
        assert rollouts(model, examples, tokenizer, settings, step=1, batch_rows=rows) == together
    assert rollouts(model, examples, tokenizer, settings, step=2) != together


def test_opsd_trains_towards_the_expert(tiny_model_dir, kgfact_small, tmp_path):
    """Four examples seen at every step: the student, given only the naive prompt, must move towards what
    the frozen base model says with the expert prompt, on completions it samples itself."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from train.data import load_examples
    from train.opsd import sample

    corpus = first_records(kgfact_small / "train.jsonl", 4, tmp_path / "four.jsonl")
    (shards,) = Generator(
        GenerateConfig(
            model=str(tiny_model_dir), corpus=str(corpus), out=str(tmp_path / "g"), method="sft", progress=False
        )
    ).run_all()
    final = train(
        config(
            tiny_model_dir,
            [shards],
            tmp_path / "out",
            method="opsd",
            max_steps=40,
            batch_size=4,
            micro_batch_size=2,
            rollouts=4,
            rollout_max_new_tokens=12,
            lr=3e-3,
            kl_top_k=0,
        )
    )
    rows = metrics(tmp_path / "out")
    assert len(rows) == 40 and all(r["loss"] >= 0 for r in rows)
    # Resolved off for OPSD, whose rollouts allocate a KV cache per decoded token (see TrainConfig).
    assert json.loads((tmp_path / "out" / "train_config.json").read_text())["config"]["mmap_threshold_kib"] == 0
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    tuned = AutoModelForCausalLM.from_pretrained(final, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    probe = load_examples([str(shards)])[0]
    completions = sample(
        tuned,
        [e.prompt_ids for e in probe],
        12,
        1.0,
        tokenizer.eos_token_id,
        tokenizer.pad_token_id,
        seed=1,
        keys=list(range(len(probe))),
        samples=[0] * len(probe),
    )
    completions = [c + [tokenizer.eos_token_id] for c in completions]
    before = _mean_reverse_kl(base, base, probe, completions, tokenizer)
    after = _mean_reverse_kl(tuned, base, probe, completions, tokenizer)
    assert after < 0.7 * before, (before, after)  # measured: 3.53 -> 2.11 nats


@pytest.mark.parametrize(
    "problem,message",
    [
        ("empty", "no shard run directories"),
        ("lr", "--lr must be > 0"),
        ("batch", "--batch_size 1000 is larger than the 90 examples"),
        ("tampered", "checksum does not match"),
        ("columns", "missing column(s) ['expert_prompt_ids']"),
        ("tokenizer", "written with another tokenizer or model"),
    ],
)
def test_bad_input_stops_before_any_step(tiny_model_dir, sft_run, tmp_path, problem, message):
    shards = [sft_run]
    overrides = {}
    if problem == "empty":
        shards = []
    elif problem == "lr":
        overrides["lr"] = 0.0
    elif problem == "batch":
        overrides["batch_size"] = 1000
    elif problem in ("tampered", "columns", "tokenizer"):
        copy = tmp_path / "copy"
        shutil.copytree(sft_run, copy)
        shards = [copy]
        shard = copy / "train-00001.parquet"
        manifest = json.loads((copy / "manifest.json").read_text())
        if problem == "tampered":
            shard.write_bytes(shard.read_bytes()[:-100])
        elif problem == "columns":
            pq.write_table(pq.read_table(shard).drop_columns(["expert_prompt_ids"]), shard)
            from mixsd.checksums import file_sha256

            manifest["shards"][1]["sha256"] = file_sha256(shard)
        else:
            manifest["vocab_size"] = 1234
            shards = [sft_run, copy]
        (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises((DataError, ValueError)) as info:
        train(config(tiny_model_dir, shards, tmp_path / "out", **overrides))
    assert message in str(info.value)
    assert not list((tmp_path / "out").glob("step-*")) if (tmp_path / "out").exists() else True


def test_shards_accept_glob_patterns(sft_run):
    from mixsd.run_format import expand_run_dirs as expand

    assert expand([str(sft_run.parent / "sft-*"), str(sft_run)]) == [sft_run]
    with pytest.raises(RunFormatError, match="matches no run directory"):
        expand([str(sft_run.parent / "mixsd-*")])


FSDP_STEPS = ("--max_steps", "4", "--save_every", "2", "--fsdp", "true")


@pytest.fixture(scope="module")
def fsdp_run(tiny_model_dir, sft_run, tmp_path_factory) -> Path:
    """Four FSDP steps on two processes, checkpoints at steps 2 and 4 (shared by the two FSDP tests)."""
    out = tmp_path_factory.mktemp("fsdp") / "out"
    _ranks_ok(processes.run_ranks("train", _cli_args(tiny_model_dir, sft_run, out, *FSDP_STEPS)))
    return out


@EVERY_CORE
def test_fsdp_on_two_processes_matches_one(one_process_run, fsdp_run):
    a, b = weights(one_process_run / "step-000004"), weights(fsdp_run / "step-000004")
    assert sorted(a) == sorted(b)
    assert all(torch.allclose(a[k], b[k], atol=1e-5, rtol=1e-4) for k in a)
    state = torch.load(fsdp_run / "step-000004" / "trainer_state.pt", weights_only=True)
    assert state["optimizer"]["state"]  # the gathered, full optimizer state


@EVERY_CORE
def test_fsdp_resume_reproduces_the_run(tiny_model_dir, sft_run, fsdp_run):
    out = fsdp_run  # resumed in place: a run resumes only into its own directory, and ends as it was
    reference = weights(out / "step-000004")
    shutil.rmtree(out / "step-000004")  # as if the run had died after the step-2 checkpoint
    args = _cli_args(tiny_model_dir, sft_run, out, *FSDP_STEPS, "--resume", "true")
    _ranks_ok(processes.run_ranks("train", args))
    again = weights(out / "step-000004")
    assert all(torch.allclose(reference[k], again[k], atol=1e-6, rtol=1e-5) for k in reference)
    assert [r["step"] for r in metrics(out)] == [1, 2, 3, 4]


VLLM_LOAD = """
import os, sys
os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
from vllm import LLM, SamplingParams
llm = LLM(model=sys.argv[1], dtype="float32", max_model_len=512, kv_cache_memory_bytes=32 << 20, enforce_eager=True)
out = llm.generate([{"prompt_token_ids": [1, 5, 9, 12]}], SamplingParams(max_tokens=4, temperature=0, ignore_eos=True))
print("TOKENS", list(out[0].outputs[0].token_ids))
"""


def test_checkpoints_load_in_vllm(tiny_model_dir, sft_run, tmp_path):
    pytest.importorskip("vllm")
    from transformers import AutoModelForCausalLM

    final = train(config(tiny_model_dir, [sft_run], tmp_path / "out", max_steps=2))
    done = processes.run("-c", [VLLM_LOAD, str(final)])
    assert done.returncode == 0, done.stderr[-3000:]
    tokens = json.loads(done.stdout.split("TOKENS")[-1].strip())
    model = AutoModelForCausalLM.from_pretrained(final, dtype=torch.float32)
    expected = model.generate(torch.tensor([[1, 5, 9, 12]]), max_new_tokens=4, do_sample=False, min_new_tokens=4)
    assert tokens == expected[0, 4:].tolist()  # vLLM serves the trained weights, not the base model's


def test_mmap_threshold_helper():
    from train.memory import fix_mmap_threshold

    assert fix_mmap_threshold(0) is False  # 0: leave the allocator alone
    if sys.platform.startswith("linux") and os.path.exists("/lib/x86_64-linux-gnu/libc.so.6"):
        assert fix_mmap_threshold(1024) is True


def _example(key: str, correct: bool | None, ended: bool):
    from train.data import TrainExample

    return TrainExample(key, [1, 2], [1, 3, 2], [7, 8, 9], correct=correct, ended=ended)


def test_only_verified_targets_are_trained_on_and_cut_targets_get_no_eos():
    from train.data import collate, select

    rows = [_example("a", True, True), _example("b", False, True), _example("c", True, False)]
    used, counts = select(rows, include_unverified=False, method="mixsd")
    assert [e.example_id for e in used] == ["a", "c"]
    assert (counts.rows, counts.dropped_unverified, counts.used, counts.cut_at_length) == (3, 1, 2, 1)
    assert len(select(rows, include_unverified=True, method="mixsd")[0]) == 3
    assert len(select(rows, include_unverified=False, method="opsd")[0]) == 3  # OPSD never reads the targets
    batch = collate(used, eos_id=0, pad_id=5)
    assert batch["labels"][0].tolist() == [IGNORE, IGNORE, 7, 8, 9, 0]  # ended: EOS is a label
    assert batch["labels"][1].tolist() == [IGNORE, IGNORE, 7, 8, 9, IGNORE]  # cut: no EOS, padding
    assert batch["attention_mask"][1].tolist() == [1, 1, 1, 1, 1, 0]
    with pytest.raises(DataError, match="none of the 1 targets was verified"):
        select([_example("b", False, True)], include_unverified=False, method="sft")
    with pytest.raises(DataError, match="no `correct` column"):
        select([_example("x", None, True)], include_unverified=False, method="sft")


def test_training_set_counts_are_logged_and_saved(tiny_model_dir, kgfact_small, tmp_path, capsys):
    """The tiny random model answers nothing right: by default there is nothing to train on, and saying so
    beats teaching 90 wrong answers; asked explicitly, it trains on them and records what it used."""
    (run,) = Generator(
        GenerateConfig(
            model=str(tiny_model_dir),
            corpus=str(kgfact_small / "train.jsonl"),
            out=str(tmp_path / "g"),
            lam=[0.5],
            max_new_tokens=6,
            backend="hf",
            dtype="float32",
            progress=False,
        )
    ).run_all()
    finish = pq.read_table(run / "train-00000.parquet").column("finish_reason").to_pylist()
    with pytest.raises(DataError, match="none of the 90 targets was verified"):
        train(config(tiny_model_dir, [run], tmp_path / "refused", max_steps=1))
    final = train(config(tiny_model_dir, [run], tmp_path / "all", max_steps=1, include_unverified=True))
    info = json.loads((tmp_path / "all" / "train_config.json").read_text())
    saved = info["data"]
    assert saved["rows"] == saved["used"] == 90 and saved["dropped_unverified"] == 0
    assert info["config"]["mmap_threshold_kib"] == 1024  # resolved: heap creep fixed for SFT and MixSD
    assert 0 < saved["cut_at_length"] and finish.count("length") <= saved["cut_at_length"]
    assert "data: 90 of 90 rows used (0 with unverified targets dropped" in capsys.readouterr().out
    assert final.name == "step-000001"
    # The loss is normalized by the tokens that carry a label: a cut target has no EOS label to count.
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from train.data import collate, epoch_order, load_examples

    examples = load_examples([str(run)])[0]
    batch = [examples[i] for i in epoch_order(len(examples), 0, 0)[:8]]
    assert any(not e.ended for e in batch)
    eos = AutoTokenizer.from_pretrained(tiny_model_dir).eos_token_id
    tensors = collate(batch, eos_id=eos, pad_id=eos)
    with torch.no_grad():
        logits = (
            AutoModelForCausalLM.from_pretrained(tiny_model_dir)
            .eval()(input_ids=tensors["input_ids"], attention_mask=tensors["attention_mask"])
            .logits
        )
    expected = torch.nn.functional.cross_entropy(
        logits[:, :-1].flatten(0, 1), tensors["labels"][:, 1:].flatten(), ignore_index=IGNORE
    )  # mean over labelled tokens
    logged = json.loads((tmp_path / "all" / "metrics.jsonl").read_text().splitlines()[0])["loss"]
    assert logged == pytest.approx(float(expected), rel=1e-5)


def test_tensorboard_events_match_metrics_and_survive_a_resume(tiny_model_dir, sft_run, tmp_path):
    """`--log tensorboard`: event files next to metrics.jsonl, one scalar per number per step. A run resumed
    from step 2 after steps 3-4 were logged (killed before its step-4 checkpoint) logs them again; read
    back, every step appears once, with the values of the resumed run."""
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "out"
    train(config(tiny_model_dir, [sft_run], out, max_steps=4, save_every=2, keep_last=5, log="tensorboard"))
    shutil.rmtree(out / "step-000004")
    train(
        config(tiny_model_dir, [sft_run], out, max_steps=4, save_every=2, keep_last=5, log="tensorboard", resume=True)
    )
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    events = EventAccumulator(str(out))
    events.Reload()
    assert {"train/loss", "train/lr", "train/tokens_per_s", "train/grad_norm"} <= set(events.Tags()["scalars"])
    for key in ("loss", "grad_norm", "lr"):
        logged = [(e.step, e.value) for e in events.Scalars(f"train/{key}")]
        assert [s for s, _ in logged] == [1, 2, 3, 4]
        assert [v for _, v in logged] == pytest.approx([r[key] for r in rows], rel=1e-6)


def test_unknown_or_missing_log_sinks_are_refused_and_wandb_logs_offline(
    tiny_model_dir, sft_run, tmp_path, monkeypatch
):
    """W&B itself is not installed here: a stand-in module records what the loop sends it."""
    import importlib.util
    import sys
    import types

    from mixsd.config import ConfigError

    with pytest.raises(ConfigError, match=r"--log: unknown \['mlflow'\]"):
        config(tiny_model_dir, [sft_run], tmp_path / "a", log="mlflow")
    if importlib.util.find_spec("wandb") is None:
        with pytest.raises(ConfigError, match=r"--log wandb: the `wandb` package is not installed"):
            config(tiny_model_dir, [sft_run], tmp_path / "a", log="wandb")
    calls = []

    class Run:
        def log(self, values, step):
            calls.append(("log", step, values))

        def finish(self):
            calls.append(("finish",))

    def init(**kwargs):
        calls.append(("init", kwargs))
        return Run()

    fake = types.ModuleType("wandb")
    fake.init, fake.__spec__ = init, importlib.machinery.ModuleSpec("wandb", None)
    monkeypatch.setitem(sys.modules, "wandb", fake)
    train(config(tiny_model_dir, [sft_run], tmp_path / "w", max_steps=2, log="wandb"))
    assert calls[0][0] == "init" and calls[0][1]["mode"] == "offline" and calls[0][1]["dir"] == str(tmp_path / "w")
    assert calls[0][1]["config"]["log"] == "wandb"
    assert [(c[0], c[1]) for c in calls[1:3]] == [("log", 1), ("log", 2)] and "train/loss" in calls[1][2]
    assert calls[-1] == ("finish",)


def test_older_checkpoints_can_drop_their_resume_state_and_still_count(tiny_model_dir, sft_run, tmp_path):
    """`--keep_state_last N`: every checkpoint keeps its weights (evaluation reads them), only the last N keep
    the optimizer state (2x the weights). A run killed before its last checkpoint resumes from the newest
    state and ends where an uninterrupted run ends; with no state left it is refused, not restarted."""
    settings = dict(max_steps=4, save_every=1, keep_last=10)
    straight = train(config(tiny_model_dir, [sft_run], tmp_path / "a", **settings))
    for name, keep in (("b", 2), ("c", 1)):
        train(config(tiny_model_dir, [sft_run], tmp_path / name, keep_state_last=keep, **settings))
        listed = checkpoints(tmp_path / name)
        assert [c.name for c in listed] == [f"step-00000{i}" for i in (1, 2, 3, 4)]
        assert [(c / "trainer_state.pt").is_file() for c in listed] == [False] * (4 - keep) + [True] * keep
        shutil.rmtree(listed[-1])  # as if killed before the last checkpoint was written
    resumed = train(config(tiny_model_dir, [sft_run], tmp_path / "b", keep_state_last=2, resume=True, **settings))
    assert all(torch.equal(weights(straight)[k], v) for k, v in weights(resumed).items())
    with pytest.raises(TrainingError, match="hold no resume state"):
        train(config(tiny_model_dir, [sft_run], tmp_path / "c", keep_state_last=1, resume=True, **settings))


def test_auto_precision_is_resolved_saved_and_checked_on_resume(tiny_model_dir, sft_run, tmp_path, monkeypatch, capsys):
    """`--dtype auto` trains in float32 on a CPU whose bf16 is slow and in bf16 where it is fast; the saved
    config names the precision used, so a resume on a machine that would choose the other one is refused."""
    from mixsd import precision

    monkeypatch.setattr(precision, "cpu_half_precision_is_fast", lambda name="bfloat16": False)
    slow = train(config(tiny_model_dir, [sft_run], tmp_path / "slow", dtype="auto", max_steps=1))
    assert "--dtype auto is float32 on cpu" in capsys.readouterr().out
    assert json.loads((slow / "checkpoint.json").read_text())["config"]["dtype"] == "float32"

    monkeypatch.setattr(precision, "cpu_half_precision_is_fast", lambda name="bfloat16": True)
    fast = train(config(tiny_model_dir, [sft_run], tmp_path / "fast", dtype="auto", max_steps=1))
    assert json.loads((fast / "checkpoint.json").read_text())["config"]["dtype"] == "bfloat16"
    with pytest.raises(TrainingError, match=r"other settings \(dtype\)"):
        train(config(tiny_model_dir, [sft_run], tmp_path / "slow", dtype="auto", max_steps=1, resume=True))
    assert TrainConfig().dtype == "auto"
