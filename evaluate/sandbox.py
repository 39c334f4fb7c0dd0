"""Running generated HumanEval programs: a subprocess in a throwaway directory, with CPU-time, memory and
wall-clock limits, an empty environment, and no network.

No network: the program runs inside a fresh network namespace (`unshare -rn`: only a downed loopback) where
the system allows it; everywhere, a prelude also replaces the socket constructors with ones that raise.
"""

from __future__ import annotations

import functools
import re
import resource
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

TIMEOUT_S = 10.0
MEMORY_BYTES = 1 << 30
_PRELUDE = """import socket as _socket
def _no_network(*args, **kwargs):
    raise OSError("network access is disabled in the evaluation sandbox")
_socket.socket = _socket.create_connection = _socket.socketpair = _no_network
del _socket
"""
_CODE_BLOCK = re.compile(r"```(?:python|py)?\s*\n(.*?)(?:```|$)", re.DOTALL)


def program(prompt: str, reply: str) -> str:
    """The function to test: the reply's code block if it defines the function, else prompt + completion."""
    block = _CODE_BLOCK.search(reply)
    code = block.group(1) if block else reply
    return code if re.search(r"^def ", code, re.MULTILINE) else prompt + code


def passes(code: str, test: str, entry_point: str, timeout_s: float = TIMEOUT_S) -> bool:
    source = f"{_PRELUDE}\n{code}\n\n{test}\n\ncheck({entry_point})\n"
    workdir = Path(tempfile.mkdtemp(prefix="mixsd-sandbox-"))
    try:
        (workdir / "program.py").write_text(source)
        command = [sys.executable, "-I", "program.py"]
        if _can_unshare():
            command = ["unshare", "-rn"] + command
        try:
            done = subprocess.run(
                command,
                cwd=workdir,
                env={"PATH": "/usr/bin:/bin"},
                capture_output=True,
                timeout=timeout_s,
                preexec_fn=_limits,
                stdin=subprocess.DEVNULL,
            )
        except subprocess.TimeoutExpired:
            return False
        return done.returncode == 0
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _limits() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_BYTES, MEMORY_BYTES))
    cpu = int(TIMEOUT_S) + 1
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu))
    resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 24, 1 << 24))


@functools.cache
def _can_unshare() -> bool:
    if shutil.which("unshare") is None:
        return False
    try:
        return subprocess.run(["unshare", "-rn", "true"], capture_output=True, timeout=5).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False
