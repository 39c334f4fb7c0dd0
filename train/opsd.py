"""On-policy self-distillation (the OPSD baseline): the student samples completions from the naive prompt
and is trained to minimize, per token, the reverse KL to the frozen base model that sees the expert prompt."""

from __future__ import annotations

import torch

from mixsd.batching import decode, prefill
from mixsd.randomness import Stream, example_key, uniforms
from train.data import TrainExample, pad_id


@torch.no_grad()
def sample(
    model,
    prompts: list[list[int]],
    max_new_tokens: int,
    temperature: float,
    eos_id: int,
    pad_id: int,
    seed: int,
    keys: list[int],
    samples: list[int],
) -> list[list[int]]:
    """Batched sampling with a KV cache. Row r's token at position t is drawn by inverse CDF from the uniform of
    (seed, keys[r], samples[r], t): a rollout does not depend on which rows share its batch or process."""
    key, sample_index = torch.tensor(keys, dtype=torch.int64), torch.tensor(samples, dtype=torch.int64)

    def draw(logits: torch.Tensor, position: int, rows: torch.Tensor) -> torch.Tensor:
        probs = torch.softmax(logits.double() / temperature, dim=-1)
        u = uniforms(torch.tensor(seed), key[rows], sample_index[rows], torch.tensor(position), Stream.ROLLOUT)
        u = u.to(logits.device)
        cdf = probs.cumsum(-1)
        return torch.searchsorted(cdf, (u * cdf[:, -1])[:, None]).squeeze(1).clamp_max(probs.shape[-1] - 1)

    return decode(model, prompts, max_new_tokens, draw, {eos_id}, pad_id)


def completion_logprobs(model, prompts: list[list[int]], completions: list[list[int]], pad_id: int):
    """Log-distributions at every completion position: [rows, longest completion, vocab], and a mask. Each
    distinct prompt runs once and its KV cache serves all its rows (an example's rollouts): for the teacher,
    whose expert prompts hold most of its tokens, and the student, whose prompts are about half of its, that
    is most of the forward (and of the student's backward)."""
    device = next(model.parameters()).device
    cache, first, prompt_mask, next_position = prefill(model, prompts, pad_id)
    longest = max(len(c) for c in completions)
    logits = [first[:, None]]  # the prompt's last position predicts every completion's first token
    if longest > 1:
        # A completion's last token predicts nothing that is scored: the continuation pass feeds all but it.
        fed = torch.full((len(completions), longest - 1), pad_id, dtype=torch.long)
        fed_mask = torch.zeros_like(fed)
        for row, c in enumerate(completions):
            fed[row, : len(c) - 1] = torch.tensor(c[:-1], dtype=torch.long)
            fed_mask[row, : len(c) - 1] = 1
        rest = model(
            input_ids=fed.to(device),
            attention_mask=torch.cat([prompt_mask, fed_mask.to(device)], dim=-1),
            position_ids=next_position[:, None] + torch.arange(fed.shape[1], device=device),
            past_key_values=cache,
            use_cache=True,
        )
        logits.append(rest.logits.float())
    valid = torch.tensor([[j < len(c) for j in range(longest)] for c in completions], device=device)
    return torch.log_softmax(torch.cat(logits, dim=1), dim=-1), valid


def reverse_kl(student_logp: torch.Tensor, teacher_logp: torch.Tensor, top_k: int) -> torch.Tensor:
    """KL(student || teacher) per position; over the student's top-k tokens (renormalized) when top_k > 0."""
    if top_k > 0:
        top = student_logp.topk(top_k, dim=-1).indices
        student_logp = torch.log_softmax(student_logp.gather(-1, top), dim=-1)
        teacher_logp = torch.log_softmax(teacher_logp.gather(-1, top), dim=-1)
    return (student_logp.exp() * (student_logp - teacher_logp)).sum(-1)


def rollouts(model, examples: list[TrainExample], tokenizer, config, step: int, batch_rows: int = 0):
    """{example id: its `config.rollouts` completions at optimizer step `step`}, each ending in EOS unless cut
    at `rollout_max_new_tokens`. Rollout r of an example at step s is sample s * rollouts + r of that example's
    random stream, so the rows decoded together (`batch_rows` at a time; 0: all) do not change its draws; they
    change its tokens only where rounding of the logits, which depends on the batch's shape, crosses a draw."""
    core = getattr(model, "module", model)
    eos, pad = tokenizer.eos_token_id, pad_id(tokenizer)
    unique = list({e.example_id: e for e in examples}.values())
    rows = sorted(((e, r) for e in unique for r in range(config.rollouts)), key=lambda row: len(row[0].prompt_ids))
    width = batch_rows or len(rows)
    drawn = {}
    for start in range(0, len(rows), width):
        chunk = rows[start : start + width]
        completions = sample(
            core,
            [e.prompt_ids for e, _ in chunk],
            config.rollout_max_new_tokens,
            config.rollout_temperature,
            eos,
            pad,
            config.seed,
            [example_key(e.example_id) for e, _ in chunk],
            [step * config.rollouts + r for _, r in chunk],
        )
        for (e, r), c in zip(chunk, completions):
            drawn[e.example_id, r] = c + [eos] if len(c) < config.rollout_max_new_tokens else c
    return {e.example_id: [drawn[e.example_id, r] for r in range(config.rollouts)] for e in unique}


def opsd_loss(model, teacher, group: list[TrainExample], tokenizer, config, step: int, autocast, drawn=None):
    """(summed per-token reverse KL over all rollouts of the group, number of completion tokens). `drawn`: the
    step's rollouts sampled beforehand (`rollouts`); None: the group's are sampled here."""
    drawn = drawn if drawn is not None else rollouts(model, group, tokenizer, config, step)
    pad = pad_id(tokenizer)
    naive = [e.prompt_ids for e in group for _ in range(config.rollouts)]
    expert = [e.expert_prompt_ids for e in group for _ in range(config.rollouts)]
    completions = [c for e in group for c in drawn[e.example_id]]
    with autocast:
        student_logp, valid = completion_logprobs(model, naive, completions, pad)
        with torch.no_grad():
            teacher_logp, _ = completion_logprobs(teacher, expert, completions, pad)
    kl = reverse_kl(student_logp, teacher_logp, config.kl_top_k)
    return (kl * valid).sum(), int(valid.sum())
