"""Deterministic triage of a run snapshot: pure detector functions, no LLM, no I/O.

Why deterministic first: NaN, a dead process or an OOM can be told from numbers and log lines alone, and
the LLM that comes after (the monitor graph) should explain and fix, not guess whether something is wrong.
Every detector returns a list of findings (plain dicts, so they checkpoint and serialise as they are):

    {"kind": str, "severity": "info"|"warning"|"critical", "message": one line, "evidence": {numbers}}

The snapshot is a plain dict: process_state, status, metrics (recent metrics.jsonl rows, oldest first),
log_tail, stall_seconds. Rows are logged points, not optimizer steps; eval rows (`eval_*`), prediction rows
and the trainer's final summary row (`train_runtime`, ...) are not training steps and are set aside first.
"""

from __future__ import annotations

import math
import re
import statistics
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

from twinkle_auto.monitor.thresholds import DEFAULT_THRESHOLDS, Thresholds
from twinkle_auto.monitor.tracebacks import classify_error, last_traceback

Row = tuple[int, dict[str, Any]]
"""(step, row): the row's `step`, or its index in the metrics list when it has none."""

LOSS_KEYS = ("loss", "train/loss", "train_loss", "lm_loss")
GRAD_NORM_KEYS = ("grad_norm", "train/grad_norm", "grad-norm", "optim/total_grad_norm")
KL_KEYS = ("kl", "objective/kl", "train/kl")
REWARD_KEYS = ("reward", "rewards/total_reward", "objective/rlhf_reward", "objective/scores")
RL_MARKER_KEYS = frozenset({"reward", "reward_std", "frac_reward_zero_std", "objective/rlhf_reward"})
"""Any of these in a row means an RL run (GRPO/PPO): its `loss` is not a measure of progress (TRL: the
GRPO loss is ~0 by construction when beta = 0), so loss spike and plateau rules do not apply."""
CLIPPED_RATIO_KEY = "completions/clipped_ratio"
EVAL_PREFIXES = ("eval_", "eval/", "predict_", "predict/", "test_", "test/")
SUMMARY_KEYS = frozenset(
    {"train_runtime", "total_flos", "train_samples_per_second", "train_steps_per_second"}
)
FINISHED_STATUSES = frozenset({"finished", "completed"})
USER_STOPPED_STATUSES = frozenset({"stopped", "stopping", "paused"})
DEAD_STATES = frozenset({"dead", "zombie"})
_TRL_NEGATIVE_KL_RE = re.compile(
    r"KL divergence is starting to become negative:\s*(-?\d+(?:\.\d+)?(?:e-?\d+)?)"
)
_SEVERITY_RANK = {"critical": 2, "warning": 1, "info": 0}
_MAX_TRACEBACK_CHARS = 4000


# --- small helpers ---------------------------------------------------------------------------------------
def finding(kind: str, severity: str, message: str, /, **evidence: Any) -> dict[str, Any]:
    """Build a finding dict; the one place its shape is written down."""
    return {"kind": kind, "severity": severity, "message": " ".join(message.split()), "evidence": evidence}


def _number(value: Any) -> float | None:
    """A metric value as float (NaN and inf kept), or None for strings, bools and missing values."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def _first_number(row: dict[str, Any], keys: Iterable[str]) -> float | None:
    for key in keys:
        value = _number(row.get(key))
        if value is not None:
            return value
    return None


def _fmt(value: float) -> str:
    return f"{value:.4g}"


def _steps(first: int, last: int) -> str:
    return f"step {first}" if first == last else f"steps {first}-{last}"


def _is_eval_row(row: dict[str, Any]) -> bool:
    has_eval = any(str(key).startswith(EVAL_PREFIXES) for key in row)
    return has_eval and _first_number(row, LOSS_KEYS + GRAD_NORM_KEYS) is None


def _is_summary_row(row: dict[str, Any]) -> bool:
    return any(key in SUMMARY_KEYS for key in row)


def training_rows(metrics: Iterable[Any]) -> list[Row]:
    """The training-step rows of a metrics list as (step, row), eval and summary rows left out."""
    rows: list[Row] = []
    for index, row in enumerate(metrics or []):
        if not isinstance(row, dict) or _is_eval_row(row) or _is_summary_row(row):
            continue
        step = _number(row.get("step"))
        rows.append((int(step) if step is not None and math.isfinite(step) else index, row))
    return rows


def series(rows: list[Row], keys: Iterable[str]) -> list[tuple[int, float]]:
    """(step, value) for every row that has a number under one of `keys` (first key found wins)."""
    keys = tuple(keys)
    out = []
    for step, row in rows:
        value = _first_number(row, keys)
        if value is not None:
            out.append((step, value))
    return out


def is_rl_run(rows: list[Row]) -> bool:
    """Whether the rows come from an RL trainer (GRPO/PPO), whose loss is not a progress measure."""
    return any(RL_MARKER_KEYS.intersection(row) for _, row in rows)


def _tail_all(values: list[tuple[int, float]], k: int, predicate: Callable[[float], bool]) -> bool:
    """'-> x': each of the last k values (all of them, if fewer) satisfies the predicate."""
    tail = values[-k:]
    return bool(tail) and all(predicate(v) for _, v in tail)


# --- process state and log -------------------------------------------------------------------------------
def detect_process(snapshot: dict[str, Any]) -> list[dict[str, Any]]:
    """FINISHED / CODE_ERROR / ENV / DIED from the process state, the meta status and the log tail."""
    status = str(snapshot.get("status") or "").lower()
    state = str(snapshot.get("process_state") or "unknown").lower()
    if status in FINISHED_STATUSES:
        return [finding("FINISHED", "info", f"run finished normally (status {status})", status=status)]
    if state not in DEAD_STATES or status in USER_STOPPED_STATUSES:
        return []
    log_tail = snapshot.get("log_tail") or ""
    error = classify_error(log_tail)
    if error is None:
        return [
            finding(
                "DIED",
                "warning",
                f"process is {state} while status is {status or 'unknown'}, and the log shows no traceback",
                process_state=state,
                status=status,
            )
        ]
    what = f"{error['exception']}: {error['message']}" if error["exception"] else error["message"]
    what = what if len(what) <= 200 else what[:197] + "..."
    traceback = (last_traceback(log_tail) or "")[-_MAX_TRACEBACK_CHARS:]
    evidence = {**error, "process_state": state, "status": status, "traceback": traceback}
    if error["kind"] == "ENV":
        message = f"process died of an environment error ({error['category']}): {what}"
        return [finding("ENV", "warning", message, **evidence)]
    return [finding("CODE_ERROR", "critical", f"process died with a code error: {what}", **evidence)]


def detect_stall(
    snapshot: dict[str, Any], thresholds: Thresholds = DEFAULT_THRESHOLDS
) -> list[dict[str, Any]]:
    """STALL: the process is alive and running but no metric arrived for longer than the limit."""
    stall = snapshot.get("stall_seconds")
    status = str(snapshot.get("status") or "").lower()
    if snapshot.get("process_state") != "alive" or stall is None:
        return []
    if status in USER_STOPPED_STATUSES or status in FINISHED_STATUSES or stall <= thresholds.stall_seconds:
        return []
    message = (
        f"no new metric for {stall:.0f} s (limit {thresholds.stall_seconds:.0f} s) while the process is alive"
    )
    return [finding("STALL", "warning", message, stall_seconds=stall, limit=thresholds.stall_seconds)]


# --- NaN / Inf -------------------------------------------------------------------------------------------
def detect_nan(rows: list[Row]) -> list[dict[str, Any]]:
    """NAN: a non-finite loss or grad_norm; also loss exactly 0 with a NaN grad_norm.

    HF Trainer can log loss 0.0 while the gradients are NaN (its NaN-loss filtering hides the loss), so the
    pair is reported as NaN, not as a zero loss. A non-finite grad_norm that has since recovered is only
    'info': fp16 dynamic loss scaling skips overflowing steps by design (PyTorch AMP).
    """
    if not rows:
        return []
    bad: list[tuple[int, float | None, float | None]] = []
    for step, row in rows:
        loss, grad = _first_number(row, LOSS_KEYS), _first_number(row, GRAD_NORM_KEYS)
        loss_bad = loss is not None and not math.isfinite(loss)
        grad_bad = grad is not None and not math.isfinite(grad)
        if loss_bad or grad_bad:
            bad.append((step, loss, grad))
    if not bad:
        return []
    last_step = rows[-1][0]
    step, loss, grad = bad[-1]
    loss_bad_any = any(lo is not None and not math.isfinite(lo) for _, lo, _ in bad)
    zero_loss_nan_grad = any(lo == 0.0 and g is not None and math.isnan(g) for _, lo, g in bad)
    ongoing = step == last_step
    if loss_bad_any or zero_loss_nan_grad:
        severity = "critical" if ongoing else "warning"
    else:
        severity = "warning" if ongoing else "info"
    what = "loss 0 with NaN grad_norm (HF Trainer hides NaN losses)" if zero_loss_nan_grad else "NaN/Inf"
    message = (
        f"{what} in {len(bad)} of {len(rows)} logged steps, first at step {bad[0][0]}, last at step {step} "
        f"(loss={loss}, grad_norm={grad}){'' if ongoing else '; later steps are finite'}"
    )
    return [
        finding(
            "NAN",
            severity,
            message,
            first_step=bad[0][0],
            last_step=step,
            count=len(bad),
            rows=len(rows),
            loss=loss,
            grad_norm=grad,
            ongoing=ongoing,
        )
    ]


# --- loss spikes -----------------------------------------------------------------------------------------
def _sigma_spikes(values: list[tuple[int, float]], th: Thresholds) -> list[dict[str, Any]]:
    """OLMo rule: a loss above mean + k sigma of the previous window."""
    hits = []
    for i in range(th.spike_min_history, len(values)):
        window = [v for _, v in values[max(0, i - th.spike_sigma_window) : i]]
        mean, sigma = statistics.fmean(window), statistics.pstdev(window)
        step, value = values[i]
        limit = mean + th.spike_sigma * sigma
        if mean > th.loss_floor and value > limit and value > mean * (1 + th.spike_sigma_min_rel_jump):
            hits.append({"rule": "sigma", "step": step, "value": value, "mean": mean, "sigma": sigma})
    return hits


def _running_mean_spikes(values: list[tuple[int, float]], th: Thresholds) -> list[dict[str, Any]]:
    """llm-foundry rule: more than `patience` consecutive losses >= multiplier x the running mean.

    Like KillLossSpike, outliers are kept out of the running window, so a lasting jump stays an outlier.
    """
    window: deque[float] = deque(maxlen=th.spike_mean_window)
    hits, streak = [], 0
    for step, value in values:
        mean = statistics.fmean(window) if len(window) >= th.spike_min_history else None
        if mean is not None and mean > th.loss_floor and value >= th.spike_mean_multiplier * mean:
            streak += 1
            if streak > th.spike_mean_patience:
                hits.append(
                    {"rule": "running_mean", "step": step, "value": value, "mean": mean, "streak": streak}
                )
            continue
        streak = 0
        window.append(value)
    return hits


def _max_factor_spikes(values: list[tuple[int, float]], th: Thresholds) -> list[dict[str, Any]]:
    """Megatron rule: a loss more than `factor` x the largest loss seen before it."""
    hits, largest = [], None
    for step, value in values:
        if largest is not None and largest > th.loss_floor and value > th.spike_max_factor * largest:
            hits.append({"rule": "max_factor", "step": step, "value": value, "largest": largest})
        largest = value if largest is None else max(largest, value)
    return hits


def detect_loss_spike(rows: list[Row], thresholds: Thresholds = DEFAULT_THRESHOLDS) -> list[dict[str, Any]]:
    """LOSS_SPIKE by any of three published rules (OLMo sigma, llm-foundry running mean, Megatron max)."""
    if is_rl_run(rows):
        return []
    values = [(s, v) for s, v in series(rows, LOSS_KEYS) if math.isfinite(v)]
    hits = _sigma_spikes(values, thresholds)
    hits += _running_mean_spikes(values, thresholds)
    hits += _max_factor_spikes(values, thresholds)
    if not hits:
        return []
    latest = max(hits, key=lambda h: h["step"])
    explain = {
        "sigma": lambda h: (
            f"> mean+{thresholds.spike_sigma:g}σ ({_fmt(h['mean'])}+{thresholds.spike_sigma:g}"
            f"×{_fmt(h['sigma'])}) of the previous {thresholds.spike_sigma_window} steps (OLMo)"
        ),
        "running_mean": lambda h: (
            f">= {thresholds.spike_mean_multiplier:g}× the running mean {_fmt(h['mean'])} "
            f"for {h['streak']} consecutive steps (llm-foundry)"
        ),
        "max_factor": lambda h: (
            f"> {thresholds.spike_max_factor:g}× the largest earlier loss {_fmt(h['largest'])} (Megatron)"
        ),
    }[latest["rule"]](latest)
    rules = sorted({h["rule"] for h in hits})
    message = f"loss spike at step {latest['step']}: {_fmt(latest['value'])} {explain}; {len(hits)} hit(s)"
    return [finding("LOSS_SPIKE", "warning", message, latest=latest, rules=rules, hits=len(hits))]


# --- plateau ---------------------------------------------------------------------------------------------
def detect_plateau(rows: list[Row], thresholds: Thresholds = DEFAULT_THRESHOLDS) -> list[dict[str, Any]]:
    """PLATEAU: the loss barely moved between the first and last fifth of a long enough window."""
    if is_rl_run(rows):
        return []
    values = [(s, v) for s, v in series(rows, LOSS_KEYS) if math.isfinite(v)][-thresholds.plateau_window :]
    if len(values) < thresholds.plateau_min_rows:
        return []
    k = max(1, int(len(values) * thresholds.plateau_edge_fraction))
    first = statistics.fmean(v for _, v in values[:k])
    last = statistics.fmean(v for _, v in values[-k:])
    if first <= thresholds.loss_floor:
        return []
    drop = (first - last) / first
    if drop >= thresholds.plateau_min_rel_drop:
        return []
    message = (
        f"loss plateau: mean {_fmt(first)} over the first {k} of {len(values)} logged steps "
        f"(from step {values[0][0]}) vs {_fmt(last)} over the last {k} (to step {values[-1][0]}), "
        f"a {drop * 100:.1f}% drop < {thresholds.plateau_min_rel_drop * 100:g}%"
    )
    return [
        finding(
            "PLATEAU",
            "warning",
            message,
            first_mean=first,
            last_mean=last,
            rel_drop=drop,
            rows=len(values),
            edge_rows=k,
            from_step=values[0][0],
            to_step=values[-1][0],
            min_rel_drop=thresholds.plateau_min_rel_drop,
        )
    ]


# --- KL --------------------------------------------------------------------------------------------------
def detect_kl(
    rows: list[Row], log_tail: str = "", thresholds: Thresholds = DEFAULT_THRESHOLDS
) -> list[dict[str, Any]]:
    """KL: a logged KL above kl_max or below kl_min, or TRL's own negative-KL warning in the log.

    A missing `kl` key is normal (GRPO with beta = 0 does not compute it).
    """
    values = [(s, v) for s, v in series(rows, KL_KEYS) if math.isfinite(v)]
    high = [(s, v) for s, v in values if v > thresholds.kl_max]
    low = [(s, v) for s, v in values if v < thresholds.kl_min]
    findings = []
    if high or low:
        step, value = max(high + low)
        side = f"> {thresholds.kl_max:g}" if value > thresholds.kl_max else f"< {thresholds.kl_min:g}"
        message = (
            f"KL {_fmt(value)} {side} at step {step} ({len(high)} step(s) above {thresholds.kl_max:g}, "
            f"{len(low)} below {thresholds.kl_min:g}, of {len(values)} logged)"
        )
        evidence = {"step": step, "value": value, "above": len(high), "below": len(low), "rows": len(values)}
        evidence |= {"kl_max": thresholds.kl_max, "kl_min": thresholds.kl_min}
        findings.append(finding("KL", "warning", message, **evidence))
    warned = [float(m.group(1)) for m in _TRL_NEGATIVE_KL_RE.finditer(log_tail or "")]
    if warned:
        message = f"TRL warned {len(warned)} time(s) that KL is becoming negative (last {_fmt(warned[-1])})"
        findings.append(
            finding("KL", "warning", message, source="log", values=warned[-10:], count=len(warned))
        )
    return findings


# --- learning signal (GRPO) ------------------------------------------------------------------------------
def detect_no_signal(rows: list[Row], thresholds: Thresholds = DEFAULT_THRESHOLDS) -> list[dict[str, Any]]:
    """NO_SIGNAL: reward_std -> 0, frac_reward_zero_std -> 1 or grad_norm -> 0 over the last rows.

    Any one of them means the update is empty: identical rewards within every group give zero advantages
    (GRPO), and a zero gradient moves no weight whatever the algorithm.
    """
    k, eps = thresholds.signal_window, thresholds.zero_eps
    checks = {
        "reward_std": (series(rows, ("reward_std",)), lambda v: abs(v) < eps, "→ 0"),
        "frac_reward_zero_std": (series(rows, ("frac_reward_zero_std",)), lambda v: v > 1 - eps, "→ 1"),
        "grad_norm": (series(rows, GRAD_NORM_KEYS), lambda v: abs(v) < eps, "→ 0"),
    }
    hit = {name: vals[-k:] for name, (vals, pred, _) in checks.items() if _tail_all(vals, k, pred)}
    if not hit:
        return []
    steps = next(iter(hit.values()))
    parts = ", ".join(f"{name} {checks[name][2]}" for name in hit)
    message = (
        f"no learning signal: {parts} on each of the last {len(steps)} logged steps "
        f"({_steps(steps[0][0], steps[-1][0])}, eps {eps:g})"
    )
    evidence = {name: [v for _, v in vals] for name, vals in hit.items()}
    return [
        finding(
            "NO_SIGNAL", "warning", message, window=len(steps), eps=eps, last_step=steps[-1][0], **evidence
        )
    ]


# --- length hacking (GRPO) -------------------------------------------------------------------------------
def _reward_trend(rows: list[Row], k: int, sigma: float) -> tuple[str, float | None, float | None]:
    """('rising'|'flat'|'falling'|'unknown', previous mean, recent mean) over the last 2k reward rows."""
    rewards = [v for _, v in series(rows, REWARD_KEYS) if math.isfinite(v)][-2 * k :]
    if len(rewards) < 4:
        return "unknown", None, None
    half = len(rewards) // 2
    previous, recent = statistics.fmean(rewards[:-half]), statistics.fmean(rewards[-half:])
    noise = statistics.pstdev(rewards)
    if recent < previous - sigma * noise:
        return "falling", previous, recent
    return ("rising" if recent > previous + sigma * noise else "flat"), previous, recent


def detect_length_hacking(
    rows: list[Row], thresholds: Thresholds = DEFAULT_THRESHOLDS
) -> list[dict[str, Any]]:
    """LENGTH_HACKING: completions/clipped_ratio -> 1 while the reward is flat or rising.

    Nearly every completion hits max_completion_length yet the reward does not suffer: the policy is paid
    for (or at least not penalised for) running out of tokens.
    """
    k = thresholds.signal_window
    clipped = series(rows, (CLIPPED_RATIO_KEY,))
    if not _tail_all(clipped, k, lambda v: v >= thresholds.clipped_ratio_high):
        return []
    trend, previous, recent = _reward_trend(rows, k, thresholds.reward_fall_sigma)
    if trend == "falling":
        return []
    tail = clipped[-k:]
    reward_part = (
        "reward unknown" if previous is None else f"reward {trend} ({_fmt(previous)} → {_fmt(recent)})"
    )
    message = (
        f"length hacking: completions/clipped_ratio >= {thresholds.clipped_ratio_high:g} on each of the last "
        f"{len(tail)} logged steps ({_steps(tail[0][0], tail[-1][0])}, last {_fmt(tail[-1][1])}), {reward_part}"
    )
    evidence = {"clipped_ratio": [v for _, v in tail], "last_step": tail[-1][0], "reward_trend": trend}
    evidence |= {"reward_previous": previous, "reward_recent": recent, "limit": thresholds.clipped_ratio_high}
    return [finding("LENGTH_HACKING", "warning", message, **evidence)]


# --- entry points ----------------------------------------------------------------------------------------
def triage(snapshot: dict[str, Any], thresholds: Thresholds = DEFAULT_THRESHOLDS) -> list[dict[str, Any]]:
    """Run every detector on a snapshot; process findings first, then metric findings."""
    rows = training_rows(snapshot.get("metrics") or [])
    log_tail = snapshot.get("log_tail") or ""
    return [
        *detect_process(snapshot),
        *detect_stall(snapshot, thresholds),
        *detect_nan(rows),
        *detect_loss_spike(rows, thresholds),
        *detect_plateau(rows, thresholds),
        *detect_kl(rows, log_tail, thresholds),
        *detect_no_signal(rows, thresholds),
        *detect_length_hacking(rows, thresholds),
    ]


def rule_decision(findings: list[dict[str, Any]]) -> dict[str, str]:
    """LGTM / WARNING / FIX from findings: a code error is a FIX candidate, anything else worth a look
    (warning or critical) is a WARNING, and info alone (e.g. FINISHED) is LGTM."""
    code = [f for f in findings if f.get("kind") == "CODE_ERROR"]
    if code:
        return {"decision": "FIX", "reason": code[0]["message"]}
    serious = [f for f in findings if _SEVERITY_RANK.get(f.get("severity", "info"), 0) > 0]
    if serious:
        worst = max(serious, key=lambda f: _SEVERITY_RANK[f["severity"]])
        more = f" (+{len(serious) - 1} more)" if len(serious) > 1 else ""
        return {"decision": "WARNING", "reason": f"{worst['kind']}: {worst['message']}{more}"}
    finished = any(f.get("kind") == "FINISHED" for f in findings)
    return {"decision": "LGTM", "reason": "run finished normally" if finished else "no problems found"}
