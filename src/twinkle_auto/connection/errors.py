"""Errors of the connection layer: each carries one line a person can act on."""

from __future__ import annotations

from twinkle_auto.runtime.format import RunIdError


class RunError(Exception):
    """An operation on a run was refused or failed; `str(exc)` is the one-line reason."""


class UnknownRunError(RunError):
    pass


class RunStateError(RunError):
    """The run is not in a state that allows the operation (e.g. launching a run that is running)."""


class NotOurProcessError(RunError):
    """The pid in meta.json is not the process we recorded (reused pid, or never ours)."""


__all__ = ["NotOurProcessError", "RunError", "RunIdError", "RunStateError", "UnknownRunError"]
