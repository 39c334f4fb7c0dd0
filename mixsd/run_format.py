"""The contract between generate and the stages that read its output: a run directory of Parquet shards and
the manifest that lists them. generate writes this format; train and evaluate read it only through
`RunManifest` (the checks live here once: presence, checksums, columns, completeness, format version).

Format versions (the manifest's "format"; a manifest without one is version 1):
1. shards named shard-NNNNN.parquet;
2. shards named train-NNNNN.parquet, so `datasets.load_dataset("parquet", data_dir=RUN)` finds them as the
   train split by itself (with version 1 names it also read manifest.json as Parquet).
"""

from __future__ import annotations

import glob
import json
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from mixsd.checksums import file_sha256
from mixsd.errors import UserError

FORMAT_VERSION = 2
KNOWN_FORMATS = (1, 2)
MANIFEST = "manifest.json"
CUT_AT_LENGTH = "length"  # finish_reason of a target that hit max_new_tokens (or the context) before EOS


class Source(IntEnum):
    """Where a target token came from (the `source` column, one value per target token)."""

    NAIVE = 0
    EXPERT = 1
    GROUND_TRUTH = 2


SCHEMA = pa.schema(
    [
        ("example_id", pa.string()),
        ("sample_index", pa.int32()),
        ("split", pa.string()),
        ("method", pa.string()),
        ("lambda", pa.float64()),
        ("temperature", pa.float64()),
        ("seed", pa.int64()),
        ("prompt_ids", pa.list_(pa.int32())),
        ("expert_prompt_ids", pa.list_(pa.int32())),
        ("target_ids", pa.list_(pa.int32())),
        ("target_text", pa.string()),
        ("source", pa.list_(pa.int8())),  # per target token: a Source value
        ("expert_logprobs", pa.list_(pa.float32())),
        ("naive_logprobs", pa.list_(pa.float32())),
        ("expert_token_fraction", pa.float64()),
        ("correct", pa.bool_()),
        ("attempts", pa.int32()),
        ("finish_reason", pa.string()),
    ]
)
REQUIRED_COLUMNS = ("example_id", "prompt_ids", "expert_prompt_ids", "target_ids")  # what training cannot do without


def shard_name(index: int, version: int = FORMAT_VERSION) -> str:
    """Shard `index`'s file name in a run of format `version` (a run resumed keeps its own names)."""
    return f"shard-{index:05d}.parquet" if version == 1 else f"train-{index:05d}.parquet"


class RunFormatError(UserError, ValueError):
    """A run directory that cannot be read as generate's output; the message names the directory or file."""


@dataclass(frozen=True)
class ShardEntry:
    file: str
    rows: int
    sha256: str


@dataclass(frozen=True)
class RunManifest:
    """A run directory's manifest as readers see it. `document` is the whole JSON document, for the fields
    only reports and cards read (totals, skipped examples, settings)."""

    run_dir: Path
    format: int
    config_hash: str
    complete: bool
    config: dict
    shards: tuple[ShardEntry, ...]
    document: dict

    @classmethod
    def find(cls, run_dir: str | Path) -> RunManifest | None:
        """The manifest, or None where the directory has none (yet)."""
        path = Path(run_dir) / MANIFEST
        if not path.is_file():
            return None
        try:
            document = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise RunFormatError(f"{path}: invalid JSON ({err.msg}, line {err.lineno})") from None
        version = document.get("format", 1)
        if version not in KNOWN_FORMATS:
            raise RunFormatError(
                f"{path}: run format {version!r} is not one this version reads {KNOWN_FORMATS} "
                "(written by a newer mixsd? upgrade, or regenerate the run)"
            )
        shards = tuple(ShardEntry(s["file"], s["rows"], s["sha256"]) for s in document.get("shards", []))
        return cls(
            Path(run_dir),
            version,
            document.get("config_hash", ""),
            bool(document.get("complete")),
            document.get("config", {}),
            shards,
            document,
        )

    @classmethod
    def load(cls, run_dir: str | Path, complete: bool = True) -> RunManifest:
        """The manifest of a run to read from: it must exist, and (`complete`) the run must be finished."""
        manifest = cls.find(run_dir)
        if manifest is None:
            raise RunFormatError(f"{run_dir}: no {MANIFEST} (not a generate run directory)")
        if complete and not manifest.complete:
            raise RunFormatError(f"{run_dir}: the run is not complete (rerun its generate command to finish it)")
        return manifest

    def model_identity(self) -> tuple:
        """What must agree across runs trained on together: the tokenizer and the model that wrote the ids."""
        model = self.document.get("output_settings", {}).get("model", {})
        return (
            self.document.get("tokenizer"),
            self.document.get("vocab_size"),
            model.get("config_sha256") or model.get("hub_id"),
        )

    def verify(self) -> None:
        """Every listed shard is present and unchanged."""
        for entry in self.shards:
            self._checked_path(entry)

    def tables(self, columns: list[str] | None = None) -> list[pa.Table]:
        """Each shard's table in manifest order, after its checksum and the required columns are checked."""
        tables = []
        for entry in self.shards:
            path = self._checked_path(entry)
            present = pq.read_schema(path).names
            missing = [c for c in REQUIRED_COLUMNS if c not in present and (columns is None or c in columns)]
            if missing:
                raise RunFormatError(f"{path}: missing column(s) {missing}")
            # Optional columns a shard lacks (older runs) are left out; the caller checks column_names.
            tables.append(
                pq.read_table(path, columns=None if columns is None else [c for c in columns if c in present])
            )
        return tables

    def rows(self) -> list[dict[str, Any]]:
        """Every row, in shard order."""
        return [row for table in self.tables() for row in table.to_pylist()]

    def _checked_path(self, entry: ShardEntry) -> Path:
        path = self.run_dir / entry.file
        if not path.is_file():
            raise RunFormatError(f"{path}: listed in {MANIFEST} but missing")
        if file_sha256(path) != entry.sha256:
            raise RunFormatError(f"{path}: checksum does not match {MANIFEST} (truncated or modified)")
        return path


def expand_run_dirs(patterns: list[str]) -> list[Path]:
    """Run directories from paths or glob patterns (`runs/generate/mixsd-lam0.3-t0-*`), each matched once."""
    found: list[Path] = []
    for pattern in patterns:
        matches = sorted(map(Path, glob.glob(pattern))) if glob.has_magic(pattern) else [Path(pattern)]
        if not matches:
            raise RunFormatError(f"--shards {pattern!r}: matches no run directory")
        found += [m for m in matches if m not in found]
    return found


def read_rows(run_dir: str | Path) -> list[dict[str, Any]]:
    """All rows of a finished or partial run, in shard order, every shard checked against the manifest."""
    return RunManifest.load(run_dir, complete=False).rows()
