"""Process state and signals for training processes, with the rule that we only signal our own.

A pid alone names a process only while it lives; after it exits the kernel may hand the number to
anything. So meta.json records the pid's create time beside it, and every check compares both.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from twinkle_auto.connection.errors import NotOurProcessError

ALIVE = "alive"
STOPPED = "stopped"  # SIGSTOP'd (state T), not our run status `stopped`
ZOMBIE = "zombie"
DEAD = "dead"
UNKNOWN = "unknown"

CREATE_TIME_TOLERANCE_S = 1.0
"""psutil and the runtime both derive create time from /proc ticks; they agree to the tick (10 ms)."""


@dataclass(frozen=True)
class ProcessInfo:
    state: str
    pid: int | None
    reason: str = ""


def _recorded(meta: dict[str, Any]) -> tuple[int | None, float | None]:
    pid = meta.get("pid")
    pid = pid if isinstance(pid, int) and not isinstance(pid, bool) and pid > 0 else None
    ctime = meta.get("pid_create_time")
    ctime = float(ctime) if isinstance(ctime, (int, float)) and not isinstance(ctime, bool) else None
    return pid, ctime


def _is_ours(proc: psutil.Process, meta: dict[str, Any], ctime: float | None) -> bool:
    try:
        actual = proc.create_time()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False
    if ctime is not None:
        return abs(actual - ctime) <= CREATE_TIME_TOLERANCE_S
    # A run written by twinkle-kit's runtime has no create time; its start_time is written after the
    # process started, so a process created later than that is a stranger with a reused pid.
    start = meta.get("start_time")
    if isinstance(start, (int, float)):
        return actual <= float(start) + CREATE_TIME_TOLERANCE_S
    return False


def process_info(meta: dict[str, Any]) -> ProcessInfo:
    """alive / stopped / zombie / dead / unknown for the process a meta.json names."""
    pid, ctime = _recorded(meta)
    if pid is None:
        return ProcessInfo(UNKNOWN, None, "no pid recorded")
    try:
        proc = psutil.Process(pid)
        status = proc.status()
    except psutil.NoSuchProcess:
        return ProcessInfo(DEAD, pid, "process has exited")
    except psutil.AccessDenied:
        return ProcessInfo(UNKNOWN, pid, "access denied")
    if not _is_ours(proc, meta, ctime):
        return ProcessInfo(DEAD, pid, "pid now belongs to another process")
    if status == psutil.STATUS_ZOMBIE:
        return ProcessInfo(ZOMBIE, pid, "exited, not yet reaped")
    if status in (psutil.STATUS_STOPPED, psutil.STATUS_TRACING_STOP):
        return ProcessInfo(STOPPED, pid, "suspended")
    return ProcessInfo(ALIVE, pid)


def is_running(info: ProcessInfo) -> bool:
    return info.state in (ALIVE, STOPPED)


def verified_process(meta: dict[str, Any]) -> psutil.Process:
    """The live process meta.json names, or NotOurProcessError when it is not provably ours."""
    pid, ctime = _recorded(meta)
    if pid is None:
        raise NotOurProcessError("no pid recorded for this run")
    try:
        proc = psutil.Process(pid)
    except psutil.NoSuchProcess:
        raise NotOurProcessError(f"process {pid} has exited") from None
    if not _is_ours(proc, meta, ctime):
        raise NotOurProcessError(f"pid {pid} now belongs to another process; refusing to signal it")
    return proc


def send(meta: dict[str, Any], sig: int) -> None:
    """Signal the run's process group if we launched it as a group leader, else the process alone."""
    proc = verified_process(meta)
    pgid = meta.get("pgid")
    try:
        if isinstance(pgid, int) and pgid == proc.pid and os.getpgid(proc.pid) == pgid:
            os.killpg(pgid, sig)
        else:
            os.kill(proc.pid, sig)
    except ProcessLookupError:
        pass


def wait_gone(meta: dict[str, Any], timeout: float, children: dict[int, Any] | None = None) -> bool:
    """Wait until the process has exited (reaping it if it is our child); True when gone."""
    pid, _ = _recorded(meta)
    if pid is None:
        return True
    deadline = time.monotonic() + timeout
    popen = (children or {}).get(pid)
    while True:
        if popen is not None:
            if popen.poll() is not None:
                return True
        else:
            try:
                os.waitpid(pid, os.WNOHANG)  # reap if it happens to be our child
            except ChildProcessError:
                pass
            info = process_info(meta)
            if info.state in (DEAD, ZOMBIE):
                return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)


def group_alive(pgid: int) -> bool:
    """True while any process of the group lives (a stray child of a killed trainer counts)."""
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def spawn_logged(
    cmd: Sequence[str],
    *,
    log_path: str | Path,
    marker: str,
    env: Mapping[str, str],
    cwd: str | Path | None = None,
) -> tuple[subprocess.Popen[bytes], float | None]:
    """Start `cmd` in a session of its own, stdout+stderr appended to `log_path` after a marker line.

    Every long-lived process we start (training scripts, Ray nodes, the Twinkle server) goes through
    here: its own session makes it a group we can signal as a whole without touching anything else,
    the marker separates launches in an append-only log, and the returned create time is recorded
    beside the pid so that a reused pid is never mistaken for ours. Raises OSError when it cannot start.
    """
    log_path = Path(log_path)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        log.write(f"\n===== twinkle-auto: {marker} at {time.strftime('%Y-%m-%d %H:%M:%S')} =====\n".encode())
        log.flush()
        child = subprocess.Popen(
            list(cmd),
            cwd=str(cwd) if cwd is not None else None,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=dict(env),
            start_new_session=True,
            close_fds=True,
        )
    try:
        ctime: float | None = psutil.Process(child.pid).create_time()
    except psutil.Error:
        ctime = None
    return child, ctime


SECRET_PREFIXES = ("TWINKLE_LLM_",)
"""The assistant's own LLM settings: the key and everything beside it stay in the assistant."""
SECRET_NAME_RE = re.compile(r"(?:^|_)(?:API_?KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIALS?)$", re.IGNORECASE)
"""Names that carry credentials by convention (OPENAI_API_KEY, HF_TOKEN, AWS_SECRET...)."""

_secret_values: set[str] = set()
_secret_lock = threading.Lock()


def register_secret(value: str | None) -> None:
    """Remember a secret the assistant was given other than by a conventional name (`--llm-api-key`).

    Any variable holding that value is then kept from child processes too, whatever its name.
    Placeholders such as "not-needed" are short and harmless, but are still removed: a value is either
    the assistant's or it is not.
    """
    if value and len(value) >= 4:
        with _secret_lock:
            _secret_values.add(value)


def is_secret(name: str, value: str | None = None) -> bool:
    """True for a variable that must not reach a process we start."""
    upper = name.upper()
    if upper.startswith(SECRET_PREFIXES) or SECRET_NAME_RE.search(upper):
        return True
    if value is not None:
        with _secret_lock:
            return value in _secret_values
    return False


def child_env(
    extra: Mapping[str, str] | None = None,
    *,
    pass_env: Sequence[str] = (),
    base: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The environment of every process we start: ours minus secrets, plus `extra`.

    A training script is code an LLM may have rewritten from text an untrusted process printed, and a
    Ray worker or the Twinkle server runs code we did not write: none of them gets the assistant's LLM
    key or any other credential it holds. `pass_env` names variables the person explicitly lets through
    (`--pass-env HF_TOKEN`); their values are read from our environment now, never stored. `extra` (the
    run's own settings) is applied last and is trusted as given; the launch spec never records a secret
    in it.
    """
    source = os.environ if base is None else base
    allowed = set(pass_env)
    env = {k: v for k, v in source.items() if k in allowed or not is_secret(k, v)}
    if extra:
        env.update({str(k): str(v) for k, v in extra.items()})
    return env


SIGKILL = signal.SIGKILL
SIGTERM = signal.SIGTERM
