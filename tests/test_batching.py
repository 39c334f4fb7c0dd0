"""The transformers decode loop: a batch with repeated prompts, whose prefill runs each distinct prompt once,
decodes every row as decoding it alone does; grouped-query attention in decode steps changes no number."""

import pytest
import torch
from transformers import AutoModelForCausalLM

from mixsd.attention import GROUPED_DECODE_SDPA, use_grouped_decode_attention
from mixsd.batching import decode, prefill
from mixsd.debug_model import DebugModelConfig, write_debug_model


def test_prefill_shares_repeated_prompts_and_decodes_each_row_as_alone(tiny_model_dir):
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    prompts = [[1, 5, 9, 14, 20], [1, 7], [1, 5, 9, 14, 20], [1, 7], [1, 30, 31]]
    greedy = lambda logits, _: logits.argmax(-1)  # noqa: E731
    with torch.no_grad():
        cache, logits, mask, next_position = prefill(model, prompts)
        assert cache.get_seq_length() == 5 and logits.shape[0] == mask.shape[0] == 5  # one row per prompt
        assert next_position.tolist() == [5, 2, 5, 2, 3]
        assert torch.equal(logits[0], logits[2]) and torch.equal(logits[1], logits[3])
        batched = decode(model, prompts, 6, greedy, stop_ids=set())
        alone = [decode(model, [p], 6, greedy, stop_ids=set())[0] for p in prompts]
    assert batched == alone and all(len(c) == 6 for c in batched)


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
        def choose(logits, _):
            steps[name].append(logits.clone())
            return logits.argmax(-1)

        return choose

    with torch.no_grad():
        tokens = {
            name: decode(m, prompts, 8, recorder(name), set()) for name, m in (("plain", plain), ("grouped", grouped))
        }
    assert tokens["plain"] == tokens["grouped"]
    assert all(torch.allclose(a, b, rtol=0, atol=1e-5) for a, b in zip(steps["plain"], steps["grouped"]))
    # Only the grouped model's single-token steps took the grouped path: 8 fed tokens, 2 layers each.
    assert grouped_steps == [1] * 8 * 2
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
