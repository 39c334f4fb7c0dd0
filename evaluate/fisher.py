"""Fisher-weighted parameter movement: sum over parameters of F_i (theta_i - theta0_i)^2.

F is the diagonal empirical Fisher of the base model on held-out probe texts: the mean over examples of the
squared gradient of the example's summed log-likelihood of its reference answer. Directions the base model's
held-out behaviour is sensitive to weigh more; movement along flat directions counts little.
"""

from __future__ import annotations

import re

import torch

_LAYER = re.compile(r"\blayers\.(\d+)\.")


def diagonal_fisher(model, examples: list[tuple[list[int], list[int]]]) -> dict[str, torch.Tensor]:
    """examples: (prompt ids, answer ids). One backward pass per example (the empirical Fisher needs
    per-example gradients squared, not the square of a batch mean)."""
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    fisher = {n: torch.zeros_like(p, dtype=torch.float32) for n, p in params.items()}
    device = next(model.parameters()).device
    model.eval()
    for prompt, answer in examples:
        ids = torch.tensor([prompt + answer], device=device)
        logits = model(input_ids=ids, use_cache=False).logits[0, len(prompt) - 1 : -1].float()
        nll = torch.nn.functional.cross_entropy(logits, ids[0, len(prompt) :], reduction="sum")
        model.zero_grad(set_to_none=True)
        nll.backward()
        for name, p in params.items():
            if p.grad is not None:
                fisher[name] += p.grad.float() ** 2
    model.zero_grad(set_to_none=True)
    return {n: f / max(len(examples), 1) for n, f in fisher.items()}


def group_of(name: str) -> str:
    """'layer 3' for transformer blocks, else the top-level part ('embeddings', 'final norm', 'lm_head')."""
    found = _LAYER.search(name)
    if found:
        return f"layer {int(found.group(1)):02d}"
    if "embed" in name:
        return "embeddings"
    if "lm_head" in name:
        return "lm_head"
    return "final norm" if "norm" in name else name


@torch.no_grad()
def movement(
    fisher: dict[str, torch.Tensor], base_state: dict[str, torch.Tensor], tuned_state: dict[str, torch.Tensor]
) -> dict:
    per_group: dict[str, float] = {}
    for name, weight in fisher.items():
        if name not in tuned_state:
            continue  # tied weights are stored once
        delta = tuned_state[name].float() - base_state[name].float()
        per_group[group_of(name)] = per_group.get(group_of(name), 0.0) + float((weight * delta**2).sum())
    return {"total": sum(per_group.values()), "per_group": dict(sorted(per_group.items()))}
