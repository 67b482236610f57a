"""A words-only answer that repeats what earlier turns' tools said, with nothing read this turn, reads again.

Why: runs, GPUs and the server change between turns, and the system prompt says to read them again when
asked, but a small model answers from the conversation. Asked "How many GPUs are available?" two turns
after it had started the server with `total_gpus=1`, the 1.5B model said "There are 1 GPU available"
(the machine had 2) and called nothing; in the runs of the seed conversation that reached this turn it
did so 2 times of 3. Sent back with a note that says where the figure came from, it called
get_cluster_info (measured on the same history, with tool_choice "auto" and "required").

What is checked is figures: a number in the answer that stands alone ("1 GPU", "step 80", "port 8000")
and that appears in an earlier turn's tool call or tool result, but not in the person's words of this
turn. Words are not checked (a run's name is stable; its state is what goes stale), nor an answer in a
turn where a tool has already run (it is fresh), nor a figure the person gave (they asked about it).
General machine-learning answers ("try 2e-5") state figures no tool returned and pass.

The re-read is one answer with a tool call required; only a call to a tool that reads (`reads_only`
in its metadata) is kept, so a forced guess can never pause, stop or start anything: otherwise the
first answer stands. It runs at most once per turn.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

from langchain_core.messages import AIMessage, AnyMessage, HumanMessage, ToolMessage
from langchain_core.tools import BaseTool

from twinkle_auto.tools.base import is_step_message, message_text, reads_only

FIGURE = re.compile(r"(?<![\w.\-])\d+(?:\.\d+)?(?![\w\-]|\.\d)")
"""A number standing alone: not a part of a name ("Qwen2.5-7B", "sft-2"), a version or an address."""

NOTE = (
    "(Not answered yet: {figures} {verb} from earlier in the conversation, and runs, GPUs and the "
    "server change since. Read {them} again with the tool that reports {them}, then answer.)"
)


def turn_start(messages: Sequence[AnyMessage]) -> int:
    """Index of the person's last message (a step message the graph wrote is not one)."""
    for i in range(len(messages) - 1, -1, -1):
        if isinstance(messages[i], HumanMessage) and not is_step_message(messages[i]):
            return i
    return 0


def _tool_activity(messages: Sequence[AnyMessage]) -> str:
    """What tools were called with and what they returned, as text."""
    parts: list[str] = []
    for message in messages:
        if isinstance(message, ToolMessage):
            parts.append(message_text(message))
        elif isinstance(message, AIMessage):
            parts += [json.dumps(call.get("args") or {}) for call in message.tool_calls]
    return " ".join(parts)


def _figures(text: str) -> set[str]:
    return {_canonical(m.group()) for m in FIGURE.finditer(text)}


def _canonical(number: str) -> str:
    """ "2.0" and "2" are one figure; "0.10" and "0.1" too."""
    if "." in number:
        number = number.rstrip("0").rstrip(".") or "0"
    return number.lstrip("0") or "0"


def restated(answer: AIMessage, messages: Sequence[AnyMessage]) -> list[str]:
    """The figures of a words-only `answer` that come from earlier turns' tools (see module doc); none
    when a tool has run this turn or the answer calls one. `messages` is the history the answer follows."""
    if answer.tool_calls or answer.invalid_tool_calls:
        return []
    start = turn_start(messages)
    this_turn = messages[start:]
    if any(isinstance(m, ToolMessage) for m in this_turn):
        return []
    earlier = _figures(_tool_activity(messages[:start]))
    if not earlier:
        return []
    asked = _figures(message_text(messages[start])) if this_turn else set()  # the steps are parts of it
    said = _figures(message_text(answer))
    return sorted(said & earlier - asked, key=lambda f: (len(f), f))


def note(figures: Sequence[str]) -> str:
    """What the model reads before it answers again (sent once, never kept in the history)."""
    shown = ", ".join(figures[:4])
    many = len(figures) > 1
    return NOTE.format(figures=shown, verb="came" if many else "comes", them="them" if many else "it")


def kept_reread(answer: Any, tools: Mapping[str, BaseTool]) -> bool:
    """Whether the forced answer is a re-read to keep: tool calls, every one to a tool that reads."""
    calls = getattr(answer, "tool_calls", None) or []
    if not calls or getattr(answer, "invalid_tool_calls", None):
        return False
    return all(reads_only(tools.get(call["name"])) for call in calls)


__all__ = ["kept_reread", "note", "restated", "turn_start"]
