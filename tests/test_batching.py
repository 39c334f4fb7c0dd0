"""The transformers decode loop: a batch with repeated prompts, whose prefill runs each distinct prompt once,
decodes every row as decoding it alone does; grouped-query attention in decode steps changes no number."""

import pytest
import torch
from transformers import AutoModelForCausalLM

from mixsd.attention import GROUPED_DECODE_SDPA, use_grouped_decode_attention
from mixsd.batching import KVDecoder, RoomyLayer, continuation_logprobs, decode, prefill
from mixsd.debug_model import DebugModelConfig, write_debug_model


def test_prefill_shares_repeated_prompts_and_decodes_each_row_as_alone(tiny_model_dir):
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    prompts = [[1, 5, 9, 14, 20], [1, 7], [1, 5, 9, 14, 20], [1, 7], [1, 30, 31]]
    greedy = lambda logits, *_: logits.argmax(-1)  # noqa: E731
    with torch.no_grad():
        cache, logits, mask, next_position = prefill(model, prompts)
        assert cache.get_seq_length() == 5 and logits.shape[0] == mask.shape[0] == 5  # one row per prompt
        assert next_position.tolist() == [5, 2, 5, 2, 3]
        assert torch.equal(logits[0], logits[2]) and torch.equal(logits[1], logits[3])
        batched = decode(model, prompts, 6, greedy, stop_ids=set())
        alone = [decode(model, [p], 6, greedy, stop_ids=set())[0] for p in prompts]
    assert batched == alone and all(len(c) == 6 for c in batched)


def test_a_finished_row_leaves_the_batch_and_the_others_decode_as_alone(tiny_model_dir):
    """Rows that stop at different positions (row r stops at position r + 1) are dropped from the batch as
    they finish; every remaining row sees the logits it sees decoded alone, and `rows` names it."""
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    prompts = [[1, 5, 9, 14, 20], [1, 7], [1, 30, 31], [1, 7, 8]]
    stop = 0

    def stopping(seen, offset=0):
        def choose(logits, position, rows):
            seen.append((position, (rows + offset).tolist(), logits.clone()))
            tokens = logits.argmax(-1)
            return torch.where(rows + offset == position - 1, torch.full_like(tokens, stop), tokens)

        return choose

    batched_seen = []
    with torch.no_grad():
        batched = decode(model, prompts, 6, stopping(batched_seen), stop_ids={stop})
        alone_seen = [[] for _ in prompts]
        alone = [decode(model, [p], 6, stopping(alone_seen[r], r), {stop})[0] for r, p in enumerate(prompts)]
    assert batched == alone and [len(c) for c in batched] == [1, 2, 3, 4]
    assert [rows for _, rows, _ in batched_seen] == [[0, 1, 2, 3], [0, 1, 2, 3], [1, 2, 3], [2, 3], [3]]
    for position, rows, logits in batched_seen:
        for index, row in enumerate(rows):
            # Batching and padding round differently (~1e-5 of logits up to ~9); another row's would differ by ~1.
            assert torch.allclose(logits[index], alone_seen[row][position][2][0], rtol=0, atol=1e-4)


@pytest.mark.parametrize("room", [1, 8])
def test_the_decoding_cache_gives_the_logits_of_a_forward_without_one(tiny_model_dir, room):
    """The cache written in place (RoomyLayer; with room 1 its buffers grow twice in 8 steps) gives every step
    the logits of a forward over the whole left-padded sequence without a cache, row by row."""
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    prompts = [[1, 5, 9, 14, 20], [1, 7], [1, 30, 31]]
    with torch.no_grad():
        decoder = KVDecoder(model, prompts, room=room)
        assert all(isinstance(layer, RoomyLayer) for layer in decoder.cache.layers)
        fed, seen = [], [decoder.logits]
        for _ in range(8):
            tokens = decoder.logits.argmax(-1)
            fed.append(tokens)
            decoder.feed(tokens)
            seen.append(decoder.logits)
        sequences = [p + [int(t[row]) for t in fed] for row, p in enumerate(prompts)]
        direct = continuation_logprobs(model, sequences, [len(p) for p in prompts])
    for row, logp in enumerate(direct):  # every position that predicts a fed token
        cached = torch.log_softmax(torch.stack([step[row] for step in seen[:-1]]), dim=-1)
        assert torch.allclose(cached, logp, rtol=0, atol=1e-4)


@pytest.fixture(scope="module")
def grouped_model_dir(tmp_path_factory):
    """The tiny model with 4 query heads sharing 2 key/value heads, as SmolLM2's 9 share 3."""
    config = DebugModelConfig(hidden_size=256, num_heads=4, num_kv_heads=2)
    return write_debug_model(tmp_path_factory.mktemp("tiny-gqa"), config)


def test_grouped_decode_attention_gives_transformers_numbers_without_repeating_kv_heads(grouped_model_dir, monkeypatch):
    plain = AutoModelForCausalLM.from_pretrained(grouped_model_dir, dtype=torch.float32).eval()
    grouped = use_grouped_decode_attention(AutoModelForCausalLM.from_pretrained(grouped_model_dir, dtype=torch.float32))
    assert grouped.config._attn_implementation == GROUPED_DECODE_SDPA
    assert plain.config._attn_implementation == "sdpa" and plain.config.num_key_value_heads == 2
    sdpa = torch.nn.functional.scaled_dot_product_attention
    grouped_steps = []

    def spy(query, key, value, **kwargs):
        if kwargs.get("enable_gqa") and kwargs.get("attn_mask") is not None:
            grouped_steps.append(query.shape[2])
        return sdpa(query, key, value, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", spy)
    prompts = [[1, 5, 9, 14, 20, 21, 22], [1, 7], [1, 30, 31]]  # left padding: every step has a mask
    steps = {"plain": [], "grouped": []}

    def recorder(name):
        def choose(logits, *_):
            steps[name].append(logits.clone())
            return logits.argmax(-1)

        return choose

    with torch.no_grad():
        tokens = {
            name: decode(m, prompts, 8, recorder(name), set()) for name, m in (("plain", plain), ("grouped", grouped))
        }
    assert tokens["plain"] == tokens["grouped"]
    assert all(torch.allclose(a, b, rtol=0, atol=1e-5) for a, b in zip(steps["plain"], steps["grouped"]))
    # Only the grouped model's single-token steps took the grouped path: 7 fed tokens (the 8th is not fed: it
    # predicts nothing asked for), 2 layers each.
    assert grouped_steps == [1] * 7 * 2
    # A training forward (many positions) is transformers' own: the same loss and gradients to the bit.
    ids = torch.tensor([[0, 0, 1, 5, 9, 14], [1, 7, 8, 9, 10, 11]])
    mask = (ids != 0).long()
    losses = [m(input_ids=ids, attention_mask=mask, labels=ids).loss for m in (plain, grouped)]
    for loss in losses:
        loss.backward()
    assert torch.equal(losses[0], losses[1])
    assert torch.equal(
        plain.model.layers[0].self_attn.q_proj.weight.grad, grouped.model.layers[0].self_attn.q_proj.weight.grad
    )
