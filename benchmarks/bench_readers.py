"""Bounded readers (issue 11): hostile run files cost about what a normal one does.

1. The last 5 metrics of a file ending in a 50 MB line: time (target <= 0.5 s) and peak RSS of a child
   process doing only that (target <= 64 MB), against the last 5 lines of a normal 1 KB file.
2. A 1 GB file without a newline (sparse: no disk used) answered with "malformed" (target <= 1 s).
3. The same two through the real CLI (`metrics --last 5`, `status`), against the CLI on the 1 KB file:
   what a person waits for, process start included.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _util import best_of, report  # noqa: E402

from twinkle_auto.connection.metrics import tail_metrics  # noqa: E402

MB = 1024 * 1024
CHILD = (
    "import sys; from pathlib import Path; from twinkle_auto.connection.metrics import tail_metrics; "
    "t = tail_metrics(Path(sys.argv[1]), 5); print(len(t.entries), t.problem)"
)


def _normal(path: Path, rows: int) -> None:
    with open(path, "w") as f:
        for i in range(rows):
            f.write(json.dumps({"ts": 1795000000.0 + i, "step": i, "loss": 0.5}) + "\n")


def _long_last_line(path: Path) -> None:
    _normal(path, 20)
    size = path.stat().st_size
    with open(path, "r+b") as f:  # 50 MB of a real (non-sparse) line: the reader must scan it
        f.seek(size)
        block = b"a" * MB
        for _ in range(50):
            f.write(block)
        f.write(b"\n")


def _child_peak_rss_mb(args: list[str], env: dict[str, str] | None = None) -> tuple[float, float, str]:
    """Run a child, return (wall seconds, its own peak RSS in MB, stdout+stderr)."""
    t0 = time.perf_counter()
    child = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    out = child.stdout.read().decode() if child.stdout else ""
    _, _, usage = os.wait4(child.pid, 0)
    child.returncode = 0
    return time.perf_counter() - t0, usage.ru_maxrss / 1024, out


def main() -> int:
    ok = True
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        small, long, giant = tmp / "small.jsonl", tmp / "long.jsonl", tmp / "giant.jsonl"
        _normal(small, 16)  # about 1 KB
        _long_last_line(long)
        with open(giant, "wb") as f:
            f.truncate(1024 * MB)
        assert [e["step"] for e in tail_metrics(long, 5).entries] == [15, 16, 17, 18, 19]
        assert "malformed" in (tail_metrics(giant, 5).problem or "")

        t_small = best_of(lambda: tail_metrics(small, 5), repeats=9, number=20)
        t_long = best_of(lambda: tail_metrics(long, 5), repeats=5)
        t_giant = best_of(lambda: tail_metrics(giant, 5), repeats=5)
        print(
            f"  last 5 metrics: 1 KB file {t_small * 1e6:.1f} us, 50 MB last line {t_long * 1e3:.1f} ms "
            f"({t_long / t_small:.0f}x), 1 GB without newline {t_giant * 1e3:.1f} ms ({t_giant / t_small:.0f}x)"
        )
        ok &= report("last 5 metrics, file ending in a 50 MB line (s)", t_long, 0.5, "s")
        ok &= report("1 GB file without newline answered 'malformed' (s)", t_giant, 1.0, "s")

        _, rss_small, _ = _child_peak_rss_mb([sys.executable, "-c", CHILD, str(small)])
        _, rss_long, out = _child_peak_rss_mb([sys.executable, "-c", CHILD, str(long)])
        assert out.startswith("5 malformed"), out
        print(
            f"  child peak RSS: 1 KB file {rss_small:.1f} MB, 50 MB last line {rss_long:.1f} MB "
            f"({rss_long / rss_small:.2f}x)"
        )
        ok &= report("peak RSS of a child reading the last 5 (MB)", rss_long, 64, " MB")

        home = tmp / "home"
        for run_id, src in (("small", small), ("long", long), ("giant", giant)):
            (home / run_id).mkdir(parents=True)
            (home / run_id / "meta.json").write_text(json.dumps({"run_id": run_id, "status": "finished"}))
            os.replace(src, home / run_id / "metrics.jsonl")
        env = {**os.environ, "TWINKLE_HOME": str(home)}
        cli = [sys.executable, "-m", "twinkle_auto"]
        for verb in ("metrics", "status"):
            extra = ["--last", "5"] if verb == "metrics" else []
            base = min(_child_peak_rss_mb([*cli, verb, "small", *extra], env)[0] for _ in range(3))
            for run_id in ("long", "giant"):
                wall, rss, out = min(_child_peak_rss_mb([*cli, verb, run_id, *extra], env) for _ in range(3))
                assert "malformed" in out, out
                print(
                    f"  CLI `{verb} {run_id}`: {wall:.2f} s ({wall / base:.2f}x the 1 KB run's {base:.2f} s), "
                    f"peak RSS {rss:.0f} MB"
                )
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
