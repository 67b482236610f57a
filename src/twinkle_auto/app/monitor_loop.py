"""The background monitor: one graph tick per watched run every `interval` seconds, and at once for a
watched run whose process exits.

Every run whose status says it is (or was just) running is watched, not only the selected one. A crash is
seen within `EXIT_POLL_S` even for processes we did not launch (started by hand, or by another
twinkle-auto), because the loop checks the watched pids between ticks; processes we launched wake it
immediately through the controller's exit listener. Only the run that exited is ticked then, so the
time from a crash to its verdict does not grow with the number of runs.

Runs are ticked in parallel, each in a thread of its own, at most one tick per run at a time. The LLM is
the scarce part: `LLMGate` (a semaphore entered from LangChain's callbacks, so it wraps every call the
graph makes, whatever the model) bounds the calls in flight; a tick that needs no LLM never waits for
it, and a run whose LLM call hangs only holds back its own next tick.

When a `twinkle-auto watch` daemon is watching the same TWINKLE_HOME, a loop made with
`follow_daemon=True` (the chat's) ticks nothing: one fixer per home, one set of LLM calls. It shows what
the daemon decided by reading the runs' persisted monitor state (auto_state.json), and the per-run fix
lock keeps even a daemon started later from racing it.

Every tick's outcome is also an event (`verdict`, `fix`, `fix_rejected`, `run_finished`,
`approval_needed`) for `on_event`: the watch daemon prints and posts them, the chat rings its bell.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import psutil
from langchain_core.callbacks import BaseCallbackHandler

from twinkle_auto.connection import Connection
from twinkle_auto.connection.errors import RunError
from twinkle_auto.runtime import format as fmt

log = logging.getLogger("twinkle_auto.monitor.loop")

TICK_INTERVAL_S = 30.0
EXIT_POLL_S = 1.0
WATCHED_STATUSES = frozenset({fmt.RUNNING, fmt.STOPPING, fmt.FAILED})
ENDED_STATUSES = frozenset({fmt.FINISHED, fmt.COMPLETED, fmt.STOPPED})
"""A watched run that leaves the watch with one of these statuses ended: `run_finished`."""
MAX_LLM_CALLS = 2
"""LLM calls in flight across all runs (the local model has one slot; hosted ones rate-limit)."""
DRAIN_S = 5.0
"""On stop, ticks in flight get this long to finish (a fix half-written is worse than a late exit)."""
REJECTED = frozenset({"refused", "unusable", "declined", "repeat", "changed"})
"""fix_status values that mean a patch was made and not applied."""

Notify = Callable[[str, str], None]
Ask = Callable[[str, dict[str, Any]], Awaitable[Any]]
OnEvent = Callable[[dict[str, Any]], None]


class LLMGate(BaseCallbackHandler):
    """A semaphore around every LLM call of the ticks it is attached to (as a LangChain callback).

    `on_chat_model_start` runs in the calling thread before the request goes out, so acquiring there
    makes that thread wait for a slot; the end or error of the same call releases it. Ticks that never
    call the model never touch it.
    """

    run_inline = True

    def __init__(self, limit: int = MAX_LLM_CALLS) -> None:
        super().__init__()
        self.limit = max(1, int(limit))
        self._slots = threading.Semaphore(self.limit)
        self._lock = threading.Lock()
        self._open: set[Any] = set()
        self.in_flight = 0
        self.peak = 0
        self.calls = 0

    def _enter(self, run_id: Any) -> None:
        self._slots.acquire()
        with self._lock:
            self._open.add(run_id)
            self.in_flight += 1
            self.calls += 1
            self.peak = max(self.peak, self.in_flight)

    def _leave(self, run_id: Any) -> None:
        with self._lock:
            if run_id not in self._open:
                return
            self._open.discard(run_id)
            self.in_flight -= 1
        self._slots.release()

    def on_chat_model_start(self, serialized: Any, messages: Any, *, run_id: Any, **kwargs: Any) -> None:
        self._enter(run_id)

    def on_llm_start(self, serialized: Any, prompts: Any, *, run_id: Any, **kwargs: Any) -> None:
        self._enter(run_id)

    def on_llm_end(self, response: Any, *, run_id: Any, **kwargs: Any) -> None:
        self._leave(run_id)

    def on_llm_error(self, error: BaseException, *, run_id: Any, **kwargs: Any) -> None:
        self._leave(run_id)


def in_daemon_thread(fn: Callable[..., Any], *args: Any) -> asyncio.Future[Any]:
    """Run `fn(*args)` in a new daemon thread and await its result from the event loop.

    Not the loop's default executor: that has a handful of workers (a few hung LLM calls would starve
    every other run) and its threads are joined at interpreter exit (a hung call would block SIGTERM).
    """
    loop = asyncio.get_running_loop()
    future: asyncio.Future[Any] = loop.create_future()

    def settle(ok: bool, value: Any) -> None:
        if future.done():
            return
        if ok:
            future.set_result(value)
        else:
            future.set_exception(value)

    def run() -> None:
        try:
            value, ok = fn(*args), True
        except BaseException as exc:  # handed to the awaiting coroutine
            value, ok = exc, False
        try:
            loop.call_soon_threadsafe(settle, ok, value)
        except RuntimeError:  # the loop is closed: nobody is waiting any more
            pass

    threading.Thread(target=run, name=f"tick-{getattr(fn, '__name__', 'fn')}", daemon=True).start()
    return future


def _strip_prefix(message: str) -> str:
    return message[len("[Monitor] ") :] if message.startswith("[Monitor] ") else message


def make_event(run_id: str, event: str, decision: str | None, message: str, **details: Any) -> dict[str, Any]:
    """One event as plain JSON-ready data (the watch daemon's line, a webhook's body)."""
    return {
        "ts": time.time(),
        "run_id": run_id,
        "event": event,
        "decision": decision,
        "message": message,
        **details,
    }


def events_from_tick(run_id: str, state: dict[str, Any]) -> list[dict[str, Any]]:
    """What one tick has to tell, as events: nothing for a healthy run or a warning already told."""
    out: list[dict[str, Any]] = []
    decision = state.get("decision")
    diagnosis = str(state.get("diagnosis") or "")
    status = state.get("fix_status")
    message = str(state.get("message") or "")
    extra = {"diagnosis": diagnosis, "verdict_source": state.get("verdict_source"), "fix_status": status}
    if state.get("verify_message"):
        out.append(make_event(run_id, "verdict", decision, _strip_prefix(state["verify_message"]), **extra))
    if state.get("fixed"):
        out.append(make_event(run_id, "verdict", decision, diagnosis, **extra))
        fix = state.get("relaunch") or {}
        out.append(
            make_event(
                run_id,
                "fix",
                decision,
                _strip_prefix(message),
                archived_as=state.get("archived_as"),
                fix_attempts=state.get("fix_attempts"),
                relaunch=fix,
                **extra,
            )
        )
    elif status in REJECTED and message:
        out.append(make_event(run_id, "verdict", decision, diagnosis, **extra))
        out.append(
            make_event(
                run_id, "fix_rejected", decision, _strip_prefix(message), fix=state.get("fix"), **extra
            )
        )
    elif status == "unanswered":
        pass  # told as approval_needed when the question was asked
    elif message:  # a warning told for the first time, a crash left unfixed, "a fix is in progress elsewhere"
        out.append(make_event(run_id, "verdict", decision, _strip_prefix(message), **extra))
    return out


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
        on_event: OnEvent | None = None,
        max_llm_calls: int = MAX_LLM_CALLS,
        follow_daemon: bool = False,
    ) -> None:
        from langgraph.checkpoint.memory import InMemorySaver

        from twinkle_auto.graphs.monitor.graph import compile_monitor_graph

        self.connection = connection
        self.interval = interval
        self.notify = notify
        self.ask = ask
        self.on_event = on_event
        self.follow_daemon = follow_daemon
        self.gate = LLMGate(max_llm_calls)
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
        self._due: set[str] = set()
        self._exit_seen: dict[str, int] = {}
        self._due_lock = threading.Lock()
        self._inflight: dict[str, asyncio.Task[dict[str, Any]]] = {}
        self._watching: set[str] = set()
        self._asked: dict[str, str] = {}
        self._last_event: dict[str, tuple[str, str]] = {}
        self._followed: dict[str, tuple[float, Any]] = {}
        self.following: dict[str, Any] | None = None
        """The watch daemon this loop defers to (its presence record), or None while it ticks itself."""
        self.ticks = 0
        self.tick_counts: dict[str, int] = {}
        self.last_results: dict[str, dict[str, Any]] = {}
        self.events: list[dict[str, Any]] = []
        """Every event emitted, newest last (kept to the last 1,000)."""
        connection.controller.on_exit(self._on_exit)

    # -------------------------------------------------------------------------------------- scheduling
    def _on_exit(self, run_id: str, code: int) -> None:
        """Called from the controller's reaper thread when a process we launched exits."""
        with self._due_lock:
            self._due.add(run_id)
        if self._loop is not None:
            try:
                self._loop.call_soon_threadsafe(self._wake.set)
            except RuntimeError:  # the loop has ended
                pass

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

    def _exited_runs(self) -> list[str]:
        """Watched runs whose recorded process is gone (exited, zombie, or its pid reused)."""
        out = []
        for run_id, (pid, ctime) in list(self._pids.items()):
            try:
                proc = psutil.Process(pid)
                if (
                    proc.status() == psutil.STATUS_ZOMBIE
                    or ctime is not None
                    and abs(proc.create_time() - ctime) > 1.0
                ):
                    out.append(run_id)
            except psutil.NoSuchProcess:
                out.append(run_id)
            except (psutil.AccessDenied, ValueError, OverflowError):
                continue
        return out

    def _remember_pid(self, run_id: str) -> None:
        try:
            meta = self.connection.store.read_meta(run_id)
        except RunError:
            self._pids.pop(run_id, None)
            return
        pid = meta.get("pid")
        if (
            meta.get("status") in WATCHED_STATUSES
            and isinstance(pid, int)
            and not isinstance(pid, bool)
            and 0 < pid < 2**31
            and self._settled.get(run_id) != (meta.get("launch_count"), pid)
            and self._exit_seen.get(run_id) != pid  # an exit already seen (and ticked) is not a new one
            and psutil.pid_exists(pid)
        ):
            ctime = meta.get("pid_create_time")
            self._pids[run_id] = (pid, float(ctime) if isinstance(ctime, (int, float)) else None)
        else:
            self._pids.pop(run_id, None)

    # -------------------------------------------------------------------------------------------- events
    def _emit(self, event: dict[str, Any]) -> None:
        run_id = str(event.get("run_id"))
        key = (str(event.get("event")), str(event.get("message")))
        if event.get("event") != "run_finished" and self._last_event.get(run_id) == key:
            return  # the same thing said twice in a row is said once
        self._last_event[run_id] = key
        self.events.append(event)
        del self.events[:-1000]
        if self.on_event is not None:
            try:
                self.on_event(event)
            except Exception:  # a broken printer or webhook must not stop the monitor
                log.exception("event listener failed")

    def _note_transitions(self, watched: Iterable[str]) -> None:
        """Runs that left the watch since last time: those that ended cleanly are `run_finished`."""
        now = set(watched)
        for run_id in sorted(self._watching - now):
            try:
                status = self.connection.store.status(run_id)
            except RunError:
                continue
            if status.status in ENDED_STATUSES:
                progress = (
                    f", step {status.last_step}/{status.total_steps}" if status.last_step is not None else ""
                )
                self._emit(
                    make_event(
                        run_id,
                        "run_finished",
                        None,
                        f"run {run_id} ended with status {status.effective_status}{progress}",
                        status=status.effective_status,
                        last_step=status.last_step,
                    )
                )
        self._watching = now

    # ------------------------------------------------------------------------------------------- ticks
    def _start(self, run_ids: Iterable[str]) -> list[asyncio.Task[dict[str, Any]]]:
        """A tick task for each run not already being ticked."""
        started = []
        for run_id in run_ids:
            if run_id in self._inflight:
                continue
            task = asyncio.create_task(self._tick_guarded(run_id), name=f"tick:{run_id}")
            self._inflight[run_id] = task
            task.add_done_callback(lambda _t, r=run_id: self._inflight.pop(r, None))
            started.append(task)
        return started

    async def _tick_guarded(self, run_id: str) -> dict[str, Any]:
        try:
            return await self.tick(run_id)
        except Exception as exc:  # one broken run must not stop the watch of the others
            log.exception("monitor tick failed for %s", run_id)
            result = {"error": f"{type(exc).__name__}: {exc}"}
            self.last_results[run_id] = result
            return result
        finally:
            self._remember_pid(run_id)

    async def tick_all(self) -> dict[str, dict[str, Any]]:
        """Tick every watched run (in parallel) and wait for all of them; their results by run."""
        self._loop = asyncio.get_running_loop()
        if self._follow_check():
            return {}
        watched = self.watched_runs()
        self._note_transitions(watched)
        self._start(watched)
        results: dict[str, dict[str, Any]] = {}
        for run_id in watched:
            task = self._inflight.get(run_id)
            if task is not None:
                results[run_id] = await asyncio.shield(task)
            elif run_id in self.last_results:
                results[run_id] = self.last_results[run_id]
        return results

    async def tick(self, run_id: str) -> dict[str, Any]:
        from langgraph.types import Command

        config = {"configurable": {"thread_id": f"monitor:{run_id}"}, "callbacks": [self.gate]}
        state = await in_daemon_thread(self.graph.invoke, {"run_id": run_id}, config)
        while state.get("__interrupt__"):
            payload = state["__interrupt__"][0].value
            self._ask_event(run_id, payload)
            answer = await self.ask(run_id, payload) if self.ask is not None else None
            approved = None if answer is None else bool(answer)
            state = await in_daemon_thread(self.graph.invoke, Command(resume={"approved": approved}), config)
        self.ticks += 1
        self.tick_counts[run_id] = self.tick_counts.get(run_id, 0) + 1
        # Continuity between ticks lives in the run folder; drop the thread so memory stays flat.
        self.checkpointer.delete_thread(f"monitor:{run_id}")
        result = {k: v for k, v in state.items() if k != "snapshot"}
        self.last_results[run_id] = result
        for event in events_from_tick(run_id, state):
            self._emit(event)
        snap = state.get("snapshot") or {}
        if snap.get("process_state") in ("dead", "zombie") and not state.get("fixed"):
            try:
                meta = self.connection.store.read_meta(run_id)
                self._settled[run_id] = (meta.get("launch_count"), meta.get("pid"))
            except RunError:
                pass
        return result

    def _ask_event(self, run_id: str, payload: dict[str, Any]) -> None:
        key = str(payload.get("patch") or payload.get("summary") or payload)
        if self._asked.get(run_id) == key:
            return
        self._asked[run_id] = key
        summary = str(payload.get("summary") or "a fix")
        self._emit(
            make_event(
                run_id,
                "approval_needed",
                "FIX",
                f"{summary}: {payload.get('question', 'apply this fix?')}",
                diagnosis=payload.get("diagnosis"),
                patch=payload.get("patch"),
                warnings=payload.get("warnings") or [],
            )
        )

    # --------------------------------------------------------------------------- following a daemon
    def _follow_check(self) -> bool:
        """True while a watch daemon is the fixer here (and this loop only shows what it decided)."""
        if not self.follow_daemon:
            return False
        from twinkle_auto.app.watch import daemon_presence

        presence = daemon_presence(self.connection.store.home)
        if presence is None:
            if self.following is not None:
                self.following = None
                self._tell("", "[Monitor] the watch daemon has stopped; this chat watches the runs again")
            return False
        if self.following is None:
            self.following = presence
            self._tell(
                "",
                f"[Monitor] `twinkle-auto watch` (pid {presence.get('pid')}) is watching these runs and is "
                "their one fixer; its verdicts are shown here",
            )
            self._followed = {r: self._state_mark(r) for r in self.connection.store.run_ids()}
        else:
            self._follow_states()
        return True

    def _tell(self, run_id: str, message: str) -> None:
        log.info("%s", message)
        if self.notify is not None:
            try:
                self.notify(run_id, message)
            except Exception:
                log.exception("notify callback failed")

    def _state_mark(self, run_id: str) -> tuple[float, Any]:
        path = self.connection.store.path(run_id) / fmt.AUTO_STATE_FILE
        try:
            mtime = path.stat().st_mtime
        except OSError:
            return (0.0, None)
        state = self.connection.store.auto_state(run_id)
        fixes = state.get("fixes") if isinstance(state.get("fixes"), list) else []
        pending = state.get("pending_fix") if isinstance(state.get("pending_fix"), dict) else {}
        told = state.get("told") if isinstance(state.get("told"), list) else []
        return (
            mtime,
            {
                "decision": state.get("decision"),
                "diagnosis": state.get("diagnosis"),
                "told": tuple(sorted(map(str, told))),
                "fixes": len(fixes),
                "last_fix": fixes[-1] if fixes else None,
                "pending": pending.get("hash") if pending.get("stage") != "approved" else None,
                "pending_summary": pending.get("summary"),
            },
        )

    def _follow_states(self) -> None:
        """Messages for what the daemon decided since last time, read from each run's auto_state.json."""
        for run_id in self.connection.store.run_ids():
            before = self._followed.get(run_id, (0.0, None))
            try:
                mtime = (self.connection.store.path(run_id) / fmt.AUTO_STATE_FILE).stat().st_mtime
            except OSError:
                continue
            if mtime == before[0]:
                continue
            mark = self._state_mark(run_id)
            self._followed[run_id] = mark
            old, new = before[1] or {}, mark[1] or {}
            for message, event in _follow_messages(run_id, old, new):
                self._tell(run_id, message)
                self._emit(
                    make_event(run_id, event, new.get("decision"), _strip_prefix(message), via="watch")
                )

    # ---------------------------------------------------------------------------------------- the loop
    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Tick until `stop` is set: every run every `interval`; a run whose process exits at once."""
        self._loop = asyncio.get_running_loop()
        stop = stop or asyncio.Event()
        next_round = 0.0
        try:
            while not stop.is_set():
                now = time.monotonic()
                if self._follow_check():
                    next_round = now + self.interval
                elif now >= next_round:
                    next_round = now + self.interval
                    watched = self.watched_runs()
                    self._note_transitions(watched)
                    self._start(watched)
                else:
                    with self._due_lock:
                        due, self._due = set(self._due), set()
                    for run_id in self._exited_runs():
                        due.add(run_id)
                        self._exit_seen[run_id] = self._pids.pop(run_id)[0]
                    if due:
                        watched = self.watched_runs()
                        self._note_transitions(watched)
                        for run_id in due - set(watched):
                            self._pids.pop(run_id, None)
                        self._start([r for r in watched if r in due])
                self._wake.clear()
                timeout = max(0.0, min(EXIT_POLL_S, next_round - time.monotonic()))
                waiters = [asyncio.ensure_future(self._wake.wait()), asyncio.ensure_future(stop.wait())]
                await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
                for w in waiters:
                    w.cancel()
        finally:
            await self.drain(DRAIN_S)

    async def drain(self, timeout: float) -> None:
        """Wait up to `timeout` for the ticks in flight (a fix mid-sequence gets to finish)."""
        pending = [t for t in self._inflight.values() if not t.done()]
        if pending:
            await asyncio.wait(pending, timeout=timeout)


def _follow_messages(run_id: str, old: dict[str, Any], new: dict[str, Any]) -> list[tuple[str, str]]:
    """(message, event kind) for the changes between two readings of a run's persisted monitor state."""
    out: list[tuple[str, str]] = []
    if new.get("fixes", 0) > old.get("fixes", 0) and isinstance(new.get("last_fix"), dict):
        fix = new["last_fix"]
        how = "relaunched" if fix.get("ok") else str(fix.get("outcome") or "not relaunched")
        out.append(
            (
                f"[Monitor] FIX {run_id} (by watch): {fix.get('summary', '')} (attempt {fix.get('attempt')}, "
                f"{how}; old version kept as {fix.get('archived_as')})",
                "fix" if fix.get("ok") else "fix_rejected",
            )
        )
    if new.get("pending") and new.get("pending") != old.get("pending"):
        out.append(
            (
                f"[Monitor] {run_id} (by watch): a fix awaits approval: {new.get('pending_summary') or ''}".rstrip(
                    ": "
                ),
                "approval_needed",
            )
        )
    new_kinds = set(new.get("told") or ()) - set(old.get("told") or ())
    changed = new.get("diagnosis") != old.get("diagnosis")
    if new.get("decision") in ("WARNING", "FIX") and (new_kinds or changed) and not out:
        out.append(
            (f"[Monitor] {new['decision']} {run_id} (by watch): {new.get('diagnosis') or ''}", "verdict")
        )
    return out


__all__ = ["EXIT_POLL_S", "LLMGate", "MonitorLoop", "events_from_tick", "in_daemon_thread", "make_event"]
