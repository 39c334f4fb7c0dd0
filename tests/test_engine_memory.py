"""Engine memory and start-up are decided by the job, never by the machine (mixsd/engine_memory.py)."""

from __future__ import annotations

import pytest

from mixsd.config import ConfigError
from mixsd.engine_memory import (
    BLOCK_TOKENS,
    CAP_BYTES,
    FLOOR_BYTES,
    GIB,
    bytes_per_token,
    job_tokens,
    model_context_length,
    plan_kv_cache,
    resolve_eager,
    sequences_that_fit,
)


def test_bytes_per_token_reads_the_models_shape(tiny_model_dir):
    # the tiny Llama: 2 layers, 2 key/value heads of 64 dims, float32 -> 2 (K, V) x 2 x 2 x 64 x 4 bytes
    assert bytes_per_token(str(tiny_model_dir), "float32") == 2 * 2 * 2 * 64 * 4
    assert bytes_per_token(str(tiny_model_dir), "bfloat16") == 2 * 2 * 2 * 64 * 2
    assert model_context_length(str(tiny_model_dir)) == 2048


def test_job_tokens_round_each_sequence_to_whole_blocks():
    assert job_tokens([1, BLOCK_TOKENS, BLOCK_TOKENS + 1], max_seqs=8) == BLOCK_TOKENS * (1 + 1 + 2)
    assert job_tokens([10, 500, 300], max_seqs=2) == 4 * BLOCK_TOKENS + 3 * BLOCK_TOKENS  # the two longest
    assert sequences_that_fit([500, 300, 10], tokens=7 * BLOCK_TOKENS, max_seqs=8) == 2
    assert sequences_that_fit([5000], tokens=BLOCK_TOKENS, max_seqs=8) == 1  # at least one, always


def test_default_is_sized_from_the_job_with_floor_and_ceiling(tiny_model_dir):
    model, per_token = str(tiny_model_dir), 2 * 2 * 2 * 64 * 4
    small = plan_kv_cache(model, "float32", [100, 200], max_seqs=8, kv_cache_gib=None, on_gpu=False)
    assert small.bytes == FLOOR_BYTES and small.max_seqs == 2 and small.max_len == 200
    lengths = [1000] * 4096
    big = plan_kv_cache(model, "float32", lengths, max_seqs=256, kv_cache_gib=None, on_gpu=False)
    assert big.bytes == min(CAP_BYTES, (256 * 8 + 1) * BLOCK_TOKENS * per_token)
    # vLLM keeps one block for itself: the job's size counts it, so every sequence of the job fits at once
    # (it once did not: the last one was preempted, which split a MixSD pair and re-prefilled it).
    middle = plan_kv_cache(model, "float32", [1000] * 64, max_seqs=256, kv_cache_gib=None, on_gpu=False)
    assert middle.bytes == (64 * 8 + 1) * BLOCK_TOKENS * per_token and middle.max_seqs == 64
    assert "sized from the job" in middle.why


def test_explicit_size_and_gpus(tiny_model_dir):
    plan = plan_kv_cache(str(tiny_model_dir), "float32", [100], max_seqs=8, kv_cache_gib=0.5, on_gpu=False)
    assert plan.bytes == GIB // 2 and "--kv_cache_gib" in plan.why
    gpu = plan_kv_cache(str(tiny_model_dir), "float32", [100], max_seqs=8, kv_cache_gib=None, on_gpu=True)
    assert gpu.bytes is None and gpu.max_seqs == 8  # vLLM measures the device itself
    with pytest.raises(ConfigError, match="--kv_cache_gib must be > 0"):
        plan_kv_cache(str(tiny_model_dir), "float32", [100], max_seqs=8, kv_cache_gib=0, on_gpu=False)


def test_enforce_eager_choices():
    assert resolve_eager("true", 10**12) is True and resolve_eager("false", 1) is False
    assert resolve_eager("auto", 1) is True  # a small job never pays for a compile
    with pytest.raises(ConfigError, match="--enforce_eager"):
        resolve_eager("sometimes", 1)


def test_auto_dtype_is_float32_where_cpu_half_precision_is_slow(monkeypatch):
    import torch

    from mixsd import precision

    assert precision.resolve_dtype("bfloat16", "bfloat16") == "bfloat16"  # an explicit choice is kept
    assert precision.resolve_dtype("auto", "float32") == "auto"  # nothing to decide
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(precision, "cpu_half_precision_is_fast", lambda name: False)
    assert precision.resolve_dtype("auto", "bfloat16") == "float32"
    monkeypatch.setattr(precision, "cpu_half_precision_is_fast", lambda name: True)
    assert precision.resolve_dtype("auto", "bfloat16") == "auto"


def test_half_precision_speed_is_measured_not_guessed():
    from mixsd.precision import _seconds_per_matmul, cpu_half_precision_is_fast

    assert _seconds_per_matmul("float32") > 0
    assert isinstance(cpu_half_precision_is_fast("bfloat16"), bool)
