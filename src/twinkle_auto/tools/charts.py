"""Tools that steer the metrics chart of the selected run: which keys (at most 4) and which steps."""

from __future__ import annotations

from langchain_core.tools import BaseTool, StructuredTool
from pydantic import BaseModel, Field

from twinkle_auto.connection.metrics import metric_keys
from twinkle_auto.tools.base import MAX_CHART_KEYS, ToolContext, ToolError, compact


class ZoomArgs(BaseModel):
    start_step: int | None = Field(default=None, description="first step to show")
    end_step: int | None = Field(default=None, description="last step to show")
    reset: bool = Field(default=False, description="true to show all steps again")


class SelectMetricsArgs(BaseModel):
    keys: list[str] = Field(description=f"metric names to chart, at most {MAX_CHART_KEYS}")


def make_chart_tools(ctx: ToolContext) -> list[BaseTool]:
    def zoom_metrics(start_step: int | None = None, end_step: int | None = None, reset: bool = False) -> str:
        """Zoom the chart to a step range (e.g. steps 100-200), or reset=true to show the whole run."""
        if reset or (start_step is None and end_step is None):
            ctx.chart.step_range = None
            ctx.emit("chart", ctx.chart)
            return compact({"chart_range": "all steps"})
        lo = 0 if start_step is None else start_step
        hi = 10**12 if end_step is None else end_step
        if lo > hi:
            lo, hi = hi, lo
        if lo < 0:
            raise ToolError("steps are non-negative")
        ctx.chart.step_range = (lo, hi)
        ctx.emit("chart", ctx.chart)
        return compact({"chart_range": [lo, None if end_step is None else hi]})

    def select_metrics(keys: list[str]) -> str:
        """Choose the metrics the chart shows (at most 4), e.g. ['reward', 'reward_std']."""
        wanted = [k.strip() for k in keys if k and k.strip()]
        if not wanted:
            raise ToolError("give at least one metric name")
        if len(wanted) > MAX_CHART_KEYS:
            raise ToolError(f"at most {MAX_CHART_KEYS} metrics; got {len(wanted)}")
        available: list[str] = []
        if ctx.selected_run:
            available = metric_keys(ctx.connection.store.last_metrics(ctx.selected_run, 200))
            unknown = [k for k in wanted if k not in available]
            if available and unknown:
                raise ToolError(
                    f"unknown metric(s) {', '.join(unknown)}; available: {', '.join(available[:20])}"
                )
        ctx.chart.keys = wanted
        ctx.emit("chart", ctx.chart)
        return compact({"chart_keys": wanted})

    return [
        StructuredTool.from_function(
            func=zoom_metrics,
            name="zoom_metrics",
            description=zoom_metrics.__doc__ or "",
            args_schema=ZoomArgs,
        ),
        StructuredTool.from_function(
            func=select_metrics,
            name="select_metrics",
            description=select_metrics.__doc__ or "",
            args_schema=SelectMetricsArgs,
        ),
    ]
