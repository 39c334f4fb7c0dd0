"""`python -m generate --model M --corpus FILE.jsonl --out DIR --lam 0.3 …` (or `--config configs/X.yaml`)."""
from __future__ import annotations

import sys

import fire

from corpora.schema import CorpusError
from generate.config import GenerateConfig
from generate.runner import Generator, ModelLoadError
from generate.shards import RunDirError
from mixsd import config as cfg


def generate(config: str | None = None, **flags) -> None:
    settings = cfg.load(GenerateConfig, config, "generate", **flags)
    print(cfg.describe(settings))
    for run_dir in Generator(settings).run_all():
        print(run_dir)


def main() -> None:
    try:
        fire.Fire(generate)
    except (CorpusError, cfg.ConfigError, ModelLoadError, RunDirError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
