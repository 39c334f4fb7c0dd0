"""What a backend is asked to decode (a PairJob) and what it returns (a PairResult)."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum


@dataclass(frozen=True)
class PairJob:
    naive_ids: list[int]
    expert_ids: list[int]
    key: int  # randomness key of the example
    sample: int  # sample index (retries use the next one)
    seed: int
    lam: float
    temperature: float
    top_k: int
    top_p: float
    max_tokens: int

    def spec(self, uid: int, role: int, offset: int) -> dict:
        """The per-request settings the logits processor reads from SamplingParams.extra_args."""
        return {
            "uid": uid,
            "role": role,
            "offset": offset,
            "key": self.key,
            "sample": self.sample,
            "seed": self.seed,
            "lam": self.lam,
            "temperature": self.temperature,
            "top_k": self.top_k,
            "top_p": self.top_p,
        }


@dataclass
class PairResult:
    tokens: list[int] = field(default_factory=list)  # the mixed target, EOS excluded
    expert_logprobs: list[float] = field(default_factory=list)  # log p_E(token | x+, prefix), raw logits
    naive_logprobs: list[float] = field(default_factory=list)  # log p_N(token | x, prefix)
    finish_reason: str = "length"  # "stop" (EOS) or "length"
    failure: str | None = None  # why no target could be made (the pair is skipped and listed in the manifest)


class Role(IntEnum):
    """A request's place in its pair (engine bookkeeping; the on-disk `source` column is run_format.Source)."""

    EXPERT = 0
    NAIVE = 1


EXPERT, NAIVE = Role.EXPERT, Role.NAIVE
