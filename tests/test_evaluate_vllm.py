"""The vLLM evaluation backend gives the transformers backend's greedy tokens, before and after swapping in
another checkpoint's weights. In a subprocess: this test session already holds vLLM engines."""

from __future__ import annotations

import json
import textwrap

import pytest

from tests import processes

pytest.importorskip("vllm")
pytestmark = pytest.mark.vllm

SCRIPT = textwrap.dedent("""
    import gc, json, sys
    from evaluate.backends import BackendSettings, HFGreedy, VLLMGreedy
    first, second = sys.argv[1], sys.argv[2]
    prompts = [[1, 5, 9, 14], [1, 7], [1, 30, 31, 32, 33, 34], [1, 2, 3]]
    settings = BackendSettings(dtype="float32", max_model_len=256, kv_cache_bytes=32 << 20, enforce_eager=True)
    engine = VLLMGreedy(first, [0], settings)
    got = {"first": engine.generate(prompts, 12)}
    engine.load(second)
    got["second"] = engine.generate(prompts, 12)
    got["hf_first"] = HFGreedy(first, [0], settings).generate(prompts, 12)
    got["hf_second"] = HFGreedy(second, [0], settings).generate(prompts, 12)
    # One engine at a time: closed, its shutdown is done, so dropping it later cannot reset the next one's
    # process-wide state (vLLM 0.32 does that at any in-process engine's shutdown, even from the collector).
    engine.close()
    after = VLLMGreedy(first, [0], settings)
    del engine
    gc.collect()
    got["after_close"] = after.generate(prompts, 12)
    print(json.dumps(got))
""")


@pytest.mark.parametrize("tied", [False, True], ids=["separate-head", "tied-embeddings"])
def test_vllm_backend_matches_transformers_and_swaps_weights(tied, tmp_path):
    """Tied embeddings (SmolLM2) matter: vLLM's in-place reload would leave the output head on the old
    weights (and, on CPU, on a prepacked copy of them)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from mixsd.debug_model import DebugModelConfig, write_debug_model

    first = write_debug_model(tmp_path / "first", DebugModelConfig(tie_word_embeddings=tied))
    model = AutoModelForCausalLM.from_pretrained(first, dtype=torch.float32)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(1.3)  # a different model: other greedy tokens
        model.get_input_embeddings().weight.add_(0.3)  # for the tied model: a head that differs too
    model.save_pretrained(tmp_path / "second")
    AutoTokenizer.from_pretrained(first).save_pretrained(tmp_path / "second")
    done = processes.run("-c", [SCRIPT, str(first), str(tmp_path / "second")])
    assert done.returncode == 0, done.stderr[-3000:]
    got = json.loads(done.stdout.strip().splitlines()[-1])
    assert got["first"] == got["hf_first"]
    assert got["second"] == got["hf_second"]
    assert got["first"] != got["second"]
    assert got["after_close"] == got["first"]
