"""Rules on the shape of a loss curve: trend, divergence from the best, frozen, chance level, no progress.

Principles 2 and 3 of thresholds.py: a change counts only against the run's own noise and only when it is
material; "flat" is judged against where the run started, so a converged run is never a plateau and a
loss that never moved is a problem at any length. Every rule works from the rows a tick reads (the last
rows plus the run's first ones), so a 100,000-step run is judged by the same principle as a 30-row one.
"""

from __future__ import annotations

import math
import statistics
from typing import Any

from twinkle_auto.monitor.metric_names import keys_for
from twinkle_auto.monitor.robust import mann_kendall_z, robust_noise, rolling_medians, theil_sen_slope
from twinkle_auto.monitor.rows import Row, finding, fmt, is_rl_run, metric_series, series, steps_text
from twinkle_auto.monitor.thresholds import DEFAULT_THRESHOLDS, Thresholds


def warming_up(rows: list[Row], th: Thresholds) -> bool:
    """The LR is still rising over the recent rows: the run has not started learning in earnest."""
    lrs = [v for _, v in metric_series(rows, "lr") if math.isfinite(v)][-th.trend_min_rows :]
    return len(lrs) >= 2 and lrs[-1] > lrs[0] * (1 + th.warmup_rel_rise) and lrs[-1] > 0


def _finite_values(rows: list[Row], metric_or_key: str, *, exact: bool = False) -> list[tuple[int, float]]:
    values = series(rows, (metric_or_key,)) if exact else metric_series(rows, metric_or_key)
    return [(s, v) for s, v in values if math.isfinite(v)]


def _loss_series(rows: list[Row], head: list[Row]) -> tuple[list[tuple[int, float]], list[tuple[int, float]]]:
    """(head values, tail values) of the finite training loss; head is empty when the tail holds the start."""
    return _finite_values(head, "loss"), _finite_values(rows, "loss")


def _eval_series(eval_rows: list[Row]) -> dict[str, list[tuple[int, float]]]:
    keys = keys_for([r for _, r in eval_rows], "eval_loss")
    return {key: _finite_values(eval_rows, key, exact=True) for key in keys}


def _trend(values: list[float], th: Thresholds) -> tuple[float, float, float]:
    """(Mann-Kendall z, Theil-Sen change over the window, level) of the last `trend_window` values."""
    window = values[-th.trend_window :]
    z = mann_kendall_z(window)
    change = theil_sen_slope(window) * (len(window) - 1)
    level = max(abs(statistics.median(window)), th.loss_floor)
    return z, change, level


def _rising_finding(
    name: str, kind: str, values: list[tuple[int, float]], th: Thresholds, extra: str = ""
) -> list[dict[str, Any]]:
    if len(values) < th.trend_min_rows:
        return []
    window = values[-th.trend_window :]
    z, change, level = _trend([v for _, v in window], th)
    if z < th.trend_z or change / level < th.trend_min_rel_change:
        return []
    low_step, low = min(window, key=lambda sv: sv[1])
    message = (
        f"{name} rising: +{change / level * 100:.0f}% over the last {len(window)} logged rows "
        f"({steps_text(window[0][0], window[-1][0])}; lowest {fmt(low)} at step {low_step}, now {fmt(window[-1][1])}; "
        f"Mann-Kendall z = {z:.1f} ≥ {th.trend_z:g}){extra}"
    )
    return [
        finding(
            kind,
            "warning",
            message,
            key=name,
            z=round(z, 2),
            rel_change=round(change / level, 4),
            rows=len(window),
            from_step=window[0][0],
            to_step=window[-1][0],
        )
    ]


def detect_trend(
    rows: list[Row], thresholds: Thresholds = DEFAULT_THRESHOLDS, *, eval_rows: list[Row] | None = None
) -> list[dict[str, Any]]:
    """LOSS_RISING / EVAL_RISING / LOSS_RUNAWAY: a significant, material trend over the last rows.

    Rising training loss (any length from `trend_min_rows`); an eval loss rising (overfitting when the
    training loss falls meanwhile); a negative loss still falling significantly (an objective without a
    floor: a sign error, or a loss that rewards something unbounded).
    """
    th = thresholds
    findings: list[dict[str, Any]] = []
    train = _finite_values(rows, "loss") if not is_rl_run(rows) else []
    findings += _rising_finding("loss", "LOSS_RISING", train, th)
    if len(train) >= th.trend_min_rows:
        window = [v for _, v in train[-th.trend_window :]]
        z, change, level = _trend(window, th)
        recent = window[-th.chance_min_rows :]
        if all(v < 0 for v in recent) and z <= -th.trend_z and -change / level >= th.trend_min_rel_change:
            message = (
                f"negative loss running away: {fmt(window[0])} → {fmt(window[-1])} over the last {len(window)} "
                f"logged rows (Mann-Kendall z = {z:.1f}); a loss with no floor usually means a sign error or an "
                "objective the model can game"
            )
            findings.append(
                finding("LOSS_RUNAWAY", "warning", message, z=round(z, 2), last=window[-1], rows=len(window))
            )
    train_z = _trend([v for _, v in train], th)[0] if len(train) >= th.trend_min_rows else 0.0
    for key, values in _eval_series(eval_rows or []).items():
        extra = " while the training loss falls (overfitting)" if train_z <= -th.trend_z else ""
        found = _rising_finding(key, "EVAL_RISING", values, th, extra)
        if found:
            findings += found
            break  # one eval group is enough to say it; the others usually move together
    return findings


def detect_divergence(
    rows: list[Row], thresholds: Thresholds = DEFAULT_THRESHOLDS, *, head: list[Row] | None = None
) -> list[dict[str, Any]]:
    """DIVERGENCE: the loss has climbed back from the run's best by a large part of what it had gained."""
    th = thresholds
    if is_rl_run(rows):
        return []
    head_vals, tail_vals = _loss_series(rows, head or [])
    hist = [v for _, v in head_vals] + [v for _, v in tail_vals]
    if len(hist) < th.trend_min_rows:
        return []
    k = min(th.smooth_rows, max(1, len(hist) // 4))  # short runs: a quarter of the rows at most
    start = statistics.median(hist[:k])
    smoothed = rolling_medians([v for _, v in head_vals], k) + rolling_medians([v for _, v in tail_vals], k)
    best = min(smoothed)
    current = statistics.median(v for _, v in tail_vals[-k:])
    noise = robust_noise([v for _, v in tail_vals[-th.trend_window :]])
    rise, progress = current - best, start - best
    if progress <= 0 or rise < th.divergence_factor * progress:
        return []
    if rise < th.divergence_min_rel * max(abs(best), th.loss_floor) or rise < th.divergence_noise_k * noise:
        return []
    message = (
        f"loss diverging: now {fmt(current)} (median of the last {k} rows, to step {tail_vals[-1][0]}), up from "
        f"the run's best {fmt(best)}, i.e. {rise / progress:.0%} of the way back to where it started ({fmt(start)})"
    )
    return [
        finding(
            "DIVERGENCE",
            "warning",
            message,
            start=start,
            best=best,
            current=current,
            noise=noise,
            factor=round(rise / progress, 3),
        )
    ]


def detect_frozen(
    rows: list[Row], thresholds: Thresholds = DEFAULT_THRESHOLDS, *, head: list[Row] | None = None
) -> list[dict[str, Any]]:
    """FROZEN: the loss repeats the same value (within float noise) on the last `frozen_min_rows` rows."""
    th = thresholds
    if is_rl_run(rows):
        return []
    head_vals, values = _loss_series(rows, head or [])
    if len(values) < th.frozen_min_rows:
        return []
    last = values[-1][1]
    tol = th.frozen_rel_tol * max(abs(last), 1e-6)
    same = 0
    for _, v in reversed(values):
        if abs(v - last) > tol:
            break
        same += 1
    if same < th.frozen_min_rows:
        return []
    since_start = same == len(values) and all(abs(v - last) <= tol for _, v in head_vals)
    where = "since the first logged row" if since_start else f"since step {values[-same][0]}"
    message = f"loss frozen at {fmt(last)} on the last {same} logged rows ({where}): nothing is being learned"
    return [finding("FROZEN", "warning", message, value=last, rows=same, since_start=since_start)]


def detect_chance(rows: list[Row], thresholds: Thresholds = DEFAULT_THRESHOLDS) -> list[dict[str, Any]]:
    """CHANCE: the loss sits at ln(K) on the last rows: a uniform prediction over K classes, not moving."""
    th = thresholds
    if is_rl_run(rows) or warming_up(rows, th):
        return []
    values = _finite_values(rows, "loss")
    if len(values) < th.chance_min_rows:
        return []
    last = values[-1][1]
    if last <= math.log(2) * (1 - th.chance_rel_tol):
        return []
    classes = round(math.exp(last))
    if not 2 <= classes <= th.chance_max_classes:
        return []
    level = math.log(classes)
    count = 0
    for _, v in reversed(values):
        if abs(v - level) > th.chance_rel_tol * level:
            break
        count += 1
    if count < th.chance_min_rows:
        return []
    message = (
        f"loss stuck at chance level: {fmt(last)} ≈ ln({classes}) = {level:.5g} on the last {count} logged rows "
        f"(within {th.chance_rel_tol:.1%}): the model predicts a uniform distribution over {classes} classes"
    )
    return [finding("CHANCE", "warning", message, classes=classes, level=level, rows=count, last=last)]


def detect_plateau(
    rows: list[Row], thresholds: Thresholds = DEFAULT_THRESHOLDS, *, head: list[Row] | None = None
) -> list[dict[str, Any]]:
    """PLATEAU: no progress since the run started (the recent loss < 3% below its start).

    Measured from the run's start, not across the recent window: a flat tail after real progress is
    convergence (whatever the LR schedule), and is never reported. A run still warming up waits.
    """
    th = thresholds
    if is_rl_run(rows) or warming_up(rows, th):
        return []
    head_vals, tail_vals = _loss_series(rows, head or [])
    hist = [v for _, v in head_vals] + [v for _, v in tail_vals]
    if len(hist) < th.plateau_min_rows:
        return []
    k = max(th.smooth_rows, min(len(hist) // 5, th.trend_window))  # a fifth of what is seen, as before
    first, last = statistics.median(hist[:k]), statistics.median(hist[-k:])
    if first <= th.loss_floor:
        return []
    drop = (first - last) / first
    if drop >= th.plateau_min_rel_drop:
        return []
    start_step = (head_vals or tail_vals)[0][0]
    message = (
        f"no progress: the loss is {fmt(last)} (median of the last {k} rows, to step {tail_vals[-1][0]}) vs "
        f"{fmt(first)} at the start (from step {start_step}), a {drop * 100:.1f}% drop < "
        f"{th.plateau_min_rel_drop * 100:g}% after {len(hist)} logged rows"
    )
    return [
        finding(
            "PLATEAU",
            "warning",
            message,
            first_mean=first,
            last_mean=last,
            rel_drop=drop,
            rows=len(hist),
            from_step=start_step,
            to_step=tail_vals[-1][0],
            min_rel_drop=th.plateau_min_rel_drop,
        )
    ]
