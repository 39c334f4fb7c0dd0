"""How much KV cache an engine asks for, and whether it compiles: decided by the job, never by the machine.

vLLM on CPU otherwise sizes its KV cache as `gpu_memory_utilization × (the NUMA node's memory) − (this
process's resident memory)`: the same command then works on one machine and fails on a smaller node, or in
a process that already holds an engine. Here the cache holds what the job can have in flight at once: the
`max_seqs` longest sequences of the job (prompt + new tokens, rounded up to whole blocks), with a floor. A
smaller cache is never wrong, only slower: vLLM admits what fits and preempts the rest.

On GPUs, where vLLM measures the device itself, `gpu_memory_utilization` still applies unless a size is given.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from mixsd.config import ConfigError
from mixsd.errors import UserError
from mixsd.models import declared_dtype, text_config

GIB = 1 << 30
FLOOR_BYTES = 32 << 20  # enough for a few short sequences of a small model
CAP_BYTES = 1 << 30  # the default's ceiling on CPU: a CPU decodes a few dozen sequences at a time anyway
BLOCK_TOKENS = 128  # vLLM's CPU block size; a multiple of the GPU's 16, so a safe rounding on both
EAGER_CHOICES = ("auto", "true", "false")


class EngineMemoryError(UserError):
    """The KV cache asked for does not fit in the memory the engine can get."""


@dataclass(frozen=True)
class KVCachePlan:
    bytes: int | None  # None: vLLM sizes the cache from gpu_memory_utilization (GPUs only)
    max_seqs: int  # sequences in flight: as many of the job's longest as the cache holds whole
    max_len: int  # the engine's max_model_len: the job's longest sequence
    why: str  # one line for the log and for error messages


def bytes_per_token(model: str, dtype: str = "auto") -> int:
    """Key + value bytes one token takes over all layers of `model` (from its config; nothing is loaded)."""
    text = text_config(model)
    heads = text.num_attention_heads
    kv_heads = getattr(text, "num_key_value_heads", None) or heads
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // heads
    name = dtype if dtype != "auto" else (declared_dtype(model) or "")
    element_bytes = 4 if "float32" in name or name in ("float", "fp32") else 2
    return 2 * text.num_hidden_layers * kv_heads * head_dim * element_bytes


def model_context_length(model: str) -> int:
    """The longest sequence the model's config allows (2048 where it does not say)."""
    return int(getattr(text_config(model), "max_position_embeddings", None) or 2048)


def _blocks(tokens: int) -> int:
    return math.ceil(tokens / BLOCK_TOKENS) * BLOCK_TOKENS


def job_tokens(sequence_tokens: list[int], max_seqs: int) -> int:
    """KV tokens for the `max_seqs` longest sequences in flight at once, each rounded up to whole blocks."""
    return sum(_blocks(n) for n in sorted(sequence_tokens, reverse=True)[:max_seqs])


def sequences_that_fit(sequence_tokens: list[int], tokens: int, max_seqs: int) -> int:
    """How many of the longest sequences fit in `tokens` of cache at once, whole (at least one)."""
    used = fit = 0
    for n in sorted(sequence_tokens, reverse=True)[:max_seqs]:
        used += _blocks(n)
        if used > tokens:
            break
        fit += 1
    return max(1, fit)


def plan_kv_cache(
    model: str, dtype: str, sequence_tokens: list[int], max_seqs: int, kv_cache_gib: float | None, on_gpu: bool
) -> KVCachePlan:
    """The KV cache for a job whose sequences (prompt + new tokens) have the given lengths."""
    if not sequence_tokens:
        sequence_tokens = [1]
    max_len = max(sequence_tokens)
    if kv_cache_gib is not None and kv_cache_gib <= 0:
        raise ConfigError(f"--kv_cache_gib must be > 0, got {kv_cache_gib}")
    if kv_cache_gib is None and on_gpu:
        return KVCachePlan(None, max_seqs, max_len, "KV cache sized by vLLM from --gpu_memory_utilization (GPU)")
    per_token = bytes_per_token(model, dtype)
    # vLLM keeps one block of the cache for itself (the null block): without it here, the last of the job's
    # sequences would not fit and one would be preempted (a pair split and re-prefilled) when all are in flight.
    whole_job = (job_tokens(sequence_tokens, max_seqs) + BLOCK_TOKENS) * per_token
    if kv_cache_gib is not None:
        size, how = int(kv_cache_gib * GIB), "set by --kv_cache_gib"
    else:
        size = min(max(FLOOR_BYTES, whole_job), CAP_BYTES)
        how = (
            f"sized from the job (all {min(max_seqs, len(sequence_tokens))} sequences in flight need "
            f"{whole_job / GIB:.3f} GiB; floor {FLOOR_BYTES >> 20} MiB, ceiling {CAP_BYTES / GIB:g} GiB)"
        )
        size = max(size, _blocks(max_len) * per_token)  # vLLM refuses a cache that cannot hold one whole sequence
    fit = sequences_that_fit(sequence_tokens, size // per_token - BLOCK_TOKENS, max_seqs)  # vLLM keeps one block
    return KVCachePlan(
        size,
        fit,
        max_len,
        f"KV cache {size / GIB:.3f} GiB {how}, {per_token} bytes/token: "
        f"{fit} sequences of up to {max_len} tokens in flight",
    )


def explain_memory_error(err: Exception, plan: KVCachePlan) -> EngineMemoryError | None:
    """vLLM's "not enough memory for the KV cache" as one line that says what was needed and what to set."""
    text = str(err)
    if "kv cache" not in text.lower() and "kv_cache" not in text.lower():
        return None
    return EngineMemoryError(
        f"the engine could not get its KV cache: {plan.why}. vLLM: {text.strip()} "
        "Set --kv_cache_gib lower (a smaller cache only admits fewer sequences at once) or "
        "lower --max_num_seqs."
    )


def engine_line(plan: KVCachePlan, eager: bool, choice: str) -> str:
    """What an engine is about to start with, printed by every command that starts one."""
    return f"vLLM engine: {plan.why}; {'eager' if eager else 'compiled'} (--enforce_eager {choice})"


def resolve_eager(choice: str, generated_tokens: int) -> bool:
    """enforce_eager for vLLM: `true`/`false` as given; `auto` compiles only when the job is long enough for
    compiled decoding to repay the compile time (see `EAGER_BELOW_TOKENS`)."""
    choice = str(choice).lower()
    if choice not in EAGER_CHOICES:
        raise ConfigError(f"--enforce_eager must be one of {EAGER_CHOICES}, got {choice!r}")
    if choice != "auto":
        return choice == "true"
    return generated_tokens < EAGER_BELOW_TOKENS


# `benchmarks/bench_eager.py` on 2 CPU cores (SmolLM2-135M, float32; docs/benchmarks.md): compiling costs
# 101 s more start and decodes 1.12x faster, so it pays for itself after ~55k generated tokens. The rule sees
# only the job's token budget (examples x max_new_tokens x runs x attempts), which KGFact-small's targets fill
# to 20% (4,515 of 23,040), hence 55k / 0.2.
EAGER_BELOW_TOKENS = 270_000
