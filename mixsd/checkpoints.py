"""The contract between train and the stages that read its output: the layout of a training directory.

OUT/train_config.json     the run: resolved config, versions, data counts, the shard runs it read
OUT/metrics.jsonl         one line per step
OUT/step-NNNNNN/          a checkpoint: a Hugging Face model directory (vLLM and transformers load it) plus
    trainer_state.pt      what resuming needs (optimizer, scheduler, RNG, data position); only in the last
                          `--keep_state_last` checkpoints when that is set (an optimizer state is 2× the weights)
    checkpoint.json       the config and versions that wrote this checkpoint, and its step
    pruned_weights.json   only where the weights were deleted after scoring (`prune_weights`): their identity
A checkpoint directory only gets its final name once complete, so a listed one is whole.
"""

from __future__ import annotations

import json
from pathlib import Path

from mixsd.atomic import write_json
from mixsd.checksums import PRUNED_FINGERPRINT_FILE, WEIGHT_SUFFIXES, model_fingerprint

RUN_INFO_FILE = "train_config.json"
STATE_FILE = "trainer_state.pt"
CHECKPOINT_INFO_FILE = "checkpoint.json"
_OLD_CHECKPOINT_INFO_FILE = "train_config.json"  # before the rename: two documents of one name, told apart


def step_dir(out: Path, step: int) -> Path:
    return Path(out) / f"step-{step:06d}"


def step_of(directory: Path) -> int:
    return int(Path(directory).name.split("-")[1])


def checkpoints(out: str | Path) -> list[Path]:
    """Complete checkpoints, oldest first (an older one may have had its resume state removed: see
    `resumable`)."""
    names = (CHECKPOINT_INFO_FILE, _OLD_CHECKPOINT_INFO_FILE)
    return sorted(p for p in Path(out).glob("step-*") if any((p / n).is_file() for n in names))


def resumable(out: str | Path) -> list[Path]:
    """Complete checkpoints that still hold the state a run resumes from, oldest first."""
    return [p for p in checkpoints(out) if (p / STATE_FILE).is_file()]


def checkpoint_info(directory: Path) -> dict:
    """{config, step, versions} of one checkpoint (also from checkpoints written before the rename)."""
    for name in (CHECKPOINT_INFO_FILE, _OLD_CHECKPOINT_INFO_FILE):
        path = Path(directory) / name
        if path.is_file():
            return json.loads(path.read_text())
    raise FileNotFoundError(f"{directory}: no {CHECKPOINT_INFO_FILE}")


def run_info(out: str | Path) -> dict | None:
    """OUT/train_config.json, or None where OUT is not a training run."""
    path = Path(out) / RUN_INFO_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def prune_weights(directory: Path, keep_weights: bool = False) -> int:
    """Frees a scored checkpoint's disk: deletes its resume state and, unless `keep_weights`, its weights,
    leaving their fingerprint so that the results scored from them stay theirs. The fingerprint is written
    before anything is deleted, so an interruption leaves either the weights or their record. Returns bytes
    freed."""
    directory = Path(directory)
    doomed = [directory / STATE_FILE] if (directory / STATE_FILE).is_file() else []
    if not keep_weights:
        weights = [p for p in directory.iterdir() if p.suffix in WEIGHT_SUFFIXES]
        if weights:
            write_json(directory / PRUNED_FINGERPRINT_FILE, model_fingerprint(directory))
        doomed += weights
    freed = sum(p.stat().st_size for p in doomed)
    for path in doomed:
        path.unlink()
    return freed


def has_weights(directory: Path) -> bool:
    return any(p.suffix in WEIGHT_SUFFIXES for p in Path(directory).iterdir())
