"""`TrainingRuntime`: what a training script calls so that twinkle-auto can watch, pause and repair it.

Standard library only: training scripts import this, and it must cost nothing next to torch.

Usage::

    from twinkle_auto.runtime import TrainingRuntime

    rt = TrainingRuntime()                 # run id from TWINKLE_RUN_ID (set by the launcher) or an argument
    rt.start(model_id="Qwen/Qwen3.5-4B", config={"lr": 1e-5, "total_steps": 500}, script_path=__file__)
    rt.register_graceful_shutdown(model, dataloader)     # Twinkle client: SIGTERM saves a checkpoint
    step = rt.get_resume_info()["last_step"]             # 0 on a fresh run
    for batch in dataloader:
        step += 1
        ...
        rt.log_metrics(step=step, loss=loss, grad_norm=gn, lr=lr)
    rt.finish()

Differences from twinkle-kit 0.5.1's runtime (same files, same format), each an upstream bug not repeated:
`start()` merges meta.json instead of replacing it (progress and script_path survive a relaunch);
`get_resume_info()` answers the same before and after `start()`; every meta.json write is atomic and
locked against the assistant's writes; progress is saved at most every 5 s and always on finish and on
SIGTERM; a script run by hand still gets its stdout/stderr into output.log.
"""

from __future__ import annotations

import atexit
import errno
import fcntl
import json
import math
import os
import shutil
import signal
import stat
import sys
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from twinkle_auto.runtime import format as fmt
from twinkle_auto.runtime.launch_info import (
    ENV_LAUNCHED,
    hand_launch_spec,
    hostname,
    launcher_pid,
    read_ranks,
)
from twinkle_auto.runtime.tail import last_step

PROGRESS_INTERVAL_S = 5.0
"""Progress goes to meta.json at most this often (the metrics file is the per-step record)."""

_TOTAL_STEP_KEYS = ("total_steps", "max_steps")

WRITE_RETRY_S = 10.0
"""After a failed write (disk full, I/O error) the file is tried again at most this often."""


class _WriteGate:
    """Keeps the training loop going when a file cannot be written (ENOSPC, EIO, EFBIG, EDQUOT).

    The first failure is told once on stderr; while failing, writes are attempted again only every
    WRITE_RETRY_S (lines in between are counted, not queued: memory stays flat however long the disk
    stays full); the first success after that says how much was lost. Never raises.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self.failing = False
        self.retry_at = 0.0
        self.lost = 0
        self.torn = False
        """A failed write may have left half a line: the next successful write starts a new one."""

    def ready(self) -> bool:
        if not self.failing or time.monotonic() >= self.retry_at:
            return True
        self.lost += 1
        return False

    def failed(self, exc: OSError) -> None:
        self.lost += 1
        self.retry_at = time.monotonic() + WRITE_RETRY_S
        if not self.failing:
            self.failing = True
            _warn(f"twinkle runtime: cannot write {self.name}: {exc}; will keep trying")

    def succeeded(self) -> None:
        if self.failing:
            self.failing = False
            _warn(f"twinkle runtime: {self.name} is writable again; {self.lost} line(s) were not written")
            self.lost = 0


def _warn(text: str) -> None:
    try:
        print(text, file=sys.stderr, flush=True)
    except (OSError, ValueError, AttributeError):  # stderr may be the very file that is full
        pass


def _open_append(path: Path) -> int | None:
    """An O_APPEND descriptor for a run file, or None (told once on stderr) when it is a FIFO or socket.

    Opened with O_NONBLOCK: a FIFO in place of metrics.jsonl or output.log must not hang the training script
    at start (an open for writing blocks until a reader appears). Devices stay allowed (a write to /dev/full
    fails like a full disk, which the write gate handles). Bookkeeping never stops training, so the run goes
    on without that file.
    """
    refused = (
        f"twinkle runtime: {path.name} is a FIFO or socket, not a regular file; the run goes on without it"
    )
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NONBLOCK, 0o644)
    except OSError as exc:
        _warn(refused if exc.errno == errno.ENXIO else f"twinkle runtime: cannot open {path.name}: {exc}")
        return None
    mode = os.fstat(fd).st_mode
    if stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode):
        os.close(fd)
        _warn(refused)
        return None
    flags = fcntl.fcntl(fd, fcntl.F_GETFL)
    fcntl.fcntl(fd, fcntl.F_SETFL, flags & ~os.O_NONBLOCK)
    return fd


def _write_all(fd: int, data: bytes) -> int:
    """Write every byte (a short write is continued); OSError on failure, with `.written` set."""
    view = memoryview(data)
    written = 0
    while written < len(data):
        try:
            written += os.write(fd, view[written:])
        except OSError as exc:
            exc.written = written  # type: ignore[attr-defined]
            raise
    return written


class _Tee:
    """A text stream that writes through to the original stream and appends to output.log.

    Used only when nobody captures the process's output (a script started by hand), so that any run can
    be monitored. Each write is one `os.write` on an O_APPEND descriptor: nothing sits in a buffer that a
    SIGKILL could lose.
    """

    def __init__(self, stream: Any, fd: int) -> None:
        self._stream = stream
        self._fd = fd

    def write(self, text: str) -> int:
        # The log first: a closed terminal or broken pipe must not cost the monitor its evidence.
        try:
            os.write(self._fd, text.encode("utf-8", "replace"))
        except OSError:
            pass
        try:
            return self._stream.write(text)
        except (OSError, ValueError):
            return len(text)

    def flush(self) -> None:
        self._stream.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


class TrainingRuntime:
    """Writes a run folder (meta.json, metrics.jsonl, output.log) for one training run."""

    def __init__(self, run_id: str | None = None, base_dir: str | Path | None = None) -> None:
        if run_id is None:
            run_id = os.environ.get(fmt.ENV_RUN_ID, "")
            if not run_id:
                raise ValueError("run_id must be given or TWINKLE_RUN_ID set (the launcher sets it)")
        self.run_id = fmt.validate_run_id(run_id)
        self.base_dir = Path(base_dir).expanduser() if base_dir else fmt.default_home()
        self.run_dir = self.base_dir / self.run_id
        self._metrics_fd: int | None = None
        self._metrics_gate = _WriteGate(fmt.METRICS_FILE)
        self._log_gate = _WriteGate(fmt.LOG_FILE)
        self._log_fd: int | None = None
        self._started = False
        self._finished = False
        self._last_progress_save = 0.0
        self._last_step: int | None = None
        self._total_steps: int | None = None
        self._consumed_samples: int | None = None
        self._stop_requested = False
        self._deferred_shutdown: Callable[[], None] | None = None
        self._shutdown_args: tuple[Any, Any, str, Any] = (None, None, "interrupted", None)
        self._shutdown_lock = threading.Lock()
        self._orig_streams: tuple[Any, Any] | None = None
        self._orig_excepthook: Any = None
        self.ranks = read_ranks()
        """RANK/LOCAL_RANK/WORLD_SIZE of this process; only global rank 0 writes the run folder."""
        if not self.ranks.is_main:
            # Every rank runs the same script; one metrics stream and one meta.json writer per job.
            # The other ranks accept every call and only keep what stop handling needs.
            self.log_metrics = self._follower_log_metrics  # type: ignore[method-assign]
            self.log = self._follower_log  # type: ignore[method-assign]

    @property
    def is_main(self) -> bool:
        """True on global rank 0 (and in any single-process run): the process that reports."""
        return self.ranks.is_main

    def _follower_log_metrics(self, **metrics: Any) -> None:
        step = metrics.get("step")
        if type(step) is int or (type(step) is float and math.isfinite(step)):
            self._last_step = int(step)
        if self._stop_requested and self._deferred_shutdown is not None:
            self._deferred_shutdown()

    def _follower_log(self, message: str) -> None:
        return None

    # ----------------------------------------------------------------------------------------- lifecycle
    def start(
        self,
        model_id: str = "",
        config: dict[str, Any] | None = None,
        script_path: str | Path | None = None,
    ) -> None:
        """Create or rejoin the run folder and mark the run `running` for this process.

        `script_path` is copied to the run folder as train.py (the previous one archived as
        train_v{N}.py), so that resume and auto-fix can relaunch it; a script already running from the
        run folder is left as it is.
        """
        if not self.ranks.is_main:
            self._start_follower()
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        config = dict(config or {})
        fields: dict[str, Any] = {
            "run_id": self.run_id,
            "model_id": model_id,
            "config": config,
            "status": fmt.RUNNING,
        }
        if self.ranks.distributed:
            fields["ranks"] = {"world_size": self.ranks.world_size}
        if not os.environ.get(ENV_LAUNCHED):
            fields.update(self._hand_launch_fields(script_path))
        stored = self._store_script(script_path) if script_path is not None else None
        if stored is not None:
            fields["script_path"] = str(stored)
        total = next((config[k] for k in _TOTAL_STEP_KEYS if isinstance(config.get(k), int)), None)
        if total is not None:
            self._total_steps = int(total)
            fields["progress"] = {"total_steps": int(total)}

        def _merge(meta: dict[str, Any]) -> dict[str, Any]:
            meta.setdefault("start_time", fmt.now())
            meta.pop("end_time", None)
            if stored is not None:
                meta["script_version"] = fmt.current_version(self.run_dir)
            else:
                meta.setdefault("script_version", 1)
            return meta

        fmt.update_meta(self.run_dir, fields, transform=_merge)
        metrics_path = self.run_dir / fmt.METRICS_FILE
        self._metrics_fd = _open_append(metrics_path)
        self._seal_torn_line(metrics_path)
        self._last_step = last_step(metrics_path)
        if not os.environ.get(fmt.ENV_OUTPUT_CAPTURED):
            self._tee_output()
        self._install_exit_hooks()
        self._started = True
        self._finished = False
        self.log("Training started")

    def _start_follower(self) -> None:
        """A rank other than 0: no files written, but resume info and stop handling work as on rank 0."""
        self._last_step = last_step(self.run_dir / fmt.METRICS_FILE)
        self._started = True
        self._finished = False

    def _hand_launch_fields(self, script_path: str | Path | None) -> dict[str, Any]:
        """pid, host and launch spec of a job started by hand (the assistant records its own launches).

        In a distributed job the pid recorded is the local launcher's (torchrun, accelerate), so that
        pause and stop reach every rank through it, not rank 0 alone.
        """
        pid = launcher_pid(self.ranks)
        fields: dict[str, Any] = {
            "pid": pid,
            "pid_create_time": fmt.process_create_time(pid),
            "host": hostname(),
            "launch": hand_launch_spec(str(script_path) if script_path is not None else None, self.ranks),
        }
        try:
            if os.getpgid(pid) == pid:
                fields["pgid"] = pid
        except OSError:
            pass
        return fields

    def _store_script(self, script_path: str | Path) -> Path | None:
        src = Path(script_path).resolve()
        dst = self.run_dir / fmt.SCRIPT_FILE
        if not src.is_file():
            return dst if dst.exists() else None
        if dst.exists() and src == dst.resolve():
            return dst
        if dst.exists():
            if dst.read_bytes() == src.read_bytes():
                return dst
            version = (fmt.archived_versions(self.run_dir) or [0])[-1] + 1
            shutil.copy2(dst, self.run_dir / f"train_v{version}.py")
        tmp = dst.with_name(f".{dst.name}.{os.getpid()}.tmp")
        shutil.copy2(src, tmp)
        os.replace(tmp, dst)
        return dst

    def _seal_torn_line(self, path: Path) -> None:
        """A kill mid-write can leave a line without its newline; end it so our lines stay separate."""
        try:
            size = os.path.getsize(path)
            if size:
                with open(path, "rb") as f:
                    f.seek(size - 1)
                    if f.read(1) != b"\n" and self._metrics_fd is not None:
                        os.write(self._metrics_fd, b"\n")
        except OSError:
            pass

    def _tee_output(self) -> None:
        self._log_fd = _open_append(self.run_dir / fmt.LOG_FILE)
        if self._log_fd is None:
            return
        marker = (
            f"===== twinkle-auto: {self.run_id} started by hand, pid {os.getpid()}, "
            f"{time.strftime('%Y-%m-%d %H:%M:%S')} =====\n"
        )
        os.write(self._log_fd, marker.encode())
        self._orig_streams = (sys.stdout, sys.stderr)
        sys.stdout = _Tee(sys.stdout, self._log_fd)
        sys.stderr = _Tee(sys.stderr, self._log_fd)

    def _install_exit_hooks(self) -> None:
        if self._orig_excepthook is not None:
            return
        self._orig_excepthook = sys.excepthook

        def _hook(exc_type: type[BaseException], exc: BaseException, tb: Any) -> None:
            self._orig_excepthook(exc_type, exc, tb)
            if self._started and not issubclass(exc_type, KeyboardInterrupt):
                last = traceback.format_exception_only(exc_type, exc)[-1].strip()
                self.finish(status=fmt.FAILED, error=last)

        sys.excepthook = _hook
        atexit.register(self._at_exit)

    def _at_exit(self) -> None:
        # A script that ends without calling finish() still ended normally (an uncaught exception went
        # through the excepthook first), so the run is not left `running` for the monitor to puzzle over.
        if self._started and not self._finished:
            self.finish(note="process exited without calling finish()")

    def finish(
        self, status: str = fmt.FINISHED, *, error: str | None = None, note: str | None = None
    ) -> None:
        """Mark the run finished (or `stopped` / `failed`), save progress and close the files."""
        if self._finished:
            return
        self._finished = True
        if not self.ranks.is_main:
            self._started = False
            return
        fields: dict[str, Any] = {"status": status, "end_time": fmt.now()}
        progress = self._progress_fields()
        if progress:
            fields["progress"] = progress
        if error:
            fields["error"] = error
        if note:
            fields["note"] = note
        try:
            fmt.update_meta(self.run_dir, fields)
        except OSError as exc:
            self.log(f"could not update meta.json: {exc}")
        self.log(f"Training finished with status: {status}")
        self._close()

    def _close(self) -> None:
        if self._metrics_fd is not None:
            os.close(self._metrics_fd)
            self._metrics_fd = None
        if self._orig_streams is not None:
            for stream in (sys.stdout, sys.stderr):
                try:
                    stream.flush()
                except (OSError, ValueError):
                    pass
            sys.stdout, sys.stderr = self._orig_streams
            self._orig_streams = None
        if self._log_fd is not None:
            os.close(self._log_fd)
            self._log_fd = None
        self._started = False

    # ------------------------------------------------------------------------------------------ metrics
    def log_metrics(self, **metrics: Any) -> None:
        """Append one line to metrics.jsonl: `{"ts": …, "step": …, <metric>: <number>, …}`.

        Numbers are kept as written (ints stay ints, NaN and Infinity as Python's json writes them, since
        detecting them is the monitor's job); 0-d tensors and numpy scalars become floats; anything that is
        not a number is dropped. `total_steps` goes to the run's progress, not to the line.

        Never raises out of the training loop: a full disk or an I/O error is told once on stderr and
        the file is tried again every WRITE_RETRY_S (see `_WriteGate`); training goes on meanwhile.
        """
        fd = self._metrics_fd
        if fd is None:
            return
        entry: dict[str, Any] = {"ts": time.time()}
        for key, value in metrics.items():
            if type(value) is float or type(value) is int:
                entry[key] = value
            elif isinstance(value, bool):
                entry[key] = int(value)
            else:
                try:
                    entry[key] = float(value)
                except Exception:  # a value that is not a number (or whose conversion breaks) is dropped
                    continue
        if "total_steps" in entry:
            total = entry.pop("total_steps")
            if isinstance(total, (int, float)) and math.isfinite(total):
                self._total_steps = int(total)
        self._append_metrics(fd, (json.dumps(entry) + "\n").encode())
        step = entry.get("step")
        if step is not None and (type(step) is int or (type(step) is float and math.isfinite(step))):
            self._last_step = int(step)
            now = time.monotonic()
            if now - self._last_progress_save >= PROGRESS_INTERVAL_S:
                self._last_progress_save = now
                self._save_progress()
        if self._stop_requested and self._deferred_shutdown is not None:
            self._deferred_shutdown()

    def _append_metrics(self, fd: int, data: bytes) -> None:
        gate = self._metrics_gate
        if not gate.ready():
            return
        if gate.torn:
            data = b"\n" + data
        try:
            _write_all(fd, data)
        except OSError as exc:
            gate.torn = gate.torn or getattr(exc, "written", 0) > 0
            gate.failed(exc)
            return
        gate.torn = False
        gate.succeeded()

    def log(self, message: str) -> None:
        """Print a line to stdout, which ends up in output.log (captured by the launcher or teed).

        A broken pipe, a closed stdout or a full disk never stops training: the failure is told once on
        stderr and printing is tried again every WRITE_RETRY_S.
        """
        gate = self._log_gate
        if not gate.ready():
            return
        try:
            print(f"[twinkle] {message}", flush=True)
        except (OSError, ValueError) as exc:
            gate.failed(exc if isinstance(exc, OSError) else OSError(str(exc)))
            return
        gate.succeeded()

    def _progress_fields(self) -> dict[str, Any]:
        progress: dict[str, Any] = {}
        if self._last_step is not None:
            progress["last_step"] = self._last_step
        if self._total_steps is not None:
            progress["total_steps"] = self._total_steps
        if self._consumed_samples is not None:
            progress["consumed_train_samples"] = self._consumed_samples
        return progress

    def _save_progress(self) -> None:
        progress = self._progress_fields()
        if not progress:
            return
        try:
            fmt.update_meta(self.run_dir, {"progress": progress})
        except OSError:
            pass  # never crash training for bookkeeping; the metrics file still has every step

    def get_resume_info(self) -> dict[str, int]:
        """Where a relaunched script should continue: `{"last_step": int, ...}`, never None.

        `last_step` is the later of the progress saved in meta.json and the last step in metrics.jsonl
        (progress is saved at most every 5 s, so after a SIGKILL the metrics file knows better). A fresh
        run answers `{"last_step": 0}`. `consumed_train_samples` and `total_steps` are included when known.
        """
        info: dict[str, int] = {"last_step": 0}
        try:
            meta = fmt.read_json_file(self.run_dir / fmt.META_FILE)
        except (OSError, ValueError):
            meta = {}
        progress = meta.get("progress") if isinstance(meta.get("progress"), dict) else {}
        for key in ("last_step", "total_steps", "consumed_train_samples"):
            value = progress.get(key)
            if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                info[key] = int(value)
        tail_step = last_step(self.run_dir / fmt.METRICS_FILE)
        if tail_step is not None and tail_step > info["last_step"]:
            info["last_step"] = tail_step
        return info

    # --------------------------------------------------------------------------------- graceful shutdown
    @property
    def stop_requested(self) -> bool:
        """True once SIGTERM arrived; a loop may check it to stop at a clean point."""
        return self._stop_requested

    def register_graceful_shutdown(
        self,
        model: Any = None,
        dataloader: Any = None,
        checkpoint_name: str = "interrupted",
        on_shutdown: Callable[[TrainingRuntime], Any] | None = None,
        *,
        defer: bool = False,
    ) -> None:
        """Make SIGTERM (twinkle-auto's stop) save a checkpoint, record the data position and exit.

        With a Twinkle client `model`, the handler does what the Twinkle client does:
        `model.save(name=checkpoint_name, save_optimizer=True, consumed_train_samples=…)`, with the
        position from `dataloader.get_state()`, at once (the server holds the state, so any moment is
        consistent).

        Plain PyTorch scripts pass `on_shutdown(runtime)` instead: it is called at the end of the current
        step (the next `log_metrics` call), when weights and optimizer agree, so it can `torch.save` a
        checkpoint that resumes cleanly; it returns the checkpoint's path.

        Frameworks that save on their own schedule (the HF Trainer callback) pass `defer=True`: SIGTERM
        only sets `stop_requested`, and the caller calls `complete_shutdown(checkpoint)` once its
        checkpoint is written. Either way the run is marked `stopped` with its progress and the process
        exits with status 0.
        """
        self._shutdown_args = (model, dataloader, checkpoint_name, on_shutdown)

        def _handler(signum: int, frame: Any) -> None:
            if self._stop_requested:
                return
            self._stop_requested = True
            if defer:
                self.log("SIGTERM received: stopping at the next checkpoint")
                return
            self.log("SIGTERM received, saving checkpoint before exit...")
            if model is None and on_shutdown is not None and self._started and self._last_step is not None:
                self._deferred_shutdown = self.complete_shutdown
            else:
                self.complete_shutdown()

        signal.signal(signal.SIGTERM, _handler)
        self.log("Graceful shutdown handler registered (SIGTERM)")

    def complete_shutdown(self, checkpoint: str | None = None) -> None:
        """Save (through the registered model / hook), record the stop in meta.json, mark `stopped`, exit 0.

        `checkpoint` names a checkpoint the caller already wrote (deferred mode).
        """
        model, dataloader, checkpoint_name, on_shutdown = self._shutdown_args
        if not self.ranks.is_main:
            # Rank 0 saves and records the stop; the others end at the same step boundary, cleanly.
            self._deferred_shutdown = None
            self.finish(status=fmt.STOPPED)
            sys.exit(0)
        with self._shutdown_lock:
            self._deferred_shutdown = None
            record: dict[str, Any] = {"time": fmt.now(), "signal": "SIGTERM", "step": self._last_step}
            if checkpoint is not None:
                record["checkpoint"] = str(checkpoint)
                self.log(f"Checkpoint saved: {checkpoint}")
            try:
                if dataloader is not None and hasattr(dataloader, "get_state"):
                    state = dataloader.get_state() or {}
                    consumed = state.get("consumed_train_samples")
                    if isinstance(consumed, int):
                        self._consumed_samples = consumed
                        record["consumed_train_samples"] = consumed
                if model is not None:
                    kwargs: dict[str, Any] = {"name": checkpoint_name, "save_optimizer": True}
                    if self._consumed_samples is not None:
                        kwargs["consumed_train_samples"] = self._consumed_samples
                    result = model.save(**kwargs)
                    # the Twinkle client answers with an object whose twinkle_path names the checkpoint
                    path = getattr(result, "twinkle_path", None) or getattr(result, "path", None) or result
                    record["checkpoint"] = str(path) if path is not None else checkpoint_name
                    self.log(f"Checkpoint saved: {record['checkpoint']}")
                if on_shutdown is not None:
                    result = on_shutdown(self)
                    if result is not None:
                        record["checkpoint"] = str(result)
                        self.log(f"Checkpoint saved: {result}")
            except Exception as exc:  # the stop must complete even if the save fails
                record["error"] = f"{type(exc).__name__}: {exc}"
                self.log(f"Error saving checkpoint during shutdown: {record['error']}")
            try:
                fmt.update_meta(self.run_dir, {"shutdown": record})
            except OSError:
                pass
            self.finish(status=fmt.STOPPED)
        sys.exit(0)
