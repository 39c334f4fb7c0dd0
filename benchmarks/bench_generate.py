"""Throughput of paired MixSD decoding against plain vLLM decoding on the same engine, and of the reference
backend. Prints measured numbers; asserts nothing.

    python benchmarks/bench_generate.py --model tiny --pairs 256 --tokens 64
    python benchmarks/bench_generate.py --model models/smollm2-135m-instruct --pairs 64 --tokens 32
"""
from __future__ import annotations

import os
import platform
import tempfile
import time

os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"

import fire  # noqa: E402
import torch  # noqa: E402
from transformers import AutoTokenizer  # noqa: E402

from generate.pairs import PairJob  # noqa: E402
from mixsd.prompts import chat_ids  # noqa: E402
from mixsd.engine_memory import plan_kv_cache  # noqa: E402


def make_jobs(tokenizer, pairs: int, tokens: int) -> list[PairJob]:
    return [PairJob(chat_ids(tokenizer, f"Where was person {i} born?"),
                    chat_ids(tokenizer, f"Where was person {i} born?\n\nHere is the answer: The answer is Zendravik {i}."),
                    key=i, sample=0, seed=0, lam=0.5, temperature=0.0, top_k=0, top_p=1.0, max_tokens=tokens)
            for i in range(pairs)]


def plain_decode(engine, prompts: list[list[int]], tokens: int, logprobs: bool = False) -> float:
    """Seconds to decode every prompt independently (no logits processor work), all in flight together."""
    from vllm import SamplingParams
    from vllm.sampling_params import RequestOutputKind

    params = SamplingParams(temperature=1.0, max_tokens=tokens, ignore_eos=True, output_kind=RequestOutputKind.DELTA,
                            detokenize=False,  # as the paired engine: text is decoded once, by the caller
                            logprobs=0 if logprobs else None, flat_logprobs=True)
    start = time.perf_counter()
    for i, prompt in enumerate(prompts):
        engine.add_request(f"plain-{i}-{start}", {"prompt_token_ids": prompt}, params)
    while engine.has_unfinished_requests():
        engine.step()
    return time.perf_counter() - start


def main(model: str = "tiny", pairs: int = 256, tokens: int = 64, dtype: str = "auto", reference_pairs: int = 32,
         kv_cache_gib: float | None = None, enforce_eager: bool = True) -> None:
    from generate.hf_engine import HFPairedEngine
    from generate.vllm_engine import EngineSettings, VLLMPairedEngine

    if model == "tiny":
        from mixsd.debug_model import write_debug_model

        model = str(write_debug_model(tempfile.mkdtemp(prefix="bench-tiny-")))
        dtype = "float32"
    tokenizer = AutoTokenizer.from_pretrained(model)
    jobs = make_jobs(tokenizer, pairs, tokens)
    # Sized for every sequence in flight at once (both setups run 2N sequences), never from the machine's RAM.
    lengths = [len(j.naive_ids) + tokens for j in jobs] + [len(j.expert_ids) + tokens for j in jobs]
    plan = plan_kv_cache(model, dtype, lengths, 2 * pairs, kv_cache_gib, on_gpu=torch.cuda.is_available())
    print(plan.why)
    paired = VLLMPairedEngine(EngineSettings(model=model, dtype=dtype, max_model_len=1024, max_num_seqs=2 * pairs,
                                             kv_cache_bytes=plan.bytes, enforce_eager=enforce_eager,
                                             ignore_eos=True), [])
    prompts = [j.naive_ids for j in jobs] + [j.expert_ids for j in jobs]
    plain_decode(paired.engine, prompts[:8], 4)  # warm-up: compilation and first-step costs out of the timings
    paired.decode(jobs[:4])

    sequence_tokens = 2 * pairs * tokens  # both setups run 2N sequences of `tokens` tokens
    rates = {}
    for logprobs in (False, True):
        rates["plain", logprobs] = sequence_tokens / plain_decode(paired.engine, prompts, tokens, logprobs)
        paired.settings.logprobs = logprobs
        start = time.perf_counter()
        results = paired.decode(jobs)
        rates["mixsd", logprobs] = sequence_tokens / (time.perf_counter() - start)
        assert all(len(r.tokens) == tokens for r in results)
    mixsd_tps = rates["mixsd", True]

    reference = HFPairedEngine(model, [], dtype=dtype if dtype != "auto" else "bfloat16", batch_pairs=reference_pairs)
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
    print(f"pairs in flight: {pairs}, tokens per sequence: {tokens}, splits: {paired.stats.splits}")
    for logprobs in (False, True):
        label = "with logprobs   " if logprobs else "without logprobs"
        plain, mixsd = rates["plain", logprobs], rates["mixsd", logprobs]
        print(f"{label}: plain vLLM {2 * pairs} sequences {plain:9.1f} tokens/s | MixSD {pairs} pairs "
              f"{mixsd:9.1f} tokens/s | ratio {mixsd / plain:.3f}")
    print(f"MixSD as configured by default (logprobs stored) / plain without logprobs: "
          f"{rates['mixsd', True] / rates['plain', False]:.3f}")
    print(f"reference backend, {len(ref_jobs)} pairs : {ref_tps:10.1f} tokens/s")
    print(f"vLLM backend, {len(ref_jobs)} pairs      : {vllm_small_tps:10.1f} tokens/s "
          f"({vllm_small_tps / ref_tps:.1f}x the reference; {mixsd_tps / ref_tps:.1f}x at {pairs} pairs)")


if __name__ == "__main__":
    fire.Fire(main)
