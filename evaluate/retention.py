"""The headline retention: which capability probes it averages, its value and its 95% interval.

One definition for the evaluator, its report and `reproduce.summary`. A probe counts when it is held-out
capability (not the training question format) and the base model answers at least MIN_BASE_CORRECT of its
items: below that a ratio moves by whole items (KGFunc's unseen operations at 135M: 4 base-correct of 90, so
one item is 25 points of retention). Drift has no items to count and always counts.

Readers recompute the average from each probe's stored ratio and base score instead of trusting the stored
`retention.average`: results scored before the floor existed (evaluator version 5 wrote them too) stored an
average over every held-out probe, and re-scoring them would cost hours of generation for the same answers.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

from evaluate import intervals
from mixsd.errors import UserError

MIN_BASE_CORRECT = 100
DRIFT = "drift"


def under_floor(probe: dict) -> bool:
    """A probe entry of metrics["held_out"] whose base model answers fewer than MIN_BASE_CORRECT items."""
    return round(probe["base_score"] * probe["n"]) < MIN_BASE_CORRECT


def left_out(probe: dict) -> bool:
    """A held-out capability probe that is reported but not averaged: under the floor."""
    return not probe["in_distribution"] and under_floor(probe)


def averaged_probes(held_out: dict[str, dict]) -> list[str]:
    """The probes (in `held_out`'s order, then drift) whose ratios make the headline average."""
    return [t for t, entry in held_out.items() if not entry["in_distribution"] and not under_floor(entry)] + [DRIFT]


def floor_note(held_out: dict[str, dict]) -> str:
    """A sentence naming the held-out probes left out of the average for their size ("" when none is)."""
    under = [f"{t} ({round(e['base_score'] * e['n'])} of {e['n']})" for t, e in held_out.items() if left_out(e)]
    if not under:
        return ""
    return (
        f"Reported but not averaged, the base model answering fewer than {MIN_BASE_CORRECT} of their items: "
        + ", ".join(under)
        + "."
    )


def headline_average(metrics: dict) -> float | None:
    """The mean retention ratio over `averaged_probes`; None without probes (corpus splits only)."""
    if not metrics.get("held_out") and metrics.get("drift") is None:
        return None
    ratios = metrics["retention"]
    values = [ratios[t] for t in averaged_probes(metrics["held_out"]) if ratios.get(t) is not None]
    return statistics.fmean(values) if values else None


def headline_interval(metrics: dict, answers: Path, base_answers: Path) -> list[float] | None:
    """The average's paired-bootstrap 95% interval: the stored one where it was computed over the same probes,
    else recomputed from the item answers of the tuned and the base model (the same draws the evaluator
    makes, so a stored interval over these probes is reproduced exactly)."""
    stored = metrics.get("retention_average") or {}
    averaged = averaged_probes(metrics.get("held_out") or {})
    if set(stored.get("probes") or []) == set(averaged):  # metrics.json sorts keys: the order is not kept
        return stored.get("interval")
    if not stored:
        return None
    probes = paired_probe_answers(answers, base_answers, list(metrics["held_out"]))
    return intervals.retention_intervals(probes, metrics["drift"].get("per_prompt", []), averaged)["average"]


def paired_probe_answers(
    answers: Path, base_answers: Path, probes: list[str]
) -> dict[str, tuple[list[bool], list[bool]]]:
    """probe -> (tuned correct, base correct) per item, as the evaluator pairs them: general-knowledge items
    only where the base model is right, probes in the order their first item appears."""
    tuned, base = _read_answers(answers), _read_answers(base_answers)
    kept_general = {i for i, r in base.items() if r["task"] == "general_knowledge" and r["correct"]}
    paired: dict[str, tuple[list[bool], list[bool]]] = {}
    for item_id, record in tuned.items():
        task = record["task"]
        if task not in probes or (task == "general_knowledge" and item_id not in kept_general):
            continue
        if item_id not in base:
            raise UserError(f"{base_answers}: no answer for item {item_id!r} that {answers} has")
        tuned_side, base_side = paired.setdefault(task, ([], []))
        tuned_side.append(record["correct"])
        base_side.append(base[item_id]["correct"])
    return paired


def _read_answers(path: Path) -> dict[str, dict]:
    return {r["id"]: r for r in (json.loads(line) for line in path.read_text().splitlines() if line.strip())}
