"""Deterministic triage of a run snapshot: pure detector functions, no LLM, no I/O.

Why deterministic first: NaN, a dead process or an OOM can be told from numbers and log lines alone, and
the LLM that comes after (the monitor graph) should explain and fix, not guess whether something is wrong.
Every detector returns a list of findings (plain dicts, so they checkpoint and serialise as they are):

    {"kind": str, "severity": "info"|"warning"|"critical", "message": one line, "evidence": {numbers}}

The snapshot is a plain dict: process_state, status, metrics (the last metrics.jsonl rows, oldest first),
head_metrics (the run's first rows, when `metrics` does not reach back to them), log_tail, stall_seconds,
exit_code, script (the training script's text, optional), disk_free/disk_total (bytes, optional). Rows are
logged points, not optimizer steps; eval rows, prediction rows and the trainer's final summary row are not
training steps and are set aside first. Metric keys are read through `metric_names`, so `training_loss`,
`train/loss` and `loss/train` are the same loss. The rules and their sources are in thresholds.py; the
loss-shape rules (trend, divergence, frozen, chance, plateau) in loss_shape.py, on robust.py's statistics;
rows and the finding shape in rows.py. This module runs them all (`triage`) and decides (`rule_decision`).
"""

from __future__ import annotations

import math
import re
import statistics
from collections import deque
from typing import Any

from twinkle_auto.monitor.loss_shape import (
    detect_chance,
    detect_divergence,
    detect_frozen,
    detect_plateau,
    detect_trend,
)
from twinkle_auto.monitor.metric_names import keys_for, value_of
from twinkle_auto.monitor.rows import (
    Row,
    all_rows,
    finding,
    fmt,
    is_rl_run,
    metric_series,
    series,
    steps_text,
    tail_all,
    training_rows,
)
from twinkle_auto.monitor.thresholds import DEFAULT_THRESHOLDS, Thresholds
from twinkle_auto.monitor.tracebacks import classify_error, last_traceback

__all__ = [
    "Row",
    "all_rows",
    "detect_chance",
    "detect_disk",
    "detect_divergence",
    "detect_eval_nan",
    "detect_frozen",
    "detect_kl",
    "detect_length_hacking",
    "detect_loss_spike",
    "detect_nan",
    "detect_no_signal",
    "detect_plateau",
    "detect_process",
    "detect_stall",
    "detect_trend",
    "finding",
    "is_rl_run",
    "metric_series",
    "rule_decision",
    "series",
    "split_metrics",
    "training_rows",
    "triage",
]

LOSS_KEYS = ("loss", "train/loss", "train_loss", "training_loss", "train loss", "loss/train", "lm_loss")
"""Documented spellings of the training loss (all normalized by metric_names.canonical)."""
GRAD_NORM_KEYS = ("grad_norm", "train/grad_norm", "grad-norm", "optim/total_grad_norm", "actor/grad_norm")
KL_KEYS = ("kl", "objective/kl", "train/kl", "actor/kl_loss")
REWARD_KEYS = (
    "reward",
    "rewards/total_reward",
    "objective/rlhf_reward",
    "objective/scores",
    "critic/rewards/mean",
)
RL_MARKER_KEYS = frozenset({"reward", "reward_std", "frac_reward_zero_std", "objective/rlhf_reward"})
"""Documented spellings of the RL markers (metric_names.RL_METRICS): an RL run's loss is not progress."""
CLIPPED_RATIO_KEY = "completions/clipped_ratio"
FINISHED_STATUSES = frozenset({"finished", "completed"})
USER_STOPPED_STATUSES = frozenset({"stopped", "stopping", "paused"})
DEAD_STATES = frozenset({"dead", "zombie"})
_TRL_NEGATIVE_KL_RE = re.compile(
    r"KL divergence is starting to become negative:\s*(-?\d+(?:\.\d+)?(?:e-?\d+)?)"
)
_ENOSPC_LINE_RE = re.compile(r"cannot write .*(?:\[Errno 28\]|No space left on device)")
_SEVERITY_RANK = {"critical": 2, "warning": 1, "info": 0}
_MAX_TRACEBACK_CHARS = 4000


# --- process state and log -------------------------------------------------------------------------------
def _error_what(error: dict[str, Any]) -> str:
    what = f"{error['exception']}: {error['message']}" if error["exception"] else error["message"]
    return what if len(what) <= 200 else what[:197] + "..."


def detect_process(snapshot: dict[str, Any]) -> list[dict[str, Any]]:
    """FINISHED / CODE_ERROR / ENV / DIED / LOG_ERROR from the process state, meta status and log tail.

    A process whose state is unknown (status 'running' but no pid to ask) and whose log ends in an error
    is a WARNING: it may be dead, it may be a log of an earlier run; it is not 'no problems' and it is not
    a FIX either (auto-fix must never rewrite a script that may still be running).
    """
    status = str(snapshot.get("status") or "").lower()
    state = str(snapshot.get("process_state") or "unknown").lower()
    if status in FINISHED_STATUSES:
        return [finding("FINISHED", "info", f"run finished normally (status {status})", status=status)]
    if status in USER_STOPPED_STATUSES:
        return []
    log_tail = snapshot.get("log_tail") or ""
    exit_code = snapshot.get("exit_code")
    exit_code = exit_code if isinstance(exit_code, int) and not isinstance(exit_code, bool) else None
    script = snapshot.get("script") if isinstance(snapshot.get("script"), str) else None
    if script is None and isinstance(snapshot.get("script_mentions"), dict):
        script = snapshot["script_mentions"]
    if state == "remote":
        return _remote_findings(snapshot, log_tail, status, script, exit_code)
    if state == "unknown":
        if status not in ("running", "unknown", ""):
            return []
        error = classify_error(log_tail, script=script, exit_code=exit_code)
        if error is None:
            return []
        message = (
            f"process state unknown (status {status or 'unknown'}, no live pid) and the log ends in an "
            f"error ({error['kind']} {error['category']}): {_error_what(error)}"
        )
        return [finding("LOG_ERROR", "warning", message, process_state=state, status=status, **error)]
    if state not in DEAD_STATES:
        return []
    error = classify_error(log_tail, script=script, exit_code=exit_code)
    if error is None:
        code = f" (exit code {exit_code})" if exit_code is not None else ""
        return [
            finding(
                "DIED",
                "warning",
                f"process is {state}{code} while status is {status or 'unknown'}, and the log shows no crash",
                process_state=state,
                status=status,
                exit_code=exit_code,
            )
        ]
    what = _error_what(error)
    traceback = (last_traceback(log_tail) or "")[-_MAX_TRACEBACK_CHARS:]
    evidence = {**error, "process_state": state, "status": status, "traceback": traceback}
    where = f"; {error['origin']}" if error.get("origin") else ""
    if error["kind"] == "ENV":
        message = f"process died of an environment error ({error['category']}): {what}{where}"
        return [finding("ENV", "warning", message, **evidence)]
    return [finding("CODE_ERROR", "critical", f"process died with a code error: {what}{where}", **evidence)]


def _remote_findings(
    snapshot: dict[str, Any], log_tail: str, status: str, script: Any, exit_code: int | None
) -> list[dict[str, Any]]:
    """A run recorded on another host: judged on its files only, never a FIX (nothing is relaunched from
    here, and its process cannot be asked whether it is alive), and every message names the host to act on.
    """
    host = snapshot.get("host") or "another host"
    error = classify_error(log_tail, script=script, exit_code=exit_code)
    if error is None:
        return []
    message = (
        f"run on host {host}: its log ends in an error ({error['kind']} {error['category']}): "
        f"{_error_what(error)} — act on {host}; this assistant never signals or relaunches a run of another host"
    )
    return [
        finding("REMOTE_ERROR", "warning", message, process_state="remote", status=status, host=host, **error)
    ]


def detect_stall(
    snapshot: dict[str, Any], thresholds: Thresholds = DEFAULT_THRESHOLDS
) -> list[dict[str, Any]]:
    """STALL: the process is alive and running but no metric arrived for longer than the limit."""
    stall = snapshot.get("stall_seconds")
    status = str(snapshot.get("status") or "").lower()
    state = snapshot.get("process_state")
    if state not in ("alive", "remote") or stall is None:
        return []
    if status in USER_STOPPED_STATUSES or status in FINISHED_STATUSES or stall <= thresholds.stall_seconds:
        return []
    if state == "remote":  # its process cannot be asked from here: the files are all there is
        host = snapshot.get("host") or "another host"
        message = (
            f"no new metric for {stall:.0f} s (limit {thresholds.stall_seconds:.0f} s) from a run on host "
            f"{host} whose status is still {status or 'unknown'} — look at it on {host}"
        )
        return [finding("STALL", "warning", message, stall_seconds=stall, host=host)]
    message = (
        f"no new metric for {stall:.0f} s (limit {thresholds.stall_seconds:.0f} s) while the process is alive"
    )
    return [finding("STALL", "warning", message, stall_seconds=stall, limit=thresholds.stall_seconds)]


def detect_disk(
    snapshot: dict[str, Any], thresholds: Thresholds = DEFAULT_THRESHOLDS
) -> list[dict[str, Any]]:
    """DISK_FULL: the run folder's filesystem is (nearly) full, or the runtime said it cannot write (ENOSPC).

    Both come before the crash: checkpoints and metrics stop being saved while the process still runs.
    """
    free, total = snapshot.get("disk_free"), snapshot.get("disk_total")
    evidence: dict[str, Any] = {}
    small = (
        isinstance(free, int)
        and isinstance(total, int)
        and total > 0
        and free < thresholds.disk_min_free_bytes
    )
    if small and free / total < thresholds.disk_min_free_fraction:
        evidence |= {"disk_free": free, "disk_total": total}
    lines = [ln for ln in (snapshot.get("log_tail") or "").splitlines() if _ENOSPC_LINE_RE.search(ln)]
    if lines:
        evidence |= {"log_line": lines[-1].strip()[:300], "log_lines": len(lines)}
    if not evidence:
        return []
    parts = []
    if "disk_free" in evidence:
        parts.append(f"{free / 2**20:.0f} MiB free of {total / 2**30:.1f} GiB on the run folder's filesystem")
    if lines:
        parts.append(
            f"the runtime could not write ({len(lines)} line(s), last: {evidence['log_line'][:120]})"
        )
    return [
        finding("DISK_FULL", "warning", "disk full: " + "; ".join(parts), category="disk_full", **evidence)
    ]


# --- NaN / Inf -------------------------------------------------------------------------------------------
def detect_nan(rows: list[Row]) -> list[dict[str, Any]]:
    """NAN: a non-finite loss or grad_norm (any spelling, any run length); also loss exactly 0 with a NaN
    grad_norm.

    HF Trainer can log loss 0.0 while the gradients are NaN (its NaN-loss filtering hides the loss), so the
    pair is reported as NaN, not as a zero loss. A non-finite grad_norm that has since recovered is only
    'info': fp16 dynamic loss scaling skips overflowing steps by design (PyTorch AMP).
    """
    if not rows:
        return []
    bad: list[tuple[int, float | None, float | None]] = []
    for step, row in rows:
        loss, grad = value_of(row, "loss"), value_of(row, "grad_norm")
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


NAN_ALSO = ("kl", "reward", "reward_std", "policy_loss", "entropy")
"""RL metrics judged for NaN/Inf too (principle 1): a NaN KL or reward means the update is garbage."""


def detect_eval_nan(rows: list[Row]) -> list[dict[str, Any]]:
    """NAN in an eval loss (any group) or an RL metric, at its latest row: the model's predictions or the
    policy update are broken even if the loss rows look fine."""
    findings = []
    for metric in NAN_ALSO:
        values = metric_series(rows, metric)
        if values and not math.isfinite(values[-1][1]):
            bad = [s for s, v in values if not math.isfinite(v)]
            message = f"{metric} is non-finite ({values[-1][1]}) at step {values[-1][0]}, {len(bad)} of {len(values)} rows"
            findings.append(
                finding("NAN", "warning", message, key=metric, count=len(bad), last_step=values[-1][0])
            )
            break
    for key in keys_for([r for _, r in rows], "eval_loss"):
        values = series(rows, (key,))
        bad = [(s, v) for s, v in values if not math.isfinite(v)]
        if bad and values and bad[-1][0] == values[-1][0]:
            message = (
                f"{key} is non-finite ({bad[-1][1]}) at step {bad[-1][0]}, {len(bad)} of {len(values)} evals"
            )
            findings.append(finding("NAN", "warning", message, key=key, count=len(bad), last_step=bad[-1][0]))
            break
    return findings


# --- loss spikes -----------------------------------------------------------------------------------------
def _sigma_spikes(values: list[tuple[int, float]], th: Thresholds) -> list[dict[str, Any]]:
    """OLMo rule: a loss above mean + k sigma of the previous window.

    Window sums are kept as prefix sums (of values shifted by the first one, for precision), so a tick
    costs O(rows), not O(rows x window).
    """
    hits: list[dict[str, Any]] = []
    if len(values) <= th.spike_min_history:
        return hits
    shift = values[0][1]
    sums, squares = [0.0], [0.0]
    for _, v in values:
        d = v - shift
        sums.append(sums[-1] + d)
        squares.append(squares[-1] + d * d)
    for i in range(th.spike_min_history, len(values)):
        lo = max(0, i - th.spike_sigma_window)
        n = i - lo
        mean_d = (sums[i] - sums[lo]) / n
        sigma = math.sqrt(max(0.0, (squares[i] - squares[lo]) / n - mean_d * mean_d))
        mean = mean_d + shift
        step, value = values[i]
        limit = mean + th.spike_sigma * sigma
        if mean > th.loss_floor and value > limit and value > mean * (1 + th.spike_sigma_min_rel_jump):
            hits.append(
                {"rule": "sigma", "step": step, "value": value, "mean": mean, "sigma": sigma, "index": i}
            )
    return hits


def _running_mean_spikes(values: list[tuple[int, float]], th: Thresholds) -> list[dict[str, Any]]:
    """llm-foundry rule: more than `patience` consecutive losses >= multiplier x the running mean.

    Like KillLossSpike, outliers are kept out of the running window, so a lasting jump stays an outlier.
    """
    window: deque[float] = deque(maxlen=th.spike_mean_window)
    hits, streak, total = [], 0, 0.0
    for i, (step, value) in enumerate(values):
        mean = total / len(window) if len(window) >= th.spike_min_history else None
        if mean is not None and mean > th.loss_floor and value >= th.spike_mean_multiplier * mean:
            streak += 1
            if streak > th.spike_mean_patience:
                hits.append(
                    {
                        "rule": "running_mean",
                        "step": step,
                        "value": value,
                        "mean": mean,
                        "streak": streak,
                        "index": i,
                    }
                )
            continue
        streak = 0
        if len(window) == window.maxlen:
            total -= window[0]
        window.append(value)
        total += value
    return hits


def _max_factor_spikes(values: list[tuple[int, float]], th: Thresholds) -> list[dict[str, Any]]:
    """Megatron rule: a loss more than `factor` x the largest loss seen before it."""
    hits, largest = [], None
    for i, (step, value) in enumerate(values):
        if largest is not None and largest > th.loss_floor and value > th.spike_max_factor * largest:
            hits.append({"rule": "max_factor", "step": step, "value": value, "largest": largest, "index": i})
        largest = value if largest is None else max(largest, value)
    return hits


def detect_loss_spike(rows: list[Row], thresholds: Thresholds = DEFAULT_THRESHOLDS) -> list[dict[str, Any]]:
    """LOSS_SPIKE by any of three published rules (OLMo sigma, llm-foundry running mean, Megatron max).

    A warning while the spike lasts (its latest hit among the last `spike_recent_rows` rows); info once
    the loss has come back (principle 4 in thresholds.py).
    """
    if is_rl_run(rows):
        return []
    values = [(s, v) for s, v in metric_series(rows, "loss") if math.isfinite(v)]
    hits = _sigma_spikes(values, thresholds)
    hits += _running_mean_spikes(values, thresholds)
    hits += _max_factor_spikes(values, thresholds)
    if not hits:
        return []
    latest = max(hits, key=lambda h: h["index"])
    ongoing = latest["index"] >= len(values) - thresholds.spike_recent_rows
    explain = {
        "sigma": lambda h: (
            f"> mean+{thresholds.spike_sigma:g}σ ({fmt(h['mean'])}+{thresholds.spike_sigma:g}"
            f"×{fmt(h['sigma'])}) of the previous {thresholds.spike_sigma_window} steps (OLMo)"
        ),
        "running_mean": lambda h: (
            f">= {thresholds.spike_mean_multiplier:g}× the running mean {fmt(h['mean'])} "
            f"for {h['streak']} consecutive steps (llm-foundry)"
        ),
        "max_factor": lambda h: (
            f"> {thresholds.spike_max_factor:g}× the largest earlier loss {fmt(h['largest'])} (Megatron)"
        ),
    }[latest["rule"]](latest)
    rules = sorted({h["rule"] for h in hits})
    later = (
        ""
        if ongoing
        else f"; the loss has since come back (last {fmt(values[-1][1])} at step {values[-1][0]})"
    )
    message = (
        f"loss spike at step {latest['step']}: {fmt(latest['value'])} {explain}; {len(hits)} hit(s){later}"
    )
    latest = {k: v for k, v in latest.items() if k != "index"}
    return [
        finding(
            "LOSS_SPIKE",
            "warning" if ongoing else "info",
            message,
            latest=latest,
            rules=rules,
            hits=len(hits),
            ongoing=ongoing,
        )
    ]


# --- KL --------------------------------------------------------------------------------------------------
def detect_kl(
    rows: list[Row], log_tail: str = "", thresholds: Thresholds = DEFAULT_THRESHOLDS
) -> list[dict[str, Any]]:
    """KL: a logged KL above kl_max or below kl_min, or TRL's own negative-KL warning in the log.

    A missing `kl` key is normal (GRPO with beta = 0 does not compute it).
    """
    values = [(s, v) for s, v in metric_series(rows, "kl") if math.isfinite(v)]
    high = [(s, v) for s, v in values if v > thresholds.kl_max]
    low = [(s, v) for s, v in values if v < thresholds.kl_min]
    findings = []
    if high or low:
        step, value = max(high + low)
        side = f"> {thresholds.kl_max:g}" if value > thresholds.kl_max else f"< {thresholds.kl_min:g}"
        message = (
            f"KL {fmt(value)} {side} at step {step} ({len(high)} step(s) above {thresholds.kl_max:g}, "
            f"{len(low)} below {thresholds.kl_min:g}, of {len(values)} logged)"
        )
        evidence = {"step": step, "value": value, "above": len(high), "below": len(low), "rows": len(values)}
        evidence |= {"kl_max": thresholds.kl_max, "kl_min": thresholds.kl_min}
        findings.append(finding("KL", "warning", message, **evidence))
    warned = [float(m.group(1)) for m in _TRL_NEGATIVE_KL_RE.finditer(log_tail or "")]
    if warned:
        message = f"TRL warned {len(warned)} time(s) that KL is becoming negative (last {fmt(warned[-1])})"
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
        "reward_std": (metric_series(rows, "reward_std"), lambda v: abs(v) < eps, "→ 0"),
        "frac_reward_zero_std": (metric_series(rows, "frac_reward_zero_std"), lambda v: v > 1 - eps, "→ 1"),
        "grad_norm": (metric_series(rows, "grad_norm"), lambda v: abs(v) < eps, "→ 0"),
    }
    hit = {name: vals[-k:] for name, (vals, pred, _) in checks.items() if tail_all(vals, k, pred)}
    if not hit:
        return []
    steps = next(iter(hit.values()))
    parts = ", ".join(f"{name} {checks[name][2]}" for name in hit)
    message = (
        f"no learning signal: {parts} on each of the last {len(steps)} logged steps "
        f"({steps_text(steps[0][0], steps[-1][0])}, eps {eps:g})"
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
    rewards = [v for _, v in metric_series(rows, "reward") if math.isfinite(v)][-2 * k :]
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
    clipped = metric_series(rows, "length_clip_ratio")
    if not tail_all(clipped, k, lambda v: v >= thresholds.clipped_ratio_high):
        return []
    trend, previous, recent = _reward_trend(rows, k, thresholds.reward_fall_sigma)
    if trend == "falling":
        return []
    tail = clipped[-k:]
    reward_part = (
        "reward unknown" if previous is None else f"reward {trend} ({fmt(previous)} → {fmt(recent)})"
    )
    message = (
        f"length hacking: completions/clipped_ratio >= {thresholds.clipped_ratio_high:g} on each of the last "
        f"{len(tail)} logged steps ({steps_text(tail[0][0], tail[-1][0])}, last {fmt(tail[-1][1])}), {reward_part}"
    )
    evidence = {"clipped_ratio": [v for _, v in tail], "last_step": tail[-1][0], "reward_trend": trend}
    evidence |= {"reward_previous": previous, "reward_recent": recent, "limit": thresholds.clipped_ratio_high}
    return [finding("LENGTH_HACKING", "warning", message, **evidence)]


# --- entry points ----------------------------------------------------------------------------------------
def split_metrics(snapshot: dict[str, Any]) -> tuple[list[Any], list[Any]]:
    """(head, tail) metric rows of a snapshot: `metrics` starts with `head_rows` rows from the run's start
    when the tail does not reach back to them (snapshot.collect), or `head_metrics` holds them."""
    metrics = list(snapshot.get("metrics") or [])
    n = snapshot.get("head_rows")
    if isinstance(n, int) and 0 < n <= len(metrics):
        return metrics[:n], metrics[n:]
    return list(snapshot.get("head_metrics") or []), metrics


def triage(snapshot: dict[str, Any], thresholds: Thresholds = DEFAULT_THRESHOLDS) -> list[dict[str, Any]]:
    """Run every detector on a snapshot; process findings first, then metric findings."""
    head_metrics, metrics = split_metrics(snapshot)
    rows = training_rows(metrics)
    head = training_rows(head_metrics)
    evals = all_rows(metrics)
    log_tail = snapshot.get("log_tail") or ""
    process = detect_process(snapshot)
    disk = detect_disk(snapshot, thresholds)
    if any(f["kind"] == "ENV" and f["evidence"].get("category") == "disk_full" for f in process):
        disk = []
    elif disk and any(f["kind"] == "DIED" for f in process):  # dead, no traceback, and the disk is full
        process = [
            finding(
                "ENV", "warning", f"process died; {disk[0]['message']}", **disk[0]["evidence"], kind="ENV"
            )
        ]
        disk = []
    return [
        *process,
        *disk,
        *detect_stall(snapshot, thresholds),
        *detect_nan(rows),
        *detect_eval_nan(evals),
        *detect_frozen(rows, thresholds, head=head),
        *detect_chance(rows, thresholds),
        *detect_loss_spike(rows, thresholds),
        *detect_trend(rows, thresholds, eval_rows=evals),
        *detect_divergence(rows, thresholds, head=head),
        *detect_plateau(rows, thresholds, head=head),
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
