"""Starting, pausing, resuming and stopping training processes, and replacing their script.

Pause is a SIGKILL to the process group: in server mode the Twinkle server keeps model and optimizer
state, so killing the client loses nothing, and a relaunch continues from `get_resume_info()`. Stop is a
SIGTERM (the runtime saves a checkpoint and exits), then SIGKILL after a grace period. Whatever the
process did, the final status is written from what happened, so no run is left `stopping`.
"""

from __future__ import annotations

import difflib
import os
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from twinkle_auto.connection import process as proc
from twinkle_auto.connection.errors import RunError, RunStateError
from twinkle_auto.connection.store import CorruptMetaError, RunStore
from twinkle_auto.runtime import format as fmt

STOP_GRACE_S = 15.0
"""Time a stopping run gets to save its checkpoint before SIGKILL."""


@dataclass(frozen=True)
class LaunchResult:
    run_id: str
    pid: int
    launch_count: int
    script_version: int


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

    def __init__(self, store: RunStore, *, stop_grace: float = STOP_GRACE_S) -> None:
        self.store = store
        self.stop_grace = stop_grace
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
    ) -> LaunchResult:
        self.create(run_id, script_text, model_id=model_id, config=config)
        return self.launch(run_id, env=env)

    def launch(
        self, run_id: str, *, env: dict[str, str] | None = None, reason: str = "start"
    ) -> LaunchResult:
        """Run train.py with `sys.executable -u` in the run folder, in its own session."""
        folder = self.store.require(run_id)
        script = folder / fmt.SCRIPT_FILE
        if not script.is_file():
            raise RunError(f"run {run_id!r} has no train.py to launch")
        self._refuse_if_running(run_id)
        try:
            meta = self.store.read_meta(run_id)
        except CorruptMetaError:
            meta = {}
        count = int(meta.get("launch_count") or 0) + 1
        version = fmt.current_version(folder)
        if env is None:  # a relaunch (resume, auto-fix) runs with the settings the run was started with
            saved = meta.get("launch_env")
            env = {str(k): str(v) for k, v in saved.items()} if isinstance(saved, dict) else {}
        child_env = dict(os.environ)
        child_env.update(env)
        child_env.update(
            {
                fmt.ENV_RUN_ID: run_id,
                fmt.ENV_HOME: str(self.store.home),
                fmt.ENV_OUTPUT_CAPTURED: "1",
                "PYTHONUNBUFFERED": "1",
            }
        )
        log_path = folder / fmt.LOG_FILE
        child, ctime = proc.spawn_logged(
            [sys.executable, "-u", fmt.SCRIPT_FILE],
            log_path=log_path,
            marker=f"launch #{count} ({reason}) of train.py v{version}",
            env=child_env,
            cwd=folder,
        )

        def _merge(m: dict[str, Any]) -> dict[str, Any]:
            # The child may already have started, crashed and reported (fast failures): never overwrite a
            # status that this very process wrote.
            if not (m.get("pid") == child.pid and m.get("status") != fmt.RUNNING):
                m["status"] = fmt.RUNNING
                m.pop("end_time", None)
                m.pop("error", None)
            m["pid"] = child.pid
            m["pgid"] = child.pid
            if ctime is not None:
                m["pid_create_time"] = ctime
            m["launch_count"] = count
            m["script_version"] = version
            m["launch_env"] = env
            m["launched_at"] = fmt.now()
            m.pop("exit_code", None)
            return _defaults(m)

        fmt.update_meta(folder, transform=_merge)
        with self._lock:
            self._children[child.pid] = child
        threading.Thread(target=self._reap, args=(run_id, child), daemon=True).start()
        return LaunchResult(run_id, child.pid, count, version)

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
            return
        info = proc.process_info(meta)
        if proc.is_running(info):
            raise RunStateError(f"run {run_id!r} is already running (pid {info.pid})")

    # ------------------------------------------------------------------------------------ pause/resume
    def pause(self, run_id: str) -> str:
        """SIGKILL the run's process group and mark it `paused`; resume relaunches train.py."""
        meta = self._live_meta(run_id, "pause")
        fmt.update_meta(self.store.path(run_id), {"status": fmt.PAUSED})
        proc.send(meta, proc.SIGKILL)
        proc.wait_gone(meta, 10.0, self._children)

        def _merge(m: dict[str, Any]) -> dict[str, Any]:
            m["status"] = fmt.PAUSED
            m["paused_at"] = fmt.now()
            m.pop("exit_code", None)
            return m

        fmt.update_meta(self.store.path(run_id), transform=_merge)
        return fmt.PAUSED

    def resume(self, run_id: str) -> LaunchResult:
        """Relaunch the current train.py; the script continues from `get_resume_info()`."""
        status = self.store.status(run_id)
        if status.process in (proc.ALIVE, proc.STOPPED):
            raise RunStateError(f"run {run_id!r} is already running (pid {status.pid})")
        return self.launch(run_id, reason="resume")

    # -------------------------------------------------------------------------------------------- stop
    def stop(self, run_id: str, *, grace: float | None = None) -> StopResult:
        """SIGTERM, wait `grace` seconds for the checkpoint, then SIGKILL; the status says what happened."""
        meta = self._live_meta(run_id, "stop")
        folder = self.store.path(run_id)
        fmt.update_meta(folder, {"status": fmt.STOPPING})
        proc.send(meta, proc.SIGTERM)
        killed = False
        if not proc.wait_gone(meta, self.stop_grace if grace is None else grace, self._children):
            killed = True
            try:
                proc.send(meta, proc.SIGKILL)
            except RunError:
                pass
            proc.wait_gone(meta, 10.0, self._children)

        def _merge(m: dict[str, Any]) -> dict[str, Any]:
            if m.get("status") in (fmt.STOPPING, fmt.RUNNING):
                m["status"] = fmt.STOPPED
                m.setdefault("end_time", fmt.now())
                if killed:
                    m["note"] = "killed after the stop grace period; no checkpoint was confirmed"
            return m

        final = fmt.update_meta(folder, transform=_merge)
        shutdown = final.get("shutdown") if isinstance(final.get("shutdown"), dict) else {}
        return StopResult(run_id, str(final.get("status")), killed, shutdown.get("checkpoint"))

    def _live_meta(self, run_id: str, verb: str) -> dict[str, Any]:
        self.store.require(run_id)
        meta = self.store.read_meta(run_id)
        info = proc.process_info(meta)
        if not proc.is_running(info):
            raise RunStateError(f"cannot {verb} run {run_id!r}: it is not running ({info.reason})")
        proc.verified_process(meta)
        return meta

    # ------------------------------------------------------------------------------------------ script
    def update_script(self, run_id: str, new_text: str) -> ScriptUpdate:
        """Archive train.py as train_v{N}.py (N = highest + 1, never overwriting) and write the new one."""
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


def _defaults(meta: dict[str, Any]) -> dict[str, Any]:
    meta.setdefault("model_id", "")
    meta.setdefault("config", {})
    meta.setdefault("start_time", fmt.now())
    meta.setdefault("status", "created")
    meta.setdefault("script_version", 1)
    return meta
