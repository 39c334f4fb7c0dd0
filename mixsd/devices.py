"""Peak dense bf16 throughput of the accelerators we know, for model FLOPs utilization (MFU).

Vendor datasheet figures without sparsity (H100/H200 SXM: 989 TFLOP/s; A100: 312; L40S: 362; L4: 121). A
device not in the table gets no MFU figure rather than a guessed one; CPUs are never listed.
"""

from __future__ import annotations

import torch

PEAK_BF16_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L40S": 362e12, "L4": 121e12}


def peak_flops(device: torch.device) -> float | None:
    """The device's peak bf16 FLOP/s, or None where unknown."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    # Longest key first, so "L40S" is not read as "L4".
    return next((PEAK_BF16_FLOPS[k] for k in sorted(PEAK_BF16_FLOPS, key=len, reverse=True) if k in name), None)


def training_flops_per_token(model: torch.nn.Module) -> float:
    """6 × parameters: forward and backward of a dense decoder, attention's own FLOPs left out (the usual
    approximation; it under-counts long sequences slightly, so MFU errs low)."""
    return 6.0 * sum(p.numel() for p in model.parameters())
