"""Checkpoints: a Hugging Face directory (safetensors, config, tokenizer, chat template) that vLLM and
transformers load, plus the trainer state needed to resume exactly. Written to a temp name, then renamed."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import torch

from mixsd.atomic import atomic_dir
from mixsd.checkpoints import CHECKPOINT_INFO_FILE, STATE_FILE, checkpoint_info, checkpoints, resumable, step_dir
from mixsd.versions import versions


def save(
    out: Path,
    step: int,
    model,
    tokenizer,
    optimizer_state: dict,
    scheduler,
    position: dict,
    config: dict,
    keep_last: int,
    model_state: dict | None = None,
    keep_state_last: int = 0,
) -> Path:
    """`model_state`: the full weights when the module only holds shards (FSDP); None: the module's own.
    The last `keep_last` checkpoints are kept; of those, only the last `keep_state_last` (0: all) keep the
    resume state, the others their weights (what evaluation reads)."""
    final = step_dir(out, step)
    with atomic_dir(final) as tmp:
        model.save_pretrained(tmp, safe_serialization=True, state_dict=model_state)
        tokenizer.save_pretrained(tmp)
        torch.save(
            {
                "optimizer": optimizer_state,
                "scheduler": scheduler.state_dict(),
                "position": position,
                "torch_rng": torch.get_rng_state(),
                "python_rng": list(random.getstate()[1]),
            },
            tmp / STATE_FILE,
        )
        (tmp / CHECKPOINT_INFO_FILE).write_text(
            json.dumps({"config": config, "step": step, "versions": versions()}, indent=2, sort_keys=True) + "\n"
        )
    for old in checkpoints(out)[:-keep_last]:
        shutil.rmtree(old)
    if keep_state_last:
        for old in resumable(out)[:-keep_state_last]:
            (old / STATE_FILE).unlink()
    return final


def load_state(directory: Path) -> dict:
    """The trainer state; weights_only: no pickled code runs."""
    return torch.load(directory / STATE_FILE, weights_only=True)


def restore_rng(state: dict) -> None:
    """Put the global generators back where the checkpoint left them (the loop's own draws are keyed by
    seed and step; this keeps anything else that draws globally on the same course)."""
    torch.set_rng_state(state["torch_rng"])
    random.setstate((3, tuple(state["python_rng"]), None))


def saved_config(directory: Path) -> dict:
    return checkpoint_info(directory)["config"]
