"""File checksums, streamed so that multi-GB weight files never sit in memory, and a model's identity by content.

Hashing a model's weights costs a read of every byte (about 1 s per GB), so each file's sha256 is remembered
in a small cache keyed by (absolute path, size, modification time): a file rewritten in place gets a new
mtime and is hashed again; an unchanged one is read once per machine.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

WEIGHT_SUFFIXES = (".safetensors", ".bin")
# Left in a model directory whose weights were deleted to save disk (mixsd.checkpoints.prune_weights): the
# identity the weights had, so results scored from them are still recognized as theirs.
PRUNED_FINGERPRINT_FILE = "pruned_weights.json"


def file_sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def cache_path() -> Path:
    root = os.environ.get("MIXSD_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "mixsd"
    )
    return Path(root) / "sha256.json"


def cached_file_sha256(path: str | os.PathLike) -> str:
    """sha256 of a file, computed once per (path, size, mtime)."""
    path = Path(path).resolve()
    stat = path.stat()
    key = f"{path}|{stat.st_size}|{stat.st_mtime_ns}"
    store = cache_path()
    cache = _read_cache(store)
    if key not in cache:
        cache[key] = file_sha256(path)
        _write_cache(store, cache)
    return cache[key]


def model_fingerprint(model: str | os.PathLike) -> dict[str, Any]:
    """What identifies a model: for a local directory the sha256 of its config and of every weight file (so a
    retrained model of the same shape at the same path is a different model); for a hub id, the id."""
    root = Path(model)
    if not root.is_dir():
        return {"hub_id": str(model)}
    weights = sorted(p for p in root.iterdir() if p.suffix in WEIGHT_SUFFIXES)
    if not weights and (root / PRUNED_FINGERPRINT_FILE).is_file():
        return json.loads((root / PRUNED_FINGERPRINT_FILE).read_text())
    config = root / "config.json"
    return {
        "config_sha256": cached_file_sha256(config) if config.exists() else None,
        "weights_sha256": {p.name: cached_file_sha256(p) for p in weights},
    }


def _read_cache(store: Path) -> dict[str, str]:
    try:
        return json.loads(store.read_text())
    except (OSError, json.JSONDecodeError):
        return {}  # no cache yet, or a damaged one: hashes are recomputed, never trusted from a bad file


def _write_cache(store: Path, cache: dict[str, str]) -> None:
    from mixsd.atomic import write_json

    try:
        write_json(store, cache)
    except OSError:
        pass  # a read-only home: the hash is still right, only not remembered
