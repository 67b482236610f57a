"""The run store: the folders under TWINKLE_HOME, read safely.

Every reader here survives what a real run folder contains: a meta.json cut by a kill or written by
hand, a torn last metrics line, a log in a foreign encoding, a folder that is not a run at all.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from twinkle_auto.connection import process as proc
from twinkle_auto.connection.errors import RunError, UnknownRunError
from twinkle_auto.connection.logs import LogTail, tail_lines, tail_log
from twinkle_auto.connection.metrics import MetricsChunk, last_metrics, read_metrics_from
from twinkle_auto.runtime import format as fmt

AUTO_DIR = "auto"
"""Assistant-wide state under TWINKLE_HOME (checkpoints, skills, server files); never a run."""
MAX_SCRIPT_CHARS = 200_000
"""The largest training script we accept (CLI `start` and the chat's tools alike)."""


def read_script_file(path: str | Path, max_chars: int = MAX_SCRIPT_CHARS) -> str:
    """The text of a training script, or RunError (one line) before anything big or endless is read.

    `--script /dev/zero`, a FIFO or a directory is refused by its type, a file over the limit by its
    size (UTF-8 needs at most 4 bytes a character), both before a byte is read.
    """
    from twinkle_auto.runtime.tail import NotRegularFileError, read_regular

    try:
        raw = read_regular(path, 4 * max_chars)
    except FileNotFoundError:
        raise RunError(f"script {path} not found") from None
    except NotRegularFileError as exc:
        raise RunError(f"script {path}: {exc}") from None
    except ValueError:
        raise RunError(
            f"script {path} is larger than the limit of {max_chars} characters; not read"
        ) from None
    except OSError as exc:
        raise RunError(f"script {path}: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise RunError(f"script {path} is not UTF-8 text") from None
    if len(text) > max_chars:
        raise RunError(f"script {path} is {len(text)} characters; the limit is {max_chars}")
    return text


class CorruptMetaError(RunError):
    pass


@dataclass(frozen=True)
class RunStatus:
    """What a person or a tool needs to know about a run at a glance; `as_dict` has stable keys."""

    run_id: str
    status: str
    """As stored in meta.json (or `corrupt` / `unknown`)."""
    effective_status: str
    """Stored status reconciled with the process: `running` + dead process is `crashed`."""
    process: str
    pid: int | None
    model_id: str | None
    last_step: int | None
    total_steps: int | None
    start_time: float | None
    end_time: float | None
    script_version: int | None
    archived_versions: tuple[int, ...]
    error: str | None
    last_metrics: dict[str, Any] | None
    host: str | None = None
    """The host meta.json names (None for runs that recorded none)."""
    remote: bool = False
    """True when that host is not this one: the run is judged on its files and never signalled from here."""
    launcher: str | None = None

    @property
    def last_metric_age(self) -> float | None:
        """Seconds since the last metric line was written (by its own `ts`), or None."""
        ts = (self.last_metrics or {}).get("ts")
        if isinstance(ts, (int, float)) and not isinstance(ts, bool) and ts == ts and abs(ts) != float("inf"):
            return max(0.0, fmt.now() - float(ts))
        return None

    @property
    def process_label(self) -> str:
        """What a person reads in the process column: `remote (host)` for a run on another machine."""
        return f"remote ({self.host})" if self.remote else self.process

    def as_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "status": self.status,
            "effective_status": self.effective_status,
            "process": self.process,
            "pid": self.pid,
            "model_id": self.model_id,
            "last_step": self.last_step,
            "total_steps": self.total_steps,
            "start_time": self.start_time,
            "end_time": self.end_time,
            "script_version": self.script_version,
            "archived_versions": list(self.archived_versions),
            "error": self.error,
            "last_metrics": self.last_metrics,
            "host": self.host,
            "remote": self.remote,
            "launcher": self.launcher,
            "last_metric_age": self.last_metric_age,
        }


def effective_status(stored: str, process_state: str) -> str:
    """One word for the run, trusting the process over a status nobody got to update."""
    gone = process_state in (proc.DEAD, proc.ZOMBIE)
    if stored == fmt.RUNNING and gone:
        return "crashed"
    if stored == fmt.STOPPING and gone:
        return fmt.STOPPED
    if stored == fmt.COMPLETED:
        return fmt.FINISHED
    return stored


def _int_or_none(value: Any) -> int | None:
    """An int within 64 bits, or None: a step of 1e30 in metrics.jsonl is a number, not a step we show
    or checkpoint (the graph's serializer and psutil take C integers only)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if -(2**63) <= value < 2**63 else None
    if isinstance(value, float) and value == value and abs(value) < 2**63:
        return int(value)
    return None


def _launcher(meta: dict[str, Any]) -> str | None:
    launch = meta.get("launch")
    if isinstance(launch, dict) and isinstance(launch.get("launcher"), str):
        return launch["launcher"]
    return None


class RunStore:
    """Read access to every run folder under one TWINKLE_HOME."""

    def __init__(self, home: str | Path | None = None) -> None:
        self.home = Path(home).expanduser() if home else fmt.default_home()

    # ------------------------------------------------------------------------------------------ paths
    def path(self, run_id: str) -> Path:
        """The folder of a run (validated id; it may not exist yet)."""
        return fmt.run_dir(self.home, run_id)

    def exists(self, run_id: str) -> bool:
        folder = self.path(run_id)
        return folder.is_dir() and (
            (folder / fmt.META_FILE).exists()
            or (folder / fmt.SCRIPT_FILE).exists()
            or (folder / fmt.METRICS_FILE).exists()
        )

    def require(self, run_id: str) -> Path:
        folder = self.path(run_id)
        if not self.exists(run_id):
            raise UnknownRunError(f"unknown run {run_id!r} (no folder under {self.home})")
        return folder

    def auto_dir(self) -> Path:
        return self.home / AUTO_DIR

    # ------------------------------------------------------------------------------------------- runs
    def run_ids(self) -> list[str]:
        """Ids of the run folders, newest first (by meta.json or folder change time)."""
        try:
            entries = list(os.scandir(self.home))
        except FileNotFoundError:
            return []
        found: list[tuple[float, str]] = []
        for entry in entries:
            try:
                fmt.validate_run_id(entry.name)
            except fmt.RunIdError:
                continue
            if not entry.is_dir() or not self.exists(entry.name):
                continue
            meta_path = Path(entry.path) / fmt.META_FILE
            try:
                mtime = meta_path.stat().st_mtime if meta_path.exists() else entry.stat().st_mtime
            except OSError:
                continue
            found.append((mtime, entry.name))
        return [name for _, name in sorted(found, reverse=True)]

    def list_runs(self) -> list[RunStatus]:
        return [self.status(run_id) for run_id in self.run_ids()]

    # ------------------------------------------------------------------------------------------- meta
    def read_meta(self, run_id: str) -> dict[str, Any]:
        """meta.json as a dict; CorruptMetaError (one line) when it does not parse; {} when absent."""
        folder = self.require(run_id)
        path = folder / fmt.META_FILE
        if not path.exists():
            return {}
        try:
            return fmt.read_json_file(path)
        except ValueError as exc:
            raise CorruptMetaError(f"run {run_id!r}: {exc}") from None
        except OSError as exc:
            raise CorruptMetaError(f"run {run_id!r}: cannot read meta.json: {exc.strerror}") from None

    def status(self, run_id: str) -> RunStatus:
        folder = self.require(run_id)
        error: str | None = None
        try:
            meta = self.read_meta(run_id)
        except CorruptMetaError as exc:
            meta, error = {}, str(exc)
        info = proc.process_info(meta, folder)
        if info.state == proc.UNKNOWN and isinstance(meta.get("ray_job"), dict):
            from twinkle_auto.connection import ray_jobs

            info = ray_jobs.process_info(meta)
        stored = str(meta.get("status") or ("corrupt" if error else "unknown"))
        progress = meta.get("progress") if isinstance(meta.get("progress"), dict) else {}
        last = self.last_metrics(run_id, 1)
        last_step = _int_or_none(progress.get("last_step"))
        if last and _int_or_none(last[-1].get("step")) is not None:
            tail_step = _int_or_none(last[-1].get("step"))
            last_step = tail_step if last_step is None else max(last_step, tail_step or 0)
        return RunStatus(
            run_id=run_id,
            status=stored,
            effective_status=effective_status(stored, info.state) if not error else "corrupt",
            process=info.state,
            pid=info.pid,
            model_id=meta.get("model_id") if isinstance(meta.get("model_id"), str) else None,
            last_step=last_step,
            total_steps=_int_or_none(progress.get("total_steps")),
            start_time=meta.get("start_time") if isinstance(meta.get("start_time"), (int, float)) else None,
            end_time=meta.get("end_time") if isinstance(meta.get("end_time"), (int, float)) else None,
            script_version=_int_or_none(meta.get("script_version")),
            archived_versions=tuple(fmt.archived_versions(folder)),
            error=error or (meta.get("error") if isinstance(meta.get("error"), str) else None),
            last_metrics=last[-1] if last else None,
            host=meta.get("host") if isinstance(meta.get("host"), str) else None,
            remote=info.state == proc.REMOTE,
            launcher=_launcher(meta),
        )

    # ------------------------------------------------------------------------------------ metrics, log
    def last_metrics(self, run_id: str, n: int) -> list[dict[str, Any]]:
        return last_metrics(self.path(run_id) / fmt.METRICS_FILE, n)

    def metrics_from(self, run_id: str, offset: int) -> MetricsChunk:
        return read_metrics_from(self.path(run_id) / fmt.METRICS_FILE, offset)

    def log_tail(self, run_id: str, budget: int = 4000) -> LogTail:
        return tail_log(self.path(run_id) / fmt.LOG_FILE, budget)

    def log_lines(self, run_id: str, n: int) -> list[str]:
        return tail_lines(self.path(run_id) / fmt.LOG_FILE, n)

    # ----------------------------------------------------------------------------------------- script
    def script(self, run_id: str) -> str:
        """train.py's text; RunError (one line) when absent, not a regular file, or over the limit."""
        return self._run_script(run_id, fmt.SCRIPT_FILE)

    def archived_script(self, run_id: str, version: int) -> str:
        return self._run_script(run_id, f"train_v{int(version)}.py")

    def _run_script(self, run_id: str, name: str) -> str:
        path = self.require(run_id) / name
        if not os.path.lexists(path):
            raise RunError(f"run {run_id!r} has no {name}")
        return read_script_file(path)

    # ------------------------------------------------------------------------------------- auto state
    def auto_state(self, run_id: str) -> dict[str, Any]:
        """twinkle-auto's own per-run state (fix attempts, verdicts); {} when absent.

        A corrupt file fails closed: it is kept as `auto_state.json.corrupt` and replaced by a state
        holding only `{"corrupt": {...}}`, which the monitor treats as "fix limit reached" and says so.
        Resetting it to {} would silently give a crash-looping run three fresh attempts.
        """
        path = self.path(run_id) / fmt.AUTO_STATE_FILE
        try:
            return fmt.read_json_file(path)
        except FileNotFoundError:
            return {}
        except ValueError:
            with fmt.meta_lock(self.require(run_id)):
                return self._read_auto_state(run_id)
        except OSError as exc:
            return {"corrupt": {"reason": f"cannot read {fmt.AUTO_STATE_FILE}: {exc.strerror}"}}

    def _read_auto_state(self, run_id: str) -> dict[str, Any]:
        """Read under the caller's lock; a corrupt file is moved aside and replaced (see auto_state)."""
        path = self.path(run_id) / fmt.AUTO_STATE_FILE
        try:
            return fmt.read_json_file(path)
        except FileNotFoundError:
            return {}
        except OSError as exc:
            return {"corrupt": {"reason": f"cannot read {fmt.AUTO_STATE_FILE}: {exc.strerror}"}}
        except ValueError as exc:
            kept = path.with_name(path.name + ".corrupt")
            n = 1
            while kept.exists():
                n += 1
                kept = path.with_name(f"{path.name}.corrupt.{n}")
            os.replace(path, kept)
            state = {"corrupt": {"reason": str(exc), "kept_as": kept.name, "at": fmt.now()}}
            fmt.atomic_write_json(path, state)
            return state

    def save_auto_state(self, run_id: str, state: dict[str, Any]) -> None:
        fmt.atomic_write_json(self.require(run_id) / fmt.AUTO_STATE_FILE, state)

    def update_auto_state(
        self, run_id: str, transform: Callable[[dict[str, Any]], dict[str, Any] | None]
    ) -> dict[str, Any]:
        """Read-modify-write of auto_state.json as one step between processes (two assistants on one run
        each write their own keys; without the lock one would drop the other's fix counter)."""
        folder = self.require(run_id)
        with fmt.meta_lock(folder):
            state = self._read_auto_state(run_id)
            changed = transform(state)
            state = state if changed is None else changed
            fmt.atomic_write_json(folder / fmt.AUTO_STATE_FILE, state)
        return state
