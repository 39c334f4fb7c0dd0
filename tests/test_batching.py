"""The transformers decode loop: a batch with repeated prompts, whose prefill runs each distinct prompt once,
decodes every row as decoding it alone does."""

import torch
from transformers import AutoModelForCausalLM

from mixsd.batching import decode, prefill


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
