"""`python -m generate --model M --corpus FILE.jsonl --out DIR --lam 0.3 …` (or `--config configs/X.yaml`);
`--ray true --num_workers N` (or `--ray_address auto` inside a cluster) spreads shards over Ray actors."""

from __future__ import annotations

from generate.config import GenerateConfig
from generate.runner import Generator
from mixsd import config as cfg
from mixsd.cli import run_cli


def generate(config: str | None = None, **flags) -> None:
    settings = cfg.load(GenerateConfig, config, "generate", **flags)
    print(cfg.describe(settings))
    if settings.ray or settings.ray_address:
        from generate.ray_runner import run_with_ray

        run_dirs = run_with_ray(settings)
    else:
        run_dirs = Generator(settings).run_all()  # local: Ray is never imported
    for run_dir in run_dirs:
        print(run_dir)


def main() -> None:
    run_cli(generate)


if __name__ == "__main__":
    main()
