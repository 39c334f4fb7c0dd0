"""Training examples from shard run directories: checked, tokenized, batched by length, resumable."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from mixsd.errors import UserError
from mixsd.run_format import CUT_AT_LENGTH, REQUIRED_COLUMNS, RunManifest, expand_run_dirs

IGNORE = -100


class DataError(UserError, ValueError):
    """Shards that cannot be trained on; the message names the run directory or file."""


@dataclass(frozen=True)
class TrainExample:
    example_id: str
    prompt_ids: list[int]  # the naive prompt: the fact is not in context
    expert_prompt_ids: list[int]  # for OPSD's teacher
    target_ids: list[int]  # without EOS; `label_ids` appends it where the target really ended
    correct: bool | None = None  # the generator's verdict on the target (None: shards without the column)
    ended: bool = True  # False: cut at max_new_tokens, so no EOS is taught after it

    def label_ids(self, eos_id: int) -> list[int]:
        """What the model learns to write after the prompt. A target cut mid-sentence gets no EOS: teaching
        the model to stop there would teach it to stop mid-sentence."""
        return self.target_ids + [eos_id] if self.ended else list(self.target_ids)

    def label_count(self) -> int:
        """Tokens the loss is taken over: the target, and EOS where it ended."""
        return len(self.target_ids) + int(self.ended)

    def __len__(self) -> int:
        return len(self.prompt_ids) + self.label_count()


@dataclass(frozen=True)
class RowCounts:
    """What the training set was made of, for the log and train_config.json."""

    rows: int  # rows in the shards
    dropped_unverified: int  # targets the generator marked wrong, left out (--include_unverified false)
    used: int  # rows trained on
    cut_at_length: int  # used rows whose target was cut at max_new_tokens: trained without EOS

    def line(self) -> str:
        return (
            f"data: {self.used} of {self.rows} rows used ({self.dropped_unverified} with unverified targets "
            f"dropped; {self.cut_at_length} targets cut at max_new_tokens, trained without EOS)"
        )


def select(examples: list[TrainExample], include_unverified: bool, method: str) -> tuple[list[TrainExample], RowCounts]:
    """The rows a method trains on. SFT and MixSD learn their targets, so by default only targets the
    generator verified (`correct`): a wrong answer would be taught as the fact. OPSD samples its own
    completions and ignores the targets, so it uses every row."""
    keep = examples
    if method != "opsd" and not include_unverified:
        if any(e.correct is None for e in examples):
            raise DataError(
                "the shards have no `correct` column, so verified targets cannot be told apart; "
                "pass --include_unverified true to train on every row"
            )
        keep = [e for e in examples if e.correct]
        if not keep:
            raise DataError(
                f"none of the {len(examples)} targets was verified correct; generate with retries "
                "(--max_retries) or a lower λ, or pass --include_unverified true to train on them anyway"
            )
    counts = RowCounts(
        rows=len(examples),
        dropped_unverified=len(examples) - len(keep),
        used=len(keep),
        cut_at_length=sum(not e.ended for e in keep),
    )
    return keep, counts


def load_examples(run_dirs: list[str]) -> tuple[list[TrainExample], list[RunManifest]]:
    """Every row of every finished run (manifest order), after checking presence, checksums, columns and
    that one tokenizer and model wrote them all."""
    if not run_dirs:
        raise DataError("no shard run directories given (--shards)")
    examples, manifests = [], []
    for run_dir in expand_run_dirs(run_dirs):
        manifest = RunManifest.load(run_dir)
        if manifests and manifest.model_identity() != manifests[0].model_identity():
            raise DataError(
                f"{run_dir}: written with another tokenizer or model than {manifests[0].run_dir} "
                f"({manifest.model_identity()} vs {manifests[0].model_identity()})"
            )
        for table in manifest.tables():
            examples += _examples(table)
        manifests.append(manifest)
    if not examples:
        raise DataError(f"no rows in {', '.join(run_dirs)}")
    return examples, manifests


def _examples(table) -> list[TrainExample]:
    columns = {c: table.column(c).to_pylist() for c in REQUIRED_COLUMNS}
    rows = len(columns["example_id"])
    correct = table.column("correct").to_pylist() if "correct" in table.column_names else [None] * rows
    finish = table.column("finish_reason").to_pylist() if "finish_reason" in table.column_names else [None] * rows
    return [
        TrainExample(*values, correct=ok, ended=reason != CUT_AT_LENGTH)
        for *values, ok, reason in zip(*(columns[c] for c in REQUIRED_COLUMNS), correct, finish)
    ]


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
    return [ordered[i : i + micro_batch_size] for i in range(0, len(ordered), micro_batch_size)]


def pad_id(tokenizer) -> int:
    """The tokenizer's padding id, or EOS for tokenizers without one (SmolLM2's has one; many do not)."""
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id


def collate(examples: list[TrainExample], eos_id: int, pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded input ids, attention mask and labels (IGNORE on prompt and padding)."""
    width = max(len(e) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for row, e in enumerate(examples):
        target = e.label_ids(eos_id)
        sequence = e.prompt_ids + target
        ids[row, : len(sequence)] = torch.tensor(sequence)
        labels[row, len(e.prompt_ids) : len(sequence)] = torch.tensor(target)
        mask[row, : len(sequence)] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def padding_fraction(groups: list[list[TrainExample]]) -> float:
    real = sum(len(e) for g in groups for e in g)
    padded = sum(max(len(e) for e in g) * len(g) for g in groups)
    return 1 - real / padded if padded else 0.0
