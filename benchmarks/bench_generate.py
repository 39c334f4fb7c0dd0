"""Throughput of paired MixSD decoding against plain vLLM decoding on the same engine at the same sampling
settings (temperature 0 against greedy, temperature 1 against temperature 1 with the same top-k/top-p), with
and without logprobs, `--runs` times each (median and min–max), and of the reference backend. Prints measured
numbers; asserts nothing.

    python benchmarks/bench_generate.py --model tiny --pairs 256 --tokens 64
    python benchmarks/bench_generate.py --model models/smollm2-135m-instruct --pairs 64 --tokens 32
"""

from __future__ import annotations

import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"

import fire  # noqa: E402
import torch  # noqa: E402
from transformers import AutoTokenizer  # noqa: E402

from generate.pairs import PairJob  # noqa: E402
from mixsd.engine_memory import plan_kv_cache  # noqa: E402
from mixsd.models import declared_dtype  # noqa: E402
from mixsd.precision import resolve_dtype  # noqa: E402
from mixsd.prompts import chat_ids  # noqa: E402


def make_jobs(
    tokenizer, pairs: int, tokens: int, temperature: float = 0.0, top_k: int = 0, top_p: float = 1.0
) -> list[PairJob]:
    return [
        PairJob(
            chat_ids(tokenizer, f"Where was person {i} born?"),
            chat_ids(tokenizer, f"Where was person {i} born?\n\nHere is the answer: The answer is Zendravik {i}."),
            key=i,
            sample=0,
            seed=0,
            lam=0.5,
            temperature=temperature,
            top_k=top_k,
            top_p=top_p,
            max_tokens=tokens,
        )
        for i in range(pairs)
    ]


def plain_decode(
    engine,
    prompts: list[list[int]],
    tokens: int,
    logprobs: bool = False,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
) -> float:
    """Seconds to decode every prompt independently (no logits processor work), all in flight together, with
    vLLM's own sampler at the given settings (temperature 0: greedy)."""
    from vllm import SamplingParams
    from vllm.sampling_params import RequestOutputKind

    params = SamplingParams(
        temperature=temperature,
        top_k=top_k if top_k > 0 else -1,
        top_p=top_p,
        max_tokens=tokens,
        ignore_eos=True,
        output_kind=RequestOutputKind.DELTA,
        detokenize=False,  # as the paired engine: text is decoded once, by the caller
        logprobs=0 if logprobs else None,
        flat_logprobs=True,
    )
    start = time.perf_counter()
    for i, prompt in enumerate(prompts):
        engine.add_request(f"plain-{i}-{start}", {"prompt_token_ids": prompt}, params)
    while engine.has_unfinished_requests():
        engine.step()
    return time.perf_counter() - start


def main(
    model: str = "tiny",
    pairs: int = 256,
    tokens: int = 64,
    dtype: str = "auto",
    reference_pairs: int = 32,
    kv_cache_gib: float | None = None,
    enforce_eager: bool = True,
    runs: int = 3,
    top_k: int = 0,
    top_p: float = 1.0,
) -> None:
    from generate.hf_engine import HFPairedEngine
    from generate.vllm_engine import EngineSettings, VLLMPairedEngine

    if model == "tiny":
        from mixsd.debug_model import write_debug_model

        model = str(write_debug_model(tempfile.mkdtemp(prefix="bench-tiny-")))
        dtype = "float32"
    tokenizer = AutoTokenizer.from_pretrained(model)
    # As `python -m generate` resolves it: float32 on a CPU whose bf16 matrix products are slow.
    dtype = resolve_dtype(dtype, declared_dtype(model))
    if dtype == "auto":  # the model's own dtype, named for the table and the reference backend
        dtype = declared_dtype(model) or "float32"
    jobs = make_jobs(tokenizer, pairs, tokens)  # prompts and the warm-up; the timed jobs are per temperature
    # Sized for every sequence in flight at once (both setups run 2N sequences), never from the machine's RAM.
    lengths = [len(j.naive_ids) + tokens for j in jobs] + [len(j.expert_ids) + tokens for j in jobs]
    plan = plan_kv_cache(model, dtype, lengths, 2 * pairs, kv_cache_gib, on_gpu=torch.cuda.is_available())
    print(plan.why)
    paired = VLLMPairedEngine(
        EngineSettings(
            model=model,
            dtype=dtype,
            max_model_len=1024,
            max_num_seqs=2 * pairs,
            kv_cache_bytes=plan.bytes,
            enforce_eager=enforce_eager,
            ignore_eos=True,
        ),
        [],
    )
    prompts = [j.naive_ids for j in jobs] + [j.expert_ids for j in jobs]
    plain_decode(paired.engine, prompts[:8], 4)  # warm-up: compilation and first-step costs out of the timings
    paired.decode(jobs[:4])

    rates = measure_rates(paired, tokenizer, prompts, pairs, tokens, runs, top_k, top_p)
    mixsd_tps = statistics.median(rates["mixsd", 0.0, True])

    reference = HFPairedEngine(model, [], dtype=dtype, batch_pairs=reference_pairs)
    ref_jobs = jobs[:reference_pairs]
    start = time.perf_counter()
    reference.decode(ref_jobs)
    ref_s = time.perf_counter() - start
    ref_tps = 2 * len(ref_jobs) * tokens / ref_s
    # The vLLM rate at the same number of pairs as the reference, for a like-for-like ratio.
    start = time.perf_counter()
    paired.decode(ref_jobs)
    vllm_small_tps = 2 * len(ref_jobs) * tokens / (time.perf_counter() - start)

    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; model {model} ({dtype})")
    print(
        f"pairs in flight: {pairs}, tokens per sequence: {tokens}, top-k {top_k}, top-p {top_p}, {runs} runs; "
        f"splits: {paired.stats.splits}"
    )
    print_table(rates, f"{Path(model).name} ({dtype})", pairs, tokens)
    print(f"reference backend, {len(ref_jobs)} pairs : {ref_tps:10.1f} tokens/s")
    print(
        f"vLLM backend, {len(ref_jobs)} pairs      : {vllm_small_tps:10.1f} tokens/s "
        f"({vllm_small_tps / ref_tps:.1f}x the reference; {mixsd_tps / ref_tps:.1f}x at {pairs} pairs)"
    )


def measure_rates(paired, tokenizer, prompts, pairs: int, tokens: int, runs: int, top_k: int, top_p: float) -> dict:
    """(setup, temperature, logprobs) -> tokens/s of each run; plain and MixSD alternate run by run, so a
    drift of the machine's speed hits both sides alike."""
    sequence_tokens = 2 * pairs * tokens  # both setups run 2N sequences of `tokens` tokens
    rates: dict[tuple, list[float]] = {}
    for temperature in (0.0, 1.0):
        jobs = make_jobs(tokenizer, pairs, tokens, temperature, top_k, top_p)
        for logprobs in (False, True):
            paired.settings.logprobs = logprobs
            for run in range(runs):
                plain_s = plain_decode(paired.engine, prompts, tokens, logprobs, temperature, top_k, top_p)
                rates.setdefault(("plain", temperature, logprobs), []).append(sequence_tokens / plain_s)
                start = time.perf_counter()
                results = paired.decode(jobs)
                mixsd_s = time.perf_counter() - start
                rates.setdefault(("mixsd", temperature, logprobs), []).append(sequence_tokens / mixsd_s)
                assert all(len(r.tokens) == tokens for r in results)
                print(  # progress: one line per run of each setting (a SmolLM2 table takes ~11 minutes here)
                    f"T {temperature:g}, logprobs {'on' if logprobs else 'off'}, run {run + 1}/{runs}: plain "
                    f"{sequence_tokens / plain_s:,.0f}, MixSD {sequence_tokens / mixsd_s:,.0f} tokens/s",
                    flush=True,
                )
    return rates


def print_table(rates: dict, label: str, pairs: int, tokens: int) -> None:
    """The docs/benchmarks.md table: median (min–max) per setting, the ratio taken run by run."""
    print("| model | pairs | tokens/seq | temperature | logprobs | plain tokens/s | MixSD tokens/s | ratio |")
    print("|---|---|---|---|---|---|---|---|")
    for temperature in (0.0, 1.0):
        for logprobs in (False, True):
            plain, mixsd = rates["plain", temperature, logprobs], rates["mixsd", temperature, logprobs]
            ratios = [m / p for m, p in zip(mixsd, plain)]
            print(
                f"| {label} | {pairs} | {tokens} | {temperature:g} {'(greedy)' if temperature == 0 else ''} | "
                f"{'on' if logprobs else 'off'} | {_spread(plain, 0)} | {_spread(mixsd, 0)} | "
                f"**{_spread(ratios, 3)}** |"
            )


def _spread(values: list[float], digits: int) -> str:
    """median (min–max)"""
    return f"{statistics.median(values):,.{digits}f} ({min(values):,.{digits}f}–{max(values):,.{digits}f})"


if __name__ == "__main__":
    fire.Fire(main)
