"""The run-folder format shared by training scripts and the assistant (standard library only).

Both sides of the file-based connection import this module, so the names of the files, the rules for
run ids and the way meta.json is written live in one place. The format is the one `twinkle-kit`'s own
runtime writes, so a run written by either is read by the other.

meta.json is the only file two processes write (the training script and the assistant). Every write is a
read-merge-write under an advisory lock (`.meta.lock`) and lands with an atomic rename, so a SIGKILL at
any moment leaves either the old or the new file, never a half-written one, and a field written by one
side is never dropped by the other.
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from twinkle_auto.runtime.tail import NotRegularFileError, read_regular

try:  # POSIX only; on other systems the lock is a no-op and the rename still keeps files whole.
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]

META_FILE = "meta.json"
METRICS_FILE = "metrics.jsonl"
LOG_FILE = "output.log"
SCRIPT_FILE = "train.py"
LOCK_FILE = ".meta.lock"
AUTO_STATE_FILE = "auto_state.json"
"""twinkle-auto's own per-run state (fix attempts, monitor verdicts); survives a restart of the assistant."""

ARCHIVE_RE = re.compile(r"^train_v(\d+)\.py$")
RUN_ID_RE = re.compile(r"[A-Za-z0-9._-]{1,128}")
"""Use with `fullmatch` only."""
RESERVED_RUN_IDS = frozenset({"auto", ".", ".."})

ENV_RUN_ID = "TWINKLE_RUN_ID"
ENV_HOME = "TWINKLE_HOME"
ENV_OUTPUT_CAPTURED = "TWINKLE_AUTO_OUTPUT_CAPTURED"
"""Set by the launcher when stdout/stderr already go to output.log, so the runtime does not tee them."""

# Statuses written to meta.json. `completed` is what twinkle-kit's runtime writes on finish; we read both.
RUNNING = "running"
PAUSED = "paused"
STOPPING = "stopping"
STOPPED = "stopped"
FINISHED = "finished"
COMPLETED = "completed"
FAILED = "failed"
FINISHED_STATUSES = frozenset({FINISHED, COMPLETED})
ACTIVE_STATUSES = frozenset({RUNNING, STOPPING})


class RunIdError(ValueError):
    """A run id that could escape its folder or collide with the assistant's own state."""


def default_home() -> Path:
    """`TWINKLE_HOME`, else ~/.cache/twinkle (the folder twinkle-kit's runtime uses)."""
    env = os.environ.get(ENV_HOME)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "twinkle"


def validate_run_id(run_id: str) -> str:
    """Return the run id unchanged, or raise RunIdError saying why it cannot name a folder.

    The whole string must match (`fullmatch`: with `match`, `$` also matches before a final newline, so
    "x\\n" would pass and name a folder nobody can type).
    """
    if not isinstance(run_id, str) or not run_id:
        raise RunIdError("run id is empty")
    if not RUN_ID_RE.fullmatch(run_id):
        raise RunIdError(f"invalid run id {run_id!r}: use letters, digits, '.', '_' and '-' (at most 128)")
    if ".." in run_id or run_id.startswith("."):
        raise RunIdError(f"invalid run id {run_id!r}: it may not start with '.' or contain '..'")
    if run_id.lower() in RESERVED_RUN_IDS:
        raise RunIdError(f"invalid run id {run_id!r}: the name is reserved for twinkle-auto's own state")
    return run_id


def run_dir(home: Path, run_id: str) -> Path:
    return Path(home) / validate_run_id(run_id)


def atomic_write_text(path: Path, text: str, *, fsync: bool = True) -> None:
    """Write a whole file through a temp file and a rename, so readers never see half of it.

    When any step fails (a full disk: ENOSPC, EIO, EFBIG) the temp file is removed before the error goes
    on, so failed writes leave no `.meta.json.*.tmp` litter beside the file they meant to replace.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            if fsync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def atomic_write_json(path: Path, data: Any, *, fsync: bool = True) -> None:
    atomic_write_text(path, json.dumps(data, indent=2) + "\n", fsync=fsync)


@contextmanager
def meta_lock(folder: Path) -> Iterator[None]:
    """Serialise read-merge-write of meta.json between the training process and the assistant."""
    if fcntl is None:  # pragma: no cover
        yield
        return
    fd = os.open(Path(folder) / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        try:
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)


INT64 = 2**63


def bounded_int(digits: str) -> int:
    """A JSON integer within signed 64 bits; ValueError beyond (a pid of 10**20 is not a pid).

    Everything downstream (psutil, os.kill, the checkpoint serializer) takes C integers; an integer that
    does not fit would surface far from the file as OverflowError or TypeError.
    """
    value = int(digits)
    if not -INT64 <= value < INT64:
        raise ValueError(f"integer {digits[:24]}{'...' if len(digits) > 24 else ''} is out of range")
    return value


MAX_JSON_BYTES = 16 * 1024 * 1024
"""meta.json and friends are a few KB; a bigger one is corrupt, and is not read into memory."""


def read_json_file(path: Path) -> dict[str, Any]:
    """Read a JSON object; raise ValueError with a one-line reason when it is not one.

    Whatever the file holds, the answer is a dict or that ValueError ("corrupt"): a FIFO or device is
    not opened for a blocking read, a file over MAX_JSON_BYTES is not read, nesting deep enough to
    exhaust the parser's recursion (RecursionError) and numbers too long to convert are corrupt too — so
    one bad meta.json never breaks the listing of the other runs; so is an integer beyond 64 bits
    (`bounded_int`). FileNotFoundError passes through.
    """
    name = Path(path).name
    try:
        raw = read_regular(path, MAX_JSON_BYTES)
    except NotRegularFileError as exc:
        raise ValueError(f"{name} is corrupt: {exc}") from None
    except ValueError as exc:
        raise ValueError(f"{name} is corrupt: {exc}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{name} is not UTF-8 text: {exc.reason}") from None
    try:
        data = json.loads(text, parse_int=bounded_int)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{name} is corrupt: {exc.msg} at line {exc.lineno}") from None
    except RecursionError:
        raise ValueError(f"{name} is corrupt: nested too deeply") from None
    except ValueError as exc:  # e.g. an integer of more digits than Python converts
        raise ValueError(f"{name} is corrupt: {' '.join(str(exc).split())[:120]}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{Path(path).name} is corrupt: expected a JSON object, got {type(data).__name__}")
    return data


def _deep_merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def update_meta(
    folder: Path,
    fields: dict[str, Any] | None = None,
    *,
    transform: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    fsync: bool = True,
) -> dict[str, Any]:
    """Merge `fields` (nested dicts merged key by key) into meta.json and return the result.

    A corrupt meta.json is kept aside as `meta.json.corrupt` and the merge starts from what we are told,
    so one bad write never blocks a run forever and the evidence is not lost.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / META_FILE
    with meta_lock(folder):
        meta: dict[str, Any] = {}
        if path.exists():
            try:
                meta = read_json_file(path)
            except ValueError:
                os.replace(path, folder / (META_FILE + ".corrupt"))
        if fields:
            meta = _deep_merge(meta, fields)
        if transform is not None:
            meta = transform(meta)
        atomic_write_json(path, meta, fsync=fsync)
    return meta


def archived_versions(folder: Path) -> list[int]:
    """Version numbers N of the `train_v{N}.py` files in a run folder, ascending."""
    out = []
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        return []
    for name in names:
        m = ARCHIVE_RE.match(name)
        if m:
            out.append(int(m.group(1)))
    return sorted(out)


def current_version(folder: Path) -> int:
    """The version number of the active train.py: one above the highest archive."""
    return (archived_versions(folder) or [0])[-1] + 1


def process_create_time(pid: int) -> float | None:
    """Start time of a process in seconds since the epoch, computed the way psutil does on Linux.

    Recorded beside the pid so that a pid the kernel later reuses is never taken for our process.
    """
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read().decode()
        fields = stat[stat.rindex(")") + 2 :].split()
        start_ticks = int(fields[19])
        with open("/proc/stat", "rb") as f:
            for line in f:
                if line.startswith(b"btime"):
                    boot = float(line.split()[1])
                    break
            else:
                return None
        return boot + start_ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def now() -> float:
    return time.time()
