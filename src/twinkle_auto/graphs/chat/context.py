"""The chat graph's runtime context (`context_schema`): the collaborators tools and nodes act through.

As in langchain-ai/react-agent's `context.py`: settings and collaborators reach nodes and tools through
`Runtime[Context]` / `ToolRuntime.context`, per invocation (`graph.invoke(..., context=ctx)`), not
through closures. The context holds no session state — that is graph state — so the LangGraph server
and an embedding app may serve every thread with one context, or give each its own.
"""

from __future__ import annotations

from typing import Any

from twinkle_auto.connection import Connection
from twinkle_auto.tools.base import ToolContext

ChatContext = ToolContext
"""The context schema of the chat graph: connection, server manager, skills (see tools.base)."""


def context_of(runtime: Any, fallback: ChatContext | None = None) -> ChatContext:
    """The invocation's context; else the builder's fallback; else one over TWINKLE_HOME, made per call
    (never shared between threads)."""
    context = getattr(runtime, "context", None)
    if isinstance(context, ToolContext):
        return context
    if fallback is not None:
        return fallback
    return ToolContext(Connection.open())


__all__ = ["ChatContext", "context_of"]
