"""Settings of one evaluation command."""
from __future__ import annotations

from dataclasses import dataclass, field

SPLITS = ("train", "paraphrase", "compositional", "retrieval")
# Part of every result's fingerprint: a change to how models are scored re-scores them instead of reusing.
EVALUATOR_VERSION = "mixsd-eval-2"


@dataclass
class EvalConfig:
    model: str = ""                 # the checkpoint (or any model directory / hub id) to score
    base: str = "models/smollm2-135m-instruct"  # the model it was tuned from: retention is relative to it
    corpus: str = "data/kgfact-small"
    out: str = "runs/evaluate"
    splits: list[str] = field(default_factory=lambda: list(SPLITS))
    split_limit: int = 0            # at most this many items per corpus split (0: all)
    benchmarks: str = ""            # "gsm8k=PATH,mmlu=PATH,…" (local files or hub ids)
    benchmark_limit: int = 0        # at most this many items per benchmark (0: all)
    backend: str = "auto"           # auto (vLLM when installed), vllm, hf
    dtype: str = "auto"
    max_new_tokens: int = 48
    seed: int = 0                   # probe construction
    in_context_probes: int = 40
    arithmetic_probes: int = 45
    drift_tokens: int = 32          # length of the base model's continuation each drift prompt is compared on
    fisher_examples: int = 64       # probe items the diagonal Fisher is averaged over (0: no Fisher movement)
    batch_size: int = 64            # transformers backend and the analyses' forward passes
    max_model_len: int = 2048
    gpu_memory_utilization: float = 0.3
    progress: bool = True

    def __post_init__(self):
        unknown = sorted(set(self.splits) - set(SPLITS))
        if unknown:
            raise ValueError(f"--splits: unknown {unknown}; known: {list(SPLITS)}")
        if self.max_new_tokens < 1:
            raise ValueError(f"--max_new_tokens must be >= 1, got {self.max_new_tokens}")

    def fingerprint_fields(self) -> dict:
        """What decides an evaluation's numbers (not where it is written or how it reports progress)."""
        skip = {"model", "out", "progress", "batch_size", "gpu_memory_utilization"}
        return {k: v for k, v in self.__dict__.items() if k not in skip} | {"evaluator": EVALUATOR_VERSION}
