"""The monitor with the real local LLM: verdict agreement on the 24 labelled cases, and fix success.

Figures, not targets: how often Qwen2.5-Coder-1.5B (CPU) agrees with the labels before and after the
graph constrains it, and how often its patch makes a crashed examples/tiny/train.py run past its error.
The logic is the one tests/test_llm_monitor.py asserts on (imported from there), so the two never drift.
It exits 0 whatever the figures (unparsed verdicts included: the table counts them); it fails only when
something is broken: a safety property lost or a corrupt train.py.

Skipped (exit 0) without xllamacpp. The model is fetched into .models/ on first use.
  TWINKLE_MONITOR_CASES   the labelled cases (default ../shared/monitor-cases beside the repo)
  BENCH_LLM_TRIALS        how many controlled crashes to try (default: all)
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1] / "tests"
sys.path.insert(0, str(TESTS))
from llm_server import running_llm, xllamacpp_missing  # noqa: E402
from test_llm_monitor import (  # noqa: E402
    CASES_DIR,
    CRASH_TRIALS,
    evaluate_cases,
    fix_table,
    run_fix_trial,
    safety_problems,
    verdict_table,
)


def main() -> int:
    reason = xllamacpp_missing()
    if reason:
        print(f"  skipped: {reason}")
        return 0
    broken: list[str] = []
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # the training processes of the fix trials
    trials = CRASH_TRIALS[: int(os.environ.get("BENCH_LLM_TRIALS") or len(CRASH_TRIALS))]
    with tempfile.TemporaryDirectory(prefix="bench-llm-") as tmp:
        work = Path(tmp)
        started = time.perf_counter()
        with running_llm(work / "llama-server.log") as url:
            print(f"  server up in {time.perf_counter() - started:.1f}s")
            if CASES_DIR.is_dir():
                t0 = time.perf_counter()
                rows = evaluate_cases(url, CASES_DIR, work / "cases")
                print(verdict_table(rows))
                print(f"  verdicts: {time.perf_counter() - t0:.0f}s for {len(rows)} cases")
                broken += safety_problems(rows, require_parsed=False)  # parsing is a figure here
            else:
                print(f"  monitor cases not found at {CASES_DIR}: agreement skipped")
            t0 = time.perf_counter()
            home = work / "home"
            fixes = [run_fix_trial(url, home, trial) for trial in trials]
            print(fix_table(fixes))
            print(f"  fix trials: {time.perf_counter() - t0:.0f}s")
            broken += [f"{r.name}: train.py corrupted ({r.note})" for r in fixes if not r.intact]
    for problem in broken:
        print(f"  BROKEN: {problem}")
    return 1 if broken else 0


if __name__ == "__main__":
    raise SystemExit(main())
