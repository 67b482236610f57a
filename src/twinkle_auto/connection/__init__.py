"""The file-based connection to training runs: the run store (reading) and process control (acting)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from twinkle_auto.connection.control import RunController
from twinkle_auto.connection.errors import (
    NotOurProcessError,
    RunError,
    RunIdError,
    RunStateError,
    UnknownRunError,
)
from twinkle_auto.connection.store import CorruptMetaError, RunStatus, RunStore


@dataclass
class Connection:
    """What the monitor and the tools act through: one store and the controller of its processes."""

    store: RunStore
    controller: RunController

    @classmethod
    def open(cls, home: str | Path | None = None, *, stop_grace: float | None = None) -> Connection:
        store = RunStore(home)
        controller = (
            RunController(store) if stop_grace is None else RunController(store, stop_grace=stop_grace)
        )
        return cls(store, controller)


__all__ = [
    "Connection",
    "CorruptMetaError",
    "NotOurProcessError",
    "RunController",
    "RunError",
    "RunIdError",
    "RunStateError",
    "RunStatus",
    "RunStore",
    "UnknownRunError",
]
