"""Replay every labelled case in ../shared/monitor-cases through the real `twinkle-auto check --no-llm`.

Each case becomes a run folder in a temporary TWINKLE_HOME. The process state the label gives is made
real: an "alive" case names this benchmark's own process (pid + create time), a "dead" one names a
process that has exited; a completed run is marked finished. Prints the confusion matrix, accuracy,
per-class precision/recall, macro-F1, FIX recall, LGTM cases flagged and ENV cases decided FIX (the costly
mistake: a rewrite of a script with no bug). Baseline in the same run: the majority-class guess (every
case LGTM), so the ratios say how far the rules are above knowing nothing. Targets: 48/48 ideally; the
run fails below the floor tests/test_monitor_cases.py asserts, or on any ENV case decided FIX.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

import psutil

CASES = Path(
    os.environ.get("TWINKLE_MONITOR_CASES", Path(__file__).resolve().parents[2] / "shared" / "monitor-cases")
)
CLASSES = ["FIX", "ENV", "WARNING", "LGTM"]
MIN_CORRECT = 47
"""The floor tests/test_monitor_cases.py asserts (its KNOWN_MISSES are the rest)."""


def _dead_pid() -> tuple[int, float]:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    ctime = psutil.Process(child.pid).create_time()
    child.wait()
    return child.pid, ctime


def _install(case: Path, home: Path) -> str:
    label = json.loads((case / "label.json").read_text())
    run_id = case.name
    folder = home / run_id
    folder.mkdir()
    for name in ("metrics.jsonl", "output.log", "train.py"):
        if (case / name).exists():
            shutil.copy(case / name, folder / name)
    meta = json.loads((case / "meta.json").read_text())
    meta["run_id"] = run_id
    if label.get("run_completed"):
        meta["status"] = "finished"
    if label.get("process_state") == "alive":
        meta["pid"], meta["pid_create_time"] = os.getpid(), psutil.Process().create_time()
    else:
        meta["pid"], meta["pid_create_time"] = _dead_pid()
    (folder / "meta.json").write_text(json.dumps(meta))
    return label["label"]


def predicted_class(result: dict) -> str:
    if result["decision"] == "WARNING" and any(f["kind"] == "ENV" for f in result["findings"]):
        return "ENV"
    return result["decision"]


def main() -> int:
    if not CASES.is_dir():
        print(f"no monitor cases at {CASES}; set TWINKLE_MONITOR_CASES")
        return 0
    confusion: Counter[tuple[str, str]] = Counter()
    misses = []
    with tempfile.TemporaryDirectory() as d:
        home = Path(d) / "home"
        home.mkdir()
        env = dict(os.environ, TWINKLE_HOME=str(home))
        cases = sorted(p for p in CASES.iterdir() if (p / "label.json").exists())
        for case in cases:
            expected = _install(case, home)
            out = subprocess.run(
                [sys.executable, "-m", "twinkle_auto", "check", case.name, "--no-llm", "--json"],
                capture_output=True,
                text=True,
                env=env,
                cwd=d,
                timeout=120,
            )
            result = json.loads(out.stdout)
            assert out.returncode == {"LGTM": 0, "WARNING": 1, "FIX": 2}[result["decision"]], out.stderr
            got = predicted_class(result)
            confusion[(expected, got)] += 1
            if got != expected:
                misses.append(f"{case.name}: expected {expected}, got {got} ({result['diagnosis'][:100]})")
    print(f"{len(cases)} cases through `twinkle-auto check --no-llm`")
    print("confusion (rows = label, columns = decision):")
    print("          " + "".join(f"{c:>9}" for c in CLASSES))
    for row in CLASSES:
        print(f"{row:>9} " + "".join(f"{confusion[(row, col)]:>9}" for col in CLASSES))
    f1s = []
    for cls in CLASSES:
        tp = confusion[(cls, cls)]
        predicted = sum(confusion[(r, cls)] for r in CLASSES)
        actual = sum(confusion[(cls, c)] for c in CLASSES)
        precision = tp / predicted if predicted else 0.0
        recall = tp / actual if actual else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        f1s.append(f1)
        print(f"  {cls:<8} precision {precision:.2f}  recall {recall:.2f}  F1 {f1:.2f}  (n={actual})")
    correct = sum(confusion[(c, c)] for c in CLASSES)
    total = len(cases)
    macro_f1 = sum(f1s) / len(f1s)
    n_fix = sum(confusion[("FIX", c)] for c in CLASSES)
    fix_recall = confusion[("FIX", "FIX")] / n_fix if n_fix else float("nan")
    lgtm_flagged = sum(confusion[("LGTM", c)] for c in CLASSES if c != "LGTM")
    env_fix = confusion[("ENV", "FIX")]
    baseline = sum(confusion[("LGTM", c)] for c in CLASSES)  # always answering LGTM
    baseline_f1 = (2 * (baseline / total) / (baseline / total + 1)) / len(CLASSES)
    print(
        f"accuracy {correct}/{total} = {correct / total:.3f}  (baseline 'always LGTM' {baseline}/{total}; ratio {correct / baseline:.2f}x)"
    )
    print(f"macro-F1 {macro_f1:.3f}  (baseline {baseline_f1:.3f}; ratio {macro_f1 / baseline_f1:.2f}x)")
    print(f"FIX recall {fix_recall:.3f}; LGTM cases flagged {lgtm_flagged}; ENV cases decided FIX {env_fix}")
    for miss in misses:
        print("  MISS " + miss)
    ok = correct >= MIN_CORRECT and env_fix == 0
    print(f"target: >= {MIN_CORRECT}/{total} correct and no ENV case decided FIX: {'OK' if ok else 'MISS'}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
