"""End-to-end `python -m generate` with a compiled and with an eager vLLM engine: wall time, engine start,
decode time and tokens/s, several runs each. Prints measured numbers; asserts nothing. The eager/compiled
rule of `--enforce_eager auto` (mixsd/engine_memory.py) is chosen from these figures.

    python benchmarks/bench_eager.py --model models/smollm2-135m-instruct --corpus data/kgfact-small/train.jsonl
"""

from __future__ import annotations

import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import fire

ROOT = Path(__file__).resolve().parent.parent


def one_run(model: str, corpus: str, eager: bool, tokens: int, lam: float) -> dict:
    out = tempfile.mkdtemp(prefix="bench-eager-")
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
        str(lam),
        "--temperature",
        "0",
        "--max_new_tokens",
        str(tokens),
        "--max_retries",
        "0",
        "--enforce_eager",
        str(eager).lower(),
        "--progress",
        "false",
    ]
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    wall = time.perf_counter() - start
    if done.returncode:
        raise SystemExit(done.stdout[-2000:] + done.stderr[-2000:])
    engine_s = float(re.search(r"vLLM engine started in ([0-9.]+) s", done.stdout).group(1))
    (run,) = Path(out).glob("mixsd-*")
    totals = json.loads((run / "manifest.json").read_text())["totals"]
    decode_s = totals["seconds"] - engine_s  # the first shard's time includes the engine's start
    return {
        "wall_s": wall,
        "engine_s": engine_s,
        "decode_s": decode_s,
        "tokens": totals["generated_tokens"],
        "tokens_per_s": totals["generated_tokens"] / decode_s,
    }


def main(
    model: str = "models/smollm2-135m-instruct",
    corpus: str = "data/kgfact-small/train.jsonl",
    runs: int = 3,
    tokens: int = 256,
    lam: float = 0.3,
) -> None:
    print(f"{os.cpu_count()} cores; {model}; {corpus}; λ {lam}, T 0, {tokens} new tokens, {runs} runs each")
    results = {}
    for eager in (True, False):  # alternated per run would mix caches; each mode's runs back to back
        results[eager] = [one_run(model, corpus, eager, tokens, lam) for _ in range(runs)]
    print("| engine | wall s | engine start s | decode s | tokens | decode tokens/s |")
    print("|---|---|---|---|---|---|")
    for eager, rows in results.items():
        cells = [_spread([r[k] for r in rows]) for k in ("wall_s", "engine_s", "decode_s")]
        print(
            f"| {'eager' if eager else 'compiled'} | {' | '.join(cells)} | {rows[0]['tokens']} | "
            f"{_spread([r['tokens_per_s'] for r in rows])} |"
        )
    eager_rate = statistics.median(r["tokens_per_s"] for r in results[True])
    compiled_rate = statistics.median(r["tokens_per_s"] for r in results[False])
    extra_start = statistics.median(r["engine_s"] for r in results[False]) - statistics.median(
        r["engine_s"] for r in results[True]
    )
    if compiled_rate > eager_rate:
        break_even = extra_start / (1 / eager_rate - 1 / compiled_rate)
        print(
            f"compiling pays for itself after {break_even:,.0f} generated tokens "
            f"({extra_start:.1f} s more start, {compiled_rate / eager_rate:.3f}x decode speed)"
        )
    else:
        print(f"compiled decoding is not faster here ({compiled_rate / eager_rate:.3f}x): eager always wins")


def _spread(values: list[float]) -> str:
    return f"{statistics.median(values):.1f} ({min(values):.1f}–{max(values):.1f})"


if __name__ == "__main__":
    fire.Fire(main)
