"""Replay every labelled case in ../shared/monitor-cases through the real `twinkle-auto check --no-llm`.

Each case becomes a run folder in a temporary TWINKLE_HOME. The process state the label gives is made
real: an "alive" case names this benchmark's own process (pid + create time), a "dead" one names a
process that has exited; a completed run is marked finished. Prints per-class precision and recall and
the confusion matrix. Targets: every FIX case decides FIX, every ENV case WARNING with an ENV finding, no
LGTM case is flagged.
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
    for cls in CLASSES:
        tp = confusion[(cls, cls)]
        predicted = sum(confusion[(r, cls)] for r in CLASSES)
        actual = sum(confusion[(cls, c)] for c in CLASSES)
        precision = tp / predicted if predicted else float("nan")
        recall = tp / actual if actual else float("nan")
        print(f"  {cls:<8} precision {precision:.2f}  recall {recall:.2f}  (n={actual})")
    for miss in misses:
        print("  MISS " + miss)
    fix_ok = all(confusion[("FIX", c)] == 0 for c in CLASSES if c != "FIX")
    env_ok = all(confusion[("ENV", c)] == 0 for c in CLASSES if c != "ENV")
    lgtm_ok = all(confusion[(r, "LGTM")] == 0 for r in CLASSES if r != "LGTM")
    lgtm_flag = all(confusion[("LGTM", c)] == 0 for c in CLASSES if c != "LGTM")
    ok = fix_ok and env_ok and lgtm_flag and lgtm_ok
    print(
        f"targets: FIX cases -> FIX {'OK' if fix_ok else 'MISS'}; ENV -> ENV {'OK' if env_ok else 'MISS'}; "
        f"no LGTM case flagged {'OK' if lgtm_flag else 'MISS'}"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
