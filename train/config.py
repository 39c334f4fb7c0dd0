"""Settings of one training command, validated before any step."""

from __future__ import annotations

from dataclasses import dataclass, field

from mixsd.config import ConfigError
from train.logs import parse_sinks

METHODS = ("mixsd", "sft", "opsd")
SCHEDULES = ("constant", "cosine")
DTYPES = ("auto", "bfloat16", "float32")


@dataclass
class TrainConfig:
    model: str = "models/smollm2-135m-instruct"
    shards: list[str] = field(default_factory=list)  # run directories written by `python -m generate`
    out: str = "runs/train"
    method: str = "mixsd"
    lr: float = 1e-5
    batch_size: int = 16  # examples per optimizer step, across all processes
    micro_batch_size: int = 4  # examples per forward pass; the rest is gradient accumulation
    epochs: int = 10
    max_steps: int = 0  # > 0: stop after this many steps, whatever the epochs say
    warmup_steps: int = 10
    schedule: str = "constant"  # after warmup: constant or cosine to 0
    weight_decay: float = 0.01
    betas: list[float] = field(default_factory=lambda: [0.9, 0.95])
    grad_clip: float = 1.0
    dtype: str = "auto"  # autocast precision (auto: bf16 where it is fast); master weights stay float32
    seed: int = 0
    save_every: int = 0  # steps between checkpoints (0: only at the end)
    keep_last: int = 2
    keep_state_last: int = 0  # > 0: only the last N checkpoints keep the resume state (optimizer: 2x the weights)
    resume: bool = False
    device: str = "auto"
    fsdp: bool = False  # under torchrun: shard parameters, gradients and optimizer state (FSDP2)
    progress: bool = True
    # CPU: fixed glibc mmap threshold against heap creep (train/memory.py); 0: off; -1: 1024, or 0 for OPSD, whose
    # rollouts allocate a new KV cache at every decoded token, each block a fresh mapping when the threshold is
    # fixed (KGFunc, 2 cores: 413 s per step against 241 s off, the same loss to the last digit)
    mmap_threshold_kib: int = -1
    include_unverified: bool = False  # SFT/MixSD: also train on targets the generator marked wrong
    log: str = ""  # extra metric sinks besides metrics.jsonl: tensorboard, wandb (comma-separated)
    # OPSD only
    rollouts: int = 8
    rollout_temperature: float = 1.0
    rollout_max_new_tokens: int = 64
    kl_top_k: int = 0  # 0: reverse KL over the full vocabulary; k: over the student's top-k tokens
    # Rollout sequences decoded together. 0: each micro-batch's own (micro_batch_size × rollouts), sampled just
    # before its loss. N: every rollout of the step sampled first, N at a time (fewer, wider decode passes;
    # SmolLM2 on 2 cores: 101 s per OPSD step at 64 against 115 s at 0). The same draws either way: each is keyed
    # by (seed, example, sample, position), not by the rows beside it; only float rounding of the logits, which
    # depends on the batch's shape, can flip a token (SmolLM2, float32: 58 of a step's 64 rollouts identical).
    rollout_batch_size: int = 0

    def __post_init__(self):
        checks = [
            (self.method in METHODS, f"--method must be one of {METHODS}, got {self.method!r}"),
            (self.schedule in SCHEDULES, f"--schedule must be one of {SCHEDULES}, got {self.schedule!r}"),
            (self.dtype in DTYPES, f"--dtype must be one of {DTYPES}, got {self.dtype!r}"),
            (self.lr > 0, f"--lr must be > 0, got {self.lr}"),
            (self.batch_size > 0 and self.micro_batch_size > 0, "--batch_size and --micro_batch_size must be > 0"),
            (self.epochs > 0 or self.max_steps > 0, "--epochs or --max_steps must be > 0"),
            (
                self.warmup_steps >= 0 and self.grad_clip >= 0 and self.weight_decay >= 0,
                "--warmup_steps, --grad_clip and --weight_decay must be >= 0",
            ),
            (len(self.betas) == 2 and all(0 <= b < 1 for b in self.betas), "--betas must be two values in [0, 1)"),
            (
                self.keep_last >= 1 and self.save_every >= 0 and self.keep_state_last >= 0,
                "--keep_last must be >= 1, --save_every and --keep_state_last >= 0",
            ),
            (
                self.rollouts >= 1
                and self.rollout_temperature > 0
                and self.kl_top_k >= 0
                and self.rollout_batch_size >= 0,
                "--rollouts must be >= 1, --rollout_temperature > 0, --kl_top_k and --rollout_batch_size >= 0",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)
        parse_sinks(self.log)
