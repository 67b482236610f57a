"""What the monitor graph's nodes act through: collaborators and settings of one graph, no run data.

Nodes get this object as an argument (bound when the graph is built), so `build_monitor_graph` keeps its
signature while the nodes stay top-level functions. It is shared by every thread that runs the graph
(the watch daemon ticks runs in threads), so the little it keeps between nodes — metric rows from
`collect` to `triage`, the run locks held from `claim` to `resume` — sits behind a lock, keyed by run.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from langchain_core.language_models import BaseChatModel

from twinkle_auto.connection import Connection
from twinkle_auto.connection.locks import run_lock
from twinkle_auto.monitor.ledger import FixLedger
from twinkle_auto.monitor.thresholds import Thresholds

log = logging.getLogger("twinkle_auto.monitor")


@dataclass
class MonitorContext:
    llm: BaseChatModel | None
    connection: Connection
    policy: str
    thresholds: Thresholds
    max_attempts: int
    use_llm: bool
    notify: Callable[[str, str], None] | None = None
    ledger: FixLedger = field(init=False)
    _rows: dict[str, tuple[list[dict[str, Any]], str]] = field(default_factory=dict, init=False)
    _held: dict[str, contextlib.ExitStack] = field(default_factory=dict, init=False)
    _guard: threading.Lock = field(default_factory=threading.Lock, init=False)

    def __post_init__(self) -> None:
        self.ledger = FixLedger(self.connection.store.auto_dir())

    @property
    def model(self) -> BaseChatModel | None:
        """The LLM to ask, or None when there is none or the graph runs on rules only."""
        return self.llm if self.use_llm else None

    # ------------------------------------------------------------------------------------- messages
    def tell(self, run_id: str, message: str) -> None:
        log.info("%s", message)
        if self.notify is not None:
            try:
                self.notify(run_id, message)
            except Exception:  # a broken display must not stop the monitor
                log.exception("notify callback failed")

    # ------------------------------------------------------------------------------------ row cache
    def put_rows(self, run_id: str, rows: list[dict[str, Any]], log_tail: str) -> None:
        with self._guard:
            self._rows[run_id] = (rows, log_tail)

    def peek_rows(self, run_id: str) -> tuple[list[dict[str, Any]], str] | None:
        with self._guard:
            return self._rows.get(run_id)

    def take_rows(self, run_id: str) -> tuple[list[dict[str, Any]], str] | None:
        with self._guard:
            return self._rows.pop(run_id, None)

    # ------------------------------------------------------------------------------------ run locks
    def acquire(self, run_id: str) -> bool:
        """Take the run's lock without waiting (True also when this graph already holds it).

        It stays held across nodes until `release`: the fix sequence claim → rewrite → archive → resume
        runs in one thread within one invoke, which is what `run_lock`'s per-thread reentrancy needs
        (the controller takes it again inside `launch`).
        """
        with self._guard:
            if run_id in self._held:
                return True
        stack = contextlib.ExitStack()
        try:
            got = stack.enter_context(run_lock(self.connection.store.path(run_id), wait=False))
        except OSError as exc:
            stack.close()
            log.warning("cannot take the run lock of %s: %s", run_id, exc)
            return False
        if not got:
            stack.close()
            return False
        with self._guard:
            self._held[run_id] = stack
        return True

    def release(self, run_id: str) -> None:
        with self._guard:
            stack = self._held.pop(run_id, None)
        if stack is not None:
            stack.close()

    def holds(self, run_id: str) -> bool:
        with self._guard:
            return run_id in self._held
