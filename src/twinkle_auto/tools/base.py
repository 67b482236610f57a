"""What every tool family shares: the context tools act on, and the approval convention.

Tools are LangChain `StructuredTool`s with pydantic argument schemas, one module per family
(`runs`, `server`, `search`, `charts`), each exposing `make_<family>_tools(ctx) -> list[BaseTool]`.

A tool that destroys or replaces something declares it in its metadata:
`metadata={"approval": describe}` where `describe(args: dict) -> str` says, in one or two lines (a diff
may follow), what will happen; it must not change anything (it runs before the person answers). The chat graph asks the person before running such a tool (a
LangGraph interrupt), so the tool itself never prompts.

A tool signals a refusal or failure by raising `ToolError` (or any exception): the chat graph's ToolNode
turns it into a ToolMessage the model reads, and the loop goes on.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from twinkle_auto.connection import Connection

MAX_CHART_KEYS = 4
RESULT_BUDGET = 2000
"""Characters a tool result may take: results are sized for an LLM's context, not for a person."""


class ToolError(Exception):
    """A refusal or failure the model should read and act on (one line)."""


@dataclass
class ChartView:
    """What the metrics chart of the selected run shows."""

    keys: list[str] = field(default_factory=list)
    step_range: tuple[int, int] | None = None


@dataclass
class ToolContext:
    """Shared, mutable state of one chat session that tools read and change (selection, chart view)."""

    connection: Connection
    selected_run: str | None = None
    chart: ChartView = field(default_factory=ChartView)
    listeners: list[Callable[[str, Any], None]] = field(default_factory=list)
    """Called as listener(event, payload) on `selected`, `chart` changes, so a UI can redraw."""

    def emit(self, event: str, payload: Any = None) -> None:
        for listener in list(self.listeners):
            try:
                listener(event, payload)
            except Exception:  # a UI callback must not fail a tool
                pass

    def run_or_selected(self, run_id: str | None) -> str:
        run = run_id or self.selected_run
        if not run:
            raise ToolError("no run given and none selected; call list_training_runs and pass run_id")
        return run


ApprovalText = Callable[[dict[str, Any]], str]


def needs_approval(tool: Any) -> ApprovalText | None:
    meta = getattr(tool, "metadata", None) or {}
    describe = meta.get("approval")
    return describe if callable(describe) else None


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        if not math.isfinite(value):
            return "NaN" if value != value else ("inf" if value > 0 else "-inf")
        return float(f"{value:.6g}")
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def compact(data: Any, budget: int = RESULT_BUDGET) -> str:
    """JSON for the model: short floats, no NaN tokens, cut to the budget with a marker."""
    text = json.dumps(_finite(data), separators=(",", ":"), default=str)
    if len(text) > budget:
        text = text[: budget - 20] + "…[truncated]"
    return text
