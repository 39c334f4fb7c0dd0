"""One MixSD decoding step for a batch of pairs: pick each pair's source, draw its token.

Both backends call `mix_step` on the raw logits of the expert and naive rows, so they agree token for token
whenever their logits agree.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from mixsd.randomness import Stream, uniforms
from mixsd.run_format import Source


@dataclass
class PairSettings:
    """Per-pair settings as tensors of shape [pairs] (int64 unless noted)."""

    seed: torch.Tensor
    key: torch.Tensor
    sample: torch.Tensor
    lam: torch.Tensor  # float64
    temperature: torch.Tensor  # float32
    top_k: torch.Tensor
    top_p: torch.Tensor  # float32

    @classmethod
    def stack(cls, specs: list[dict], device) -> "PairSettings":
        """From per-pair spec dicts (`PairJob.spec`), as the backends receive them."""

        def column(name, dtype):
            return torch.tensor([s[name] for s in specs], dtype=dtype, device=device)

        return cls(
            seed=column("seed", torch.int64),
            key=column("key", torch.int64),
            sample=column("sample", torch.int64),
            lam=column("lam", torch.float64),
            temperature=column("temperature", torch.float32),
            top_k=column("top_k", torch.int64),
            top_p=column("top_p", torch.float32),
        )


def draw(
    logits: torch.Tensor, temperature: torch.Tensor, top_k: torch.Tensor, top_p: torch.Tensor, u: torch.Tensor
) -> torch.Tensor:
    """Tokens from each row's conditional: argmax at temperature 0, else inverse-CDF sampling with `u`
    after temperature, top-k and top-p."""
    tokens = logits.argmax(dim=-1)
    sampled = temperature > 0
    if not bool(sampled.any()):
        return tokens
    rows = sampled.nonzero(as_tuple=True)[0]
    scaled = logits[rows].float() / temperature[rows, None]
    filtered = (top_k[rows] > 0) | (top_p[rows] < 1)
    plain = rows[~filtered]
    if len(plain):
        tokens[plain] = _inverse_cdf(torch.softmax(scaled[~filtered], dim=-1), u[plain])
    if bool(filtered.any()):
        tokens[rows[filtered]] = _filtered_sample(
            scaled[filtered], top_k[rows[filtered]], top_p[rows[filtered]], u[rows[filtered]]
        )
    return tokens


def _inverse_cdf(probs: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    cdf = probs.double().cumsum(dim=-1)
    target = (u * cdf[:, -1]).unsqueeze(-1)
    return torch.searchsorted(cdf, target).squeeze(-1).clamp_max(probs.shape[-1] - 1)


def _filtered_sample(scaled: torch.Tensor, top_k: torch.Tensor, top_p: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    vocab = scaled.shape[-1]
    k_eff = torch.where(top_k > 0, top_k.clamp_max(vocab), torch.full_like(top_k, vocab))
    width = int(k_eff.max())
    # topk of the widest row needed, not a full-vocabulary sort: the paper's top-k 64 stays cheap.
    values, indices = torch.topk(scaled, width, dim=-1, sorted=True)
    ranks = torch.arange(width, device=scaled.device)
    values = values.masked_fill(ranks >= k_eff[:, None], float("-inf"))
    probs = torch.softmax(values, dim=-1)
    before = probs.cumsum(dim=-1) - probs  # mass strictly above each candidate
    keep = (before < top_p[:, None]) | (ranks == 0)
    probs = probs * keep
    return indices.gather(1, _inverse_cdf(probs, u)[:, None]).squeeze(-1)


def mix_step(
    logits: torch.Tensor,
    expert_rows: torch.Tensor,
    naive_rows: torch.Tensor,
    settings: PairSettings,
    position: torch.Tensor,
    any_sampled: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(token, from_expert) per pair at target `position`: the naive stream's draw with probability λ, else the
    expert's. Pair i's two conditionals are rows `expert_rows[i]` and `naive_rows[i]` of `logits`.

    Only the stream the coin picked is drawn from: both members continue from the mixed token, so the other
    draw would be thrown away (half the sampling work at temperature > 0). Each stream keeps its own
    uniforms, so the token is the one a draw from both streams would have picked.
    `any_sampled=False` (every pair at temperature 0) skips hashing the uniforms no argmax needs."""
    args = (settings.seed, settings.key, settings.sample, position)
    coin = uniforms(*args, Stream.COIN)
    from_expert = coin >= settings.lam
    u = torch.where(from_expert, uniforms(*args, Stream.EXPERT), uniforms(*args, Stream.NAIVE)) if any_sampled else coin
    rows = torch.where(from_expert, expert_rows, naive_rows)
    return draw(logits[rows], settings.temperature, settings.top_k, settings.top_p, u), from_expert


def sources(seed: int, key: int, sample: int, lam: float, length: int) -> list[int]:
    """Per target position, the `Source` of the token (expert or naive): the same coins `mix_step` flipped,
    recomputed from (seed, key, sample, position), so no per-token bookkeeping leaves the engine."""
    coin = uniforms(
        torch.tensor(seed),
        torch.tensor(key),
        torch.tensor(sample),
        torch.arange(length, dtype=torch.int64),
        Stream.COIN,
    )
    return torch.where(coin >= lam, int(Source.EXPERT), int(Source.NAIVE)).to(torch.int8).tolist()
