"""Training examples from shard run directories: checked, tokenized, batched by length, resumable."""
from __future__ import annotations

import glob
import json
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq
import torch

from mixsd.checksums import file_sha256
from mixsd.errors import UserError

REQUIRED_COLUMNS = ("example_id", "prompt_ids", "expert_prompt_ids", "target_ids")
IGNORE = -100
CUT_AT_LENGTH = "length"  # finish_reason of a target that hit max_new_tokens (or the context) before EOS


class DataError(UserError, ValueError):
    """Shards that cannot be trained on; the message names the run directory or file."""


@dataclass(frozen=True)
class TrainExample:
    example_id: str
    prompt_ids: list[int]         # the naive prompt: the fact is not in context
    expert_prompt_ids: list[int]  # for OPSD's teacher
    target_ids: list[int]         # without EOS; `label_ids` appends it where the target really ended
    correct: bool | None = None   # the generator's verdict on the target (None: shards without the column)
    ended: bool = True            # False: cut at max_new_tokens, so no EOS is taught after it

    def label_ids(self, eos_id: int) -> list[int]:
        """What the model learns to write after the prompt. A target cut mid-sentence gets no EOS: teaching
        the model to stop there would teach it to stop mid-sentence."""
        return self.target_ids + [eos_id] if self.ended else list(self.target_ids)

    def __len__(self) -> int:
        return len(self.prompt_ids) + len(self.target_ids) + int(self.ended)


@dataclass(frozen=True)
class RowCounts:
    """What the training set was made of, for the log and train_config.json."""
    rows: int                # rows in the shards
    dropped_unverified: int  # targets the generator marked wrong, left out (--include_unverified false)
    used: int                # rows trained on
    cut_at_length: int       # used rows whose target was cut at max_new_tokens: trained without EOS

    def line(self) -> str:
        return (f"data: {self.used} of {self.rows} rows used ({self.dropped_unverified} with unverified targets "
                f"dropped; {self.cut_at_length} targets cut at max_new_tokens, trained without EOS)")


def select(examples: list[TrainExample], include_unverified: bool, method: str) -> tuple[list[TrainExample],
                                                                                         RowCounts]:
    """The rows a method trains on. SFT and MixSD learn their targets, so by default only targets the
    generator verified (`correct`): a wrong answer would be taught as the fact. OPSD samples its own
    completions and ignores the targets, so it uses every row."""
    keep = examples
    if method != "opsd" and not include_unverified:
        if any(e.correct is None for e in examples):
            raise DataError("the shards have no `correct` column, so verified targets cannot be told apart; "
                            "pass --include_unverified true to train on every row")
        keep = [e for e in examples if e.correct]
        if not keep:
            raise DataError(f"none of the {len(examples)} targets was verified correct; generate with retries "
                            "(--max_retries) or a lower λ, or pass --include_unverified true to train on them anyway")
    counts = RowCounts(rows=len(examples), dropped_unverified=len(examples) - len(keep), used=len(keep),
                       cut_at_length=sum(not e.ended for e in keep))
    return keep, counts


def _manifest(run_dir: Path) -> dict:
    path = run_dir / "manifest.json"
    if not path.is_file():
        raise DataError(f"{run_dir}: no manifest.json (not a generate run directory)")
    manifest = json.loads(path.read_text())
    if not manifest.get("complete"):
        raise DataError(f"{run_dir}: the run is not complete (rerun its generate command to finish it)")
    return manifest


def _identity(manifest: dict) -> tuple:
    """What must agree across shard runs: the tokenizer and the model family that wrote the token ids."""
    model = manifest.get("output_settings", {}).get("model", {})
    return manifest.get("tokenizer"), manifest.get("vocab_size"), model.get("config_sha256") or model.get("hub_id")


def expand(patterns: list[str]) -> list[Path]:
    """Run directories from paths or glob patterns (`runs/generate/mixsd-lam0.3-t0-*`), each matched once."""
    found: list[Path] = []
    for pattern in patterns:
        matches = sorted(map(Path, glob.glob(pattern))) if glob.has_magic(pattern) else [Path(pattern)]
        if not matches:
            raise DataError(f"--shards {pattern!r}: matches no run directory")
        found += [m for m in matches if m not in found]
    return found


def load_examples(run_dirs: list[str]) -> tuple[list[TrainExample], list[dict]]:
    """Every row of every run (manifest order), after checking presence, checksums, columns and identity."""
    if not run_dirs:
        raise DataError("no shard run directories given (--shards)")
    examples, manifests, identity = [], [], None
    for run_dir in expand(run_dirs):
        manifest = _manifest(run_dir)
        if identity is None:
            identity = (_identity(manifest), run_dir)
        elif _identity(manifest) != identity[0]:
            raise DataError(f"{run_dir}: written with another tokenizer or model than {identity[1]} "
                            f"({_identity(manifest)} vs {identity[0]})")
        for entry in manifest["shards"]:
            examples += _read_shard(run_dir / entry["file"], entry["sha256"])
        manifests.append(manifest)
    if not examples:
        raise DataError(f"no rows in {', '.join(run_dirs)}")
    return examples, manifests


def _read_shard(path: Path, sha256: str) -> list[TrainExample]:
    if not path.is_file():
        raise DataError(f"{path}: listed in manifest.json but missing")
    if file_sha256(path) != sha256:
        raise DataError(f"{path}: checksum does not match manifest.json (truncated or modified)")
    table = pq.read_table(path)
    missing = [c for c in REQUIRED_COLUMNS if c not in table.column_names]
    if missing:
        raise DataError(f"{path}: missing column(s) {missing}")
    columns = {c: table.column(c).to_pylist() for c in REQUIRED_COLUMNS}
    rows = len(columns["example_id"])
    correct = table.column("correct").to_pylist() if "correct" in table.column_names else [None] * rows
    finish = table.column("finish_reason").to_pylist() if "finish_reason" in table.column_names else [None] * rows
    return [TrainExample(*values, correct=ok, ended=reason != CUT_AT_LENGTH)
            for *values, ok, reason in zip(*(columns[c] for c in REQUIRED_COLUMNS), correct, finish)]


def epoch_order(count: int, seed: int, epoch: int) -> list[int]:
    """The permutation of one epoch, from (seed, epoch) alone: resuming recomputes it."""
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(count, generator=generator).tolist()


def steps_per_epoch(count: int, batch_size: int) -> int:
    return count // batch_size  # a last, smaller batch would change the loss scale: it is dropped


def micro_batches(batch: list[TrainExample], micro_batch_size: int) -> list[list[TrainExample]]:
    """Sorted by length before splitting, so each forward pass pads little. Longest first: later, smaller
    passes fit in the blocks the first one freed, so the allocator does not grow with every pass."""
    ordered = sorted(batch, key=len, reverse=True)
    return [ordered[i:i + micro_batch_size] for i in range(0, len(ordered), micro_batch_size)]


def collate(examples: list[TrainExample], eos_id: int, pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded input ids, attention mask and labels (IGNORE on prompt and padding)."""
    width = max(len(e) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for row, e in enumerate(examples):
        target = e.label_ids(eos_id)
        sequence = e.prompt_ids + target
        ids[row, :len(sequence)] = torch.tensor(sequence)
        labels[row, len(e.prompt_ids):len(sequence)] = torch.tensor(target)
        mask[row, :len(sequence)] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def padding_fraction(groups: list[list[TrainExample]]) -> float:
    real = sum(len(e) for g in groups for e in g)
    padded = sum(max(len(e) for e in g) * len(g) for g in groups)
    return 1 - real / padded if padded else 0.0
