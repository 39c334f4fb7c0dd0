"""`python -m evaluate --model CKPT --base M --corpus DIR --out DIR [--benchmarks gsm8k=PATH,…]`

Scores one model against the base model it was tuned from; writes OUT/metrics.json (with the resolved config
and versions) and OUT/answers.jsonl, and prints a one-line summary. For every checkpoint of several training
runs with one engine, see `python -m evaluate.sweep`.
"""

from __future__ import annotations

from evaluate.config import EvalConfig
from evaluate.evaluator import EvalError, Evaluator, check_model
from evaluate.results import summary_line, write_result
from mixsd import config as cfg
from mixsd.cli import run_cli
from mixsd.lock import output_lock


def evaluate(config: str | None = None, **flags) -> None:
    settings = cfg.load(EvalConfig, config, "evaluate", **flags)
    if not settings.model:
        raise EvalError("--model is required (a checkpoint directory, a model directory or a hub id)")
    print(cfg.describe(settings))
    check_model(settings.model)  # before the base model's side is computed, not after
    with output_lock(settings.out, f"evaluation {settings.out}"):
        evaluator = Evaluator(settings)
        metrics, records = evaluator.evaluate(settings.model)
        write_result(settings.out, settings, settings.model, metrics, records)
    print(summary_line(settings.model, metrics))


def main() -> None:
    run_cli(evaluate)


if __name__ == "__main__":
    main()
