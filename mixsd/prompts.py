"""Naive and expert prompts, tokenized once with the model's own chat template (generate builds its pairs
with them; evaluate asks its questions the same way)."""

from __future__ import annotations

from corpora.schema import Example


def chat_ids(tokenizer, user_text: str) -> list[int]:
    """The user turn through the chat template (generation prompt added), or a plain-text fallback."""
    if getattr(tokenizer, "chat_template", None):
        text = tokenizer.apply_chat_template(
            [{"role": "user", "content": user_text}], tokenize=False, add_generation_prompt=True
        )
        return list(tokenizer(text, add_special_tokens=False)["input_ids"])
    return list(tokenizer(f"Question: {user_text}\nAnswer:", add_special_tokens=True)["input_ids"])


def naive_ids(tokenizer, example: Example) -> list[int]:
    return chat_ids(tokenizer, example.question)


def expert_ids(tokenizer, example: Example, template: str) -> list[int]:
    # replace(), not format(): templates may hold literal braces such as \boxed{}.
    return chat_ids(
        tokenizer, template.replace("{question}", example.question).replace("{context}", example.expert_context)
    )


def stop_token_ids(tokenizer, model_dir: str) -> list[int]:
    """EOS ids from the tokenizer and the generation config, so every backend stops on the same tokens."""
    ids = {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()
    try:
        from transformers import GenerationConfig

        eos = GenerationConfig.from_pretrained(model_dir).eos_token_id
        ids |= set(eos if isinstance(eos, list) else [eos]) - {None}
    except OSError:
        pass
    return sorted(ids)
