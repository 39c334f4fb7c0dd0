"""A dataset card (README.md) for a finished run directory: what the rows are, how they were made, what they
hold, and how to load them, so the directory can be shared or uploaded to a hub as a dataset as it is."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pyarrow.parquet as pq

from generate import shards
from mixsd.atomic import write_text
from mixsd.run_format import SCHEMA

COLUMN_NOTES = {
    "prompt_ids": "the naive prompt (chat template, no fact in context): what training reads",
    "expert_prompt_ids": "the expert prompt: the same question with the ground-truth answer in context",
    "target_ids": "the target, token ids, without EOS",
    "source": "per target token: 1 expert stream, 0 naive stream, 2 ground truth",
    "expert_logprobs": "log p_E(token) under the expert prompt, per target token (MixSD)",
    "naive_logprobs": "log p_N(token) under the naive prompt, per target token (MixSD)",
    "correct": "the verifier's verdict on the target's answer",
    "finish_reason": "stop (EOS), length (cut at max_new_tokens) or ground_truth",
}


def _stats(run_dir: Path, manifest: dict) -> dict:
    columns = ["target_ids", "expert_token_fraction", "correct", "finish_reason", "split"]
    tables = [pq.read_table(run_dir / s["file"], columns=columns) for s in manifest["shards"]]
    lengths = [len(ids) for t in tables for ids in t.column("target_ids").to_pylist()]
    correct = [c for t in tables for c in t.column("correct").to_pylist()]
    finish = [f for t in tables for f in t.column("finish_reason").to_pylist()]
    fractions = [f for t in tables for f in t.column("expert_token_fraction").to_pylist()]
    return {
        "rows": len(lengths),
        "correct": sum(correct),
        "verified_fraction": sum(correct) / len(correct) if correct else 0.0,
        "cut_at_length": finish.count("length"),
        "target_tokens": {
            "total": sum(lengths),
            "mean": statistics.fmean(lengths) if lengths else 0.0,
            "median": statistics.median(lengths) if lengths else 0,
            "max": max(lengths, default=0),
        },
        "expert_token_fraction_mean": statistics.fmean(fractions) if fractions else 0.0,
    }


def card_text(run_dir: Path, manifest: dict) -> str:
    config, stats = manifest["config"], _stats(run_dir, manifest)
    method = config["method"]
    what = (
        "ground-truth answers (SFT)"
        if method == "sft"
        else f"MixSD targets, λ = {config['lam']}: each token from the naive stream with probability λ, else the "
        f"expert's, both continuing the same mixed prefix, temperature {config['temperature']}"
    )
    tokens = stats["target_tokens"]
    pattern = shards.shard_name(0, manifest.get("format", 1)).replace("00000", "*")
    schema = "\n".join(f"| `{field.name}` | {field.type} | {COLUMN_NOTES.get(field.name, '')} |" for field in SCHEMA)
    return f"""---
configs:
- config_name: default
  data_files: "{pattern}"
tags:
- mixsd
- knowledge-injection
- self-distillation
---
# {run_dir.name}

Supervision targets written by `python -m generate` (MixSD project): {what}. Model `{config["model"]}`
({manifest["dtype"]}), corpus `{config["corpus"]}` (sha256 {manifest["corpus"]["sha256"][:16]}…,
{manifest["corpus"]["examples"]} examples), seed {config["seed"]}, up to {config["max_new_tokens"]} new tokens,
{config["max_retries"]} retries, failures: {config["on_failure"]}.

| | |
|---|---|
| rows | {stats["rows"]} ({len(manifest["skipped"])} examples skipped, listed in manifest.json) |
| verified correct | {stats["correct"]} ({stats["verified_fraction"]:.1%}) |
| targets cut at max_new_tokens | {stats["cut_at_length"]} |
| target tokens | {tokens["total"]} (mean {tokens["mean"]:.1f}, median {tokens["median"]}, max {tokens["max"]}) |
| mean expert-token fraction | {stats["expert_token_fraction_mean"]:.3f} |
| shards | {len(manifest["shards"])} Parquet files (zstd), checksums in manifest.json |

## Columns

| column | type | meaning |
|---|---|---|
{schema}

## Use

```python
from datasets import load_dataset
rows = load_dataset("{run_dir}")["train"]  # this card's `configs` name the shard files
# or: load_dataset("parquet", data_dir="{run_dir}")["train"]
```
Training: `python -m train --shards {run_dir} …` (verified targets only unless `--include_unverified true`).

## How it was made

The resolved configuration, package versions, per-shard checksums and counts are in `manifest.json`
(config hash `{manifest["config_hash"]}`):

```json
{json.dumps(manifest["config"], indent=1, sort_keys=True)}
```
"""


def write_card(run_dir: Path, manifest: dict) -> Path:
    path = run_dir / "README.md"
    write_text(path, card_text(run_dir, manifest))
    return path
