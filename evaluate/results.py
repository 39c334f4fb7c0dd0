"""Writing and reading one evaluation's outputs: a directory holding metrics.json and answers.jsonl, written
to a temporary name and renamed, so a directory that exists is complete."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from evaluate.config import EvalConfig
from evaluate.retention import headline_average
from mixsd.atomic import atomic_dir
from mixsd.checksums import model_fingerprint
from mixsd.config import to_dict
from mixsd.versions import versions

METRICS = "metrics.json"
ANSWERS = "answers.jsonl"


def config_hash(config: EvalConfig) -> str:
    return hashlib.sha256(json.dumps(config.fingerprint_fields(), sort_keys=True).encode()).hexdigest()[:10]


def write_result(out: str | Path, config: EvalConfig, model: str, metrics: dict, records: list[dict]) -> Path:
    out = Path(out)
    with atomic_dir(out) as tmp:
        document = {
            "model": str(model),
            "model_fingerprint": model_fingerprint(model),
            "config": to_dict(config),
            "config_hash": config_hash(config),
            "versions": versions(),
            "metrics": metrics,
        }
        (tmp / METRICS).write_text(json.dumps(document, indent=2, sort_keys=True) + "\n")
        (tmp / ANSWERS).write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    return out


def read_result(directory: str | Path, config: EvalConfig | None = None, model: str | None = None) -> dict | None:
    """The stored document, or None when absent, made with other settings, or made for other weights than
    `model` has now (a checkpoint retrained at the same path): then it is recomputed."""
    path = Path(directory) / METRICS
    if not path.is_file():
        return None
    document = json.loads(path.read_text())
    if config is not None and document.get("config_hash") != config_hash(config):
        return None
    if model is not None and document.get("model_fingerprint") != model_fingerprint(model):
        return None
    return document


def summary_line(model: str, metrics: dict) -> str:
    accuracy = " ".join(f"{k} {v:.3f}" for k, v in metrics["accuracy"].items())
    movement = metrics.get("fisher_movement")
    fisher = f"; Fisher movement {movement['total']:.3g}" if movement else ""
    if metrics["drift"] is None:  # corpus splits only (--probes false)
        return f"{model}: accuracy {accuracy}"
    return (
        f"{model}: accuracy {accuracy}; retention average {headline_average(metrics):.3f} "
        f"(KL {metrics['drift']['kl_base_tuned']:.4f}){fisher}"
    )
