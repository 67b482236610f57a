"""The monitor graph's state: plain data only, so checkpoints survive renames of our classes.

Large text stays out: metric rows and train.py are read when needed, never stored per tick (the pending
fix's script lives in the run folder's auto_state.json, where a restarted assistant finds it).
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
    """Patches relaunched or refused by the guards; persisted in the run folder."""
    fix_status: str | None
    """How this tick's fix sequence went: claimed, busy, stale, limit, corrupt, proposed, refused, ..."""
    fix: dict[str, Any] | None
    """The patch on offer: attempt, summary, source, hash, warnings, unsafe."""
    fix_rounds: int
    prompt_tokens: list[int]
    """Estimated prompt tokens of each LLM round of this tick's attempt."""
    patch: str | None
    """The unified diff of the patch on offer (what a person approves)."""
    archived_as: str | None
    relaunch: dict[str, Any] | None
    state_corrupt: str | None
    """Set when auto_state.json was corrupt: the run is treated as at the fix limit."""
    told: list[str]
    """Finding kinds already told to the person; told again only after something changes."""
    message: str | None
    """What this tick has to tell (`[Monitor] WARNING …`), or None."""
    verify_message: str | None
    """What `verify` found about the last relaunched fix (worked, failed, worse and rolled back)."""
    fixed: bool
    done: bool
    """The run finished: watching it ends."""
