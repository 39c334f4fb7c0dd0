"""Left-padded batches: every row's next token sits in the last column. Incremental decoding with a KV cache, and
the log-distributions over a continuation in one forward."""

from __future__ import annotations

import torch


def left_pad(prompts: list[list[int]], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(input ids, attention mask, position ids) for `prompts`, padded on the left."""
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for row, prompt in enumerate(prompts):
        ids[row, width - len(prompt) :] = torch.tensor(prompt)
        mask[row, width - len(prompt) :] = 1
    positions = (mask.cumsum(-1) - 1).clamp_min(0)
    return ids.to(device), mask.to(device), positions.to(device)


def prefill(model, prompts: list[list[int]], pad_id: int = 0):
    """One forward over the distinct prompts among `prompts` (OPSD's rollouts of an example share theirs):
    (KV cache, next-token logits in float32, attention mask, next position), each with one row per prompt.
    Differentiable: a prompt run once for several rows gets the gradients of all of them."""
    distinct = list(dict.fromkeys(map(tuple, prompts)))
    slot = {prompt: i for i, prompt in enumerate(distinct)}
    device = next(model.parameters()).device
    ids, mask, positions = left_pad([list(p) for p in distinct], pad_id, device)
    # Only the last position's logits: the vocabulary projection of every prompt position is wasted work.
    out = model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True, logits_to_keep=1)
    rows = torch.tensor([slot[tuple(p)] for p in prompts], device=device)
    cache = out.past_key_values
    if len(distinct) < len(prompts):
        cache.batch_select_indices(rows)
    return cache, out.logits[:, -1].float()[rows], mask[rows], positions[rows, -1] + 1


class KVDecoder:
    """Batched incremental decoding over left-padded prompts with a KV cache.

    `logits` holds every row's next-token logits (float32); `feed(tokens)` appends one token per row and
    advances. Which token to feed and when a row is finished stay with the caller (greedy, sampling, MixSD).
    """

    def __init__(self, model, prompts: list[list[int]], pad_id: int = 0):
        self.model = model
        self.cache, self.logits, self.mask, self.next_position = prefill(model, prompts, pad_id)

    def feed(self, tokens: torch.Tensor) -> None:
        self.mask = torch.cat([self.mask, torch.ones_like(self.mask[:, :1])], dim=-1)
        out = self.model(
            input_ids=tokens[:, None],
            attention_mask=self.mask,
            position_ids=self.next_position[:, None],
            past_key_values=self.cache,
            use_cache=True,
        )
        self.cache, self.next_position = out.past_key_values, self.next_position + 1
        self.logits = out.logits[:, -1].float()


def decode(model, prompts: list[list[int]], max_new_tokens: int, choose, stop_ids, pad_id: int = 0) -> list[list[int]]:
    """The decode loop of the transformers paths (evaluation's greedy backend, OPSD's rollouts):
    `choose(logits, position)` picks every row's next token; a row ends at a token of `stop_ids` (not kept) or
    after `max_new_tokens`."""
    decoder = KVDecoder(model, prompts, pad_id)
    completions: list[list[int]] = [[] for _ in prompts]
    alive = [True] * len(prompts)
    for position in range(max_new_tokens):
        tokens = choose(decoder.logits, position)
        for row, token in enumerate(tokens.tolist()):  # one copy to the host per step, not one per row
            if not alive[row]:
                continue
            if token in stop_ids:
                alive[row] = False
            else:
                completions[row].append(token)
        if not any(alive):
            break
        decoder.feed(tokens)
    return completions


def continuation_logprobs(model, sequences: list[list[int]], prompt_lengths: list[int]) -> list[torch.Tensor]:
    """One forward over left-padded `sequences`; per row, the float32 log-distributions at the positions that
    predict each continuation token (the prompt's last position through the second-to-last token)."""
    device = next(model.parameters()).device
    ids, mask, positions = left_pad(sequences, 0, device)
    logits = model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=False).logits
    width = ids.shape[1]
    out = []
    for row, (sequence, prompt_length) in enumerate(zip(sequences, prompt_lengths)):
        start = width - len(sequence) + prompt_length - 1
        out.append(torch.log_softmax(logits[row, start : width - 1].float(), dim=-1))
    return out
