"""Left-padded batches: every row's next token sits in the last column. Incremental decoding with a KV cache, and
the log-distributions over a continuation in one forward."""

from __future__ import annotations

import torch
from transformers.cache_utils import DynamicLayer


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


class RoomyLayer(DynamicLayer):
    """A decoding cache layer whose keys and values are views of buffers with room for the tokens to come: a
    step writes its own position, where transformers' DynamicLayer concatenates (a copy of the whole cache, in
    every layer, at every step). The buffers double when full. Decoding only: written in place, no gradients;
    of a cache's operations it keeps what KVDecoder uses (update, batch_select_indices), not crop or reorder."""

    @classmethod
    def holding(cls, layer: DynamicLayer, room: int) -> "RoomyLayer":
        roomy = cls()
        roomy.lazy_initialization(layer.keys, layer.values)
        roomy.length = layer.keys.shape[-2]
        roomy.key_buffer, roomy.value_buffer = (_with_room(t, room) for t in (layer.keys, layer.values))
        roomy._view()
        return roomy

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        end = self.length + key_states.shape[-2]
        if end > self.key_buffer.shape[-2]:
            self.key_buffer, self.value_buffer = (_with_room(t, end) for t in (self.keys, self.values))
        self.key_buffer[..., self.length : end, :] = key_states
        self.value_buffer[..., self.length : end, :] = value_states
        self.length = end
        self._view()
        return self.keys, self.values

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        self.key_buffer, self.value_buffer = self.key_buffer[indices], self.value_buffer[indices]
        self._view()

    def _view(self) -> None:
        self.keys = self.key_buffer[..., : self.length, :]
        self.values = self.value_buffer[..., : self.length, :]


def _with_room(states: torch.Tensor, room: int) -> torch.Tensor:
    """A [batch, heads, length + room, dim] buffer starting with `states` ([batch, heads, length, dim])."""
    buffer = states.new_empty(*states.shape[:-2], states.shape[-2] + room, states.shape[-1])
    buffer[..., : states.shape[-2], :] = states
    return buffer


class KVDecoder:
    """Batched incremental decoding over left-padded prompts with a KV cache.

    `logits` holds every row's next-token logits (float32); `feed(tokens)` appends one token per row and
    advances. Which token to feed and when a row is finished stay with the caller (greedy, sampling, MixSD).
    """

    def __init__(self, model, prompts: list[list[int]], pad_id: int = 0, room: int = 64):
        self.model = model
        self.cache, self.logits, self.mask, self.next_position = prefill(model, prompts, pad_id)
        if not torch.is_grad_enabled():  # written in place: no autograd graph may hold the cache
            layers = self.cache.layers
            self.cache.layers = [RoomyLayer.holding(x, room) if type(x) is DynamicLayer else x for x in layers]

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

    def keep(self, indices: torch.Tensor) -> None:
        """Only the rows at `indices` (positions in the current batch) go on decoding."""
        indices = indices.to(self.mask.device)
        self.cache.batch_select_indices(indices)
        self.mask, self.next_position = self.mask[indices], self.next_position[indices]
        self.logits = self.logits[indices]


def decode(model, prompts: list[list[int]], max_new_tokens: int, choose, stop_ids, pad_id: int = 0) -> list[list[int]]:
    """The decode loop of the transformers paths (evaluation's greedy backend, OPSD's rollouts):
    `choose(logits, position, rows)` picks the next token of each row still decoding (`rows`: their indices in
    `prompts`, in the order of `logits`' rows); a row ends at a token of `stop_ids` (not kept) or after
    `max_new_tokens`. A finished row leaves the batch: the longest completion does not keep every row computing
    (KGFunc's OPSD rollouts: ~117 tokens on average, up to 160)."""
    decoder = KVDecoder(model, prompts, pad_id, room=max_new_tokens)
    completions: list[list[int]] = [[] for _ in prompts]
    rows = torch.arange(len(prompts))
    for position in range(max_new_tokens):
        tokens = choose(decoder.logits, position, rows)
        going = []
        for index, (row, token) in enumerate(zip(rows.tolist(), tokens.tolist())):  # one copy to the host per step
            if token not in stop_ids:
                completions[row].append(token)
                going.append(index)
        if not going or position == max_new_tokens - 1:
            break
        if len(going) < len(rows):
            kept = torch.tensor(going)
            decoder.keep(kept)
            rows, tokens = rows[kept], tokens[kept.to(tokens.device)]
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
