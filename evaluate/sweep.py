"""`python -m evaluate.sweep --runs TRAIN_DIR [TRAIN_DIR …] --out DIR --base M --corpus DIR`

Scores the base model and every checkpoint of the given training runs with one evaluator (one engine: the
weights are swapped between checkpoints). Results land in OUT/base/ and OUT/<run>/step-NNNNNN/; a result that
already exists with the same settings is reused, so a rerun only scores new checkpoints. With
`--checkpoint_splits train` the checkpoints before each run's last are scored on the train split and the probes
only (what the trade-off curve plots); the corpus's long splits (retrieval: ~870-token prompts) are scored on
the base model and each run's last checkpoint.
"""

from __future__ import annotations

import sys
import time
from dataclasses import replace
from pathlib import Path

from evaluate.config import EvalConfig
from evaluate.evaluator import EvalError, Evaluator
from evaluate.results import read_result, summary_line, write_result
from mixsd import config as cfg
from mixsd.checkpoints import checkpoints
from mixsd.cli import join_list_flags, run_cli
from mixsd.lock import output_lock


def planned(runs: list[str], out: Path, base: str) -> list[tuple[str, Path, bool]]:
    """(model path, result directory, whether it gets every split) for the base model and every complete
    checkpoint, in order: the base model and each run's last checkpoint get every split."""
    plan = [(base, out / "base", True)]
    for run in runs:
        found = checkpoints(Path(run))
        if not found:
            raise EvalError(f"{run}: no checkpoints (step-NNNNNN directories with a trainer state)")
        plan += [(str(step), out / Path(run).name / step.name, step == found[-1]) for step in found]
    return plan


def settings_for(config: EvalConfig, full: bool) -> EvalConfig:
    """The settings a model is scored and stored with: `--checkpoint_splits` at a checkpoint that is not its
    run's last, the sweep's own settings otherwise."""
    if full or not config.checkpoint_splits:
        return config
    return replace(config, splits=list(config.checkpoint_splits))


def stored(target: Path, config: EvalConfig, model: str, full: bool) -> dict | None:
    """A result already there for these weights: with the settings this model gets, or with every split
    (a run's former last checkpoint, scored in full before training went on)."""
    return read_result(target, settings_for(config, full), model) or read_result(target, config, model)


def sweep(runs: list[str], config: EvalConfig) -> list[Path]:
    with output_lock(config.out, f"evaluation sweep {config.out}"), Sweep(config) as scorer:
        return scorer.score(runs)


class Sweep:
    """One evaluator for any number of `score` calls: the base model's side is computed once, when the first
    model needs scoring. A pipeline that scores each run as soon as it is trained (python -m reproduce), to
    delete weights it no longer needs, keeps one Sweep per output directory (and holds its lock), closing it
    before any other vLLM engine starts in the process."""

    def __init__(self, config: EvalConfig):
        self.config, self.evaluator = config, None

    def __enter__(self) -> "Sweep":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Shuts the evaluator's engine down (one vLLM engine per process at a time: VLLMGreedy.close)."""
        if self.evaluator is not None:
            self.evaluator.close()
            self.evaluator = None

    def score(self, runs: list[str]) -> list[Path]:
        """Scores the base model and every checkpoint of `runs` not already scored with these settings;
        returns every result directory."""
        config = self.config
        plan = planned(runs, Path(config.out), config.base)
        todo = [(model, target, full) for model, target, full in plan if stored(target, config, model, full) is None]
        light = sum(not full for *_, full in todo) if config.checkpoint_splits else 0
        print(
            f"{len(plan)} models, {len(plan) - len(todo)} already scored with these settings"
            + (f"; {light} scored on {config.checkpoint_splits} and the probes only" if light else "")
        )
        if todo and self.evaluator is None:
            self.evaluator = Evaluator(config, models=len(todo))  # the first call's count: --enforce_eager auto
        start = time.perf_counter()
        for done, (model, target, full) in enumerate(todo, start=1):
            settings = settings_for(config, full)
            metrics, records = self.evaluator.evaluate(model, None if settings is config else settings.splits)
            write_result(target, settings, model, metrics, records)
            rate = done / (time.perf_counter() - start)
            print(
                f"[{done}/{len(todo)}] {summary_line(model, metrics)} | {rate * 60:.1f} models/min, "
                f"ETA {(len(todo) - done) / rate:.0f} s",
                flush=True,
            )
        return [target for _, target, _ in plan]


def main_command(runs: str | list[str], config: str | None = None, **flags) -> None:
    settings = cfg.load(EvalConfig, config, "evaluate", **flags)
    run_list = runs.split(",") if isinstance(runs, str) else [str(r) for r in runs]
    print(cfg.describe(settings))
    sweep(run_list, settings)


def main() -> None:
    run_cli(main_command, join_list_flags(sys.argv[1:], names=("--runs",)))


if __name__ == "__main__":
    main()
