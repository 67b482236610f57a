"""One fixer per run: two real `twinkle-auto check` processes started together on one crashed run.

Each trial is a fresh crashed run; both commands judge it FIX, and the scripted LLM (over HTTP) answers
slowly enough that the two overlap. Exactly one relaunch must happen, the attempt must be counted once,
and the other command must leave the run alone ("a fix is in progress" or "already relaunched").
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import read_meta, wait_for
from openai_stub import Rule, StubLLM

TRIALS = int(os.environ.get("TWINKLE_RACE_TRIALS") or 10)
SCRIPT = """records = [{"x": float(i), "target": 2.0 * i} for i in range(8)]
total = 0.0
for rec in records:
    total += rec["x"] * rec["targets"]
print("total", total)
"""
BUG_LINE = '    total += rec["x"] * rec["targets"]'
PLAN = json.dumps(
    {
        "summary": "Use the 'target' key the records have.",
        "edits": [
            {
                "start_line": 4,
                "end_line": 4,
                "anchor": BUG_LINE,
                "replacement": BUG_LINE.replace('"targets"', '"target"'),
            }
        ],
    }
)


def _check(url: str, run_id: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "twinkle_auto", "--llm-base-url", url, "--llm-model", "stub-model"]
        + ["--llm-api-key", "x", "check", run_id, "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=dict(os.environ),
    )


def _kill_group(home: Path, run_id: str) -> None:
    meta = read_meta(home, run_id)
    if int(meta.get("launch_count") or 0) > 1 and isinstance(meta.get("pgid"), int):
        try:
            os.killpg(meta["pgid"], signal.SIGKILL)
        except ProcessLookupError:
            pass


@pytest.mark.slow
def test_two_concurrent_checks_relaunch_exactly_once(home: Path, controller) -> None:
    stub = StubLLM([Rule(match="train.py excerpt", text=PLAN, delay=0.3)])
    url = stub.start()
    outcomes: list[tuple[str | None, str | None]] = []
    try:
        for trial in range(TRIALS):
            run_id = f"race-{trial}"
            controller.start(run_id, SCRIPT)
            wait_for(lambda run_id=run_id: read_meta(home, run_id).get("exit_code") is not None)
            procs = [_check(url, run_id), _check(url, run_id)]
            results = []
            for p in procs:
                stdout, stderr = p.communicate(timeout=120)
                assert p.returncode in (0, 1, 2) and stdout.strip(), (p.returncode, stderr[-3000:])
                results.append(json.loads(stdout))
            try:
                folder = home / run_id
                meta = read_meta(home, run_id)
                state = json.loads((folder / "auto_state.json").read_text())
                fixed = [r for r in results if r["fixed"]]
                assert len(fixed) == 1, [r["message"] for r in results]
                assert meta["launch_count"] == 2, trial
                assert sorted(p.name for p in folder.glob("train_v*.py")) == ["train_v1.py"]
                assert state["fix_attempts"] == 1 and [f["attempt"] for f in state["fixes"]] == [1]
                assert state.get("pending_fix") is None
                other = next(r for r in results if not r["fixed"])
                assert other["fix_status"] in ("busy", "stale", None), other
                if other["fix_status"] == "busy":
                    assert "a fix is in progress" in other["message"]
                assert '"target"]' in (folder / "train.py").read_text()
                outcomes.append((str(other["fix_status"]), str(other["decision"])))
            finally:
                _kill_group(home, run_id)
    finally:
        stub.stop()
    ledger = [json.loads(line) for line in (home / "auto" / "fixes.jsonl").read_text().splitlines()]
    relaunched = [e for e in ledger if e["outcome"] == "relaunched"]
    assert len(relaunched) == TRIALS and len({e["run_id"] for e in relaunched}) == TRIALS
    print(f"\nthe other check saw: {sorted(set(outcomes))}")
