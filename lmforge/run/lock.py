"""The run lock: `train.lock` in a run dir, held while one process writes the run.

`flock`-based, so the kernel drops it with the process and a `kill -9` never leaves a stale lock.
Trainers, fine-tuning and sweeps take it; readers (eval, generate, serve) do not need it.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path

from lmforge.errors import CheckpointError

LOCK_FILE = "train.lock"


class RunLock:
    """An exclusive lock on a run dir (`train.lock`), released on exit or when the process dies.

    Uses `flock`, which the kernel drops with the process, so a `kill -9` never leaves a stale
    lock; the file holds the owner's pid and host for the error message.
    """

    def __init__(self, run_dir: str | Path) -> None:
        self.path = Path(run_dir) / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> RunLock:
        import fcntl

        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = os.read(fd, 200).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise CheckpointError(
                f"{self.path.parent} is being written by another trainer ({owner}); wait for "
                "it to finish or choose another out="
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} on {platform.node()}".encode())
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        self.path.unlink(missing_ok=True)
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()
