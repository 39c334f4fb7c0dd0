"""`python -m evaluate.sweep --runs TRAIN_DIR [TRAIN_DIR …] --out DIR --base M --corpus DIR`

Scores the base model and every checkpoint of the given training runs with one evaluator (one engine: the
weights are swapped between checkpoints). Results land in OUT/base/ and OUT/<run>/step-NNNNNN/; a result that
already exists with the same settings is reused, so a rerun only scores new checkpoints.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from evaluate.config import EvalConfig
from evaluate.evaluator import EvalError, Evaluator
from evaluate.results import read_result, summary_line, write_result
from mixsd import config as cfg
from mixsd.checkpoints import checkpoints
from mixsd.cli import join_list_flags, run_cli
from mixsd.lock import output_lock


def planned(runs: list[str], out: Path, base: str) -> list[tuple[str, Path]]:
    """(model path, result directory) for the base model and every complete checkpoint, in order."""
    plan = [(base, out / "base")]
    for run in runs:
        found = checkpoints(Path(run))
        if not found:
            raise EvalError(f"{run}: no checkpoints (step-NNNNNN directories with a trainer state)")
        plan += [(str(step), out / Path(run).name / step.name) for step in found]
    return plan


def sweep(runs: list[str], config: EvalConfig) -> list[Path]:
    with output_lock(config.out, f"evaluation sweep {config.out}"):
        return _sweep(runs, config)


def _sweep(runs: list[str], config: EvalConfig) -> list[Path]:
    out = Path(config.out)
    plan = planned(runs, out, config.base)
    todo = [(model, target) for model, target in plan if read_result(target, config, model) is None]
    print(f"{len(plan)} models, {len(plan) - len(todo)} already scored with these settings")
    if not todo:
        return [target for _, target in plan]
    evaluator = Evaluator(config, models=len(todo))
    start = time.perf_counter()
    for done, (model, target) in enumerate(todo, start=1):
        metrics, records = evaluator.evaluate(model)
        write_result(target, config, model, metrics, records)
        rate = done / (time.perf_counter() - start)
        print(
            f"[{done}/{len(todo)}] {summary_line(model, metrics)} | {rate * 60:.1f} models/min, "
            f"ETA {(len(todo) - done) / rate:.0f} s",
            flush=True,
        )
    return [target for _, target in plan]


def main_command(runs: str | list[str], config: str | None = None, **flags) -> None:
    settings = cfg.load(EvalConfig, config, "evaluate", **flags)
    run_list = runs.split(",") if isinstance(runs, str) else [str(r) for r in runs]
    print(cfg.describe(settings))
    sweep(run_list, settings)


def main() -> None:
    run_cli(main_command, join_list_flags(sys.argv[1:], names=("--runs",)))


if __name__ == "__main__":
    main()
