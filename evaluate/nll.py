"""Per-token negative log-likelihood of training targets under the base model, given the naive prompt
(the fact not in context): how far a method's supervision is from what the model already believes."""
from __future__ import annotations

import torch

from mixsd.batching import left_pad


@torch.no_grad()
def target_nll(model, pairs: list[tuple[list[int], list[int]]], batch_size: int = 16) -> list[list[float]]:
    """pairs: (prompt ids, target ids). Returns the NLL of every target token, per example."""
    device = next(model.parameters()).device
    out: list[list[float]] = []
    for start in range(0, len(pairs), batch_size):
        chunk = pairs[start:start + batch_size]
        sequences = [p + t for p, t in chunk]
        ids, mask, positions = left_pad(sequences, 0, device)
        logprobs = torch.log_softmax(model(input_ids=ids, attention_mask=mask, position_ids=positions).logits.float(), -1)
        width = ids.shape[1]
        for row, (prompt, target) in enumerate(chunk):
            if not target:
                out.append([])
                continue
            first = width - len(target)  # position of the first target token
            predicted = logprobs[row, first - 1:width - 1].gather(1, ids[row, first:width, None]).squeeze(1)
            out.append((-predicted).tolist())
    return out
