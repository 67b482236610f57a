"""Run every benchmarks/bench_*.py in its own process and print their ratios; exit 1 if a target is missed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def main() -> int:
    failed = []
    for bench in sorted(Path(__file__).parent.glob("bench_*.py")):
        print(f"== {bench.name}", flush=True)
        if subprocess.run([sys.executable, str(bench)]).returncode != 0:
            failed.append(bench.name)
    if failed:
        print("targets missed in: " + ", ".join(failed))
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
