"""Tools that steer the metrics chart of the selected run: which metrics (at most 4), which steps.

The chart view is chat-graph state (`chart`: keys and step_range), changed through `Command(update=…)`
so a resumed session shows what it showed. Three verbs that do not overlap: plot_metrics chooses what is
drawn, zoom_chart narrows the steps, reset_chart shows every step again.
"""

from __future__ import annotations

import re
from typing import Any

from langchain_core.tools import BaseTool
from langgraph.prebuilt import ToolRuntime
from pydantic import AliasChoices, Field

from twinkle_auto.connection.metrics import metric_keys
from twinkle_auto.tools.base import (
    MAX_CHART_KEYS,
    Scope,
    ToolArgs,
    ToolContext,
    ToolError,
    compact,
    latest_request,
    make_tool,
)
from twinkle_auto.tools.verbs import CHART_ACTIONS

STEP_UNBOUNDED = 10**12


class ZoomArgs(ToolArgs):
    ASKED_BY = CHART_ACTIONS
    NEVER_FOR = ("reset_chart",)  # "zoom all the way out" answered with a zoom to steps 0-0
    start_step: int | None = Field(
        default=None,
        ge=0,
        validation_alias=AliasChoices("start_step", "start", "from_step", "first_step", "min_step"),
        description="First training step to show (inclusive); leave out to start at the beginning",
    )
    end_step: int | None = Field(
        default=None,
        ge=0,
        validation_alias=AliasChoices("end_step", "end", "to_step", "last_step", "max_step"),
        description="Last training step to show (inclusive); leave out to show up to the latest step",
    )


class PlotArgs(ToolArgs):
    GROUNDED = ("keys", "run_id")
    GUESS_IS_DEFAULT = ("run_id",)
    keys: list[str] = Field(
        validation_alias=AliasChoices("keys", "metrics", "metric", "names"),
        description=f"Metric names, or parts of names (each picks every metric containing it); at most "
        f"{MAX_CHART_KEYS}",
    )
    run_id: str | None = Field(
        default=None,
        validation_alias=AliasChoices("run_id", "run"),
        description="Run to chart (it becomes the selected run); leave out for the selected run",
    )


def _match(wanted: list[str], available: list[str]) -> tuple[list[str], list[str]]:
    """Exact names first, then every available metric containing a wanted word ('reward' → reward_std)."""
    chosen: list[str] = []
    unknown: list[str] = []
    for word in wanted:
        if word in available:
            hits = [word]
        else:
            low = re.sub(r"[^a-z0-9_/.]+", "_", word.lower()).strip("_")
            low = re.sub(r"_(related|metrics?|values?|curves?)$", "", low)
            hits = [k for k in available if low and low in k.lower()]
        if not hits:
            unknown.append(word)
        chosen += [h for h in hits if h not in chosen]
    return chosen, unknown


def named_first(metrics: list[str], request: str) -> list[str]:
    """When there are more metrics than a chart holds: those the person's words name first, then the
    model's additions, each in the given order; otherwise the metrics as given.

    Why: a chart holds MAX_CHART_KEYS metrics and the model pads a request ("the reward-related metrics")
    with others it saw (lr, loss); what is cut must be the padding, not what was asked for. A metric is
    named when its name, or a part of it of three letters or more (reward_std: "reward"), is a word of
    the request.
    """
    if len(metrics) <= MAX_CHART_KEYS:
        return metrics
    words = set(re.findall(r"[a-z0-9]+", request.lower()))

    def named(metric: str) -> bool:
        low = metric.lower()
        parts = [p for p in re.split(r"[^a-z0-9]+", low) if len(p) >= 3]
        return re.sub(r"[^a-z0-9]+", "", low) in words or any(p in words for p in parts)

    asked = [m for m in metrics if named(m)]
    return asked + [m for m in metrics if m not in asked] if asked else metrics


def make_chart_tools(ctx: ToolContext | None = None) -> list[BaseTool]:
    def plot_metrics(
        keys: list[str], run_id: str | None = None, runtime: ToolRuntime[Any, Any] = None
    ) -> Any:  # type: ignore[assignment]
        s = Scope.of(runtime, ctx, "plot_metrics")
        wanted = [k.strip() for k in keys if k and k.strip()]
        if not wanted:
            raise ToolError("give at least one metric name")
        run = s.resolve_run(run_id)
        chosen = wanted
        if run:
            available = metric_keys(s.connection.store.last_metrics(run, 200))
            if available:
                chosen, unknown = _match(wanted, available)
                if unknown or not chosen:
                    raise ToolError(
                        f"run {run} has no metric like {', '.join(unknown or wanted)}; "
                        f"available: {', '.join(available[:20])}"
                    )
        chosen = named_first(chosen, latest_request(s.state))
        answer: dict[str, Any] = {"run": run, "chart_keys": chosen[:MAX_CHART_KEYS]}
        if len(chosen) > MAX_CHART_KEYS:  # too many asked or matched: chart the first, say which were left
            answer["not_shown"] = chosen[MAX_CHART_KEYS:]
            chosen = chosen[:MAX_CHART_KEYS]
        chart = {**s.chart, "keys": chosen}
        updates: dict[str, Any] = {"chart": chart}
        if run and run != s.selected_run:
            updates["selected_run"] = run
        return s.reply(compact(answer), **updates)

    def zoom_chart(
        start_step: int | None = None,
        end_step: int | None = None,
        runtime: ToolRuntime[Any, Any] = None,  # type: ignore[assignment]
    ) -> Any:
        s = Scope.of(runtime, ctx, "zoom_chart")
        if start_step is None and end_step is None:
            raise ToolError("give start_step and/or end_step; reset_chart shows all steps")
        lo = 0 if start_step is None else start_step
        hi = STEP_UNBOUNDED if end_step is None else end_step
        lo, hi = min(lo, hi), max(lo, hi)
        chart = {**s.chart, "step_range": [lo, hi]}
        return s.reply(compact({"chart_steps": [lo, None if end_step is None else hi]}), chart=chart)

    def reset_chart(runtime: ToolRuntime[Any, Any] = None) -> Any:  # type: ignore[assignment]
        s = Scope.of(runtime, ctx, "reset_chart")
        return s.reply(
            compact({"chart_steps": "all", "chart_keys": "default"}), chart={"keys": [], "step_range": None}
        )

    return [
        make_tool(
            func=plot_metrics,
            name="plot_metrics",
            description=f"Choose WHICH METRICS the chart draws, by name or part of a name (up to "
            f"{MAX_CHART_KEYS}). Only when the person names metrics; when they give step numbers, "
            "use zoom_chart.",
            args_schema=PlotArgs,
        ),
        make_tool(
            func=zoom_chart,
            name="zoom_chart",
            description="Choose WHICH STEPS the chart shows: a first and/or last training step. Use it "
            "whenever the person gives step numbers; the metrics stay as they are.",
            args_schema=ZoomArgs,
        ),
        make_tool(
            func=reset_chart,
            name="reset_chart",
            description="Undo zoom_chart and plot_metrics: the whole chart again, every step and the "
            "default metrics. Takes no step numbers.",
        ),
    ]
