"""One writer per output: a second writer of the same output exits 2 naming the first; a lock left by a
dead process is taken over with a warning. Each stage is tried with two concurrent processes."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mixsd.lock import LockError, output_lock
from tests import processes

ROOT = Path(__file__).resolve().parent.parent


def test_second_holder_is_refused_with_the_first_named(tmp_path):
    target = tmp_path / "run"
    with output_lock(target):
        with pytest.raises(LockError) as info:
            output_lock(target).acquire()
        message = str(info.value)
        assert f"pid {os.getpid()} on {socket.gethostname()} since " in message and str(target) in message
    assert not list(tmp_path.iterdir())  # a clean release leaves no lock file behind
    with output_lock(target):  # and the output can be taken again
        pass


HOLD = """
import sys, time
from mixsd.lock import output_lock
lock = output_lock(sys.argv[1]).acquire()  # kept: a collected lock closes its file, and flock goes with it
print("held", flush=True)
time.sleep(600)
"""


def test_lock_of_a_killed_process_is_taken_over_with_a_warning(tmp_path, capfd):
    target = tmp_path / "run"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(target)],
        stdout=subprocess.PIPE,
        text=True,
        env=os.environ | {"PYTHONPATH": str(ROOT)},
    )
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(LockError, match=f"pid {holder.pid} on"):
        output_lock(target).acquire()
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    with output_lock(target):
        pass
    assert f"taking over {target}: its last writer, pid {holder.pid} on" in capfd.readouterr().err


def _lock_file(target: Path) -> Path:
    return target.parent / f".{target.name}.lock"


def _start(args: list[str]):
    """`python ARGS` in its own session: a stage's module forked ready-imported (tests/processes.py), or a
    `-c` script in a fresh interpreter."""
    if args[0] == "-m":
        return processes.start(args[1], args[2:])
    return subprocess.Popen(
        [sys.executable, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=os.environ | {"PYTHONPATH": str(ROOT)},
        start_new_session=True,
    )


def _stderr(process) -> str:
    return process.stderr if isinstance(process, processes.ModuleProcess) else process.communicate()[1]


def _wait_for(pattern_dir: Path, glob: str, process, timeout: float = 120) -> Path:
    deadline = time.time() + timeout
    while time.time() < deadline:
        found = list(pattern_dir.glob(glob)) if pattern_dir.exists() else []
        if found:
            return found[0]
        assert process.poll() is None, _stderr(process)[-3000:]
        time.sleep(0.05)
    raise AssertionError(f"no {glob} under {pattern_dir} after {timeout} s")


def _refused_while_first_runs(first, second_args: list[str]) -> str:
    """Run the second writer to its end while the first still holds the output; return its stderr."""
    try:
        second = processes.run(second_args[1], second_args[2:], timeout=300)
        assert first.poll() is None, "the first writer ended before the second tried: the test proves nothing"
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
    assert second.returncode == 2, second.stderr[-3000:]
    assert f"is being written by pid {first.pid} on {socket.gethostname()} since" in second.stderr
    assert "Traceback" not in second.stderr
    return second.stderr


def test_two_generators_on_one_run_directory(tiny_model_dir, kgfact_small, tmp_path):
    args = [
        "-m",
        "generate",
        "--model",
        str(tiny_model_dir),
        "--corpus",
        str(kgfact_small / "train.jsonl"),
        "--out",
        str(tmp_path / "out"),
        "--backend",
        "hf",
        "--dtype",
        "float32",
        "--max_new_tokens",
        "200",
        "--shard_size",
        "4",
        "--lam",
        "0.5",
        "--temperature",
        "1",
        "--progress",
        "false",
    ]
    first = _start(args)
    _wait_for(tmp_path / "out", ".mixsd-*.lock", first)
    assert "run directory" in _refused_while_first_runs(first, args)


def test_two_trainers_on_one_out_directory(tiny_model_dir, sft_shards, tmp_path):
    out = tmp_path / "train"
    args = [
        "-m",
        "train",
        "--model",
        str(tiny_model_dir),
        "--shards",
        str(sft_shards),
        "--out",
        str(out),
        "--method",
        "sft",
        "--batch_size",
        "4",
        "--micro_batch_size",
        "4",
        "--max_steps",
        "100000",
        "--save_every",
        "0",
        "--progress",
        "false",
        "--resume",
        "true",
    ]
    first = _start(args)
    _wait_for(out.parent, _lock_file(out).name, first)
    assert "training run" in _refused_while_first_runs(first, args)


def test_two_evaluations_and_two_sweeps_on_one_out(tiny_model_dir, kgfact_short, tmp_path):
    common = [
        "--base",
        str(tiny_model_dir),
        "--corpus",
        str(kgfact_short),
        "--backend",
        "hf",
        "--dtype",
        "float32",
        "--progress",
        "false",
        "--max_new_tokens",
        "48",
    ]
    single = ["-m", "evaluate", "--model", str(tiny_model_dir), "--out", str(tmp_path / "eval"), *common]
    first = _start(single)
    _wait_for(tmp_path, ".eval.lock", first)
    assert "evaluation" in _refused_while_first_runs(first, single)

    runs = tmp_path / "no-runs-needed"
    sweep = ["-m", "evaluate.sweep", "--runs", str(runs), "--out", str(tmp_path / "sweep"), *common]
    held = _start(["-c", HOLD, str(tmp_path / "sweep")])  # a sweep in progress holds its out directory
    _wait_for(tmp_path, ".sweep.lock", held)
    assert "evaluation sweep" in _refused_while_first_runs(held, sweep)


@pytest.fixture(scope="module")
def sft_shards(tiny_model_dir, kgfact_small, tmp_path_factory):
    from generate.config import GenerateConfig
    from generate.runner import Generator

    out = tmp_path_factory.mktemp("sft")
    (run,) = Generator(
        GenerateConfig(
            model=str(tiny_model_dir),
            corpus=str(kgfact_small / "train.jsonl"),
            out=str(out),
            method="sft",
            progress=False,
        )
    ).run_all()
    assert json.loads((run / "manifest.json").read_text())["complete"]
    return run
