"""The chat agent as an explicit LangGraph graph: repair → agent ⇄ tools, with approvals and a round cap.

    START → repair → agent ─┬─ answered ───────────────▶ END
                            ├─ needs the person ─▶ approve ─┬─▶ tools ─▶ agent
                            │                               └─▶ agent (all declined)
                            └─ tool calls ─────────────▶ tools ─▶ agent

- The LLM sees the system prompt and a window of the last `window_size` messages that starts on a
  person's message, so a tool call is never separated from its result; the full history stays in state.
- At `max_tool_rounds` tool rounds since the person spoke, the model is called without tools.
- Collaborators come through the runtime context (`context_schema=ChatContext`): pass
  `context=ChatContext(connection, …)` to `invoke`/`stream`. `context` given to the builder is the
  fallback for invocations without one (LangGraph Studio).
- The session (selected run, chart view) is graph state, changed by tools through Command(update=…).
- Tools carrying a describer are asked about first (`interrupt`); see nodes.approve for the answers.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.tools import BaseTool
from langgraph.graph import END, START, StateGraph
from langgraph.prebuilt import ToolNode

from twinkle_auto.graphs.chat import nodes
from twinkle_auto.graphs.chat.context import ChatContext
from twinkle_auto.graphs.chat.nodes import CANCELLED, DECLINED, Prompt, window
from twinkle_auto.graphs.chat.state import ChatState
from twinkle_auto.tools.base import tool_error_message

MAX_TOOL_ROUNDS = 10
WINDOW = 50


def build_chat_graph(
    llm: BaseChatModel,
    tools: Sequence[BaseTool],
    *,
    prompt: Prompt = None,
    max_tool_rounds: int = MAX_TOOL_ROUNDS,
    window_size: int = WINDOW,
    auto_approve: bool = False,
    context: ChatContext | None = None,
) -> StateGraph:
    """An uncompiled chat graph; compile it with your own checkpointer (approvals need one).

    `prompt` is the system prompt: a string, a callable of the state (or of nothing), or by default the
    twinkle-auto prompt with the selected run and the context's skills.
    """
    tools = list(tools)
    by_name = {t.name: t for t in tools}
    model = llm.bind_tools(tools) if tools else llm
    forced = _forcing(llm, tools)

    def agent(state: ChatState, runtime: Any) -> dict[str, Any]:
        return nodes.agent(
            state,
            runtime,
            llm=llm,
            model=model,
            prompt=prompt,
            fallback=context,
            max_tool_rounds=max_tool_rounds,
            window_size=window_size,
            tool_names=frozenset(by_name),
            tools=by_name,
            forced=forced,
        )

    def approve(state: ChatState, runtime: Any) -> dict[str, Any]:
        return nodes.approve(state, runtime, by_name=by_name, fallback=context)

    graph = StateGraph(ChatState, context_schema=ChatContext)
    graph.add_node("repair", nodes.repair)
    graph.add_node("agent", agent)
    graph.add_node("approve", approve)
    graph.add_node("tools", ToolNode(tools, handle_tool_errors=tool_error_message))
    graph.add_edge(START, "repair")
    graph.add_edge("repair", "agent")
    graph.add_conditional_edges(
        "agent",
        partial(nodes.route_agent, by_name=by_name, auto_approve=auto_approve),
        ["approve", "tools", END],
    )
    graph.add_conditional_edges("approve", nodes.route_approved, ["tools", "agent"])
    graph.add_edge("tools", "agent")
    return graph


def _forcing(llm: BaseChatModel, tools: list[BaseTool]) -> Any:
    """The model with the same tools (so a local server reuses the prompt it has read) and a tool call
    required; None for a model that cannot be asked for one."""
    if not tools:
        return None
    try:
        return llm.bind_tools(tools, tool_choice="required")
    except (TypeError, ValueError, NotImplementedError):
        return None


def compile_chat_graph(
    llm: BaseChatModel, tools: Sequence[BaseTool], *, checkpointer: Any = None, **kwargs: Any
) -> Any:
    return build_chat_graph(llm, tools, **kwargs).compile(checkpointer=checkpointer)


__all__ = [
    "CANCELLED",
    "DECLINED",
    "MAX_TOOL_ROUNDS",
    "WINDOW",
    "build_chat_graph",
    "compile_chat_graph",
    "window",
]
