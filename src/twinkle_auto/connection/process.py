"""Process state and signals for training processes, with the rule that we only signal our own.

A pid alone names a process only while it lives; after it exits the kernel may hand the number to
anything. So meta.json records the pid's create time beside it, and every check compares both.
"""

from __future__ import annotations

import os
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
from twinkle_auto.runtime import format as fmt
from twinkle_auto.runtime.launch_info import hostname, name_is_secret

ALIVE = "alive"
STOPPED = "stopped"  # SIGSTOP'd (state T), not our run status `stopped`
ZOMBIE = "zombie"
DEAD = "dead"
UNKNOWN = "unknown"
REMOTE = "remote"
"""The run's meta.json names another host: judged on its files only, never signalled from here."""

CREATE_TIME_TOLERANCE_S = 1.0
"""psutil and the runtime both derive create time from /proc ticks; they agree to the tick (10 ms)."""
PID_MAX = 1 << 22
"""Linux's PID_MAX_LIMIT: a larger number in meta.json is not a pid at all."""
MAX_SCRIPT_COMPARE = 4 << 20
"""A command-line argument larger than this is not compared byte for byte with the run's script."""


@dataclass(frozen=True)
class ProcessInfo:
    state: str
    pid: int | None
    reason: str = ""


def _recorded(meta: dict[str, Any]) -> tuple[int | None, float | None]:
    pid = meta.get("pid")
    pid = pid if isinstance(pid, int) and not isinstance(pid, bool) and 0 < pid <= PID_MAX else None
    ctime = meta.get("pid_create_time")
    ctime = float(ctime) if isinstance(ctime, (int, float)) and not isinstance(ctime, bool) else None
    if ctime is not None and ctime != ctime:
        ctime = None
    return pid, ctime


def remote_host(meta: dict[str, Any]) -> str | None:
    """The other host a run lives on, or None when it is this one (or no host was recorded)."""
    if isinstance(meta.get("ray_job"), dict):
        return None  # a Ray job is reached through its cluster from any host
    host = meta.get("host")
    if isinstance(host, str) and host and host != hostname():
        return host
    return None


def _run_folder(meta: dict[str, Any], folder: str | Path | None) -> Path | None:
    if folder is not None:
        return Path(folder)
    script = meta.get("script_path")
    return Path(script).parent if isinstance(script, str) and script else None


def _script_texts(folder: Path) -> list[bytes]:
    texts = []
    for path in [
        folder / fmt.SCRIPT_FILE,
        *(folder / f"train_v{v}.py" for v in fmt.archived_versions(folder)),
    ]:
        try:
            if path.is_file() and path.stat().st_size <= MAX_SCRIPT_COMPARE:
                texts.append(path.read_bytes())
        except OSError:
            continue
    return texts


def is_interpreter(cmdline: Sequence[str]) -> bool:
    """True for a Python process (launchers such as torchrun and accelerate are Python scripts too)."""
    if not cmdline:
        return False
    name = os.path.basename(cmdline[0])
    return name.startswith(("python", "pypy"))


def names_run(proc: psutil.Process, meta: dict[str, Any], folder: str | Path | None) -> bool:
    """True when the process's command line runs this run's script and its working directory fits.

    What proves a pid is ours when no create time was recorded (twinkle-kit's format): a stranger that
    reused the pid, or a process someone named by hand, does not run train.py (or a file with the same
    content) from the run folder or from the directory the script came from.
    """
    run = _run_folder(meta, folder)
    if run is None:
        return False
    try:
        cmdline = proc.cmdline()
        cwd = os.path.realpath(proc.cwd())
    except (psutil.Error, OSError):
        return False
    if not is_interpreter(cmdline):
        return False  # an editor or `tail` naming train.py is not the run
    scripts = {os.path.realpath(run / fmt.SCRIPT_FILE)}
    if isinstance(meta.get("script_path"), str):
        scripts.add(os.path.realpath(meta["script_path"]))
    texts: list[bytes] | None = None
    named_dirs: set[str] = set()
    for arg in cmdline[1:]:
        if arg.startswith("-"):
            continue
        path = os.path.realpath(os.path.join(cwd, arg))
        if path in scripts:
            named_dirs.add(os.path.dirname(path))
            continue
        if not path.endswith(".py"):
            continue
        try:
            if not os.path.isfile(path) or os.path.getsize(path) > MAX_SCRIPT_COMPARE:
                continue
            if texts is None:
                texts = _script_texts(run)
            with open(path, "rb") as f:
                if f.read() in texts:
                    named_dirs.add(os.path.dirname(path))
        except OSError:
            continue
    if not named_dirs:
        return False
    allowed = {os.path.realpath(run), *named_dirs}
    launch = meta.get("launch")
    if isinstance(launch, dict) and isinstance(launch.get("cwd"), str):
        allowed.add(os.path.realpath(launch["cwd"]))
    return cwd in allowed


def _is_ours(
    proc: psutil.Process, meta: dict[str, Any], ctime: float | None, folder: str | Path | None
) -> bool:
    try:
        actual = proc.create_time()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False
    if ctime is not None:
        return abs(actual - ctime) <= CREATE_TIME_TOLERANCE_S
    # No create time (twinkle-kit's format): the process must be older than the run's start_time and
    # provably run this run's script.
    start = meta.get("start_time")
    if isinstance(start, (int, float)) and actual > float(start) + CREATE_TIME_TOLERANCE_S:
        return False
    return names_run(proc, meta, folder)


def process_info(meta: dict[str, Any], folder: str | Path | None = None) -> ProcessInfo:
    """alive / stopped / zombie / dead / unknown / remote for the process a meta.json names."""
    pid, ctime = _recorded(meta)
    host = remote_host(meta)
    if host is not None:
        return ProcessInfo(REMOTE, pid, f"runs on host {host}")
    if pid is None:
        raw = meta.get("pid")
        why = "no pid recorded" if raw is None else f"meta.json pid {str(raw)[:40]!r} is not a valid pid"
        return ProcessInfo(UNKNOWN, None, why)
    try:
        proc = psutil.Process(pid)
        status = proc.status()
    except psutil.NoSuchProcess:
        return ProcessInfo(DEAD, pid, "process has exited")
    except psutil.AccessDenied:
        return ProcessInfo(UNKNOWN, pid, "access denied")
    if not _is_ours(proc, meta, ctime, folder):
        if ctime is None:
            return ProcessInfo(DEAD, pid, f"pid {pid} is not provably this run's process")
        return ProcessInfo(DEAD, pid, "pid now belongs to another process")
    if status == psutil.STATUS_ZOMBIE:
        return ProcessInfo(ZOMBIE, pid, "exited, not yet reaped")
    if status in (psutil.STATUS_STOPPED, psutil.STATUS_TRACING_STOP):
        return ProcessInfo(STOPPED, pid, "suspended")
    return ProcessInfo(ALIVE, pid)


def is_running(info: ProcessInfo) -> bool:
    return info.state in (ALIVE, STOPPED)


def verified_process(meta: dict[str, Any], folder: str | Path | None = None) -> psutil.Process:
    """The live process meta.json names, or NotOurProcessError when it is not provably ours."""
    host = remote_host(meta)
    if host is not None:
        raise NotOurProcessError(f"the run lives on host {host}; act on it there")
    pid, ctime = _recorded(meta)
    if pid is None:
        raise NotOurProcessError("no valid pid recorded for this run")
    try:
        proc = psutil.Process(pid)
    except psutil.NoSuchProcess:
        raise NotOurProcessError(f"process {pid} has exited") from None
    if not _is_ours(proc, meta, ctime, folder):
        if ctime is None:
            raise NotOurProcessError(
                f"pid {pid} is not provably this run's process (no create time recorded, and its "
                "command line and working directory do not name the run's script); refusing to signal it"
            )
        raise NotOurProcessError(f"pid {pid} now belongs to another process; refusing to signal it")
    return proc


def _gone(p: psutil.Process) -> bool:
    try:
        return p.status() == psutil.STATUS_ZOMBIE or not p.is_running()
    except psutil.NoSuchProcess:
        return True
    except psutil.AccessDenied:
        return False


def send(meta: dict[str, Any], sig: int, folder: str | Path | None = None) -> list[psutil.Process]:
    """Signal the run's process, its process group (when we launched it as leader) and every descendant.

    Descendants matter: torchrun starts each rank in a session of its own, so a group signal alone
    leaves the ranks running (hung in a collective). The tree is taken before the first signal, and
    psutil refuses to signal a process whose pid was reused meanwhile. Returns what was signalled, for
    `wait_gone`.
    """
    proc = verified_process(meta, folder)
    try:
        tree = [proc, *proc.children(recursive=True)]
    except psutil.Error:
        tree = [proc]
    pgid = meta.get("pgid")
    try:
        if isinstance(pgid, int) and pgid == proc.pid and os.getpgid(proc.pid) == pgid:
            os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass
    for p in tree:
        try:
            p.send_signal(sig)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return tree


def wait_gone(
    meta: dict[str, Any],
    timeout: float,
    children: dict[int, Any] | None = None,
    tree: Sequence[psutil.Process] = (),
) -> bool:
    """Wait until the process and the `tree` it had have exited (reaping our child); True when gone."""
    pid, _ = _recorded(meta)
    deadline = time.monotonic() + timeout
    popen = (children or {}).get(pid) if pid is not None else None
    pending = [p for p in tree if p.pid != pid]
    main_gone = pid is None
    while True:
        if not main_gone:
            if popen is not None:
                main_gone = popen.poll() is not None
            else:
                try:
                    os.waitpid(pid, os.WNOHANG)  # reap if it happens to be our child
                except ChildProcessError:
                    pass
                main_gone = process_info(meta).state in (DEAD, ZOMBIE, UNKNOWN)
        pending = [p for p in pending if not _gone(p)]
        if main_gone and not pending:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)


def find_run_processes(folder: str | Path) -> list[psutil.Process]:
    """Live Python processes on this host that run the run folder's train.py (whatever meta.json says).

    The last line of defence before a launch: a meta.json that is corrupt, lost its pid or names the
    wrong one must not let a second copy of a live run start. It runs inside every launch, so it reads
    only /proc/PID/cmdline first (one small read per process) and looks closer at the few that name a
    train.py.
    """
    script = os.path.realpath(Path(folder) / fmt.SCRIPT_FILE)
    needle = fmt.SCRIPT_FILE.encode()
    try:
        pids = [int(name) for name in os.listdir("/proc") if name.isdigit()]
    except OSError:  # no procfs: ask psutil for every process
        pids = psutil.pids()
    found = []
    for pid in pids:
        if pid == os.getpid():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                raw = f.read(1 << 16)
        except OSError:
            try:
                raw = "\0".join(psutil.Process(pid).cmdline()).encode()
            except psutil.Error:
                continue
        if needle not in raw:
            continue
        cmdline = [part.decode("utf-8", "replace") for part in raw.split(b"\0") if part]
        if not is_interpreter(cmdline):
            continue
        try:
            p = psutil.Process(pid)
            if p.status() == psutil.STATUS_ZOMBIE:
                continue
            cwd = p.cwd()
        except psutil.Error:
            continue
        if any(
            arg.endswith(fmt.SCRIPT_FILE) and os.path.realpath(os.path.join(cwd, arg)) == script
            for arg in cmdline[1:]
        ):
            found.append(p)
    return found


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
    except BaseException:  # interrupted before the caller could record it: it must not run untracked
        os.killpg(child.pid, signal.SIGKILL)
        child.wait()
        raise
    return child, ctime


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
    if name_is_secret(name):
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
