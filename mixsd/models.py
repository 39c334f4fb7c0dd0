"""Opening a model's tokenizer with errors that say which directory lacks what."""

from __future__ import annotations

import functools
from pathlib import Path

from mixsd.errors import UserError

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")


class ModelLoadError(UserError, ValueError):
    """A model directory or hub id that cannot be used."""


def text_config(model: str):
    """The model's (text) config, read once per process while its config.json is unchanged."""
    config_file = Path(model) / "config.json"
    return _text_config(model, config_file.stat().st_mtime_ns if config_file.is_file() else None)


@functools.cache
def _text_config(model: str, _config_mtime: int | None):
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(model)
    return config.get_text_config() if hasattr(config, "get_text_config") else config


def declared_dtype(model: str) -> str | None:
    """The dtype the model's config declares ("bfloat16", "float32", …), or None."""
    config = text_config(model)
    value = getattr(config, "dtype", None) or getattr(config, "torch_dtype", None)
    return str(value).replace("torch.", "") if value is not None else None


def load_tokenizer(model: str, flag: str = "--model"):
    """The tokenizer of a model directory or hub id. A directory without tokenizer files is named as such
    (transformers would otherwise ask for sentencepiece or tiktoken, as if a package were missing)."""
    from transformers import AutoTokenizer

    root = Path(model)
    if root.is_dir() and not any((root / name).is_file() for name in TOKENIZER_FILES):
        raise ModelLoadError(
            f"{flag} {model!r}: no tokenizer in this model directory (none of "
            f"{', '.join(TOKENIZER_FILES)}); save it beside the weights (tokenizer.save_pretrained)"
        )
    try:
        return AutoTokenizer.from_pretrained(model)
    except (OSError, ValueError) as err:
        raise ModelLoadError(f"{flag} {model!r}: not a model directory and not a reachable hub id ({err})") from None
