"""Metric rows as the rules read them: (step, row) pairs, training rows apart from eval and summary rows,
series of a canonical metric whatever its spelling, and the finding dict every rule returns.

Why a module of its own: the loss-shape rules (loss_shape.py) and the other detectors (detectors.py) read
rows the same way, and a finding has one shape wherever it is made.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

from twinkle_auto.monitor.metric_names import (
    RL_METRICS,
    canonical,
    is_eval_row,
    is_summary_row,
    number,
    value_of,
)

Row = tuple[int, dict[str, Any]]
"""(step, row): the row's `step`, or its index in the metrics list when it has none."""


def finding(kind: str, severity: str, message: str, /, **evidence: Any) -> dict[str, Any]:
    """Build a finding dict; the one place its shape is written down."""
    return {"kind": kind, "severity": severity, "message": " ".join(message.split()), "evidence": evidence}


def fmt(value: float) -> str:
    return f"{value:.4g}"


def steps_text(first: int, last: int) -> str:
    return f"step {first}" if first == last else f"steps {first}-{last}"


def training_rows(metrics: Iterable[Any]) -> list[Row]:
    """The training-step rows of a metrics list as (step, row), eval and summary rows left out."""
    rows: list[Row] = []
    for index, row in enumerate(metrics or []):
        if not isinstance(row, dict) or is_eval_row(row) or is_summary_row(row):
            continue
        step = number(row.get("step"))
        rows.append((int(step) if step is not None and math.isfinite(step) else index, row))
    return rows


def all_rows(metrics: Iterable[Any]) -> list[Row]:
    """Every object row as (step, row), eval rows included (eval series are read from these)."""
    rows: list[Row] = []
    for index, row in enumerate(metrics or []):
        if isinstance(row, dict) and not is_summary_row(row):
            step = number(row.get("step"))
            rows.append((int(step) if step is not None and math.isfinite(step) else index, row))
    return rows


def series(rows: list[Row], keys: Iterable[str]) -> list[tuple[int, float]]:
    """(step, value) for every row that has a number under one of the exact `keys` (first key wins)."""
    keys = tuple(keys)
    out = []
    for step, row in rows:
        for key in keys:
            value = number(row.get(key))
            if value is not None:
                out.append((step, value))
                break
    return out


def metric_series(rows: list[Row], metric: str) -> list[tuple[int, float]]:
    """(step, value) of a canonical metric (`loss`, `grad_norm`, `kl`, ...) whatever its spelling."""
    out = []
    for step, row in rows:
        value = value_of(row, metric)
        if value is not None:
            out.append((step, value))
    return out


def is_rl_run(rows: list[Row]) -> bool:
    """Whether the rows come from an RL trainer (GRPO/PPO), whose loss is not a progress measure."""
    return any(canonical(str(key)) in RL_METRICS for _, row in rows for key in row)


def tail_all(values: list[tuple[int, float]], k: int, predicate: Callable[[float], bool]) -> bool:
    """'-> x': each of the last k values (all of them, if fewer) satisfies the predicate."""
    tail = values[-k:]
    return bool(tail) and all(predicate(v) for _, v in tail)
