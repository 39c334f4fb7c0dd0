"""Ray backend throughput with 1 and 2 workers on this machine: one fresh job per worker count, each a local
Ray instance, the same corpus and settings. Prints measured numbers; asserts nothing.

    python benchmarks/bench_ray.py --model models/smollm2-135m-instruct --corpus data/kgfact-small/train.jsonl
"""
from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import fire

ROOT = Path(__file__).resolve().parent.parent


def one_job(model: str, corpus: str, workers: int, shard_size: int, tokens: int, backend: str,
            memory: float) -> dict:
    out = tempfile.mkdtemp(prefix=f"bench-ray-{workers}-")
    command = [sys.executable, "-m", "generate", "--model", model, "--corpus", corpus, "--out", out,
               "--lam", "[0.3]", "--max_new_tokens", str(tokens), "--shard_size", str(shard_size),
               "--backend", backend, "--gpu_memory_utilization", str(memory), "--max_model_len", "1024",
               "--progress", "false", "--ray", "true", "--num_workers", str(workers),
               "--cpus_per_worker", str(2 / workers)]  # the machine's 2 cores shared out
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    wall = time.perf_counter() - start
    if done.returncode:
        raise SystemExit(done.stdout[-2000:] + done.stderr[-2000:])
    (run,) = Path(out).glob("mixsd-*")
    manifest = json.loads((run / "manifest.json").read_text())
    return {"workers": workers, "wall_s": wall, "tokens": manifest["totals"]["generated_tokens"],
            "shard_seconds": sum(s["seconds"] for s in manifest["shards"])}


def main(model: str = "models/smollm2-135m-instruct", corpus: str = "data/kgfact-small/train.jsonl",
         shard_size: int = 15, tokens: int = 32, backend: str = "vllm", memory: float = 0.12) -> None:
    print(f"model {model}; corpus {corpus}; shard size {shard_size}; {tokens} new tokens; backend {backend}")
    for workers in (1, 2):
        r = one_job(model, corpus, workers, shard_size, tokens, backend, memory)
        print(f"{workers} worker(s): {r['tokens']} tokens in {r['wall_s']:.1f} s wall "
              f"({r['tokens'] / r['wall_s']:.1f} tokens/s end to end, engine starts included); "
              f"generation time summed over shards {r['shard_seconds']:.1f} s")


if __name__ == "__main__":
    fire.Fire(main)
