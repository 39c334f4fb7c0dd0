"""95% intervals for the numbers an evaluation reports: Wilson for an accuracy (k of n), a paired bootstrap
for retention ratios and their average (base and tuned model answer the same items, so items are resampled
together; drift is resampled by prompt)."""

from __future__ import annotations

import math

import numpy as np

Z95 = 1.959964
RESAMPLES = 2000


def wilson(correct: int, n: int, z: float = Z95) -> list[float] | None:
    """Wilson score interval of a proportion; None without items."""
    if n == 0:
        return None
    p = correct / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return [round(max(0.0, centre - half), 6), round(min(1.0, centre + half), 6)]


def _percentiles(values: np.ndarray) -> list[float] | None:
    """The central 95% of the resampled values that are defined (a ratio is undefined where the base model
    scored 0 in the resample); None when most are undefined."""
    defined = values[np.isfinite(values)]
    if len(defined) < RESAMPLES // 2:
        return None
    low, high = np.quantile(defined, [0.025, 0.975])
    return [round(float(low), 6), round(float(high), 6)]


def retention_intervals(
    probes: dict[str, tuple[list[bool], list[bool]]], drift: list[list[int]], averaged: list[str], seed: int = 0
) -> dict[str, list[float] | None]:
    """Paired bootstrap. `probes`: name -> (tuned correct, base correct) per item, in the same item order;
    `drift`: [agreeing positions, positions] per drift prompt; `averaged`: the names (with "drift") whose
    retentions make the headline average. Returns each name's interval and "average"'s."""
    rng = np.random.default_rng(seed)
    resampled: dict[str, np.ndarray] = {}
    for name, (tuned, base) in probes.items():
        if not base:
            continue
        picks = rng.integers(0, len(base), size=(RESAMPLES, len(base)))
        base_scores = np.asarray(base, dtype=float)[picks].sum(1)
        with np.errstate(divide="ignore", invalid="ignore"):
            resampled[name] = np.where(
                base_scores > 0, np.asarray(tuned, dtype=float)[picks].sum(1) / base_scores, np.nan
            )
    if drift:
        counts = np.asarray(drift, dtype=float)
        picks = rng.integers(0, len(counts), size=(RESAMPLES, len(counts)))
        resampled["drift"] = counts[picks, 0].sum(1) / np.maximum(counts[picks, 1].sum(1), 1)
    parts = [resampled[name] for name in averaged if name in resampled]
    out = {name: _percentiles(values) for name, values in resampled.items()}
    out["average"] = _percentiles(np.mean(parts, axis=0)) if parts else None  # NaN where any part is undefined
    return out
