"""Monitor benchmarks (issue 3), printed in one run:

1. LLM calls during a simulated healthy hour of a progressing run (120 ticks of 30 s), target 0. The run
   is long and converged (it starts the hour at step 20,000 of a 3,000-step-scale decay: its last 512
   rows are flat), the case the old end-of-window plateau rule warned on from step ~12k.
2. Time from a training process's crash to the FIX decision, instant fake LLM, target <= 2 s.
3. Tick cost on a 1,000,000-line metrics file against a 1,000-line one, target <= 2x.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(Path(__file__).parent))
from _util import best_of, report  # noqa: E402
from fakes import ScriptedChatModel  # noqa: E402

from twinkle_auto.app.monitor_loop import MonitorLoop  # noqa: E402
from twinkle_auto.connection import Connection  # noqa: E402
from twinkle_auto.graphs.monitor.graph import compile_monitor_graph  # noqa: E402

TINY = (ROOT / "examples" / "tiny" / "train.py").read_text()
BUGGY = TINY.replace('rec["target"]', 'rec["targets"]', 1)
VERDICT = '{"decision": "FIX", "diagnosis": "KeyError: targets"}'
PATCH = (
    '<<<<<<< SEARCH\n        err = sum(wi * xi for wi, xi in zip(w, x, strict=True)) + b - rec["targets"]\n'
    '=======\n        err = sum(wi * xi for wi, xi in zip(w, x, strict=True)) + b - rec["target"]\n'
    ">>>>>>> REPLACE\n"
)


HEALTHY_START = 20_000
"""Rows already logged when the healthy hour starts: far past the loss's decay, a converged flat tail."""


def _alive_run(home: Path, run_id: str, rows: int) -> Path:
    folder = home / run_id
    folder.mkdir()
    meta = {
        "run_id": run_id,
        "status": "running",
        "pid": os.getpid(),
        "pid_create_time": psutil.Process().create_time(),
        "progress": {"total_steps": 10**7},
    }
    (folder / "meta.json").write_text(json.dumps(meta))
    (folder / "output.log").write_text("")
    row = '{"ts": %f, "step": %d, "loss": %f, "grad_norm": 1.0, "lr": 1e-05}\n'
    now = time.time()
    with open(folder / "metrics.jsonl", "w") as f:
        for start in range(0, rows, 10000):
            f.write(
                "".join(
                    row % (now - rows + i, i, 3.0 * math.exp(-i / 3000) + 0.5 + (i % 7) * 1e-3)
                    for i in range(start, min(rows, start + 10000))
                )
            )
    return folder


def healthy_hour(home: Path) -> int:
    folder = _alive_run(home, "healthy", HEALTHY_START)
    llm = ScriptedChatModel(default='{"decision": "WARNING", "diagnosis": "should not be asked"}')
    graph = compile_monitor_graph(llm, Connection.open(home))
    step = HEALTHY_START
    for _ in range(120):  # 30 s of training between ticks: 30 more steps appended
        with open(folder / "metrics.jsonl", "a") as f:
            for _ in range(30):
                step += 1
                loss = 3.0 * math.exp(-step / 3000) + 0.5 + (step % 7) * 1e-3  # a real, decaying curve
                f.write(
                    json.dumps({"ts": time.time(), "step": step, "loss": loss, "grad_norm": 1.0, "lr": 1e-5})
                    + "\n"
                )
        out = graph.invoke({"run_id": "healthy"})
        assert out["decision"] == "LGTM", out.get("findings")
    return len(llm.calls)


def crash_to_fix(home: Path) -> float:
    connection = Connection.open(home)
    llm = ScriptedChatModel(responses=[VERDICT, PATCH])
    seen: dict[str, float] = {}
    loop = MonitorLoop(
        connection,
        llm,
        interval=30.0,
        notify=lambda run, msg: seen.setdefault("fix", time.time()) if "FIX" in msg else None,
    )
    exit_at: dict[str, float] = {}
    connection.controller.on_exit(lambda run, code: exit_at.setdefault(run, time.time()))

    async def scenario() -> float:
        stop = asyncio.Event()
        task = asyncio.create_task(loop.run(stop))
        await asyncio.sleep(0.3)  # the loop is now waiting out its 30 s interval
        connection.controller.start(
            "crash",
            BUGGY.replace("import json", "import json\nimport time\ntime.sleep(1)", 1),
            env={"STEP_SLEEP": "0", "TOTAL_STEPS": "30"},
        )
        while "fix" not in seen:
            await asyncio.sleep(0.01)
        stop.set()
        await task
        return seen["fix"] - exit_at["crash"]

    latency = asyncio.run(scenario())
    for pid, child in list(connection.controller._children.items()):
        if child.poll() is None:
            os.killpg(pid, 9)
            child.wait()
    return latency


def tick_ratio(home: Path) -> float:
    _alive_run(home, "small", 1_000)
    _alive_run(home, "big", 1_000_000)
    graph = compile_monitor_graph(None, Connection.open(home))
    t_small = best_of(lambda: graph.invoke({"run_id": "small"}), repeats=9, number=5)
    t_big = best_of(lambda: graph.invoke({"run_id": "big"}), repeats=9, number=5)
    print(f"  tick on 1,000 lines {t_small * 1e3:.2f} ms, on 1,000,000 lines {t_big * 1e3:.2f} ms")
    return t_big / t_small


def main() -> int:
    with tempfile.TemporaryDirectory() as d:
        home = Path(d)
        os.environ["TWINKLE_HOME"] = str(home)
        ok = report("LLM calls in a healthy hour (120 ticks)", healthy_hour(home), 0, unit="")
        ok &= report("crash -> FIX decision (instant fake LLM), seconds", crash_to_fix(home), 2.0, unit="s")
        ok &= report("monitor tick: 1,000,000-line metrics / 1,000-line", tick_ratio(home), 2.0)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
