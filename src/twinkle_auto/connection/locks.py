"""One launcher or fixer per run: an `fcntl` lock file in the run folder.

"Is it running?", "does it need a fix?", the spawn and the recording of the new pid must happen as one
step, or two assistants (two `resume` commands, a chat and a `watch`) each see "not running" and each
start a process. The lock is a file lock, so it covers every process on this machine that shares the
run folder, and the kernel releases it when the holder dies (no stale lock after a SIGKILL).

It is reentrant within one thread: the monitor takes it for the whole "decide FIX → patch → relaunch"
sequence and calls the controller, which takes it again for the launch. Another thread of the same
process is another holder (flock locks belong to open file descriptions, and each thread opens its own).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

try:  # POSIX only; elsewhere the lock is a no-op (the project runs on Linux).
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]

LOCK_FILE = ".auto.lock"
POLL_S = 0.02
"""How often a waiter with a timeout retries; flock has no timed wait of its own."""

_held = threading.local()


def _counts() -> dict[str, int]:
    counts = getattr(_held, "counts", None)
    if counts is None:
        counts = _held.counts = {}
    return counts


def _key(folder: Path) -> str:
    return os.path.realpath(folder)


def held(folder: str | Path) -> bool:
    """True when this thread already holds the run lock of `folder`."""
    return _counts().get(_key(Path(folder)), 0) > 0


@contextmanager
def run_lock(folder: str | Path, *, wait: bool = True, timeout: float | None = None) -> Iterator[bool]:
    """Hold `<folder>/.auto.lock`; yields True when held, False when another holder has it.

    `wait=False` tries once; `timeout` waits at most that many seconds; otherwise it waits as long as
    the other holder needs (a launch takes well under a second). A nested `run_lock` on the same
    folder in the same thread yields True at once and releases nothing on exit.
    """
    folder = Path(folder)
    key = _key(folder)
    counts = _counts()
    if counts.get(key, 0) > 0:
        counts[key] += 1
        try:
            yield True
        finally:
            counts[key] -= 1
        return
    if fcntl is None:  # pragma: no cover
        counts[key] = 1
        try:
            yield True
        finally:
            counts.pop(key, None)
        return
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        got = _acquire(fd, wait=wait, timeout=timeout)
        if not got:
            yield False
            return
        counts[key] = 1
        try:
            yield True
        finally:
            counts.pop(key, None)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _acquire(fd: int, *, wait: bool, timeout: float | None) -> bool:
    if wait and timeout is None:
        fcntl.flock(fd, fcntl.LOCK_EX)
        return True
    deadline = time.monotonic() + ((timeout or 0.0) if wait else 0.0)
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() >= deadline:
                return False
            time.sleep(POLL_S)


__all__ = ["LOCK_FILE", "held", "run_lock"]
