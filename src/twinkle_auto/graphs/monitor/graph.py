"""The training monitor as an explicit LangGraph state machine.

    collect → verify → triage → classify ─┬─ LGTM ─────────────────────────────────────────────▶ END
                                          ├─ WARNING ─▶ notify ─────────────────────────────────▶ END
                                          └─ FIX ─▶ claim ─┬─▶ rewrite ─┬─▶ (approve) ─▶ archive ─▶ resume ─▶ END
                                                           ├─▶ approve (a patch still awaiting an answer)
                                                           ├─▶ archive (a fix an interrupted assistant left)
                                                           └─▶ notify (busy, limit, already relaunched, ...)

One invocation is one tick of one run (thread `monitor:{run_id}`). The rules decide; the LLM is asked
only when there is something new to judge, explains it, and writes a minimal structured patch that must
pass the guards before anything on disk changes. Attempts, the pending fix and every outcome live in
the run folder (auto_state.json) and in the fix ledger, so neither a restart nor a second assistant
resets or repeats them. See `nodes.py` for the rules of the fix sequence.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any, Literal

from langchain_core.language_models import BaseChatModel
from langgraph.graph import END, START, StateGraph

from twinkle_auto.connection import Connection
from twinkle_auto.graphs.monitor import nodes
from twinkle_auto.graphs.monitor.context import MonitorContext
from twinkle_auto.graphs.monitor.state import MonitorState
from twinkle_auto.graphs.monitor.verdict import Verdict, ask_verdict
from twinkle_auto.monitor.thresholds import DEFAULT_THRESHOLDS, Thresholds

MAX_FIX_ATTEMPTS = 3
AutoFixPolicy = Literal["on", "ask", "off"]

__all__ = [
    "MAX_FIX_ATTEMPTS",
    "AutoFixPolicy",
    "Verdict",
    "ask_verdict",
    "build_monitor_graph",
    "compile_monitor_graph",
    "monitor_thread",
]


def build_monitor_graph(
    llm: BaseChatModel | None,
    connection: Connection,
    *,
    policy: AutoFixPolicy = "on",
    thresholds: Thresholds = DEFAULT_THRESHOLDS,
    max_attempts: int = MAX_FIX_ATTEMPTS,
    use_llm: bool = True,
    notify: Callable[[str, str], None] | None = None,
) -> StateGraph:
    """An uncompiled monitor graph; compile it with a checkpointer of your own (needed for `ask`).

    `llm` may be None (rules and deterministic fixes only). `notify(run_id, message)` is called with every
    message the graph has to tell, besides the message being returned in the state. One graph may tick
    several runs from several threads, one thread per run at a time.
    """
    if policy not in ("on", "ask", "off"):
        raise ValueError(f"unknown auto-fix policy {policy!r} (expected on, ask or off)")
    ctx = MonitorContext(llm, connection, policy, thresholds, max_attempts, use_llm, notify)
    graph = StateGraph(MonitorState)
    graph.add_node("collect", partial(nodes.collect, ctx=ctx))
    graph.add_node("verify", partial(nodes.verify, ctx=ctx))
    graph.add_node("triage", partial(nodes.triage_node, ctx=ctx))
    graph.add_node("classify", partial(nodes.classify, ctx=ctx))
    graph.add_node("notify", partial(nodes.notify_node, ctx=ctx))
    graph.add_node("claim", partial(nodes.claim, ctx=ctx))
    graph.add_node("rewrite", partial(nodes.rewrite, ctx=ctx))
    graph.add_node("approve", partial(nodes.approve, ctx=ctx))
    graph.add_node("archive", partial(nodes.archive, ctx=ctx))
    graph.add_node("resume", partial(nodes.resume, ctx=ctx))
    graph.add_edge(START, "collect")
    graph.add_edge("collect", "verify")
    graph.add_edge("verify", "triage")
    graph.add_edge("triage", "classify")
    graph.add_conditional_edges(
        "classify", partial(nodes.route_after_classify, ctx=ctx), ["claim", "notify", END]
    )
    graph.add_conditional_edges("claim", nodes.route_after_claim, ["rewrite", "approve", "archive", "notify"])
    graph.add_conditional_edges(
        "rewrite", partial(nodes.route_after_rewrite, ctx=ctx), ["approve", "archive", "notify"]
    )
    graph.add_conditional_edges("approve", nodes.route_after_approve, ["archive", "notify"])
    graph.add_conditional_edges("archive", nodes.route_after_archive, ["resume", "notify"])
    graph.add_edge("resume", END)
    graph.add_edge("notify", END)
    return graph


def compile_monitor_graph(
    llm: BaseChatModel | None, connection: Connection, *, checkpointer: Any = None, **kwargs: Any
) -> Any:
    return build_monitor_graph(llm, connection, **kwargs).compile(checkpointer=checkpointer)


def monitor_thread(run_id: str) -> dict[str, Any]:
    """The config of a run's monitor thread (one thread per run)."""
    return {"configurable": {"thread_id": f"monitor:{run_id}"}}
