"""The chat agent as an explicit LangGraph graph: agent ⇄ tools, with approvals and a round cap.

    START → agent ─┬─ no tool calls ─────────────▶ END
                   ├─ needs approval ─▶ approve ─▶ tools ─▶ agent
                   └─ tool calls ─────────────────▶ tools ─▶ agent

- The LLM sees the system prompt and a window of the last `window` messages that starts on a person's
  message, so a tool call is never separated from its result; the full history stays in the state.
- `tool_rounds` counts tool rounds since the person last spoke; at `max_tool_rounds` the agent is called
  without tools and must answer.
- Tools whose metadata carries an approval text are asked about first (`interrupt`); a refusal goes back
  to the model as the tool's result. Nothing with side effects runs before the interrupt.
- Tool errors (and tool calls whose arguments are not valid JSON) become ToolMessages, never a crash and
  never an unanswered tool call (which OpenAI-compatible servers reject with 400).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AnyMessage, HumanMessage, SystemMessage, ToolMessage
from langchain_core.tools import BaseTool
from langgraph.graph import END, START, StateGraph
from langgraph.prebuilt import ToolNode
from langgraph.types import interrupt

from twinkle_auto.graphs.chat.prompts import BUDGET_SPENT, system_prompt
from twinkle_auto.graphs.chat.state import ChatState
from twinkle_auto.tools.base import needs_approval

MAX_TOOL_ROUNDS = 10
WINDOW = 50
DECLINED = "The person declined this action; it was not run. Ask what they want instead."


def window(messages: Sequence[AnyMessage], size: int = WINDOW) -> list[AnyMessage]:
    """The last `size` messages, moved forward to start on a person's message.

    Starting on a HumanMessage guarantees no ToolMessage arrives without the AI message that called it.
    If the current turn alone is longer than `size`, the whole turn is kept (correctness over size).
    """
    msgs = list(messages)
    start = max(0, len(msgs) - size)
    human = [i for i, m in enumerate(msgs) if isinstance(m, HumanMessage)]
    later = [i for i in human if i >= start]
    if later:
        start = later[0]
    elif human:
        start = human[-1]
    return msgs[start:]


def _pending_calls(messages: Sequence[AnyMessage]) -> tuple[AIMessage | None, list[dict[str, Any]]]:
    """The last AI message and those of its tool calls that have no ToolMessage yet."""
    for i in range(len(messages) - 1, -1, -1):
        msg = messages[i]
        if isinstance(msg, AIMessage):
            answered = {m.tool_call_id for m in messages[i + 1 :] if isinstance(m, ToolMessage)}
            return msg, [c for c in msg.tool_calls if c.get("id") not in answered]
        if isinstance(msg, HumanMessage):
            break
    return None, []


def build_chat_graph(
    llm: BaseChatModel,
    tools: Sequence[BaseTool],
    *,
    prompt: str | Callable[[], str] | None = None,
    max_tool_rounds: int = MAX_TOOL_ROUNDS,
    window_size: int = WINDOW,
    auto_approve: bool = False,
) -> StateGraph:
    """An uncompiled chat graph; compile it with your own checkpointer (approvals need one).

    `prompt` is the system prompt, or a callable building it per turn (selected run, skills); the default
    is the twinkle-auto prompt without context.
    """
    tools = list(tools)
    by_name = {t.name: t for t in tools}
    model_with_tools = llm.bind_tools(tools) if tools else llm
    tool_node = ToolNode(tools, handle_tool_errors=True)

    def _system() -> str:
        if prompt is None:
            return system_prompt()
        return prompt() if callable(prompt) else prompt

    def agent(state: ChatState) -> dict[str, Any]:
        messages = state.get("messages", [])
        rounds = int(state.get("tool_rounds") or 0)
        if messages and isinstance(messages[-1], HumanMessage):
            rounds = 0  # the person spoke: a new turn
        sent: list[AnyMessage] = [SystemMessage(_system()), *window(messages, window_size)]
        if rounds >= max_tool_rounds:
            sent.append(SystemMessage(BUDGET_SPENT))
            answer = llm.invoke(sent)
            if isinstance(answer, AIMessage) and (answer.tool_calls or answer.invalid_tool_calls):
                # a model that calls tools anyway: keep its words, drop the calls nobody would answer
                answer = AIMessage(
                    content=answer.content or "I stopped here: the tool budget for this turn is spent."
                )
        else:
            answer = model_with_tools.invoke(sent)
        return {"messages": [answer], "tool_rounds": rounds}

    def route_agent(state: ChatState) -> Literal["approve", "tools", "__end__"]:
        last = state["messages"][-1]
        if not isinstance(last, AIMessage) or not (last.tool_calls or last.invalid_tool_calls):
            return END
        if not auto_approve and any(
            needs_approval(by_name[c["name"]]) for c in last.tool_calls if c["name"] in by_name
        ):
            return "approve"
        return "tools"

    def approve(state: ChatState) -> dict[str, Any]:
        # interrupt() re-runs this node on resume: only reads before it.
        _, calls = _pending_calls(state["messages"])
        asks = []
        for call in calls:
            tool = by_name.get(call["name"])
            describe = needs_approval(tool) if tool is not None else None
            if describe is None:
                continue
            try:
                text = describe(dict(call.get("args") or {}))
            except Exception as exc:  # a describer bug must not block the question
                text = f"Run {call['name']} with {call.get('args')}? ({type(exc).__name__} while describing)"
            asks.append({"id": call["id"], "name": call["name"], "args": call.get("args"), "text": text})
        if not asks:
            return {}
        answer = interrupt({"kind": "tool_approval", "calls": asks})
        declined: list[ToolMessage] = []
        for ask in asks:
            if not _approved(answer, ask["id"]):
                declined.append(
                    ToolMessage(content=DECLINED, tool_call_id=ask["id"], name=ask["name"], status="error")
                )
        return {"messages": declined}

    def tools_step(state: ChatState) -> dict[str, Any]:
        ai, calls = _pending_calls(state["messages"])
        out: list[AnyMessage] = []
        if ai is not None:
            for bad in ai.invalid_tool_calls:
                out.append(
                    ToolMessage(
                        content=f"Error: the arguments of {bad.get('name')} were not valid JSON ({bad.get('error') or 'parse error'}); call it again with a JSON object.",
                        tool_call_id=bad.get("id") or "invalid",
                        name=bad.get("name") or "unknown",
                        status="error",
                    )
                )
        if calls:
            result = tool_node.invoke({"messages": [AIMessage(content="", tool_calls=calls)]})
            out.extend(result["messages"])
        return {"messages": out, "tool_rounds": int(state.get("tool_rounds") or 0) + 1}

    graph = StateGraph(ChatState)
    graph.add_node("agent", agent)
    graph.add_node("approve", approve)
    graph.add_node("tools", tools_step)
    graph.add_edge(START, "agent")
    graph.add_conditional_edges("agent", route_agent, ["approve", "tools", END])
    graph.add_edge("approve", "tools")
    graph.add_edge("tools", "agent")
    return graph


def _approved(answer: Any, call_id: str) -> bool:
    """Answers: True/False for all, "y"/"n", or {call_id: bool}."""
    if isinstance(answer, dict):
        value = answer.get(call_id, answer.get("approved", False))
        return _approved(value, call_id) if not isinstance(value, dict) else False
    if isinstance(answer, str):
        return answer.strip().lower() in ("y", "yes", "true", "approve", "ok")
    return answer is True


def compile_chat_graph(
    llm: BaseChatModel, tools: Sequence[BaseTool], *, checkpointer: Any = None, **kwargs: Any
) -> Any:
    return build_chat_graph(llm, tools, **kwargs).compile(checkpointer=checkpointer)
