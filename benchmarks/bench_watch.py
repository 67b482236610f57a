"""The watch loop at scale (issue 15): 100 watched runs with live stand-in processes.

Each run is a real run folder (meta.json naming a live `sleep` process we start, with its create time;
fresh metrics; a log) — what a running trainer leaves, without 100 trainers' CPU. Measured:

1. Tick cost per run: one parallel round over 100 runs (rules only: healthy runs never need the LLM),
   per run, against one round over a single run (baseline, same process).
2. Crash to event: SIGKILL one stand-in among the 100 (its log ends in a traceback, as a crashed
   trainer's does) while the loop sleeps in a long interval; time until its `verdict` event, with an
   instant LLM (a fake chat model object answering at once). Target <= 2 s; five crashes, worst reported.

Every process started here is killed by its pid at the end.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
import psutil  # noqa: E402
from _util import report  # noqa: E402
from langchain_core.language_models import BaseChatModel  # noqa: E402
from langchain_core.messages import AIMessage  # noqa: E402
from langchain_core.outputs import ChatGeneration, ChatResult  # noqa: E402

RUNS = 100
CRASHES = 5
VERDICT = json.dumps({"decision": "FIX", "diagnosis": "KeyError: the record has 'target', not 'targets'."})
TRACEBACK = (
    "Traceback (most recent call last):\n"
    '  File "train.py", line 2, in <module>\n'
    '    print(rec["targets"])\n'
    "KeyError: 'targets'\n"
)


class InstantLLM(BaseChatModel):
    """Answers every call at once with a FIX verdict (the LLM's own latency is not what is measured)."""

    @property
    def _llm_type(self) -> str:
        return "instant-fake"

    def _generate(self, messages: Any, stop: Any = None, run_manager: Any = None, **kw: Any) -> ChatResult:
        return ChatResult(generations=[ChatGeneration(message=AIMessage(content=VERDICT))])


def make_run(home: Path, run_id: str, proc: subprocess.Popen[bytes]) -> None:
    folder = home / run_id
    folder.mkdir(parents=True)
    now = time.time()
    meta = {
        "run_id": run_id,
        "status": "running",
        "pid": proc.pid,
        "pid_create_time": psutil.Process(proc.pid).create_time(),
        "model_id": "m",
        "start_time": now,
        "launched_at": now,
    }
    (folder / "meta.json").write_text(json.dumps(meta))
    (folder / "train.py").write_text('rec = {"target": 1.0}\nprint(rec["targets"])\n')
    rows = [{"ts": now - 0.1 * (50 - i), "step": i, "loss": 1.0 / (i + 1)} for i in range(50)]
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (folder / "output.log").write_text("step 49 loss 0.02\n")


async def one_round(loop: Any) -> float:
    t0 = time.perf_counter()
    results = await loop.tick_all()
    elapsed = time.perf_counter() - t0
    bad = {r: v.get("decision") for r, v in results.items() if v.get("decision") != "LGTM"}
    assert not bad, bad
    return elapsed


async def crash_latencies(loop: Any, home: Path, procs: dict[str, subprocess.Popen[bytes]]) -> list[float]:
    stop = asyncio.Event()
    task = asyncio.ensure_future(loop.run(stop))
    await asyncio.sleep(3.0)  # the first round is done; the loop sleeps in its 600 s interval
    latencies = []
    for i in range(CRASHES):
        run_id = f"run-{i * 17 + 3:03d}"
        with open(home / run_id / "output.log", "a") as f:
            f.write(TRACEBACK)
        seen = len(loop.events)
        crashed = time.perf_counter()
        os.kill(procs[run_id].pid, signal.SIGKILL)
        procs[run_id].wait()
        while not any(e["run_id"] == run_id and e["event"] == "verdict" for e in loop.events[seen:]):
            await asyncio.sleep(0.005)
            if time.perf_counter() - crashed > 30:
                raise RuntimeError(f"no event for {run_id}")
        latencies.append(time.perf_counter() - crashed)
        await asyncio.sleep(0.5)
    stop.set()
    await asyncio.wait_for(task, 60)
    return latencies


def main() -> int:
    from twinkle_auto.app.monitor_loop import MonitorLoop
    from twinkle_auto.connection import Connection

    procs: dict[str, subprocess.Popen[bytes]] = {}
    ok = True
    with tempfile.TemporaryDirectory() as tmp:
        try:
            solo_home, home = Path(tmp) / "solo", Path(tmp) / "many"
            solo = subprocess.Popen(["sleep", "100000"])
            procs["solo"] = solo
            make_run(solo_home, "solo", solo)
            for i in range(RUNS):
                run_id = f"run-{i:03d}"
                procs[run_id] = subprocess.Popen(["sleep", "100000"])
                make_run(home, run_id, procs[run_id])

            base_loop = MonitorLoop(Connection.open(solo_home), InstantLLM(), policy="off", interval=600)
            asyncio.run(one_round(base_loop))  # warm imports and the graph
            t_one = min(asyncio.run(one_round(base_loop)) for _ in range(5))

            loop = MonitorLoop(Connection.open(home), InstantLLM(), policy="off", interval=600)
            t_many = min(asyncio.run(one_round(loop)) for _ in range(3))
            per_run = t_many / RUNS
            print(
                f"  one round: 1 run {t_one * 1e3:.1f} ms; {RUNS} runs {t_many * 1e3:.0f} ms = "
                f"{per_run * 1e3:.1f} ms per run ({per_run / t_one:.2f}x the single run's tick)"
            )
            latencies = asyncio.run(crash_latencies(loop, home, procs))
            shown = ", ".join(f"{x:.2f}" for x in latencies)
            print(f"  crash -> verdict event among {RUNS} runs: {shown} s (LLM calls: {loop.gate.calls})")
            ok &= report(f"worst crash -> event among {RUNS} watched runs (s)", max(latencies), 2.0, "s")
            ok &= report("tick cost per run at 100 runs vs 1 run", per_run / t_one, 1.5)
        finally:
            for proc in procs.values():
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
