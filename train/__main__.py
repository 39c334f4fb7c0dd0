"""`python -m train --model M --shards RUN_DIR [RUN_DIR …] --out DIR --method mixsd --lr 1e-5 …`
(or `--config configs/X.yaml`); under `torchrun --nproc_per_node N` it trains with DDP."""
from __future__ import annotations

import sys

import fire

from mixsd import config as cfg
from mixsd.cli import join_list_flags
from train.config import TrainConfig
from train.data import DataError
from train.trainer import TrainingError, train


def main_command(config: str | None = None, **flags) -> None:
    settings = cfg.load(TrainConfig, config, "train", **flags)
    print(cfg.describe(settings))
    print(train(settings))


def main() -> None:
    try:
        fire.Fire(main_command, command=join_list_flags(sys.argv[1:], names=("--shards",)))
    except (cfg.ConfigError, DataError, TrainingError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
