"""Run directories: Parquet shards (written to a temp name, then renamed) and the manifest that lists them."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from mixsd.atomic import atomic_path, write_json
from mixsd.checksums import file_sha256
from mixsd.errors import UserError

SCHEMA = pa.schema([
    ("example_id", pa.string()), ("sample_index", pa.int32()), ("split", pa.string()), ("method", pa.string()),
    ("lambda", pa.float64()), ("temperature", pa.float64()), ("seed", pa.int64()),
    ("prompt_ids", pa.list_(pa.int32())), ("expert_prompt_ids", pa.list_(pa.int32())),
    ("target_ids", pa.list_(pa.int32())), ("target_text", pa.string()),
    ("source", pa.list_(pa.int8())),  # per target token: 1 expert, 0 naive, 2 ground truth
    ("expert_logprobs", pa.list_(pa.float32())), ("naive_logprobs", pa.list_(pa.float32())),
    ("expert_token_fraction", pa.float64()), ("correct", pa.bool_()), ("attempts", pa.int32()),
    ("finish_reason", pa.string()),
])
SOURCE_NAIVE, SOURCE_EXPERT, SOURCE_GROUND_TRUTH = 0, 1, 2
MANIFEST = "manifest.json"


class RunDirError(UserError, ValueError):
    """A run directory that must not be written into."""


def settings_hash(settings: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:10]


def run_name(settings: dict[str, Any], digest: str) -> str:
    if settings["method"] == "sft":
        return f"sft-{digest}"
    return f"{settings['method']}-lam{settings['lam']:g}-t{settings['temperature']:g}-{digest}"


def shard_name(index: int) -> str:
    return f"shard-{index:05d}.parquet"


def write_shard(path: Path, rows: list[dict], row_group_size: int) -> dict[str, Any]:
    """Write rows atomically; return the shard's manifest entry."""
    table = pa.Table.from_pylist(rows, schema=SCHEMA)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="zstd", row_group_size=row_group_size)
    return {"file": path.name, "rows": len(rows), "sha256": file_sha256(path)}


def read_manifest(run_dir: Path) -> dict[str, Any] | None:
    path = run_dir / MANIFEST
    if not path.is_file():
        return None
    return json.loads(path.read_text())


def open_run(run_dir: Path, digest: str, fresh: dict[str, Any]) -> dict[str, Any]:
    """The manifest to continue from: the existing one if it holds the same config, a fresh one otherwise.
    A directory holding another config, or files without a manifest, is never written into."""
    existing = read_manifest(run_dir)
    if existing is None:
        if run_dir.exists() and any(p.suffix == ".parquet" for p in run_dir.iterdir()):
            raise RunDirError(f"{run_dir}: holds shards but no {MANIFEST}; refusing to write into it")
        return fresh
    if existing.get("config_hash") != digest:
        raise RunDirError(f"{run_dir}: holds a run with config hash {existing.get('config_hash')}, "
                          f"not {digest}; refusing to write into it")
    return existing


def save_manifest(run_dir: Path, manifest: dict[str, Any]) -> None:
    write_json(run_dir / MANIFEST, manifest)


def read_rows(run_dir: Path) -> list[dict]:
    """All rows of a run, in shard order (checks every shard against the manifest)."""
    manifest = read_manifest(Path(run_dir))
    if manifest is None:
        raise RunDirError(f"{run_dir}: no {MANIFEST}")
    rows = []
    for entry in manifest["shards"]:
        path = Path(run_dir) / entry["file"]
        if file_sha256(path) != entry["sha256"]:
            raise RunDirError(f"{path}: checksum does not match {MANIFEST}")
        rows += pq.read_table(path).to_pylist()
    return rows
