"""Which dtype `--dtype auto` means on this machine.

On a GPU, or a CPU with native bf16 (AVX512-BF16, AMX), a model's own bf16 is fast. On a CPU without it
(e.g. AVX2 only), torch multiplies bf16 matrices through a slow fallback: on the 2-core AMD EPYC (AVX2) this
project was tested on, 0.9 GFLOP/s against 139 GFLOP/s in float32, and SmolLM2 decoding ran at ~37 tokens/s
in bf16. So `auto` on CPU measures one small matmul in both precisions once per process and takes float32
when bf16 is more than twice as slow.
"""

from __future__ import annotations

import functools
import time


def resolve_dtype(dtype: str, model_dtype: str | None = None) -> str:
    """The dtype an engine should run in: an explicit choice as given; `auto` is the model's own dtype,
    except float32 on a CPU whose bf16/fp16 matrix products are slow."""
    if dtype != "auto":
        return dtype
    import torch

    if torch.cuda.is_available() or model_dtype not in ("bfloat16", "float16"):
        return "auto"
    return "auto" if cpu_half_precision_is_fast(model_dtype) else "float32"


def training_dtype(dtype: str, device) -> str:
    """The autocast precision training runs in: an explicit choice as given; `auto` is bfloat16 on a GPU that
    has it and on a CPU whose bf16 matrix products are fast, float32 elsewhere (bf16 autocast on an AVX2-only
    CPU made a SmolLM2 training step ~20x slower than float32: 195 s against ~9 s)."""
    if dtype != "auto":
        return dtype
    import torch

    if device.type == "cuda":
        return "bfloat16" if torch.cuda.is_bf16_supported() else "float32"
    return "bfloat16" if cpu_half_precision_is_fast("bfloat16") else "float32"


@functools.cache
def cpu_half_precision_is_fast(name: str = "bfloat16") -> bool:
    return _seconds_per_matmul(name) < 2 * _seconds_per_matmul("float32")


def _seconds_per_matmul(name: str, size: int = 256, repeats: int = 3) -> float:
    import torch

    dtype = getattr(torch, name)
    a, b = torch.randn(size, size).to(dtype), torch.randn(size, size).to(dtype)
    a @ b  # first call: kernel selection, allocation
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return (time.perf_counter() - start) / repeats
