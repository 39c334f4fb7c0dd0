"""`python -m MODULE ARGS` in a separate process, without paying an interpreter start and the torch and
transformers imports for each one.

Tests that kill a stage, race two writers or check an exit status need a real process; on 2 cores each fresh
interpreter costs 4–7 s of imports, most of the suite's time. Here every such process is forked from one
server that imported the heavy modules once (multiprocessing's forkserver, started on first use) and then
runs the module exactly as `python -m` would (`runpy`, `sys.argv`, exit status, atexit handlers). A few
tests keep a real interpreter where the interpreter itself is what they check (a traceback on a bug, torchrun).
"""

from __future__ import annotations

import atexit
import multiprocessing
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

# For tests that start processes keeping every core busy (Ray actors, tensor-parallel workers, ranks): under
# `pytest -n 2 --dist loadgroup` they run one after another on one worker, beside the other worker's
# one-process tests. Side by side, two of them would each wait on the other's processes.
EVERY_CORE = pytest.mark.xdist_group("every-core")

# What the stages import (not the modules run as __main__: runpy warns when one is already imported).
PRELOAD = [
    "torch",
    "transformers",
    "transformers.models.llama.modeling_llama",
    "pyarrow.parquet",
    "mixsd.cli",
    "mixsd.config",
    "generate.runner",
    "train.trainer",
    "evaluate.evaluator",
    "evaluate.results",
    "vllm",
    "generate.vllm_engine",
    "evaluate.backends",
]

_context = multiprocessing.get_context("forkserver")
_context.set_forkserver_preload(PRELOAD)


def warm_up() -> None:
    """Start the server now, in the background: its imports overlap the first tests instead of the first
    process that needs it waiting for them."""
    from multiprocessing import forkserver

    forkserver.ensure_running()


def _run_module(module: str, args: list[str], env: dict[str, str], stdout: str, stderr: str) -> None:
    """The child: its own session (so a test can kill it with everything it started), its own output files,
    then the module as `python -m` runs it (or, for module "-c", the code in args[0] as `python -c`)."""
    import runpy

    os.setsid()
    for fd, path in ((1, stdout), (2, stderr)):
        os.dup2(os.open(path, os.O_WRONLY | os.O_APPEND), fd)
    os.environ.clear()
    os.environ.update(env)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    code: int | str | None = 0
    sys.argv = ["-c", *args[1:]] if module == "-c" else [module, *args]
    try:
        if module == "-c":
            exec(compile(args[0], "<string>", "exec"), {"__name__": "__main__"})
        else:
            runpy.run_module(module, run_name="__main__", alter_sys=True)
    except SystemExit as exit_:
        code = exit_.code
    finally:
        atexit._run_exitfuncs()  # multiprocessing ends its children with os._exit, which would skip them
        sys.stdout.flush()
        sys.stderr.flush()
    sys.exit(code)


class ModuleProcess:
    """A running `python -m MODULE`: pid, poll, wait, kill and its output read back from files."""

    def __init__(self, module: str, args: list[str], env: dict[str, str] | None, merge_output: bool):
        folder = Path(tempfile.mkdtemp(prefix="mixsd-proc-"))
        self._stdout = folder / "stdout"
        self._stderr = self._stdout if merge_output else folder / "stderr"
        for path in {self._stdout, self._stderr}:
            path.touch()
        self._read_upto = 0
        self._process = _context.Process(
            target=_run_module, args=(module, list(args), dict(env or os.environ), str(self._stdout), str(self._stderr))
        )
        self._process.start()
        self.pid = self._process.pid

    @property
    def returncode(self) -> int | None:
        return self._process.exitcode

    def poll(self) -> int | None:
        return self._process.exitcode

    def wait(self, timeout: float | None = None) -> int:
        self._process.join(timeout)
        if self._process.exitcode is None:
            raise subprocess.TimeoutExpired(self._process.name, timeout)
        return self._process.exitcode

    def finish(self, timeout: float | None = None) -> int:
        """Wait for the end; past `timeout`, kill it with everything it started (and raise TimeoutExpired)."""
        try:
            return self.wait(timeout)
        finally:
            if self.poll() is None:
                self.kill_group()

    def kill_group(self) -> None:
        """SIGKILL to the process and everything it started (it leads its own session)."""
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self._process.join()

    @property
    def stdout(self) -> str:
        return self._stdout.read_text(errors="replace")

    @property
    def stderr(self) -> str:
        return self._stderr.read_text(errors="replace")

    def readline(self, timeout: float = 600) -> str:
        """The next whole line of stdout; '' once the process has ended and every line was read."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._stdout.open("rb") as stream:
                stream.seek(self._read_upto)
                line = stream.readline()
            if line.endswith(b"\n") or (line and self.poll() is not None):
                self._read_upto += len(line)
                return line.decode(errors="replace")
            if self.poll() is not None and not line:
                return ""
            time.sleep(0.02)
        raise subprocess.TimeoutExpired(self._process.name, timeout)


def start(module: str, args: list[str], env: dict[str, str] | None = None, merge_output: bool = False) -> ModuleProcess:
    """`python -m module args…` started in the background (module "-c": `python -c args[0] args[1:]…`)."""
    return ModuleProcess(module, args, env, merge_output)


def run(
    module: str, args: list[str], env: dict[str, str] | None = None, timeout: float = 600
) -> subprocess.CompletedProcess:
    """`python -m module args…` run to its end, like `subprocess.run(…, capture_output=True, text=True)`."""
    process = start(module, args, env)
    process.finish(timeout)
    return subprocess.CompletedProcess([module, *args], process.returncode, process.stdout, process.stderr)


def run_ranks(
    module: str, args: list[str], world_size: int = 2, timeout: float = 600
) -> list[subprocess.CompletedProcess]:
    """`torchrun --standalone --nproc_per_node N -m module args…` as the ranks see it: N processes with the
    environment torchrun gives them (rank, world size, the rendezvous address), each forked as above."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    ranks = [
        start(
            module,
            args,
            env=os.environ
            | {
                "MASTER_ADDR": "127.0.0.1",
                "MASTER_PORT": str(port),
                "WORLD_SIZE": str(world_size),
                "LOCAL_WORLD_SIZE": str(world_size),
                "RANK": str(rank),
                "LOCAL_RANK": str(rank),
                "GROUP_RANK": "0",
            },
        )
        for rank in range(world_size)
    ]
    deadline = time.monotonic() + timeout
    try:
        for process in ranks:
            process.wait(max(deadline - time.monotonic(), 1))
    finally:
        for process in ranks:
            if process.poll() is None:
                process.kill_group()
    return [subprocess.CompletedProcess([module, *args], p.returncode, p.stdout, p.stderr) for p in ranks]
