"""A tiny random Llama and an in-process trained tokenizer, for tests and benchmarks: no network, seconds.

head_dim is 64 because vLLM's CPU attention rejects smaller heads. The chat template is ChatML, like the
default model's, so prompts are built the same way for both.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

CHAT_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


@dataclass
class DebugModelConfig:
    vocab_size: int = 512
    hidden_size: int = 128
    num_heads: int = 2  # head_dim = 128 / 2 = 64
    num_kv_heads: int = 0  # grouped-query attention with fewer key/value heads (SmolLM2: 3 of 9); 0: num_heads
    num_layers: int = 2
    intermediate_size: int = 256
    max_position_embeddings: int = 2048
    initializer_range: float = 0.2  # peaked next-token distributions: argmaxes are far from ties
    tie_word_embeddings: bool = False  # True: one matrix for input embedding and output head, as SmolLM2
    seed: int = 0


def training_text() -> list[str]:
    """Text the tiny tokenizer learns from: KGFact questions and targets, digits, chat markers."""
    from corpora.kgfact import KGFactConfig, build

    splits = build(KGFactConfig(out="", size="small", seed=0, compositional=10, distractors=3))
    lines = [e.question + "\n" + e.answer for examples in splits.values() for e in examples]
    lines += [" ".join(str(i) for i in range(k, k + 50)) for k in range(0, 1000, 50)]
    lines += [
        "This question is from a new knowledge base. Here is the answer to this question:",
        "Now answer the question.",
        "user assistant system",
    ]
    return lines


def build_tokenizer(vocab_size: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    core.train_from_iterator(training_text(), trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token="<|endoftext|>",
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def build_model(config: DebugModelConfig, tokenizer):
    from transformers import LlamaConfig, LlamaForCausalLM

    llama = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=config.hidden_size,
        intermediate_size=config.intermediate_size,
        num_hidden_layers=config.num_layers,
        num_attention_heads=config.num_heads,
        num_key_value_heads=config.num_kv_heads or config.num_heads,
        max_position_embeddings=config.max_position_embeddings,
        initializer_range=config.initializer_range,
        tie_word_embeddings=config.tie_word_embeddings,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(config.seed)
    return LlamaForCausalLM(llama).to(torch.float32).eval()


def write_debug_model(out: str | Path, config: DebugModelConfig | None = None) -> Path:
    """Save a tiny model + tokenizer as a Hugging Face directory that vLLM and transformers both load."""
    config = config or DebugModelConfig()
    out = Path(out)
    tokenizer = build_tokenizer(config.vocab_size)
    model = build_model(config, tokenizer)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    return out
