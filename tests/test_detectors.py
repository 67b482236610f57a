"""Each detector on small synthetic series: one case that must fire, and the look-alikes that must not."""

from __future__ import annotations

import dataclasses
import math
import random

import pytest

from twinkle_auto.monitor import detectors
from twinkle_auto.monitor.detectors import (
    detect_chance,
    detect_divergence,
    detect_frozen,
    detect_kl,
    detect_length_hacking,
    detect_loss_spike,
    detect_nan,
    detect_no_signal,
    detect_plateau,
    detect_process,
    detect_stall,
    detect_trend,
    rule_decision,
    training_rows,
    triage,
)
from twinkle_auto.monitor.metric_names import canonical, unknown_keys
from twinkle_auto.monitor.thresholds import DEFAULT_THRESHOLDS, Thresholds

NAN, INF = float("nan"), float("inf")


def rows_of(losses: list[float], **extra: list[float]) -> list[dict]:
    """Metric rows with step = 10, 20, ..., the given loss and any extra per-row series."""
    out = []
    for i, loss in enumerate(losses):
        row = {"step": 10 * (i + 1), "loss": loss}
        row.update({key.replace("__", "/"): values[i] for key, values in extra.items()})
        out.append(row)
    return out


def decreasing(
    n: int, start: float = 2.5, end: float = 1.0, noise: float = 0.05, seed: int = 0
) -> list[float]:
    """A healthy noisy loss curve: exponential-ish decay plus Gaussian noise."""
    rng = random.Random(seed)
    return [end + (start - end) * math.exp(-4 * i / n) + rng.gauss(0, noise) for i in range(n)]


def kinds(findings: list[dict]) -> list[str]:
    return [f["kind"] for f in findings]


def snapshot(**kw: object) -> dict:
    base = {
        "process_state": "alive",
        "status": "running",
        "metrics": [],
        "log_tail": "",
        "stall_seconds": None,
    }
    return base | kw


# --- thresholds ------------------------------------------------------------------------------------------
def test_thresholds_are_frozen_and_documented() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        DEFAULT_THRESHOLDS.stall_seconds = 1  # type: ignore[misc]
    assert DEFAULT_THRESHOLDS.stall_seconds == 300
    assert (DEFAULT_THRESHOLDS.spike_sigma, DEFAULT_THRESHOLDS.spike_sigma_window) == (6, 128)
    assert DEFAULT_THRESHOLDS.spike_max_factor == 10
    assert (DEFAULT_THRESHOLDS.kl_max, DEFAULT_THRESHOLDS.kl_min) == (10, -1)


# --- rows ------------------------------------------------------------------------------------------------
def test_eval_and_summary_rows_are_not_steps() -> None:
    metrics = [
        {"loss": 2.0, "grad_norm": 1.0},
        {"eval_loss": 1.9, "step": 5},
        {"epoch": 1.0, "predict_loss": 1.8},
        {"train_runtime": 10.0, "train_loss": 1.9, "step": 7},
        "not a dict",
        {"loss": 1.8},
    ]
    assert training_rows(metrics) == [(0, metrics[0]), (5, metrics[5])]  # index when `step` is missing


# --- NaN -------------------------------------------------------------------------------------------------
def test_nan_loss_is_critical_while_ongoing() -> None:
    found = detect_nan(training_rows(rows_of([2.0, 1.9, NAN])))
    assert kinds(found) == ["NAN"] and found[0]["severity"] == "critical"
    assert found[0]["evidence"]["first_step"] == 30


def test_inf_grad_norm_is_flagged() -> None:
    found = detect_nan(training_rows(rows_of([2.0, 1.9], grad_norm=[1.0, INF])))
    assert kinds(found) == ["NAN"] and found[0]["severity"] == "warning"


def test_zero_loss_with_nan_grad_norm() -> None:
    found = detect_nan(training_rows(rows_of([0.0] * 3, grad_norm=[NAN] * 3)))
    assert found[0]["severity"] == "critical" and "hides NaN" in found[0]["message"]


def test_recovered_grad_overflow_is_info_only() -> None:
    # fp16 loss scaling: an overflowing step early on is skipped by design.
    found = detect_nan(training_rows(rows_of([2.0, 1.9, 1.8], grad_norm=[INF, 1.0, 0.9])))
    assert found[0]["severity"] == "info"
    assert rule_decision(found)["decision"] == "LGTM"


def test_finite_values_give_no_nan_finding() -> None:
    assert detect_nan(training_rows(rows_of([2.0, 0.0, 1.0], grad_norm=[1.0, 0.0, 0.5]))) == []


# --- loss spikes -----------------------------------------------------------------------------------------
def test_single_sigma_spike() -> None:
    losses = decreasing(60, noise=0.02) + [5.0] + decreasing(5, 1.05, 1.0, 0.02)
    found = detect_loss_spike(training_rows(rows_of(losses)))
    assert kinds(found) == ["LOSS_SPIKE"]
    assert found[0]["evidence"]["latest"]["step"] == 610
    assert "sigma" in found[0]["evidence"]["rules"]


def test_lasting_jump_hits_running_mean_rule() -> None:
    # A jump to ~2.2x the running mean that lasts: the llm-foundry rule (more than 4 consecutive outliers).
    losses = [1.0 + 0.3 * (i % 2) for i in range(40)] + [2.6] * 6
    found = detect_loss_spike(training_rows(rows_of(losses)))
    assert "running_mean" in found[0]["evidence"]["rules"]
    # Four outliers in a row are tolerated by that rule (patience 4).
    short = detect_loss_spike(training_rows(rows_of(losses[:44])))
    assert not short or "running_mean" not in short[0]["evidence"]["rules"]


def test_ten_times_largest_is_megatron_rule() -> None:
    found = detect_loss_spike(training_rows(rows_of([2.0, 1.5, 1.2, 25.0])))
    assert found[0]["evidence"]["rules"] == ["max_factor"]


def test_healthy_noisy_decrease_is_not_a_spike() -> None:
    for seed in range(5):
        losses = decreasing(300, noise=0.08, seed=seed)
        assert detect_loss_spike(training_rows(rows_of(losses))) == []


def test_fast_initial_drop_is_not_a_spike() -> None:
    assert detect_loss_spike(training_rows(rows_of([8.3, 1.26, 0.5, 0.43]))) == []


def test_rl_loss_is_not_judged_for_spikes() -> None:
    losses = [0.0] * 30 + [0.02] * 6
    rows = rows_of(losses, reward=[1.0] * 36, reward_std=[0.5] * 36)
    assert detect_loss_spike(training_rows(rows)) == []


# --- plateau ---------------------------------------------------------------------------------------------
def test_flat_loss_is_a_plateau() -> None:
    rng = random.Random(1)
    losses = [2.1 + rng.gauss(0, 0.1) for _ in range(100)]
    found = detect_plateau(training_rows(rows_of(losses)))
    assert kinds(found) == ["PLATEAU"] and found[0]["evidence"]["rel_drop"] < 0.03


def test_rising_loss_is_reported_as_plateau_too() -> None:
    losses = [1.0 + 0.01 * i for i in range(60)]
    assert kinds(detect_plateau(training_rows(rows_of(losses)))) == ["PLATEAU"]


def test_short_runs_never_plateau() -> None:
    losses = [2.0] * (DEFAULT_THRESHOLDS.plateau_min_rows - 1)
    assert detect_plateau(training_rows(rows_of(losses))) == []


def test_converged_tail_after_a_real_drop_is_not_a_plateau() -> None:
    losses = decreasing(200, start=2.0, end=1.0, noise=0.03)
    assert detect_plateau(training_rows(rows_of(losses))) == []


def test_plateau_threshold_is_configurable() -> None:
    losses = decreasing(200, start=2.0, end=1.0, noise=0.03)
    strict = Thresholds(plateau_min_rel_drop=0.9)
    assert kinds(detect_plateau(training_rows(rows_of(losses)), strict)) == ["PLATEAU"]


# --- KL --------------------------------------------------------------------------------------------------
def test_kl_too_high() -> None:
    found = detect_kl(training_rows(rows_of([0.1] * 3, kl=[0.5, 3.0, 12.0])))
    assert kinds(found) == ["KL"] and found[0]["evidence"]["value"] == 12.0


def test_kl_negative() -> None:
    found = detect_kl(training_rows(rows_of([0.1] * 3, objective__kl=[0.1, -0.2, -3.5])))
    assert kinds(found) == ["KL"] and found[0]["evidence"]["below"] == 1


def test_kl_in_range_or_missing_is_fine() -> None:
    assert detect_kl(training_rows(rows_of([0.1] * 3, kl=[0.0005, 0.001, -0.01]))) == []
    assert detect_kl(training_rows(rows_of([0.1] * 3))) == []


def test_trl_negative_kl_warning_in_log() -> None:
    log = "ppo_trainer.py:1194: UserWarning: KL divergence is starting to become negative: -5.27 - this might"
    found = detect_kl([], log)
    assert kinds(found) == ["KL"] and found[0]["evidence"]["values"] == [-5.27]


# --- learning signal -------------------------------------------------------------------------------------
def test_zero_grad_norm_for_the_last_steps() -> None:
    grads = [0.3, 47.0, 0.0, 0.0, 0.0, 0.0, 0.0]
    found = detect_no_signal(training_rows(rows_of([0.0] * 7, grad_norm=grads, reward_std=[0.3] * 7)))
    assert kinds(found) == ["NO_SIGNAL"] and "grad_norm" in found[0]["evidence"]


def test_frac_reward_zero_std_one_in_a_single_row() -> None:
    rows = rows_of([0.0], grad_norm=[0.0], reward_std=[0.0], frac_reward_zero_std=[1.0])
    found = detect_no_signal(training_rows(rows))
    assert set(found[0]["evidence"]) >= {"grad_norm", "reward_std", "frac_reward_zero_std"}


def test_occasional_zero_grad_is_not_collapse() -> None:
    grads = [0.3, 0.0, 0.2, 0.0, 0.25, 0.0, 0.3]
    fracs = [0.2, 1.0, 0.4, 1.0, 0.0, 0.9, 0.2]
    rows = rows_of([0.0] * 7, grad_norm=grads, reward_std=[0.4] * 7, frac_reward_zero_std=fracs)
    assert detect_no_signal(training_rows(rows)) == []


def test_grpo_zero_loss_with_signal_is_fine() -> None:
    rows = rows_of([0.0] * 4, grad_norm=[0.09, 0.1, 0.11, 0.1], reward_std=[0.57, 0.75, 0.63, 0.79])
    assert triage(snapshot(metrics=rows)) == []


# --- length hacking --------------------------------------------------------------------------------------
def test_clipped_ratio_to_one_with_flat_reward() -> None:
    clipped = [0.5, 0.7, 0.8, 0.9, 0.95, 1.0, 1.0, 1.0, 0.95, 1.0]
    reward = [0.5, 0.6, 0.4, 0.7, 0.5, 0.6, 0.5, 0.7, 0.6, 0.5]
    found = detect_length_hacking(
        training_rows(rows_of([0.0] * 10, completions__clipped_ratio=clipped, reward=reward))
    )
    assert kinds(found) == ["LENGTH_HACKING"] and found[0]["evidence"]["reward_trend"] == "flat"


def test_clipped_ratio_high_but_reward_falling_is_not_hacking() -> None:
    clipped = [1.0] * 10
    reward = [2.0, 2.1, 1.9, 2.0, 2.05, 0.1, 0.0, 0.2, 0.1, 0.0]
    rows = rows_of([0.0] * 10, completions__clipped_ratio=clipped, reward=reward)
    assert detect_length_hacking(training_rows(rows)) == []


def test_clipped_ratio_not_at_one() -> None:
    clipped = [0.9, 0.95, 0.6, 1.0, 1.0]
    rows = rows_of([0.0] * 5, completions__clipped_ratio=clipped, reward=[1.0] * 5)
    assert detect_length_hacking(training_rows(rows)) == []


# --- stall -----------------------------------------------------------------------------------------------
def test_stall_when_alive_and_silent_too_long() -> None:
    assert kinds(detect_stall(snapshot(stall_seconds=301.0))) == ["STALL"]
    assert detect_stall(snapshot(stall_seconds=299.0)) == []
    assert detect_stall(snapshot(stall_seconds=None)) == []
    assert detect_stall(snapshot(stall_seconds=1000.0, status="paused")) == []
    assert detect_stall(snapshot(stall_seconds=1000.0, process_state="dead")) == []
    assert kinds(detect_stall(snapshot(stall_seconds=61.0), Thresholds(stall_seconds=60))) == ["STALL"]


# --- process ---------------------------------------------------------------------------------------------
CODE_TB = "Traceback (most recent call last):\n  File \"train.py\", line 3\nKeyError: 'text'\n"


def test_dead_with_code_error_is_a_fix_candidate() -> None:
    findings = triage(snapshot(process_state="dead", log_tail=CODE_TB))
    assert kinds(findings) == ["CODE_ERROR"] and findings[0]["severity"] == "critical"
    assert "KeyError" in findings[0]["evidence"]["traceback"]
    assert rule_decision(findings)["decision"] == "FIX"


def test_dead_with_environment_error_is_a_warning() -> None:
    findings = triage(snapshot(process_state="dead", log_tail="torch.OutOfMemoryError: CUDA out of memory."))
    assert kinds(findings) == ["ENV"] and findings[0]["evidence"]["category"] == "cuda_oom"
    assert rule_decision(findings)["decision"] == "WARNING"


def test_dead_without_traceback_while_running() -> None:
    findings = triage(snapshot(process_state="dead", log_tail="step 5 loss 1.0\n"))
    assert kinds(findings) == ["DIED"]
    assert rule_decision(findings)["decision"] == "WARNING"


def test_zombie_counts_as_dead() -> None:
    assert kinds(detect_process(snapshot(process_state="zombie"))) == ["DIED"]


def test_finished_is_info_and_lgtm() -> None:
    findings = triage(snapshot(process_state="dead", status="completed", metrics=rows_of(decreasing(60))))
    assert kinds(findings) == ["FINISHED"]
    assert rule_decision(findings) == {"decision": "LGTM", "reason": "run finished normally"}


def test_finished_with_metric_pathology_is_a_warning() -> None:
    findings = triage(snapshot(process_state="dead", status="finished", metrics=rows_of([2.0, NAN])))
    assert rule_decision(findings)["decision"] == "WARNING"


def test_user_stopped_or_unknown_process_is_not_a_death() -> None:
    assert detect_process(snapshot(process_state="dead", status="stopped", log_tail=CODE_TB)) == []
    assert detect_process(snapshot(process_state="unknown")) == []
    assert detect_process(snapshot(process_state="alive", log_tail=CODE_TB)) == []


# --- decision --------------------------------------------------------------------------------------------
def test_rule_decision_priorities() -> None:
    warn = {"kind": "PLATEAU", "severity": "warning", "message": "flat", "evidence": {}}
    crit = {"kind": "NAN", "severity": "critical", "message": "nan", "evidence": {}}
    code = {"kind": "CODE_ERROR", "severity": "critical", "message": "KeyError", "evidence": {}}
    assert rule_decision([]) == {"decision": "LGTM", "reason": "no problems found"}
    assert rule_decision([warn, crit]) == {"decision": "WARNING", "reason": "NAN: nan (+1 more)"}
    assert rule_decision([warn, code])["decision"] == "FIX"
    assert "\n" not in rule_decision([warn, crit])["reason"]


def test_healthy_live_run_is_lgtm() -> None:
    metrics = rows_of(decreasing(300, noise=0.05), grad_norm=[1.0] * 300)
    metrics.insert(100, {"eval_loss": 1.5, "step": 1000})
    findings = triage(snapshot(metrics=metrics, stall_seconds=12.0))
    assert findings == [] and rule_decision(findings)["decision"] == "LGTM"


# --- metric names --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("key", "meaning"),
    [
        *[
            (k, "loss")
            for k in ("loss", "train/loss", "train_loss", "training_loss", "train loss", "loss/train")
        ],
        *[
            (k, "eval_loss")
            for k in ("eval_loss", "eval/loss", "val_loss", "validation loss", "eval_g0_loss")
        ],
        ("learning_rate", "lr"),
        ("train/learning_rate", "lr"),
        ("actor/grad_norm", "grad_norm"),
        ("objective/kl", "kl"),
        ("actor/kl_loss", "kl"),
        ("critic/rewards/mean", "reward"),
        ("actor/entropy", "entropy"),
        ("completions/clipped_ratio", "length_clip_ratio"),
        ("response_length/clip_ratio", "length_clip_ratio"),
        ("lm-loss-training/lm loss", "loss"),  # Megatron TensorBoard tags
        ("lm-loss-validation/lm loss validation", "eval_loss"),
        ("train_loss_step", "loss"),  # Lightning
        ("loss scale", None),
        ("my/custom metric", None),
        ("step", None),
    ],
)
def test_metric_names_are_normalized(key: str, meaning: str | None) -> None:
    assert canonical(key) == meaning
    for spelling in (*detectors.LOSS_KEYS,):
        assert canonical(spelling) == "loss"


def test_eval_rows_are_found_by_prefix_and_unknown_keys_kept() -> None:
    metrics = [
        {"step": 1, "training_loss": 2.0, "my_metric": 5},
        {"step": 1, "val_loss": 2.1, "val_acc": 0.3},
        {"step": 2, "validation loss": 2.0},
        {"step": 2, "training_loss": 1.9, "my_metric": 6},
    ]
    assert [s for s, _ in training_rows(metrics)] == [1, 2]
    assert unknown_keys(metrics) == ["my_metric", "val_acc"]


# --- shapes of the loss --------------------------------------------------------------------------------------
def test_frozen_loss_and_never_moved() -> None:
    found = detect_frozen(training_rows(rows_of([1.234567] * 6)))
    assert kinds(found) == ["FROZEN"] and found[0]["evidence"]["since_start"]
    assert detect_frozen(training_rows(rows_of([2.0, 1.5, 1.0, 1.0, 1.0, 1.0]))) == []
    assert detect_frozen(training_rows(rows_of([0.0] * 6, reward=[1.0] * 6))) == []  # RL: loss 0 is normal


def test_chance_level_and_warmup_waits() -> None:
    ln4 = math.log(4)
    found = detect_chance(training_rows(rows_of([1.30, ln4 + 1e-5, ln4 - 2e-5, ln4, ln4 + 3e-5])))
    assert kinds(found) == ["CHANCE"] and found[0]["evidence"]["classes"] == 4
    warm = rows_of([ln4] * 5, lr=[1e-6, 2e-6, 3e-6, 4e-6, 5e-6])
    assert detect_chance(training_rows(warm)) == []
    assert detect_chance(training_rows(rows_of([1.5, 1.45, 1.40, 1.38, 1.35]))) == []


def test_rising_and_eval_rising() -> None:
    found = detect_trend(training_rows(rows_of([1.0 + 0.05 * i for i in range(10)])))
    assert kinds(found) == ["LOSS_RISING"]
    train = decreasing(40, noise=0.01)
    evals = [{"step": 10 * (i + 1), "eval_loss": 1.0 + 0.1 * i} for i in range(40)]
    metrics = rows_of(train) + evals
    found = detect_trend(
        training_rows(metrics), eval_rows=training_rows(metrics) + [(r["step"], r) for r in evals]
    )
    assert "EVAL_RISING" in kinds(found) and "overfitting" in found[-1]["message"]
    assert detect_trend(training_rows(rows_of(decreasing(300, noise=0.08)))) == []


def test_divergence_from_best_and_noise_is_not() -> None:
    losses = [2.0 - 0.2 * i for i in range(9)] + [0.4 + 0.2 * i for i in range(9)]
    assert kinds(detect_divergence(training_rows(rows_of(losses)))) == ["DIVERGENCE"]
    rng = random.Random(3)
    flat_tail = decreasing(100, noise=0.0) + [1.0 + rng.gauss(0, 0.05) for _ in range(200)]
    assert detect_divergence(training_rows(rows_of(flat_tail))) == []


def test_runaway_negative_loss() -> None:
    losses = [0.5 - 0.6 * i for i in range(12)]
    assert "LOSS_RUNAWAY" in kinds(detect_trend(training_rows(rows_of(losses))))


def test_a_recovered_spike_is_info() -> None:
    losses = decreasing(60, noise=0.02) + [5.0] + decreasing(10, 1.05, 1.0, 0.02)
    found = detect_loss_spike(training_rows(rows_of(losses)))
    assert found[0]["severity"] == "info" and "come back" in found[0]["message"]
    ongoing = detect_loss_spike(training_rows(rows_of(decreasing(60, noise=0.02) + [5.0])))
    assert ongoing[0]["severity"] == "warning"


def test_plateau_is_judged_from_the_runs_start() -> None:
    rng = random.Random(5)
    # The snapshot's tail is flat, but its first rows (head) show the run fell from 3.0: convergence.
    head = [{"step": i, "loss": 3.0 - 0.01 * i} for i in range(64)]
    tail = [{"step": 10_000 + i, "loss": 0.5 + rng.gauss(0, 0.01)} for i in range(512)]
    assert triage(snapshot(metrics=head + tail, head_rows=64)) == []
    assert kinds(triage(snapshot(metrics=tail))) == ["PLATEAU"]


# --- process, disk -------------------------------------------------------------------------------------------
def test_unknown_process_state_with_a_final_traceback_is_a_warning() -> None:
    findings = triage(snapshot(process_state="unknown", status="running", pid=None, log_tail=CODE_TB))
    assert kinds(findings) == ["LOG_ERROR"] and rule_decision(findings)["decision"] == "WARNING"
    assert triage(snapshot(process_state="unknown", status="running", log_tail="step 1\n")) == []


def test_dead_process_that_exited_zero_with_an_error_line_is_not_a_crash() -> None:
    log = "step 9\nValueError: bad sample 17, skipped\n"
    exited_ok = triage(snapshot(process_state="dead", exit_code=0, log_tail=log))
    assert kinds(exited_ok) == ["DIED"] and rule_decision(exited_ok)["decision"] == "WARNING"
    assert kinds(triage(snapshot(process_state="dead", exit_code=1, log_tail=log))) == ["CODE_ERROR"]


def test_disk_full_from_the_filesystem_and_from_enospc_lines() -> None:
    full = {"disk_free": 10 * 2**20, "disk_total": 100 * 2**30}
    assert kinds(triage(snapshot(**full))) == ["DISK_FULL"]
    assert triage(snapshot(disk_free=50 * 2**30, disk_total=100 * 2**30)) == []
    line = (
        "twinkle runtime: cannot write metrics.jsonl: [Errno 28] No space left on device; will keep trying\n"
    )
    assert kinds(triage(snapshot(log_tail=line))) == ["DISK_FULL"]
    dead = triage(snapshot(process_state="dead", log_tail="step 3\n", **full))
    assert kinds(dead) == ["ENV"] and dead[0]["evidence"]["category"] == "disk_full"


def test_nan_in_an_rl_metric_or_an_eval_loss() -> None:
    rows = rows_of([0.0] * 3, kl=[0.1, 0.2, NAN], reward=[0.5] * 3)
    assert kinds(triage(snapshot(metrics=rows))) == ["NAN"]
    evals = rows_of(decreasing(5)) + [{"step": 60, "eval/loss": NAN}]
    assert kinds(triage(snapshot(metrics=evals))) == ["NAN"]
