"""Settings of one evaluation command."""

from __future__ import annotations

from dataclasses import dataclass, field

from mixsd.config import ConfigError
from mixsd.engine_memory import EAGER_CHOICES

# Corpus splits by corpus: KGFact's and KGFunc's. Scored as knowledge (accuracy), except HELD_OUT_SPLITS.
CORPUS_SPLITS = {
    "kgfact": ("train", "paraphrase", "compositional", "retrieval"),
    "kgfunc": ("train", "test", "compositional", "unseen"),
}
SPLITS = tuple(dict.fromkeys(s for splits in CORPUS_SPLITS.values() for s in splits))
# KGFunc's operations that were never trained: a capability probe (retention = tuned / base), the paper's
# forgetting measure on that corpus, not knowledge the model was taught.
HELD_OUT_SPLITS = ("unseen",)
# Probes in the training data's own format (questions about facts given in context): reported on their own
# line, not in the headline retention average, which is held-out capability only.
IN_DISTRIBUTION_PROBES = ("in_context",)
# Part of every result's fingerprint: a change to how models are scored re-scores them instead of reusing.
# 3: intervals; the retention average leaves the in-distribution probe out. 4: 164 general-knowledge questions
# (was 102), so the base model answers at least 100 of them (SmolLM2-135M-Instruct: 106). 5: arithmetic of
# one-digit sums and differences, products to 12 × 12, read by the number after the first "=", 240 items.
# Not a version: which probes the headline average takes (evaluate/retention.py's floor). That is arithmetic
# over stored answers, which every reader redoes, so results scored before it are read the same way.
EVALUATOR_VERSION = "mixsd-eval-5"


@dataclass
class EvalConfig:
    model: str = ""  # the checkpoint (or any model directory / hub id) to score
    base: str = "models/smollm2-135m-instruct"  # the model it was tuned from: retention is relative to it
    corpus: str = "data/kgfact-small"
    out: str = "runs/evaluate"
    splits: list[str] = field(default_factory=list)  # empty: every split the corpus has (see corpus_splits)
    # A sweep scores only these corpus splits at checkpoints other than each run's last (empty: every split at
    # every checkpoint). The trade-off curve needs the train split and the probes there; the base model and
    # each run's last checkpoint always get every split. Probes, drift and Fisher movement: every checkpoint.
    checkpoint_splits: list[str] = field(default_factory=list)
    split_limit: int = 0  # at most this many items per corpus split (0: all)
    benchmarks: str = ""  # "gsm8k=PATH,mmlu=PATH,…" (local files or hub ids)
    benchmark_limit: int = 0  # at most this many items per benchmark (0: all)
    backend: str = "auto"  # auto (vLLM when installed), vllm, hf
    dtype: str = "auto"
    max_new_tokens: int = 48  # answer budget of the corpus splits and benchmarks
    # The built-in capability probes' answer budget (None: max_new_tokens). Setting it keeps the probes scored
    # alike on every corpus, e.g. 48 where KGFunc's step-by-step answers need 160.
    probe_max_new_tokens: int | None = None
    seed: int = 0  # probe construction
    probes: bool = True  # false: the corpus splits alone (no capability probes, drift or Fisher)
    in_context_probes: int = 40
    arithmetic_probes: int = 240  # the base model answers at least 100 (see evaluate/probes.py)
    general_knowledge_probes: int = 164  # all 164 questions; fewer (a seeded sample) for cheap smoke runs
    drift_tokens: int = 32  # length of the base model's continuation each drift prompt is compared on
    fisher_examples: int = 64  # probe items the diagonal Fisher is averaged over (0: no Fisher movement)
    batch_size: int = 64  # transformers backend and the analyses' forward passes
    max_model_len: int | None = None  # default: the base model's own limit; longer items are skipped and counted
    kv_cache_gib: float | None = None  # vLLM: KV cache size; default: sized from the items (mixsd/engine_memory.py)
    max_num_seqs: int = 128  # vLLM: sequences in flight at most
    gpu_memory_utilization: float = 0.3  # vLLM on GPUs, when --kv_cache_gib is not given
    enforce_eager: str = "auto"  # vLLM: true (no compile), false (compile), auto (by job size)
    progress: bool = True

    def __post_init__(self):
        for flag, chosen in (("--splits", self.splits), ("--checkpoint_splits", self.checkpoint_splits)):
            unknown = sorted(set(chosen) - set(SPLITS))
            if unknown:
                raise ConfigError(f"{flag}: unknown {unknown}; known: {list(SPLITS)}")
        for flag, value in (("--max_new_tokens", self.max_new_tokens), ("--probe_max_new_tokens", self.probe_budget)):
            if value < 1:
                raise ConfigError(f"{flag} must be >= 1, got {value}")
        if str(self.enforce_eager).lower() not in EAGER_CHOICES:
            raise ConfigError(f"--enforce_eager must be one of {EAGER_CHOICES}, got {self.enforce_eager!r}")
        if self.max_num_seqs < 1:
            raise ConfigError(f"--max_num_seqs must be >= 1, got {self.max_num_seqs}")

    @property
    def probe_budget(self) -> int:
        return self.max_new_tokens if self.probe_max_new_tokens is None else self.probe_max_new_tokens

    def fingerprint_fields(self) -> dict:
        """What decides an evaluation's numbers (not where it is written or how it reports progress)."""
        skip = {
            "model",
            "out",
            "progress",
            "batch_size",
            "gpu_memory_utilization",
            "kv_cache_gib",
            "checkpoint_splits",  # which checkpoints get which splits: each result records its own `splits`
            "max_num_seqs",
            "enforce_eager",
        }
        if self.probe_max_new_tokens in (None, self.max_new_tokens):
            skip.add("probe_max_new_tokens")  # the same answers as before the field existed: the same identity
        return {k: v for k, v in self.__dict__.items() if k not in skip} | {"evaluator": EVALUATOR_VERSION}
