"""Shared fixtures: one tiny model per test session, built in-process (no network, no files outside tmp)."""

from __future__ import annotations

import os
import tempfile

import pytest

# Weight hashes are remembered in a per-user cache; the tests keep theirs apart (and every subprocess inherits it).
os.environ.setdefault("MIXSD_CACHE", tempfile.mkdtemp(prefix="mixsd-test-cache-"))
if os.environ.get("PYTEST_XDIST_WORKER"):
    # `make test` runs two workers on two cores: each keeps to one thread, and vLLM's CPU backend must not pin
    # its threads to every core (two processes spinning on the same pinned cores run several times slower).
    os.environ["OMP_NUM_THREADS"] = "1"
    os.environ["VLLM_CPU_OMP_THREADS_BIND"] = "nobind"

from mixsd.debug_model import DebugModelConfig, write_debug_model


def pytest_sessionstart(session):
    from tests import processes

    processes.warm_up()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    return write_debug_model(tmp_path_factory.mktemp("tiny-model"), DebugModelConfig())


@pytest.fixture(scope="session")
def kgfact_small(tmp_path_factory):
    from corpora.kgfact import KGFactConfig, write

    out = tmp_path_factory.mktemp("kgfact-small")
    write(KGFactConfig(out=str(out), size="small", seed=0))
    return out


@pytest.fixture(scope="session")
def kgfact_short(tmp_path_factory):
    """KGFact-small with 3 distractors per retrieval question instead of 50: evaluation tests score every
    split in a few seconds (a retrieval prompt is ~2,200 tokens with 50); the long split is tested on its own
    (test_failure_modes.py)."""
    from corpora.kgfact import KGFactConfig, write

    out = tmp_path_factory.mktemp("kgfact-short")
    write(KGFactConfig(out=str(out), size="small", seed=0, distractors=3))
    return out


@pytest.fixture(scope="session")
def kgfact_few(kgfact_small, tmp_path_factory):
    """The first 16 training questions of KGFact-small: for tests whose cost is per row and whose point is
    not the corpus (process layouts: tensor parallelism, Ray actors)."""
    from tests.generate_helpers import first_records

    return first_records(kgfact_small / "train.jsonl", 16, tmp_path_factory.mktemp("kgfact-few") / "train.jsonl")
