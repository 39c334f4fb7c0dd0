"""The GPU figures that need no vLLM (the GPU image has torch 2.11 and transformers but vLLM 0.32's CUDA wheel
needs torch 2.13): the training loop against the transformers Trainer (bf16, tokens/s, MFU), the reference
backend's paired decoding, and OPSD steps. Prints measured numbers and writes them to OUT/gpu.json; asserts
nothing. `benchmarks/gpu/run.sh` runs it on a lent GPU machine.

The model has SmolLM2-135M's architecture and tokenizer with random weights: the weights (270 MB) cannot
travel to that machine (64 MiB), and throughput does not depend on their values. Decoding runs to fixed
lengths (no stop tokens), so the numbers do not depend on when a random model would stop either.

    python benchmarks/bench_gpu.py --model_dir build/gpu/smollm2-135m --out build/gpu/out   # on the GPU
    python benchmarks/bench_gpu.py --tiny true --out /tmp/gpu-smoke                          # a CPU smoke run
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import fire
import torch

ROOT = Path(__file__).resolve().parent.parent
TOKENIZER_FILES = (
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "chat_template.jinja",
)


def build_model(source: Path, out: Path) -> Path:
    """A model directory with `source`'s config and tokenizer and random weights (seed 0)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    out.mkdir(parents=True, exist_ok=True)
    for name in TOKENIZER_FILES:
        if (source / name).is_file():
            shutil.copy(source / name, out / name)
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(source)).save_pretrained(out)
    return out


def sft_shards(model: Path, work: Path) -> Path:
    """KGFact-small and its SFT rows (ground-truth targets: no model run), as `make bench-train` makes them."""
    corpus = work / "kgfact-small"
    _run([sys.executable, "-m", "corpora", "kgfact", "--size", "small", "--out", str(corpus)])
    _run(
        [
            sys.executable,
            "-m",
            "generate",
            "--method",
            "sft",
            "--model",
            str(model),
            "--corpus",
            str(corpus / "train.jsonl"),
            "--out",
            str(work / "shards"),
            "--progress",
            "false",
        ]
    )
    (run,) = (work / "shards").glob("sft-*")
    return run


def bench_train(model: Path, shards: Path, steps: int, batch_size: int, micro_batch_size: int) -> dict:
    """benchmarks/bench_train.py, both sides, as it runs on any machine (it adds MFU on a known GPU)."""
    done = _run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "bench_train.py"),
            "--model",
            str(model),
            "--shards",
            str(shards),
            "--steps",
            str(steps),
            "--batch_size",
            str(batch_size),
            "--micro_batch_size",
            str(micro_batch_size),
        ]
    )
    return {"output": done.stdout.strip().splitlines()}


def bench_reference_decoding(model: Path, pairs: int, tokens: int, batch_pairs: int, runs: int) -> dict:
    """The reference backend's paired MixSD decoding (λ 0.3, temperature 1), mixed tokens per second."""
    from transformers import AutoTokenizer

    from generate.hf_engine import HFPairedEngine
    from generate.pairs import PairJob
    from mixsd.prompts import chat_ids

    tokenizer = AutoTokenizer.from_pretrained(model)
    jobs = [
        PairJob(
            chat_ids(tokenizer, f"Where was person {i} born?"),
            chat_ids(tokenizer, f"Where was person {i} born?\n\nHere is the answer: Zendravik {i}."),
            key=i,
            sample=0,
            seed=0,
            lam=0.3,
            temperature=1.0,
            top_k=0,
            top_p=1.0,
            max_tokens=tokens,
        )
        for i in range(pairs)
    ]
    dtype = "bfloat16" if torch.cuda.is_available() else "float32"
    engine = HFPairedEngine(str(model), [], dtype=dtype, batch_pairs=batch_pairs)
    engine.decode(jobs[:batch_pairs])  # warm-up: allocation and kernel selection
    rates = []
    for _ in range(runs):
        _sync()
        start = time.perf_counter()
        results = engine.decode(jobs)
        _sync()
        rates.append(sum(len(r.tokens) for r in results) / (time.perf_counter() - start))
    return {"pairs": pairs, "tokens": tokens, "batch_pairs": batch_pairs, "dtype": dtype, "mixed_tokens_per_s": rates}


def bench_opsd(model: Path, shards: Path, steps: int, batch_size: int, rollouts: int, tokens: int) -> dict:
    """OPSD steps through `python -m train`'s loop: seconds per step and completion tokens per second."""
    from benchmarks.bench_train import train_rows

    dtype = "bfloat16" if torch.cuda.is_available() else "float32"
    rows = train_rows(
        model=str(model),
        shards=[str(shards)],
        method="opsd",
        max_steps=steps,
        batch_size=batch_size,
        micro_batch_size=batch_size,
        rollouts=rollouts,
        rollout_max_new_tokens=tokens,
        dtype=dtype,
    )
    timed = rows[1:] or rows  # the first step pays for allocation and kernel selection
    return {
        "steps": steps,
        "batch_size": batch_size,
        "rollouts": rollouts,
        "max_new_tokens": tokens,
        "dtype": dtype,
        "seconds_per_step": [r["seconds"] for r in timed],
        "completion_tokens_per_s": sum(r["tokens"] for r in timed) / sum(r["seconds"] for r in timed),
        "mfu": [r.get("mfu") for r in timed],
    }


def profile_train(model: Path, shards: Path, out_dir: Path, steps: int, batch_size: int, micro_batch_size: int) -> dict:
    """Where the host's time goes in a few steps of each loop: torch.profiler's operators by self CPU time,
    written to OUT/profile-ours.txt and OUT/profile-trainer.txt (both loops in this process, one after the
    other). The totals of the synchronizing calls are returned."""
    from torch.profiler import ProfilerActivity, profile

    from benchmarks.bench_train import run_ours, run_trainer
    from mixsd.precision import training_dtype

    dtype = training_dtype("auto", torch.device("cuda" if torch.cuda.is_available() else "cpu"))
    settings = (str(model), str(shards), steps, batch_size, micro_batch_size, dtype)
    summary = {}
    for name, runner in (("ours", run_ours), ("trainer", run_trainer)):
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            runner(*settings)
        averages = prof.key_averages()
        table = averages.table(sort_by="self_cpu_time_total", row_limit=40, max_name_column_width=60)
        (out_dir / f"profile-{name}.txt").write_text(table + "\n")
        waits = {e.key: (e.count, round(e.self_cpu_time_total / 1e3, 1)) for e in averages if "Synchronize" in e.key}
        launches = sum(
            e.count for e in averages if e.key in ("cudaLaunchKernel", "cuLaunchKernel", "cudaLaunchKernelExC")
        )
        summary[name] = {"synchronize (count, ms)": waits, "kernel launches": launches}
    return summary


def main(
    model_dir: str = "models/smollm2-135m-instruct",
    out: str = "build/gpu/out",
    tiny: bool = False,
    train_steps: int = 20,
    train_batch: int = 64,
    train_micro_batch: int = 16,
    pairs: int = 256,
    tokens: int = 128,
    batch_pairs: int = 64,
    runs: int = 3,
    opsd_steps: int = 4,
    opsd_batch: int = 8,
    opsd_rollouts: int = 4,
    profile_steps: int = 6,
    parts: str | tuple = "train,decoding,opsd,profile",
) -> None:
    """`parts`: which of train, decoding, opsd, profile to run (a rerun of one part costs less device time)."""
    chosen = parts.split(",") if isinstance(parts, str) else list(parts)  # fire reads "a,b" as a tuple
    unknown = set(chosen) - {"train", "decoding", "opsd", "profile"}
    if unknown:
        raise SystemExit(f"--parts: unknown {sorted(unknown)}; choose from train, decoding, opsd, profile")
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="bench-gpu-"))
    if tiny:  # a CPU smoke run of every part, in seconds
        from mixsd.debug_model import write_debug_model

        source = write_debug_model(work / "tiny")
        train_steps, train_batch, train_micro_batch, pairs, tokens, batch_pairs, runs = 2, 8, 4, 8, 8, 4, 1
        opsd_steps, opsd_batch, opsd_rollouts, profile_steps = 2, 4, 2, 2
    else:
        source = Path(model_dir)
    report = {
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
        "torch": torch.__version__,
        "python": sys.version.split()[0],
    }
    model = build_model(source, work / "model")
    shards = sft_shards(model, work)
    every = {
        "train": (
            "train (ours vs Trainer)",
            lambda: bench_train(model, shards, train_steps, train_batch, train_micro_batch),
        ),
        "decoding": (
            "reference paired decoding",
            lambda: bench_reference_decoding(model, pairs, tokens, batch_pairs, runs),
        ),
        "opsd": ("OPSD steps", lambda: bench_opsd(model, shards, opsd_steps, opsd_batch, opsd_rollouts, tokens)),
        "profile": (
            "train profile",
            lambda: profile_train(model, shards, out_dir, profile_steps, train_batch, train_micro_batch),
        ),
    }
    for name, part in (every[key] for key in chosen):  # one part failing leaves the others' numbers
        start = time.perf_counter()
        try:
            report[name] = part() | {"wall_s": round(time.perf_counter() - start, 1)}
        except Exception as err:  # reported, not hidden: the figure is missing and says why
            report[name] = {"error": f"{type(err).__name__}: {err}"}
        print(f"== {name}: {json.dumps(report[name], indent=1)}", flush=True)
        (out_dir / "gpu.json").write_text(json.dumps(report, indent=1) + "\n")
    shutil.rmtree(work, ignore_errors=True)


def _run(command: list[str]) -> subprocess.CompletedProcess:
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, env=os.environ)
    if done.returncode:
        raise RuntimeError(f"{' '.join(command[:4])} … exited {done.returncode}: {done.stderr[-2000:]}")
    return done


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    fire.Fire(main)
