"""Ray backend throughput with 1 and 2 workers on this machine, beside the same job run locally (no Ray):
one fresh process per job (a fresh local Ray instance for the Ray jobs), the same corpus and settings.
Prints measured numbers; asserts nothing.

    python benchmarks/bench_ray.py --model models/smollm2-135m-instruct --corpus data/kgfact-small/train.jsonl
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import fire

ROOT = Path(__file__).resolve().parent.parent
CORES = os.cpu_count() or 1


def one_job(
    model: str, corpus: str, workers: int, shard_size: int, tokens: int, backend: str, kv_cache_gib: float
) -> dict:
    """workers = 0: the local loop (no Ray). Returns wall time, tokens, and each worker's busy seconds."""
    out = tempfile.mkdtemp(prefix=f"bench-ray-{workers}-")
    command = [
        sys.executable,
        "-m",
        "generate",
        "--model",
        model,
        "--corpus",
        corpus,
        "--out",
        out,
        "--lam",
        "[0.3]",
        "--max_new_tokens",
        str(tokens),
        "--shard_size",
        str(shard_size),
        "--backend",
        backend,
        "--kv_cache_gib",
        str(kv_cache_gib),
        "--max_model_len",
        "1024",
        "--progress",
        "false",
    ]
    if workers:  # the machine's cores shared out; Ray turns an actor's CPUs into its thread count
        command += ["--ray", "true", "--num_workers", str(workers), "--cpus_per_worker", str(CORES / workers)]
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    wall = time.perf_counter() - start
    if done.returncode:
        raise SystemExit(done.stdout[-2000:] + done.stderr[-2000:])
    (run,) = Path(out).glob("mixsd-*")
    manifest = json.loads((run / "manifest.json").read_text())
    busy = defaultdict(float)
    for shard in manifest["shards"]:
        busy[shard.get("written_by", {}).get("worker", 0)] += shard["seconds"]
    return {"wall_s": wall, "tokens": manifest["totals"]["generated_tokens"], "busy_s": dict(busy)}


def main(
    model: str = "models/smollm2-135m-instruct",
    corpus: str = "data/kgfact-small/train.jsonl",
    shard_size: int = 15,
    tokens: int = 32,
    backend: str = "vllm",
    kv_cache_gib: float = 0.25,
) -> None:
    print(
        f"model {model}; corpus {corpus}; shard size {shard_size}; {tokens} new tokens; backend {backend}; "
        f"{CORES} cores"
    )
    for workers in (0, 1, 2):
        r = one_job(model, corpus, workers, shard_size, tokens, backend, kv_cache_gib)
        label = f"ray, {workers} worker(s)" if workers else "local (no Ray)"
        busy = ", ".join(f"{s:.1f}" for _, s in sorted(r["busy_s"].items()))
        # A worker's busy time includes its engine start (engines start with the first shard).
        print(
            f"{label}: {r['tokens']} tokens in {r['wall_s']:.1f} s wall = {r['tokens'] / r['wall_s']:.1f} tokens/s "
            f"end to end; busy (engine start + shards): {busy} s per worker; the rest (imports, Ray, "
            f"waiting, driver writes): {r['wall_s'] - max(r['busy_s'].values()):.1f} s"
        )


if __name__ == "__main__":
    fire.Fire(main)
