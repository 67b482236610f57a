"""SIGKILL at random moments never leaves a meta.json that fails to parse, and loses at most the line
being written (which the relaunched script writes again, since it resumes from the last whole line)."""

from __future__ import annotations

import json
import os
import random
import signal
import textwrap
import time
from pathlib import Path

import pytest
from conftest import read_meta, wait_for

pytestmark = pytest.mark.slow

KILLS = 50

SCRIPT = textwrap.dedent(
    """
    from twinkle_auto.runtime import TrainingRuntime, training
    training.PROGRESS_INTERVAL_S = 0.0   # save progress on every step: the worst case for meta.json
    rt = TrainingRuntime()
    rt.start("torture", {"total_steps": 10**9, "padding": "x" * 2000})
    step = rt.get_resume_info()["last_step"]
    payload = {f"metric_{i}": i * 0.001 for i in range(300)}   # ~6 KB lines: torn writes are likely
    while True:
        step += 1
        rt.log_metrics(step=step, loss=1.0 / step, **payload)
    """
)


def test_random_sigkills_never_corrupt_meta_and_lose_at_most_the_last_line(home: Path, controller) -> None:
    rng = random.Random(1234)
    controller.create("torture", SCRIPT)
    folder = home / "torture"
    metrics = folder / "metrics.jsonl"
    for _ in range(KILLS):
        launched = controller.launch("torture")
        start = time.monotonic()
        wait_for(lambda: metrics.exists() and metrics.stat().st_size > 0, timeout=30)
        time.sleep(rng.uniform(0.0, 0.25))
        os.killpg(launched.pid, signal.SIGKILL)
        controller._children[launched.pid].wait(timeout=10)
        json.loads((folder / "meta.json").read_text())  # must always parse
        assert time.monotonic() - start < 30
    meta = read_meta(home, "torture")
    assert meta["config"]["padding"] == "x" * 2000  # never dropped by a merge
    assert meta["launch_count"] == KILLS

    steps: list[int] = []
    torn = 0
    for line in metrics.read_bytes().split(b"\n"):
        if not line:
            continue
        try:
            steps.append(json.loads(line)["step"])
        except ValueError:
            torn += 1
    assert torn <= KILLS
    assert steps, "no metrics were written"
    # every step from 1 to the last appears: a torn line was the last one, written again after relaunch
    assert set(steps) == set(range(1, max(steps) + 1))
    leftovers = [p.name for p in folder.iterdir() if p.name.endswith(".tmp")]
    assert len(leftovers) <= KILLS  # temp files of killed writers, never read as meta
