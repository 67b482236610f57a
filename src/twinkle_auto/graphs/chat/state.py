"""The chat graph's state: messages, the session (selected run, chart view) and approval bookkeeping.

Everything is plain data (str, int, list, dict, messages) so checkpoints survive a rename of our
classes. The session lives here, not in a Python object, so `--resume` restores it and the LangGraph
server keeps one per thread. Tools change it through `Command(update=…)`.
"""

from __future__ import annotations

from typing import Annotated, Any

from langchain_core.messages import AnyMessage
from langgraph.graph.message import add_messages
from typing_extensions import TypedDict


def keep_last(old: list[str] | None, new: list[str] | None) -> list[str]:
    """Approved call ids: appended, bounded (only the current turn's calls ever matter)."""
    merged = [*(old or []), *(new or [])]
    return merged[-50:]


class ChatState(TypedDict, total=False):
    messages: Annotated[list[AnyMessage], add_messages]
    tool_rounds: int
    """Tool rounds in the current user turn (AI messages with tool calls since the person spoke)."""
    selected_run: str | None
    """The run that status, charts and commands default to."""
    chart: dict[str, Any]
    """The chart view of the selected run: {"keys": [metric, …], "step_range": [first, last] | None}."""
    approved_calls: Annotated[list[str], keep_last]
    """Tool call ids the person approved explicitly (an unsafe script runs only if its call is here)."""
