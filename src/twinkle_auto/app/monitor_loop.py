"""The background monitor: one graph tick per watched run every `interval` seconds, and at once when a
watched process exits.

Every run whose status says it is (or was just) running is watched, not only the selected one. A crash is
seen within `EXIT_POLL_S` even for processes we did not launch (started by hand, or by another
twinkle-auto), because the loop checks the watched pids between ticks; processes we launched wake it
immediately through the controller's exit listener.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import psutil

from twinkle_auto.connection import Connection
from twinkle_auto.connection.errors import RunError
from twinkle_auto.runtime import format as fmt

log = logging.getLogger("twinkle_auto.monitor.loop")

TICK_INTERVAL_S = 30.0
EXIT_POLL_S = 1.0
WATCHED_STATUSES = frozenset({fmt.RUNNING, fmt.STOPPING, fmt.FAILED})

Notify = Callable[[str, str], None]
Ask = Callable[[str, dict[str, Any]], Awaitable[bool]]


class MonitorLoop:
    """Runs the monitor graph for every watched run; owns nothing but its schedule."""

    def __init__(
        self,
        connection: Connection,
        llm: Any,
        *,
        interval: float = TICK_INTERVAL_S,
        policy: str = "on",
        notify: Notify | None = None,
        ask: Ask | None = None,
        use_llm: bool = True,
        thresholds: Any = None,
    ) -> None:
        from langgraph.checkpoint.memory import InMemorySaver

        from twinkle_auto.graphs.monitor.graph import compile_monitor_graph

        self.connection = connection
        self.interval = interval
        self.notify = notify
        self.ask = ask
        self.checkpointer = InMemorySaver()
        extra = {"thresholds": thresholds} if thresholds is not None else {}
        self.graph = compile_monitor_graph(
            llm,
            connection,
            policy=policy,
            use_llm=use_llm,
            checkpointer=self.checkpointer,
            notify=notify,
            **extra,
        )
        self._wake = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pids: dict[str, tuple[int, float | None]] = {}
        self._settled: dict[str, Any] = {}
        self.ticks = 0
        self.last_results: dict[str, dict[str, Any]] = {}
        connection.controller.on_exit(self._on_exit)

    # -------------------------------------------------------------------------------------- scheduling
    def _on_exit(self, run_id: str, code: int) -> None:
        """Called from the controller's reaper thread when a process we launched exits."""
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._wake.set)

    def watched_runs(self) -> list[str]:
        """Runs to tick now: running or just failed, minus those whose ending was already judged."""
        out = []
        for run_id in self.connection.store.run_ids():
            try:
                meta = self.connection.store.read_meta(run_id)
            except RunError:
                continue
            status = meta.get("status")
            if status not in WATCHED_STATUSES:
                continue
            launch = (meta.get("launch_count"), meta.get("pid"))
            if self._settled.get(run_id) == launch:
                continue
            out.append(run_id)
        return out

    def _some_watched_process_exited(self) -> bool:
        for pid, ctime in list(self._pids.values()):
            try:
                proc = psutil.Process(pid)
                if proc.status() == psutil.STATUS_ZOMBIE:
                    return True
                if ctime is not None and abs(proc.create_time() - ctime) > 1.0:
                    return True
            except psutil.NoSuchProcess:
                return True
            except psutil.AccessDenied:
                continue
        return False

    # ------------------------------------------------------------------------------------------- ticks
    async def tick_all(self) -> dict[str, dict[str, Any]]:
        results: dict[str, dict[str, Any]] = {}
        for run_id in self.watched_runs():
            try:
                results[run_id] = await self.tick(run_id)
            except Exception as exc:  # one broken run must not stop the watch of the others
                log.exception("monitor tick failed for %s", run_id)
                results[run_id] = {"error": f"{type(exc).__name__}: {exc}"}
        self._refresh_pids()
        return results

    async def tick(self, run_id: str) -> dict[str, Any]:
        from langgraph.types import Command

        config = {"configurable": {"thread_id": f"monitor:{run_id}"}}
        state = await asyncio.to_thread(self.graph.invoke, {"run_id": run_id}, config)
        while state.get("__interrupt__"):
            payload = state["__interrupt__"][0].value
            # No one to ask is "unanswered", not "declined": nothing is counted and the patch is offered again.
            answer = await self.ask(run_id, payload) if self.ask is not None else {"approved": None}
            state = await asyncio.to_thread(self.graph.invoke, Command(resume=answer), config)
        self.ticks += 1
        # Continuity between ticks lives in the run folder; drop the thread so memory stays flat.
        self.checkpointer.delete_thread(f"monitor:{run_id}")
        result = {k: v for k, v in state.items() if k != "snapshot"}
        self.last_results[run_id] = result
        snap = state.get("snapshot") or {}
        if snap.get("process_state") in ("dead", "zombie") and not state.get("fixed"):
            try:
                meta = self.connection.store.read_meta(run_id)
                self._settled[run_id] = (meta.get("launch_count"), meta.get("pid"))
            except RunError:
                pass
        return result

    def _refresh_pids(self) -> None:
        pids: dict[str, tuple[int, float | None]] = {}
        for run_id in self.watched_runs():
            try:
                meta = self.connection.store.read_meta(run_id)
            except RunError:
                continue
            pid = meta.get("pid")
            if isinstance(pid, int) and pid > 0:
                ctime = meta.get("pid_create_time")
                pids[run_id] = (pid, float(ctime) if isinstance(ctime, (int, float)) else None)
        self._pids = pids

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Tick forever (until `stop` is set): every `interval`, or sooner when a process exits."""
        self._loop = asyncio.get_running_loop()
        stop = stop or asyncio.Event()
        while not stop.is_set():
            await self.tick_all()
            deadline = time.monotonic() + self.interval
            self._wake.clear()
            while not stop.is_set() and time.monotonic() < deadline:
                if self._wake.is_set() or self._some_watched_process_exited():
                    break
                try:
                    await asyncio.wait_for(self._wake.wait(), timeout=min(EXIT_POLL_S, self.interval))
                except asyncio.TimeoutError:
                    pass
