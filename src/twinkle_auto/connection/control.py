"""Starting, pausing, resuming and stopping training processes, and replacing their script.

Pause is a SIGKILL to the process group: in server mode the Twinkle server keeps model and optimizer
state, so killing the client loses nothing, and a relaunch continues from `get_resume_info()`. Stop is a
SIGTERM (the runtime saves a checkpoint and exits), then SIGKILL after a grace period. Whatever the
process did, the final status is written from what happened, so no run is left `stopping`.
"""

from __future__ import annotations

import difflib
import math
import os
import subprocess
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from twinkle_auto.connection import process as proc
from twinkle_auto.connection.errors import RunError, RunStateError
from twinkle_auto.connection.launch import (
    PYTHON,
    RAY,
    LaunchSpec,
    new_spec,
    spec_from_meta,
    with_launcher_options,
)
from twinkle_auto.connection.locks import run_lock
from twinkle_auto.connection.store import CorruptMetaError, RunStore
from twinkle_auto.runtime import format as fmt
from twinkle_auto.runtime.launch_info import ENV_LAUNCHED, hostname

STOP_GRACE_S = 15.0
"""Time a stopping run gets to save its checkpoint before SIGKILL."""
LOCK_TIMEOUT_S = 30.0
"""How long a launch, pause or stop waits for another one (or a fix in progress) on the same run."""


def one_line(exc: BaseException) -> str:
    text = f"{exc.strerror}" if isinstance(exc, OSError) and exc.strerror else str(exc) or type(exc).__name__
    return " ".join(text.split())


@dataclass(frozen=True)
class LaunchResult:
    run_id: str
    pid: int
    launch_count: int
    script_version: int
    ray_job: str | None = None
    """The Ray job's submission id when the run was submitted to a cluster (pid is then 0)."""


@dataclass(frozen=True)
class StopResult:
    run_id: str
    status: str
    killed: bool
    """True when the grace period ran out and the group got SIGKILL."""
    checkpoint: str | None


@dataclass(frozen=True)
class ScriptUpdate:
    run_id: str
    archived_as: str | None
    version: int
    diff: str


class RunController:
    """Process control over the runs of one RunStore.

    It keeps the `Popen` of every process it launched, so that a long-lived assistant reaps its children
    (no zombies) and records their exit code in meta.json the moment they exit.
    """

    def __init__(
        self, store: RunStore, *, stop_grace: float = STOP_GRACE_S, lock_timeout: float = LOCK_TIMEOUT_S
    ) -> None:
        self.store = store
        self.stop_grace = stop_grace
        self.lock_timeout = lock_timeout
        self._children: dict[int, subprocess.Popen[bytes]] = {}
        self._exit_listeners: list[Any] = []
        self._lock = threading.Lock()

    # ------------------------------------------------------------------------------------------ start
    def create(
        self,
        run_id: str,
        script_text: str,
        *,
        model_id: str | None = None,
        config: dict[str, Any] | None = None,
    ) -> Path:
        """Create (or reuse, when not running) a run folder holding `script_text` as train.py."""
        folder = self.store.path(run_id)
        if self.store.exists(run_id):
            self._refuse_if_running(run_id)
            if (folder / fmt.SCRIPT_FILE).exists():
                self.update_script(run_id, script_text)
            else:
                fmt.atomic_write_text(folder / fmt.SCRIPT_FILE, script_text)
        else:
            folder.mkdir(parents=True, exist_ok=True)
            fmt.atomic_write_text(folder / fmt.SCRIPT_FILE, script_text)
        fields: dict[str, Any] = {"run_id": run_id, "script_path": str(folder / fmt.SCRIPT_FILE)}
        if model_id is not None:
            fields["model_id"] = model_id
        if config is not None:
            fields["config"] = config
        fmt.update_meta(folder, fields, transform=_defaults)
        return folder

    def start(
        self,
        run_id: str,
        script_text: str,
        *,
        model_id: str | None = None,
        config: dict[str, Any] | None = None,
        env: dict[str, str] | None = None,
        spec: LaunchSpec | None = None,
        launcher: str | None = None,
        argv: Sequence[str] | None = None,
        cwd: str | Path | None = None,
        source_dir: str | Path | None = None,
        nproc_per_node: int | None = None,
        launcher_args: str | None = None,
        ray_address: str | None = None,
        pass_env: Sequence[str] | None = None,
    ) -> LaunchResult:
        """Create the run and launch it; the launch spec is recorded so resume and auto-fix replay it.

        Either a whole `spec` (the CLI builds one) or its parts (the chat tool): `launcher` python,
        torchrun, accelerate or ray; `argv` the script's arguments; `cwd` its working directory (default
        the run folder); `source_dir` a directory kept importable for sibling modules.
        """
        if spec is None:
            spec = new_spec(
                launcher=launcher or PYTHON,
                args=list(argv or []),
                cwd=cwd,
                source_dir=source_dir,
                env=env or {},
                pass_env=list(pass_env or []),
                ray_address=ray_address,
            )
            spec = with_launcher_options(spec, nproc_per_node, launcher_args)
        elif env:
            spec = replace(spec, env={**spec.env, **env})
        folder = self.store.path(run_id)
        folder.mkdir(parents=True, exist_ok=True)
        with self._launch_lock(run_id, "start"):
            self.create(run_id, script_text, model_id=model_id, config=config)
            return self.launch(run_id, spec=spec)

    def launch(
        self,
        run_id: str,
        *,
        env: dict[str, str] | None = None,
        reason: str = "start",
        spec: LaunchSpec | None = None,
    ) -> LaunchResult:
        """Launch train.py as its launch spec says (the recorded one unless `spec` is given).

        Under the run lock, from "is it running?" to "the pid is in meta.json": two launchers never both
        see "not running". A process whose launch cannot be recorded is stopped before this returns, so
        nothing runs that the next `pause` cannot find.
        """
        folder = self.store.require(run_id)
        script = folder / fmt.SCRIPT_FILE
        if not script.is_file():
            raise RunError(f"run {run_id!r} has no train.py to launch")
        with self._launch_lock(run_id, reason):
            meta = self._meta_for_launch(run_id)
            if spec is None:
                spec = spec_from_meta(meta)
            if env is not None:
                spec = replace(spec, env={**spec.env, **{str(k): str(v) for k, v in env.items()}})
            spec = replace(spec, host=hostname())
            count = int(meta.get("launch_count") or 0) + 1 if isinstance(meta.get("launch_count"), int) else 1
            version = fmt.current_version(folder)
            if spec.launcher == RAY:
                from twinkle_auto.connection import ray_jobs

                return ray_jobs.submit(self, run_id, spec, count=count, version=version, reason=reason)
            spec.check_local()
            extra = {
                fmt.ENV_RUN_ID: run_id,
                fmt.ENV_HOME: str(self.store.home),
                fmt.ENV_OUTPUT_CAPTURED: "1",
                ENV_LAUNCHED: "1",
                "PYTHONUNBUFFERED": "1",
            }
            child, ctime = proc.spawn_logged(
                spec.command(script),
                log_path=folder / fmt.LOG_FILE,
                marker=f"launch #{count} ({reason}) of train.py v{version}",
                env=spec.environment(extra),
                cwd=spec.working_dir(folder),
            )
            try:
                self._record_launch(folder, child.pid, ctime, spec, count, version)
            except BaseException as exc:
                self._kill_unrecorded(child)
                detail = one_line(exc)
                raise RunError(
                    f"run {run_id!r}: could not record the launch in meta.json ({detail}); "
                    f"the new process {child.pid} was stopped"
                ) from None
            with self._lock:
                self._children[child.pid] = child
        threading.Thread(target=self._reap, args=(run_id, child), daemon=True).start()
        return LaunchResult(run_id, child.pid, count, version)

    @contextmanager
    def _launch_lock(self, run_id: str, verb: str) -> Iterator[None]:
        folder = self.store.path(run_id)
        with run_lock(folder, timeout=self.lock_timeout) as got:
            if not got:
                raise RunStateError(
                    f"cannot {verb} run {run_id!r}: another launch or fix of it is in progress; try again"
                )
            yield

    def _meta_for_launch(self, run_id: str) -> dict[str, Any]:
        """meta.json for a launch, after every check that the run is not alive already (here or elsewhere)."""
        folder = self.store.path(run_id)
        try:
            meta = self.store.read_meta(run_id)
        except CorruptMetaError as exc:
            live = proc.find_run_processes(folder)
            if live:
                raise RunStateError(
                    f"run {run_id!r} is still running (pid {live[0].pid}) but its meta.json is corrupt; "
                    "refusing to start a second process"
                ) from None
            meta = {}
            del exc
        host = proc.remote_host(meta)
        if host is not None:
            raise RunStateError(f"run {run_id!r} lives on host {host}; resume or relaunch it there")
        info = proc.process_info(meta, folder)
        if proc.is_running(info):
            raise RunStateError(f"run {run_id!r} is already running (pid {info.pid})")
        if isinstance(meta.get("ray_job"), dict):
            from twinkle_auto.connection import ray_jobs

            ray_jobs.refuse_if_active(meta, run_id)
        live = proc.find_run_processes(folder)
        if live:
            raise RunStateError(
                f"run {run_id!r} is already running (pid {live[0].pid}, not the one meta.json records)"
            )
        return meta

    def _record_launch(
        self, folder: Path, pid: int, ctime: float | None, spec: LaunchSpec, count: int, version: int
    ) -> None:
        def _merge(m: dict[str, Any]) -> dict[str, Any]:
            # The child may already have started, crashed and reported (fast failures): never overwrite a
            # status that this very process wrote.
            if not (m.get("pid") == pid and m.get("status") != fmt.RUNNING):
                m["status"] = fmt.RUNNING
                m.pop("end_time", None)
                m.pop("error", None)
            m["pid"] = pid
            m["pgid"] = pid
            if ctime is not None:
                m["pid_create_time"] = ctime
            else:
                m.pop("pid_create_time", None)
            m["launch_count"] = count
            m["script_version"] = version
            m["launch"] = spec.to_meta()
            m["launch_env"] = dict(spec.env)
            m["host"] = spec.host
            m["launched_at"] = fmt.now()
            m.pop("exit_code", None)
            m.pop("ray_job", None)
            return _defaults(m)

        fmt.update_meta(folder, transform=_merge)

    def _kill_unrecorded(self, child: subprocess.Popen[bytes]) -> None:
        """Stop a process we started but could not record (its session is ours alone)."""
        try:
            os.killpg(child.pid, proc.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            child.kill()
        except OSError:
            pass
        try:
            child.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass

    def _reap(self, run_id: str, child: subprocess.Popen[bytes]) -> None:
        """Wait for a child we launched, then record how it ended (the runtime may not have)."""
        code = child.wait()
        try:
            folder = self.store.path(run_id)

            def _merge(m: dict[str, Any]) -> dict[str, Any]:
                if m.get("pid") != child.pid:
                    return m  # relaunched meanwhile; this exit is history
                m["exit_code"] = code
                if m.get("status") == fmt.RUNNING:
                    m["status"] = fmt.FINISHED if code == 0 else fmt.FAILED
                    m.setdefault("end_time", fmt.now())
                    if code != 0 and "error" not in m:
                        m["error"] = f"exited with code {code}" if code > 0 else f"killed by signal {-code}"
                return m

            fmt.update_meta(folder, transform=_merge)
        except OSError:
            pass
        finally:
            with self._lock:
                self._children.pop(child.pid, None)
            for listener in list(self._exit_listeners):
                try:
                    listener(run_id, code)
                except Exception:  # a listener must not break reaping
                    pass

    def on_exit(self, listener: Any) -> None:
        """Call `listener(run_id, exit_code)` when a process we launched exits (the monitor wakes on it)."""
        self._exit_listeners.append(listener)

    def _refuse_if_running(self, run_id: str) -> None:
        try:
            meta = self.store.read_meta(run_id)
        except CorruptMetaError:
            if proc.find_run_processes(self.store.path(run_id)):
                raise RunStateError(f"run {run_id!r} is still running but its meta.json is corrupt") from None
            return
        host = proc.remote_host(meta)
        if host is not None:
            raise RunStateError(f"run {run_id!r} lives on host {host}; act on it there")
        info = proc.process_info(meta, self.store.path(run_id))
        if proc.is_running(info):
            raise RunStateError(f"run {run_id!r} is already running (pid {info.pid})")

    # ------------------------------------------------------------------------------------ pause/resume
    def pause(self, run_id: str) -> str:
        """SIGKILL the run's processes (every rank) and mark it `paused`; resume relaunches train.py."""
        folder = self.store.require(run_id)
        with self._launch_lock(run_id, "pause"):
            meta = self._live_meta(run_id, "pause")
            fmt.update_meta(folder, {"status": fmt.PAUSED})
            if isinstance(meta.get("ray_job"), dict):
                from twinkle_auto.connection import ray_jobs

                ray_jobs.stop_job(meta, grace=0.0)
            else:
                tree = proc.send(meta, proc.SIGKILL, folder)
                proc.wait_gone(meta, 10.0, self._children, tree)

            def _merge(m: dict[str, Any]) -> dict[str, Any]:
                m["status"] = fmt.PAUSED
                m["paused_at"] = fmt.now()
                m.pop("exit_code", None)
                return m

            fmt.update_meta(folder, transform=_merge)
        return fmt.PAUSED

    def resume(self, run_id: str) -> LaunchResult:
        """Relaunch the current train.py as it was launched; the script continues from `get_resume_info()`."""
        return self.launch(run_id, reason="resume")

    # -------------------------------------------------------------------------------------------- stop
    def stop(self, run_id: str, *, grace: float | None = None) -> StopResult:
        """SIGTERM, wait `grace` seconds for the checkpoint, then SIGKILL; the status says what happened.

        A paused run has no process: stopping it only records that the person ended it (status
        `stopped`), so lists and the monitor stop offering it as waiting to go on. Its checkpoints stay,
        and resume still continues it, as it does any stopped run.
        """
        grace = self.stop_grace if grace is None else grace
        if not (isinstance(grace, (int, float)) and math.isfinite(grace) and grace >= 0):
            raise RunError(f"grace must be a finite number of seconds >= 0, not {grace!r}")
        folder = self.store.require(run_id)
        with self._launch_lock(run_id, "stop"):
            if self._paused_and_gone(run_id):
                return self._stop_paused(run_id, folder)
            meta = self._live_meta(run_id, "stop")
            fmt.update_meta(folder, {"status": fmt.STOPPING})
            killed = False
            if isinstance(meta.get("ray_job"), dict):
                from twinkle_auto.connection import ray_jobs

                killed = ray_jobs.stop_job(meta, grace=grace)
            else:
                tree = proc.send(meta, proc.SIGTERM, folder)
                if not proc.wait_gone(meta, grace, self._children, tree):
                    killed = True
                    try:
                        tree = proc.send(meta, proc.SIGKILL, folder) or tree
                    except RunError:
                        pass
                    for p in tree:  # ranks outlive their launcher; the tree was ours when we looked
                        try:
                            p.kill()
                        except Exception:
                            pass
                    proc.wait_gone(meta, 10.0, self._children, tree)

            def _merge(m: dict[str, Any]) -> dict[str, Any]:
                if m.get("status") in (fmt.STOPPING, fmt.RUNNING):
                    m["status"] = fmt.STOPPED
                    m.setdefault("end_time", fmt.now())
                    if killed:
                        m["note"] = "killed after the stop grace period; no checkpoint was confirmed"
                return m

            final = fmt.update_meta(folder, transform=_merge)
        return _stop_result(run_id, final, killed)

    def _paused_and_gone(self, run_id: str) -> bool:
        """Whether the run is marked paused and its process is gone (a live process, even under a stale
        `paused`, is stopped with signals)."""
        meta = self.store.read_meta(run_id)
        if meta.get("status") != fmt.PAUSED or proc.remote_host(meta) is not None:
            return False
        if isinstance(meta.get("ray_job"), dict):
            from twinkle_auto.connection import ray_jobs

            return not ray_jobs.is_active(meta)
        return not proc.is_running(proc.process_info(meta, self.store.path(run_id)))

    def _stop_paused(self, run_id: str, folder: Path) -> StopResult:
        def _merge(m: dict[str, Any]) -> dict[str, Any]:
            if m.get("status") == fmt.PAUSED:
                m["status"] = fmt.STOPPED
                m["end_time"] = fmt.now()
                m["note"] = "stopped while paused: no process was running; its checkpoints stay"
            return m

        return _stop_result(run_id, fmt.update_meta(folder, transform=_merge), False)

    def _live_meta(self, run_id: str, verb: str) -> dict[str, Any]:
        folder = self.store.require(run_id)
        meta = self.store.read_meta(run_id)
        host = proc.remote_host(meta)
        if host is not None:
            raise RunStateError(
                f"cannot {verb} run {run_id!r} from here: it runs on host {host}; {verb} it there"
            )
        if isinstance(meta.get("ray_job"), dict):
            from twinkle_auto.connection import ray_jobs

            if not ray_jobs.is_active(meta):
                raise RunStateError(f"cannot {verb} run {run_id!r}: its Ray job is not running")
            return meta
        info = proc.process_info(meta, folder)
        if not proc.is_running(info):
            raise RunStateError(f"cannot {verb} run {run_id!r}: it is not running ({info.reason})")
        proc.verified_process(meta, folder)
        return meta

    # ------------------------------------------------------------------------------------------ script
    def update_script(self, run_id: str, new_text: str) -> ScriptUpdate:
        """Archive train.py as train_v{N}.py (N = highest + 1, never overwriting) and write the new one.

        A train.py that is a symlink is archived as a copy of its content and replaced by a regular file:
        the link's target (which may lie outside the run folder) is never written.
        """
        folder = self.store.require(run_id)
        script = folder / fmt.SCRIPT_FILE
        old_text = script.read_text(encoding="utf-8") if script.exists() else ""
        if script.exists() and old_text == new_text:
            return ScriptUpdate(run_id, None, fmt.current_version(folder), "")
        archived: str | None = None
        if script.exists():
            version = (fmt.archived_versions(folder) or [0])[-1] + 1
            while True:
                target = folder / f"train_v{version}.py"
                try:
                    if script.is_symlink():  # the archive holds the content, never a link that can change
                        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
                        with os.fdopen(fd, "w", encoding="utf-8") as f:
                            f.write(old_text)
                    else:
                        os.link(script, target)  # fails if it exists: an archive is never overwritten
                    break
                except FileExistsError:
                    version += 1
            archived = target.name
        fmt.atomic_write_text(script, new_text)
        current = fmt.current_version(folder)
        fmt.update_meta(folder, {"script_version": current, "script_path": str(script)})
        diff = "".join(
            difflib.unified_diff(
                old_text.splitlines(keepends=True),
                new_text.splitlines(keepends=True),
                fromfile=archived or "/dev/null",
                tofile=fmt.SCRIPT_FILE,
            )
        )
        return ScriptUpdate(run_id, archived, current, diff)


def _stop_result(run_id: str, final: dict[str, Any], killed: bool) -> StopResult:
    """What a stop did, from the meta.json it left: the status and the checkpoint its shutdown saved."""
    shutdown = final.get("shutdown") if isinstance(final.get("shutdown"), dict) else {}
    return StopResult(run_id, str(final.get("status")), killed, shutdown.get("checkpoint"))


def _defaults(meta: dict[str, Any]) -> dict[str, Any]:
    meta.setdefault("model_id", "")
    meta.setdefault("config", {})
    meta.setdefault("start_time", fmt.now())
    meta.setdefault("status", "created")
    meta.setdefault("script_version", 1)
    return meta
