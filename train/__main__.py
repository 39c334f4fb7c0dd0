"""`python -m train --model M --shards RUN_DIR [RUN_DIR …] --out DIR --method mixsd --lr 1e-5 …`
(or `--config configs/X.yaml`); under `torchrun --nproc_per_node N` it trains with DDP."""

from __future__ import annotations

import sys

from mixsd import config as cfg
from mixsd.cli import join_list_flags, run_cli
from train.config import TrainConfig
from train.trainer import train


def main_command(config: str | None = None, **flags) -> None:
    settings = cfg.load(TrainConfig, config, "train", **flags)
    print(cfg.describe(settings))
    print(train(settings))


def main() -> None:
    run_cli(main_command, join_list_flags(sys.argv[1:], names=("--shards",)))


if __name__ == "__main__":
    main()
