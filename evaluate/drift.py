"""Label-free drift on held-out general prompts: how far the tuned model's next-token distributions moved.

For each prompt the base model writes a greedy continuation; both models then read prompt + continuation
(teacher forcing, so they are compared on the same text), and at every position that predicts a continuation
token we take KL(base || tuned) of the next-token distributions and whether their argmax tokens agree.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from mixsd.batching import continuation_logprobs


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
    return DriftReference(sequences, lengths, _on_cpu(continuation_logprobs(base_model, sequences, lengths)))


@torch.no_grad()
def measure(model, ref: DriftReference) -> dict[str, float]:
    tuned = _on_cpu(continuation_logprobs(model, ref.sequences, ref.prompt_lengths))
    kls, per_prompt = 0.0, []
    for base, mine in zip(ref.base_logprobs, tuned):
        kls += float((base.exp() * (base - mine)).sum())
        per_prompt.append([int((base.argmax(-1) == mine.argmax(-1)).sum()), base.shape[0]])
    agree, positions = sum(a for a, _ in per_prompt), sum(n for _, n in per_prompt)
    return {
        "kl_base_tuned": kls / max(positions, 1),
        "greedy_agreement": agree / max(positions, 1),
        "positions": positions,
        "per_prompt": per_prompt,
    }  # per prompt: [agreeing positions, positions]


def _on_cpu(tensors: list[torch.Tensor]) -> list[torch.Tensor]:
    return [t.cpu() for t in tensors]
