"""The chat graph's state: messages (with add_messages) and the explicit per-turn tool-round counter."""

from __future__ import annotations

from typing import Annotated

from langchain_core.messages import AnyMessage
from langgraph.graph.message import add_messages
from typing_extensions import TypedDict


class ChatState(TypedDict, total=False):
    messages: Annotated[list[AnyMessage], add_messages]
    tool_rounds: int
    """Tool rounds in the current user turn; reset when a person speaks; capped by the graph."""
