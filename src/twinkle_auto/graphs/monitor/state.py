"""The monitor graph's state: plain data only, so checkpoints survive renames of our classes.

Large text stays out: metric rows and train.py are read when needed, never stored per tick.
"""

from __future__ import annotations

from typing import Any

from typing_extensions import TypedDict


class MonitorState(TypedDict, total=False):
    run_id: str
    digest: str
    """Content digest of the last snapshot (last step, log bytes, process state, status, launches)."""
    snapshot: dict[str, Any]
    """The last snapshot without metric rows: process, status, step, stall, log excerpt, trends."""
    findings: list[dict[str, Any]]
    decision: str
    """LGTM | WARNING | FIX."""
    diagnosis: str
    verdict_source: str
    """`rules`, `llm`, or `rules (LLM unreachable: …)`."""
    judge_key: str
    """What the last verdict judged; the LLM is asked again only when this changes."""
    llm_calls: int
    fix_attempts: int
    """Counts every patch attempt, rejected ones too; persisted in the run folder."""
    patch: str | None
    archived_as: str | None
    relaunch: dict[str, Any] | None
    told: list[str]
    """Finding kinds already told to the person; told again only after something changes."""
    message: str | None
    """What this tick has to tell (`[Monitor] WARNING …`), or None."""
    fixed: bool
    done: bool
    """The run finished: watching it ends."""
