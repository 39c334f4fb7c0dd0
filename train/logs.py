"""Where the training loop's per-step numbers go: `metrics.jsonl` always; TensorBoard event files next to it
(`--log tensorboard`); Weights & Biases in offline mode (`--log wandb`, where the package is installed); and
the progress line (loss, lr, tokens/s, MFU where the device's peak is known, ETA)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

from mixsd.config import ConfigError

SINKS = ("tensorboard", "wandb")
_PACKAGES = {"tensorboard": "tensorboard", "wandb": "wandb"}


def parse_sinks(value: str) -> list[str]:
    """`--log tensorboard,wandb` → the extra sinks, checked (and their packages found) before any step."""
    sinks = [s.strip() for s in value.split(",") if s.strip()]
    unknown = [s for s in sinks if s not in SINKS]
    if unknown:
        raise ConfigError(f"--log: unknown {unknown}; choose from {list(SINKS)} (metrics.jsonl is always written)")
    for sink in sinks:
        if importlib.util.find_spec(_PACKAGES[sink]) is None:
            raise ConfigError(
                f"--log {sink}: the `{_PACKAGES[sink]}` package is not installed (pip install {_PACKAGES[sink]})"
            )
    return sinks


class StepLog:
    """One record per step to every sink. On resume, what was logged after the checkpoint is dropped (the
    JSON lines are cut, TensorBoard purges the later steps), so every curve stays whole."""

    def __init__(self, out: Path, sinks: list[str], keep_through: int, enabled: bool, run_config: dict):
        self.path, self.enabled, self.writers = out / "metrics.jsonl", enabled, []
        if not enabled:
            return
        out.mkdir(parents=True, exist_ok=True)
        kept = []
        if self.path.exists():
            lines = self.path.read_text().splitlines()
            kept = [line for line in lines if line and json.loads(line)["step"] <= keep_through]
        self.path.write_text("".join(line + "\n" for line in kept))
        if "tensorboard" in sinks:
            from torch.utils.tensorboard import SummaryWriter

            self.writers.append(_TensorBoard(SummaryWriter(log_dir=str(out), purge_step=keep_through + 1)))
        if "wandb" in sinks:
            self.writers.append(_WandB(out, run_config))

    def write(self, record: dict) -> None:
        if not self.enabled:
            return
        with self.path.open("a") as handle:
            handle.write(json.dumps(record) + "\n")
        for writer in self.writers:
            writer.write(record)

    def close(self) -> None:
        for writer in self.writers:
            writer.close()
        self.writers = []


class _TensorBoard:
    def __init__(self, writer):
        self.writer = writer

    def write(self, record: dict) -> None:
        for key, value in record.items():
            if key != "step" and isinstance(value, (int, float)):
                self.writer.add_scalar(f"train/{key}", value, record["step"])
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class _WandB:
    """Offline: nothing leaves the machine; `wandb sync OUT/wandb/offline-run-*` uploads it later. A resumed
    training run starts a new offline W&B run, whose first step is the one after the checkpoint."""

    def __init__(self, out: Path, run_config: dict):
        import wandb

        self.run = wandb.init(project="mixsd", name=out.name, dir=str(out), mode="offline", config=run_config)

    def write(self, record: dict) -> None:
        self.run.log({f"train/{k}": v for k, v in record.items() if k != "step"}, step=record["step"])

    def close(self) -> None:
        self.run.finish()


def progress_fields(record: dict) -> dict[str, str]:
    """The progress line's numbers for one step (tqdm adds steps done, rate and ETA)."""
    fields = {"loss": f"{record['loss']:.4f}", "lr": f"{record['lr']:.2e}", "tok_s": f"{record['tokens_per_s']:.0f}"}
    if "mfu" in record:
        fields["mfu"] = f"{record['mfu']:.1%}"
    return fields
