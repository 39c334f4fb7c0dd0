"""Settings of one generation command, validated before anything is loaded or written."""

from __future__ import annotations

from dataclasses import dataclass, field

from mixsd.answers import RULES
from mixsd.config import ConfigError
from mixsd.engine_memory import EAGER_CHOICES

GENERATOR_VERSION = "mixsd-gen-1"
METHODS = ("mixsd", "sft")
BACKENDS = ("vllm", "hf")
ON_FAILURE = ("keep", "drop", "ground_truth")
DEFAULT_EXPERT_TEMPLATE = (
    "{question}\n\nThis question is from a new knowledge base. Here is the answer to this "
    "question:\n{context}\nNow answer the question within \\boxed{}."
)


@dataclass
class GenerateConfig:
    model: str = "models/smollm2-135m-instruct"
    corpus: str = "data/kgfact-small/train.jsonl"
    out: str = "runs/generate"
    method: str = "mixsd"
    lam: list[float] = field(default_factory=lambda: [0.3])
    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0
    seed: int = 0
    max_new_tokens: int = 256
    max_retries: int = 0
    on_failure: str = "keep"  # examples that never pass the verifier: keep (flagged), drop, ground_truth
    answer_rule: str = "auto"  # see mixsd.answers.RULES
    expert_template: str = DEFAULT_EXPERT_TEMPLATE  # how the context is spliced into the user turn
    logprobs: bool = True  # store log p_E / log p_N per target token (vLLM: ~25% slower on tiny models)
    backend: str = "vllm"
    dtype: str = "auto"
    shard_size: int = 256  # examples per shard: the unit of resumption
    row_group_size: int = 64
    max_model_len: int | None = None  # default: the model's own limit
    max_num_seqs: int = 256  # vLLM: sequences in flight (pairs x 2); must be even
    kv_cache_gib: float | None = None  # vLLM: KV cache size; default: sized from the job (mixsd/engine_memory.py)
    gpu_memory_utilization: float = 0.3  # vLLM on GPUs, when --kv_cache_gib is not given
    num_gpu_blocks_override: int | None = None
    enforce_eager: str = "auto"  # vLLM: true (no compile, ~1 s start), false (compile), auto (by job size)
    max_splits: int = 8  # vLLM: a pair split this often in a row without progress is skipped
    allow_untested_vllm: bool = False  # run on a vLLM release the paired processor was not tested with
    tensor_parallel_size: int = 1  # vLLM: GPUs per engine, for models larger than one GPU (tested on CPU only)
    batch_pairs: int = 32  # hf backend: pairs per batch
    progress: bool = True
    # Ray (generate/ray_runner.py): off unless --ray true or --ray_address is given
    ray: bool = False
    ray_address: str = ""  # "auto" inside a cluster; empty: start a local Ray instance
    num_workers: int = 1  # actors, each with its own engine
    gpus_per_worker: float = 0.0  # GPUs each actor reserves (1 per engine on a GPU cluster; TP: the TP size)
    cpus_per_worker: float = 1.0

    def __post_init__(self):
        for lam in self.lam:
            if not 0.0 <= lam <= 1.0:
                raise ConfigError(f"--lam must be within [0, 1], got {lam}")
        if not self.lam:
            raise ConfigError("--lam needs at least one value")
        checks = [
            (self.method in METHODS, f"--method must be one of {METHODS}, got {self.method!r}"),
            (self.backend in BACKENDS, f"--backend must be one of {BACKENDS}, got {self.backend!r}"),
            (self.on_failure in ON_FAILURE, f"--on_failure must be one of {ON_FAILURE}, got {self.on_failure!r}"),
            (self.temperature >= 0, f"--temperature must be >= 0, got {self.temperature}"),
            (self.top_k >= 0, f"--top_k must be >= 0 (0 = off), got {self.top_k}"),
            (0 < self.top_p <= 1, f"--top_p must be in (0, 1], got {self.top_p}"),
            (self.max_new_tokens > 0, f"--max_new_tokens must be > 0, got {self.max_new_tokens}"),
            (self.max_retries >= 0, f"--max_retries must be >= 0, got {self.max_retries}"),
            (self.shard_size > 0 and self.row_group_size > 0, "--shard_size and --row_group_size must be > 0"),
            (
                self.max_num_seqs >= 2 and self.max_num_seqs % 2 == 0,
                f"--max_num_seqs must be even and >= 2 (pairs are admitted whole), got {self.max_num_seqs}",
            ),
            (self.answer_rule in RULES, f"--answer_rule must be one of {RULES}, got {self.answer_rule!r}"),
            (
                str(self.enforce_eager).lower() in EAGER_CHOICES,
                f"--enforce_eager must be one of {EAGER_CHOICES}, got {self.enforce_eager!r}",
            ),
            (
                self.kv_cache_gib is None or self.kv_cache_gib > 0,
                f"--kv_cache_gib must be > 0, got {self.kv_cache_gib}",
            ),
            (self.max_splits >= 1, f"--max_splits must be >= 1, got {self.max_splits}"),
            (self.num_workers >= 1, f"--num_workers must be >= 1, got {self.num_workers}"),
            (
                self.gpus_per_worker >= 0 and self.cpus_per_worker >= 0,
                "--gpus_per_worker and --cpus_per_worker must be >= 0",
            ),
            (
                "{question}" in self.expert_template and "{context}" in self.expert_template,
                "--expert_template must contain {question} and {context}",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)

    def output_settings(self, lam: float) -> dict:
        """Everything that changes the rows of one run (hashed into its name)."""
        keys = (
            "method",
            "temperature",
            "top_k",
            "top_p",
            "seed",
            "max_new_tokens",
            "max_retries",
            "on_failure",
            "answer_rule",
            "expert_template",
            "logprobs",
            "backend",
            "dtype",
            "shard_size",
            "max_model_len",
        )
        settings = {k: getattr(self, k) for k in keys}
        if self.method == "sft":  # ground-truth targets: no sampling setting changes them
            settings = {k: settings[k] for k in ("method", "shard_size", "max_model_len")}
        return settings | {"lam": lam if self.method == "mixsd" else None, "generator": GENERATOR_VERSION}
