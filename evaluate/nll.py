"""Per-token negative log-likelihood of training targets under the base model, given the naive prompt
(the fact not in context): how far a method's supervision is from what the model already believes."""

from __future__ import annotations

import torch

from mixsd.batching import continuation_logprobs


@torch.no_grad()
def target_nll(model, pairs: list[tuple[list[int], list[int]]], batch_size: int = 16) -> list[list[float]]:
    """pairs: (prompt ids, target ids). Returns the NLL of every target token, per example."""
    out: list[list[float]] = []
    for start in range(0, len(pairs), batch_size):
        chunk = pairs[start : start + batch_size]
        distributions = continuation_logprobs(model, [p + t for p, t in chunk], [len(p) for p, _ in chunk])
        for logprobs, (_, target) in zip(distributions, chunk):
            taken = logprobs.gather(1, torch.tensor(target, dtype=torch.long, device=logprobs.device)[:, None])
            out.append((-taken.squeeze(1)).tolist())
    return out
