"""Writing run directories: Parquet shards (written to a temp name, then renamed) and the manifest that lists
them. The format itself (schema, names, manifest reading) is mixsd/run_format.py."""

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
from mixsd.run_format import FORMAT_VERSION, MANIFEST, SCHEMA, RunManifest, shard_name  # noqa: F401 (used as shards.X)


class RunDirError(UserError, ValueError):
    """A run directory that must not be written into."""


def settings_hash(settings: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:10]


def run_name(settings: dict[str, Any], digest: str) -> str:
    if settings["method"] == "sft":
        return f"sft-{digest}"
    return f"{settings['method']}-lam{settings['lam']:g}-t{settings['temperature']:g}-{digest}"


def write_shard(path: Path, rows: list[dict], row_group_size: int) -> dict[str, Any]:
    """Write rows atomically; return the shard's manifest entry."""
    table = pa.Table.from_pylist(rows, schema=SCHEMA)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="zstd", row_group_size=row_group_size)
    return {"file": path.name, "rows": len(rows), "sha256": file_sha256(path)}


def read_manifest(run_dir: Path) -> dict[str, Any] | None:
    """The manifest's JSON document (None: no manifest yet), for the writer that continues it."""
    found = RunManifest.find(run_dir)
    return None if found is None else found.document


def open_run(run_dir: Path, digest: str, fresh: dict[str, Any]) -> dict[str, Any]:
    """The manifest to continue from: the existing one if it holds the same config, a fresh one otherwise.
    A directory holding another config, or files without a manifest, is never written into."""
    existing = read_manifest(run_dir)
    if existing is None:
        if run_dir.exists() and any(p.suffix == ".parquet" for p in run_dir.iterdir()):
            raise RunDirError(f"{run_dir}: holds shards but no {MANIFEST}; refusing to write into it")
        return fresh
    if existing.get("config_hash") != digest:
        raise RunDirError(
            f"{run_dir}: holds a run with config hash {existing.get('config_hash')}, "
            f"not {digest}; refusing to write into it"
        )
    return existing


def save_manifest(run_dir: Path, manifest: dict[str, Any]) -> None:
    write_json(run_dir / MANIFEST, manifest)
