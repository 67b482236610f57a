"""The background monitor loop with real processes: every running run is watched, a crash wakes it at once."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from conftest import EXAMPLES, read_meta, wait_for
from fakes import ScriptedChatModel
from test_monitor_graph import BUGGY_TINY, GOOD_PATCH

from twinkle_auto.app.monitor_loop import MonitorLoop
from twinkle_auto.connection import Connection

pytestmark = pytest.mark.slow
TINY = (EXAMPLES / "tiny" / "train.py").read_text()


def test_a_crash_wakes_the_loop_and_is_fixed_while_other_runs_are_watched(home: Path, controller) -> None:
    connection = Connection(controller.store, controller)
    messages: list[tuple[float, str, str]] = []
    llm = ScriptedChatModel(responses=[GOOD_PATCH], default=AssertionError("unexpected LLM call"))
    loop = MonitorLoop(
        connection, llm, interval=60.0, notify=lambda r, m: messages.append((time.time(), r, m))
    )

    async def scenario() -> float:
        stop = asyncio.Event()
        task = asyncio.create_task(loop.run(stop))
        controller.start("healthy", TINY, env={"STEP_SLEEP": "0.02", "TOTAL_STEPS": "100000"})
        await asyncio.sleep(0.5)
        # crash late enough that the loop is already asleep in its 60 s wait
        controller.start(
            "crashy",
            BUGGY_TINY.replace("def main", "import time\ntime.sleep(1.5)\ndef main", 1),
            env={"STEP_SLEEP": "0", "TOTAL_STEPS": "40"},
        )
        await asyncio.to_thread(wait_for, lambda: read_meta(home, "crashy").get("exit_code") is not None, 30)
        crashed_at = time.time()
        await asyncio.to_thread(wait_for, lambda: any("FIX crashy" in m for _, _, m in messages), 20)
        stop.set()
        await asyncio.wait_for(task, 30)
        return next(t for t, _, m in messages if "FIX crashy" in m) - crashed_at

    latency = asyncio.run(scenario())
    assert latency < 10, f"crash to FIX took {latency:.1f}s"  # the benchmark measures it properly
    assert "healthy" in loop.last_results and loop.last_results["healthy"]["decision"] == "LGTM"
    wait_for(lambda: read_meta(home, "crashy").get("status") == "finished", timeout=60)
    assert (home / "crashy" / "train_v1.py").exists()
    assert (
        len(llm.calls) == 1
    )  # one patch (a code error needs no verdict); the healthy run never asked the LLM
    controller.pause("healthy")


def test_a_judged_dead_run_is_not_ticked_again(home: Path, controller) -> None:
    connection = Connection(controller.store, controller)
    controller.start("dead", "raise SystemExit(0)\n")
    wait_for(lambda: read_meta(home, "dead").get("exit_code") is not None)
    (home / "dead" / "meta.json").write_text(
        (home / "dead" / "meta.json").read_text().replace('"finished"', '"running"')
    )
    loop = MonitorLoop(connection, None)
    first = asyncio.run(loop.tick_all())
    assert first["dead"]["decision"] == "WARNING"  # died silently while "running"
    assert asyncio.run(loop.tick_all()) == {}
