"""Property tests of the metric rules on generated curves (a seeded generator, a fixed set of seeds).

Healthy: long runs (1k-100k steps) under constant, linear, cosine and warm-up-then-decay LR schedules,
logged every step or every k steps, seen mid-run or at their end, must be LGTM. Pathological short curves
(8-30 rows) - frozen, rising, diverging, runaway negative, chance level - must be WARNING. Each under
several spellings of the loss and LR keys. Snapshots are windowed exactly as a monitor tick sees them
(snapshot.window_rows: the last METRIC_ROWS rows plus the run's first rows), and only those rows are
generated, so a 100,000-step run costs the same as a 1,000-step one.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from itertools import product
from typing import Any

import pytest

from twinkle_auto.monitor.detectors import rule_decision, triage
from twinkle_auto.monitor.snapshot import HEAD_ROWS, METRIC_ROWS

LOSS_KEYS = ("loss", "train/loss", "train_loss", "training_loss", "train loss", "loss/train")
LR_KEYS = ("lr", "learning_rate", "train/learning_rate")
EVAL_KEYS = ("eval_loss", "eval/loss", "val_loss", "validation loss")
SEEDS = (0, 1, 2)


# --- LR schedules: lr(t) for t in [0, 1] of the planned run -----------------------------------------------
def constant(t: float) -> float:
    return 1.0


def linear(t: float) -> float:
    return max(0.0, 1.0 - t)


def cosine(t: float) -> float:
    return 0.5 * (1 + math.cos(math.pi * min(1.0, t)))


def warmup_then_decay(t: float, warm: float = 0.05) -> float:
    return t / warm if t < warm else cosine((t - warm) / (1 - warm))


SCHEDULES: dict[str, Callable[[float], float]] = {
    "constant": constant,
    "linear": linear,
    "cosine": cosine,
    "warmup_cosine": warmup_then_decay,
}


def _indices(n_rows: int) -> list[int]:
    """Row indices a tick reads of an `n_rows` file: its first rows (when the tail misses them) + the tail."""
    tail = list(range(max(0, n_rows - METRIC_ROWS), n_rows))
    head = list(range(min(HEAD_ROWS, max(0, n_rows - METRIC_ROWS))))
    return head + tail


def healthy_snapshot(
    schedule: str, total_steps: int, every: int, seen_at: float, seed: int, spelling: int
) -> dict[str, Any]:
    """A learning run: the loss falls with the LR actually spent (the area under the schedule so far),
    from a start between 2 and 11 (an LM starts near ln(vocab)) to a floor, plus per-step noise averaged
    over the `every` steps of a logged row."""
    rng = random.Random(seed * 7919 + total_steps + every)
    lr_of = SCHEDULES[schedule]
    start, floor = rng.uniform(2.0, 11.0), rng.uniform(0.3, 2.0)
    rate = rng.uniform(4.0, 8.0)
    noise = rng.uniform(0.01, 0.04) / math.sqrt(every)
    peak_lr = rng.choice((1e-5, 5e-5, 2e-4, 1e-3))
    grid = 2000  # the area under the schedule, tabulated once
    area = [0.0]
    for i in range(grid):
        area.append(area[-1] + lr_of((i + 0.5) / grid) / grid)
    total_area = area[-1]
    last_step = int(total_steps * seen_at)
    n_rows = last_step // every
    loss_key = LOSS_KEYS[spelling % len(LOSS_KEYS)]
    lr_key = LR_KEYS[spelling % len(LR_KEYS)]
    eval_key = EVAL_KEYS[spelling % len(EVAL_KEYS)]
    eval_every = max(1, n_rows // 40)
    rows: list[dict[str, Any]] = []
    head_n = min(HEAD_ROWS, max(0, n_rows - METRIC_ROWS))
    head_count = 0
    for i in _indices(n_rows):
        step = (i + 1) * every
        t = step / total_steps
        progress = area[min(grid, int(t * grid))] / total_area
        clean = floor + (start - floor) * math.exp(-rate * progress)
        row = {
            "step": step,
            loss_key: clean * (1 + rng.gauss(0, noise)),
            lr_key: peak_lr * lr_of(t),
            "grad_norm": 1.0 + abs(rng.gauss(0, 0.2)),
            "epoch": round(t * 3, 4),
        }
        rows.append(row)
        if i % eval_every == eval_every - 1:
            rows.append({"step": step, eval_key: clean * 1.08, "eval_runtime": 12.5, "epoch": row["epoch"]})
        if i < head_n:
            head_count = len(rows)
    return {
        "process_state": "alive",
        "status": "running",
        "metrics": rows,
        "head_rows": head_count,
        "log_tail": "",
        "stall_seconds": 5.0,
        "last_step": last_step,
        "total_steps": total_steps,
    }


HEALTHY = [
    (schedule, total, every, seen_at, seed)
    for (schedule, (total, every), seen_at), seed in product(
        product(SCHEDULES, ((1_000, 1), (10_000, 10), (20_000, 1), (100_000, 50), (100_000, 1)), (0.6, 1.0)),
        SEEDS[:1],
    )
]


@pytest.mark.parametrize(("schedule", "total", "every", "seen_at", "seed"), HEALTHY)
def test_long_healthy_runs_are_lgtm(schedule: str, total: int, every: int, seen_at: float, seed: int) -> None:
    for spelling in range(2):
        snap = healthy_snapshot(schedule, total, every, seen_at, seed, spelling + seed + total % 5)
        findings = triage(snap)
        summary = [(f["kind"], f["message"]) for f in findings if f["severity"] != "info"]
        assert rule_decision(findings)["decision"] == "LGTM", summary


# --- short pathological curves -----------------------------------------------------------------------------
def _short(values: list[float], spelling: int, *, lr: float | None = 1e-4) -> dict[str, Any]:
    loss_key = LOSS_KEYS[spelling % len(LOSS_KEYS)]
    lr_key = LR_KEYS[spelling % len(LR_KEYS)]
    rows = []
    for i, v in enumerate(values):
        row: dict[str, Any] = {"step": (i + 1) * 10, loss_key: v}
        if lr is not None:
            row[lr_key] = lr
        rows.append(row)
    return {
        "process_state": "alive",
        "status": "running",
        "metrics": rows,
        "log_tail": "",
        "stall_seconds": 3.0,
    }


def frozen(n: int, rng: random.Random) -> list[float]:
    lead = [rng.uniform(1.5, 3.0) for _ in range(rng.randint(0, 3))]
    value = round(rng.uniform(0.2, 5.0), 4)
    return lead + [value] * (n - len(lead))


def rising(n: int, rng: random.Random) -> list[float]:
    start, gain = rng.uniform(0.5, 3.0), rng.uniform(0.3, 1.5)
    return [start * (1 + gain * i / (n - 1)) * (1 + rng.gauss(0, 0.01)) for i in range(n)]


def diverging(n: int, rng: random.Random) -> list[float]:
    start = rng.uniform(1.5, 3.0)
    best = start / rng.uniform(4.0, 8.0)
    half = n // 2
    down = [start - (start - best) * i / (half - 1) for i in range(half)]
    up = [best + (start * 1.0 - best) * (i + 1) / (n - half) for i in range(n - half)]
    return [v * (1 + rng.gauss(0, 0.01)) for v in down + up]


def runaway_negative(n: int, rng: random.Random) -> list[float]:
    start, end = rng.uniform(0.2, 1.0), -rng.uniform(3.0, 20.0)
    return [start + (end - start) * (i / (n - 1)) ** 1.5 + rng.gauss(0, 0.02) for i in range(n)]


def chance_level(n: int, rng: random.Random) -> list[float]:
    classes = rng.choice((2, 4, 10, 1000, 32000))
    lead = [math.log(classes) * rng.uniform(0.9, 1.1) for _ in range(rng.randint(0, 2))]
    return lead + [math.log(classes) * (1 + rng.gauss(0, 1e-4)) for _ in range(n - len(lead))]


PATHOLOGIES: dict[str, Callable[[int, random.Random], list[float]]] = {
    "frozen": frozen,
    "rising": rising,
    "diverging": diverging,
    "runaway_negative": runaway_negative,
    "chance_level": chance_level,
}


@pytest.mark.parametrize("shape", list(PATHOLOGIES))
@pytest.mark.parametrize("n", [8, 12, 20, 30])
def test_short_pathological_curves_warn(shape: str, n: int) -> None:
    for seed in SEEDS:
        rng = random.Random(1000 * seed + n)
        for spelling in (seed, seed + 3):
            snap = _short(PATHOLOGIES[shape](n, rng), spelling, lr=None if seed == 2 else 1e-4)
            findings = triage(snap)
            decision = rule_decision(findings)
            assert decision["decision"] == "WARNING", (
                shape,
                n,
                seed,
                LOSS_KEYS[spelling % 6],
                snap["metrics"][:3],
            )


def test_nan_under_any_spelling_at_any_length() -> None:
    for spelling, n in product(range(len(LOSS_KEYS)), (1, 2, 5)):
        values = [2.0 - 0.1 * i for i in range(n - 1)] + [float("nan")]
        findings = triage(_short(values, spelling))
        assert [f["kind"] for f in findings] == ["NAN"], LOSS_KEYS[spelling]


def test_unknown_keys_never_drop_a_row() -> None:
    snap = _short([2.0, 1.9, float("inf")], 0)
    for row in snap["metrics"]:
        row["my/custom metric"] = 3.0
        row["eval_samples_seen"] = 10
    assert [f["kind"] for f in triage(snap)] == ["NAN"]
