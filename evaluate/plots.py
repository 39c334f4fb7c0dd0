"""The PNG figures of a report. Each function takes plain numbers and writes one file atomically."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402

from evaluate.scoring import ERROR_MODES  # noqa: E402
from mixsd.atomic import atomic_path  # noqa: E402


def _save(figure, path: Path) -> Path:
    figure.tight_layout()
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=120)
    plt.close(figure)
    return path


def nll_cdf(per_method: dict[str, list[float]], path: Path) -> Path:
    """Empirical CDF of per-token target NLL under the base model, one line per method."""
    figure, axes = plt.subplots(figsize=(6, 4))
    for label, values in per_method.items():
        ordered = sorted(values)
        axes.step(
            ordered,
            [(i + 1) / len(ordered) for i in range(len(ordered))],
            where="post",
            label=f"{label} (mean {sum(ordered) / len(ordered):.2f})",
        )
    axes.set(
        xscale="symlog",
        xlabel="per-token NLL under the base model (nats)",
        ylabel="fraction of tokens ≤ x",
        title="Target NLL given the naive prompt",
    )
    axes.legend()
    return _save(figure, path)


def fisher_bars(per_method: dict[str, dict[str, float]], path: Path) -> Path:
    """Fisher-weighted movement per layer group (bars side by side per method), total in the legend."""
    groups = sorted({g for movement in per_method.values() for g in movement})
    figure, axes = plt.subplots(figsize=(min(14, max(6, 0.12 * len(groups) * max(1, len(per_method)))), 4))
    width = 0.8 / max(1, len(per_method))
    for k, (label, movement) in enumerate(per_method.items()):
        axes.bar(
            [i + k * width for i in range(len(groups))],
            [movement.get(g, 0.0) for g in groups],
            width,
            label=f"{label} (total {sum(movement.values()):.3g})",
        )
    axes.set_xticks([i + 0.4 - width / 2 for i in range(len(groups))], groups, rotation=90, fontsize=7)
    axes.set(ylabel="Σ F·Δθ²", title="Fisher-weighted parameter movement (final checkpoints)")
    axes.legend()
    return _save(figure, path)


def tradeoff(curves: dict[str, list[tuple[float, float]]], base: tuple[float, float], path: Path) -> Path:
    """Train accuracy (x) against average retention (y) over checkpoints; the base model dashed."""
    figure, axes = plt.subplots(figsize=(6, 4.5))
    for label, points in curves.items():
        axes.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=label)
    axes.axhline(base[1], linestyle="--", color="grey", label="base model retention")
    axes.axvline(base[0], linestyle=":", color="grey", label="base model train accuracy")
    axes.set(
        xlabel="train accuracy (memorization)",
        ylabel="average retention (tuned / base)",
        title="Accuracy–retention trade-off over checkpoints",
    )
    axes.legend(fontsize=8)
    return _save(figure, path)


def error_modes(counts: dict[str, dict[str, dict[str, int]]], path: Path) -> Path:
    """Stacked bars of wrong held-out answers by error mode, one bar per (method, task)."""
    bars = [(method, task, modes) for method, tasks in counts.items() for task, modes in sorted(tasks.items())]
    figure, axes = plt.subplots(figsize=(max(6, 0.5 * len(bars)), 4.5))
    bottoms = [0] * len(bars)
    for mode in ERROR_MODES:
        heights = [modes.get(mode, 0) for _, _, modes in bars]
        axes.bar(range(len(bars)), heights, bottom=bottoms, label=mode)
        bottoms = [b + h for b, h in zip(bottoms, heights)]
    axes.set_xticks(range(len(bars)), [f"{m}\n{t}" for m, t, _ in bars], rotation=90, fontsize=7)
    axes.set(ylabel="wrong answers", title="Error modes of wrong held-out answers (final checkpoints)")
    axes.legend()
    return _save(figure, path)


def tradeoff_bands(curves: dict[str, list[dict]], path: Path) -> Path:
    """Mean train accuracy (x) against mean held-out retention (y) over checkpoints, one curve per method, the
    band spanning the seeds' lowest and highest retention at each checkpoint; the base model's retention is 1."""
    figure, axes = plt.subplots(figsize=(6, 4.5))
    for label, points in curves.items():
        x = [p["train accuracy"] for p in points]
        (line,) = axes.plot(x, [p["retention"] for p in points], marker="o", label=label)
        axes.fill_between(
            x,
            [p["retention range"][0] for p in points],
            [p["retention range"][1] for p in points],
            color=line.get_color(),
            alpha=0.2,
        )
    axes.axhline(1.0, linestyle="--", color="grey", label="base model")
    axes.set(
        xlabel="train accuracy (memorization), mean over seeds",
        ylabel="held-out retention (tuned / base)",
        title="Accuracy–retention trade-off over checkpoints",
    )
    axes.legend(fontsize=8)
    return _save(figure, path)
