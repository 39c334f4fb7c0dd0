"""Label-free drift on held-out general prompts: how far the tuned model's next-token distributions moved.

For each prompt the base model writes a greedy continuation; both models then read prompt + continuation
(teacher forcing, so they are compared on the same text), and at every position that predicts a continuation
token we take KL(base || tuned) of the next-token distributions and whether their argmax tokens agree.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from mixsd.batching import left_pad


@dataclass
class DriftReference:
    """The base model's side, computed once: the texts to compare on and the base log-probabilities there."""

    sequences: list[list[int]]
    prompt_lengths: list[int]
    base_logprobs: list[torch.Tensor]  # [continuation length, vocab] per prompt


@torch.no_grad()
def reference(base_model, prompts: list[list[int]], continuations: list[list[int]]) -> DriftReference:
    sequences = [p + c for p, c in zip(prompts, continuations)]
    lengths = [len(p) for p in prompts]
    return DriftReference(sequences, lengths, _continuation_logprobs(base_model, sequences, lengths))


@torch.no_grad()
def measure(model, ref: DriftReference) -> dict[str, float]:
    tuned = _continuation_logprobs(model, ref.sequences, ref.prompt_lengths)
    kls, agree, positions = 0.0, 0, 0
    for base, mine in zip(ref.base_logprobs, tuned):
        kls += float((base.exp() * (base - mine)).sum())
        agree += int((base.argmax(-1) == mine.argmax(-1)).sum())
        positions += base.shape[0]
    return {"kl_base_tuned": kls / max(positions, 1), "greedy_agreement": agree / max(positions, 1),
            "positions": positions}


def _continuation_logprobs(model, sequences: list[list[int]], prompt_lengths: list[int]) -> list[torch.Tensor]:
    """Float32 log-probabilities at the positions that predict each continuation token (the prompt's last
    position through the second-to-last token)."""
    device = next(model.parameters()).device
    ids, mask, positions = left_pad(sequences, 0, device)
    logits = model(input_ids=ids, attention_mask=mask, position_ids=positions).logits.float()
    width = ids.shape[1]
    out = []
    for row, (sequence, prompt_length) in enumerate(zip(sequences, prompt_lengths)):
        start = width - len(sequence) + prompt_length - 1
        out.append(torch.log_softmax(logits[row, start:width - 1], dim=-1).cpu())
    return out
