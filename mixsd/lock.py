"""One writer per output directory.

A stage that writes a directory (a generation run, a training run, an evaluation) holds an exclusive lock on
it for as long as it writes. The lock is a kernel `flock` on a small file that also records the holder (pid,
host, start time), so a second writer is refused with a message naming the first. A clean release deletes the
file. The kernel releases the lock when its holder dies, however it dies; the file with the dead holder's
record then stays behind, and the next writer takes over with a warning that names it.
"""

from __future__ import annotations

import datetime
import fcntl
import json
import os
import socket
import sys
from pathlib import Path

from mixsd.errors import UserError


class LockError(UserError):
    """The output is being written by another process."""


class OutputLock:
    """`with OutputLock(path):` — exclusive for the block; `path` is the lock file (created if needed)."""

    def __init__(self, path: str | os.PathLike, what: str):
        self.path, self.what = Path(path), what
        self._handle = None

    def acquire(self) -> "OutputLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = self._locked_handle()
        left = _read_holder(handle)
        if left:
            print(
                f"warning: taking over {self.what}: its last writer, {_describe(left)}, ended without releasing it",
                file=sys.stderr,
            )
        _write_holder(
            handle,
            {
                "pid": os.getpid(),
                "host": socket.gethostname(),
                "since": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
            },
        )
        self._handle = handle
        return self

    def _locked_handle(self):
        """The lock file, opened and flocked. A holder deletes the file when it releases, so the file we
        locked may have been unlinked in between; then the lock is on a stale inode and we try again."""
        while True:
            handle = open(self.path, "a+", encoding="utf-8")
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read_holder(handle)
                handle.close()
                raise LockError(
                    f"{self.what} is being written by {_describe(holder)} (lock {self.path}); "
                    "wait for it to finish or stop it"
                ) from None
            try:
                if os.stat(self.path).st_ino == os.fstat(handle.fileno()).st_ino:
                    return handle
            except FileNotFoundError:
                pass
            handle.close()

    def release(self) -> None:
        if self._handle is None:
            return
        self.path.unlink(missing_ok=True)  # unlink while still holding the lock: see _locked_handle
        fcntl.flock(self._handle, fcntl.LOCK_UN)
        self._handle.close()
        self._handle = None

    def __enter__(self) -> "OutputLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def output_lock(target: str | os.PathLike, what: str | None = None) -> OutputLock:
    """The lock of an output directory or file. It lives beside the target (`.NAME.lock`), not inside it: some
    outputs are replaced as a whole (written elsewhere, then renamed), and a reader listing the output's
    files should not see the lock."""
    target = Path(target)
    return OutputLock(target.parent / f".{target.name}.lock", what or str(target))


def _read_holder(handle) -> dict | None:
    handle.seek(0)
    text = handle.read().strip()
    if not text:
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return {"unreadable": text[:80]}


def _write_holder(handle, holder: dict) -> None:
    handle.seek(0)
    handle.truncate()
    handle.write(json.dumps(holder))
    handle.flush()


def _describe(holder: dict | None) -> str:
    if not holder:
        return "another process (no record)"
    if "pid" not in holder:
        return f"an unknown process ({holder})"
    return f"pid {holder['pid']} on {holder['host']} since {holder['since']}"
