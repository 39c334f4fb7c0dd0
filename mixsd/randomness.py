"""Counter-based randomness: every uniform is a hash of (seed, example key, sample index, position, stream).

Nothing depends on batch order, scheduling or retries, so the same config always yields the same targets,
and a λ sweep reuses the same uniforms (common random numbers): two λ values differ only where a coin
compared against them lands between the two.
"""

from __future__ import annotations

import hashlib
from enum import IntEnum

import torch


class Stream(IntEnum):
    """Independent streams of uniforms at one position: the λ coin and each conditional's token draw."""

    COIN = 0  # naive token where coin < λ
    EXPERT = 1  # the expert's sample
    NAIVE = 2  # the naive sample
    ROLLOUT = 3  # OPSD's on-policy rollouts (train/opsd.py)


_MASK64 = (1 << 64) - 1


def _signed(value: int) -> int:
    """A 64-bit constant as the signed int64 that torch stores."""
    value &= _MASK64
    return value - (1 << 64) if value >= 1 << 63 else value


_GOLDEN = _signed(0x9E3779B97F4A7C15)
_MUL1 = _signed(0xBF58476D1CE4E5B9)
_MUL2 = _signed(0x94D049BB133111EB)


def _shift_right(x: torch.Tensor, bits: int) -> torch.Tensor:
    """Logical right shift on int64 (torch's >> is arithmetic)."""
    return (x >> bits) & ((1 << (64 - bits)) - 1)


def _mix(x: torch.Tensor) -> torch.Tensor:
    """The splitmix64 finalizer; int64 multiplication wraps like uint64."""
    x = x ^ _shift_right(x, 30)
    x = x * _MUL1
    x = x ^ _shift_right(x, 27)
    x = x * _MUL2
    return x ^ _shift_right(x, 31)


def example_key(example_id: str) -> int:
    """A stable 63-bit key for an example id (independent of PYTHONHASHSEED)."""
    return int.from_bytes(hashlib.blake2b(example_id.encode(), digest_size=8).digest(), "little") >> 1


def uniforms(
    seed: torch.Tensor, key: torch.Tensor, sample: torch.Tensor, position: torch.Tensor, stream: int
) -> torch.Tensor:
    """Uniforms in [0, 1) as float64, one per element of the broadcast int64 inputs."""
    h = _mix(seed * _GOLDEN + 1)
    h = _mix(h ^ key)
    h = _mix(h ^ (sample * _GOLDEN))
    h = _mix(h ^ (position * 4 + stream))
    return _shift_right(h, 11).to(torch.float64) * (2.0**-53)
