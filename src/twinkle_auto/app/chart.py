"""The metrics chart of the selected run, drawn in the terminal with plotext.

One panel per metric (at most 4): keys of different scales (loss ~2, lr ~1e-5) on one axis would make
every line but one flat. NaN/Inf points are left out of the line and counted in the panel's title, since
hiding them silently would hide the very thing the monitor warns about.
"""

from __future__ import annotations

import math
from typing import Any

from twinkle_auto.connection.metrics import metric_keys

DEFAULT_KEYS = ("loss", "reward", "grad_norm", "lr")
CHART_ROWS = 2000
"""Rows read for a chart: recent enough to be cheap, long enough to show a trend."""


def default_keys(entries: list[dict[str, Any]]) -> list[str]:
    keys = metric_keys(entries)
    chosen = [k for k in DEFAULT_KEYS if k in keys][:2]
    return chosen or keys[:2]


def render_chart(
    entries: list[dict[str, Any]],
    keys: list[str],
    step_range: tuple[int, int] | None = None,
    *,
    width: int = 90,
    panel_height: int = 9,
    title: str = "",
    color: bool = True,
) -> str:
    """A text chart (ANSI colors unless color=False) of `keys` over the steps in `step_range`."""
    import plotext as plt

    if not entries:
        return f"{title}: no metrics yet"
    keys = keys or default_keys(entries)
    panels: list[str] = []
    for key in keys[:4]:
        xs: list[float] = []
        ys: list[float] = []
        bad = 0
        for i, row in enumerate(entries):
            step = row.get("step", i)
            if not isinstance(step, (int, float)) or key not in row:
                continue
            if step_range and not (step_range[0] <= step <= step_range[1]):
                continue
            value = row[key]
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                continue
            if not math.isfinite(value):
                bad += 1
                continue
            xs.append(float(step))
            ys.append(float(value))
        head = f"{key}" + (f"  ({bad} NaN/Inf points not drawn)" if bad else "")
        if len(xs) < 2:
            panels.append(f"{head}: {'no data in this range' if not xs else f'one point: {ys[0]:.4g}'}")
            continue
        plt.clear_figure()
        plt.plot(xs, ys, marker="braille")
        plt.plotsize(width, panel_height)
        plt.theme("clear")
        drawn = plt.build()
        summary = f"{head}   last {ys[-1]:.4g}  min {min(ys):.4g}  max {max(ys):.4g}"
        panels.append(summary + "\n" + (drawn if color else plt.uncolorize(drawn)))
    span = f"steps {step_range[0]}-{step_range[1]}" if step_range else "all steps"
    header = f"{title} — {', '.join(keys[:4])} ({span})" if title else ""
    return "\n".join([header, *panels] if header else panels)
