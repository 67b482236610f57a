"""Runs the person points at by their state: "pause the one that is running", "restart the failed runs".

Why this exists: such a phrase names no run, and which run it means is a fact we hold (each run's
status), not something the model should guess from a list it read a turn ago. With the list in view, the
1.5B model matched the words to the wrong row: asked to pause "the one that is running", it acted on
the paused run (the word "paused" was nearest to "pause"). So when the words refer to runs by a state,
the model is told, before it answers, which runs are in that state now.

Only noun phrases that pick runs out by state count ("the running one", "runs that are paused",
"whichever is failing"): a question about the state ("is anything running?") is a request to read the
runs, and is answered by a tool, not by this note.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

STATES: dict[str, tuple[str, ...]] = {
    "running": ("running",),
    "active": ("running",),
    "paused": ("paused",),
    "suspended": ("paused",),
    "on hold": ("paused",),
    "stopped": ("stopped",),
    "cancelled": ("stopped",),
    "canceled": ("stopped",),
    "crashed": ("crashed", "failed"),
    "failed": ("crashed", "failed"),
    "failing": ("crashed", "failed"),
    "broken": ("crashed", "failed"),
    "dead": ("crashed", "failed"),
    "finished": ("finished",),
    "completed": ("finished",),
}
"""Words for a run's state, and the statuses (connection.store.effective_status) each one means."""

_STATE = "|".join(sorted((re.escape(w).replace(r"\ ", r"\s+") for w in STATES), key=len, reverse=True))
_NOUN = r"(?:ones?|runs?|jobs?|trainings?|experiments?)"
_ADVERB = r"(?:(?:currently|still|now|just|already)\s+)?"
_PHRASES = (
    # "the running one", "my crashed runs", "any failed jobs"
    re.compile(
        rf"\b(?:the|my|any|all|every|each|those|these|that|this)\s+{_ADVERB}(?P<state>{_STATE})\s+{_NOUN}\b",
        re.IGNORECASE,
    ),
    # "the one that is running", "runs which are paused", "the job that's failing", "the one that has crashed"
    re.compile(
        rf"\b{_NOUN}\s+(?:that|which|who)\s*(?:is|are|'s|has|have|has\s+been|have\s+been|was|were)?\s+"
        rf"{_ADVERB}(?P<state>{_STATE})\b",
        re.IGNORECASE,
    ),
    # "whichever is running", "whichever one is paused"
    re.compile(
        rf"\bwhichever\s+(?:{_NOUN}\s+)?(?:is|are|'s|has)\s+{_ADVERB}(?P<state>{_STATE})\b",
        re.IGNORECASE,
    ),
)
MAX_LISTED = 8
"""Runs named in one note at most: more is a list to read, which list_training_runs gives."""


def referred_states(text: str) -> list[str]:
    """The state words `text` uses to pick runs out, in order, each once ("running", "failed", …)."""
    found: list[tuple[int, str]] = []
    for pattern in _PHRASES:
        for match in pattern.finditer(text or ""):
            word = " ".join(match.group("state").lower().split())
            found.append((match.start("state"), word))
    return list(dict.fromkeys(word for _, word in sorted(found)))


def state_note(text: str, runs: Mapping[str, str]) -> str | None:
    """A note naming the runs `text` points at by their state, or None when it points at none that way
    (or names a run itself: then the run is known, whatever its state)."""
    words = referred_states(text)
    if not words or not runs:
        return None
    if any(re.search(rf"(?<![\w./-]){re.escape(run)}(?![\w/-])", text, re.IGNORECASE) for run in runs):
        return None
    parts = []
    for word in words:
        wanted = STATES[word]
        matching = [run for run in runs if runs[run] in wanted][:MAX_LISTED]
        if matching:
            parts.append(", ".join(f"{run} is {runs[run]}" for run in matching))
        else:
            others = ", ".join(f"{run} is {runs[run]}" for run in list(runs)[:MAX_LISTED])
            parts.append(f"no run is {word} ({others})")
    return "(Status now: " + "; ".join(parts) + ".)"
