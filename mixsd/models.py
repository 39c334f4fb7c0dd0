"""Opening a model's tokenizer with errors that say which directory lacks what."""
from __future__ import annotations

from pathlib import Path

from mixsd.errors import UserError

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")


class ModelLoadError(UserError, ValueError):
    """A model directory or hub id that cannot be used."""


def load_tokenizer(model: str, flag: str = "--model"):
    """The tokenizer of a model directory or hub id. A directory without tokenizer files is named as such
    (transformers would otherwise ask for sentencepiece or tiktoken, as if a package were missing)."""
    from transformers import AutoTokenizer

    root = Path(model)
    if root.is_dir() and not any((root / name).is_file() for name in TOKENIZER_FILES):
        raise ModelLoadError(f"{flag} {model!r}: no tokenizer in this model directory (none of "
                             f"{', '.join(TOKENIZER_FILES)}); save it beside the weights (tokenizer.save_pretrained)")
    try:
        return AutoTokenizer.from_pretrained(model)
    except (OSError, ValueError) as err:
        raise ModelLoadError(f"{flag} {model!r}: not a model directory and not a reachable hub id ({err})") from None
