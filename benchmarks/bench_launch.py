"""Launch benchmarks (issue 11): what the launch lock costs, and that races never double a run.

1. `RunController.launch` of a tiny script (lock, "is it running?" including the process scan, spawn,
   meta.json record) against the least a recorded launch needs: the same spawn plus one atomic,
   fsynced meta.json write of the same record; per launch, target <= 3x (the checks may cost as much
   as the record twice over; measured ~1.6x on an idle machine, ~2.5-3.6x with load average 11).
2. 50 races of two concurrent `twinkle-auto resume` on one paused run: the most run processes any race
   left; target <= 1 (exactly one each time). Processes counted by command line naming the run's script.
3. The same with `resume` racing a relaunch under `run_lock` (what the monitor's auto-fix does).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).parent))
from _util import report  # noqa: E402

from twinkle_auto.connection import Connection  # noqa: E402
from twinkle_auto.connection.launch import spec_from_meta  # noqa: E402
from twinkle_auto.connection.process import spawn_logged  # noqa: E402
from twinkle_auto.runtime.format import update_meta  # noqa: E402

TRIALS = int(os.environ.get("TWINKLE_RACE_TRIALS", "50"))
SLEEPER = "import time\ntime.sleep(120)\n"
RELAUNCH = textwrap.dedent(
    """
    import sys
    from twinkle_auto.connection import Connection
    from twinkle_auto.connection.errors import RunError
    from twinkle_auto.connection.locks import run_lock
    conn = Connection.open()
    with run_lock(conn.store.path(sys.argv[1])):
        try:
            if conn.store.status(sys.argv[1]).process in ("alive", "stopped"):
                raise RunError("already running")
            conn.controller.launch(sys.argv[1], reason="auto-fix")
        except RunError as exc:
            print(exc, file=sys.stderr)
            sys.exit(1)
    """
)


def _run_pids(folder: Path) -> list[psutil.Process]:
    script = str(folder / "train.py")
    out = []
    for p in psutil.process_iter(["cmdline", "status"]):
        if p.info["status"] != psutil.STATUS_ZOMBIE and script in (p.info["cmdline"] or []):
            out.append(p)
    return out


def _kill(procs: list[psutil.Process]) -> None:
    for p in procs:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            if all(p.status() == psutil.STATUS_ZOMBIE for p in procs if p.is_running()):
                return
        except psutil.NoSuchProcess:
            continue
        time.sleep(0.01)


def bench_launch_cost(home: Path) -> float:
    """Time to a recorded launch (kill and reaping happen outside the timed part)."""
    conn = Connection.open(home)
    conn.controller.create("cost", SLEEPER)
    folder = home / "cost"
    ctl = conn.controller
    t_ours, t_bare = float("inf"), float("inf")
    for _ in range(15):
        t0 = time.perf_counter()
        result = ctl.launch("cost")
        t_ours = min(t_ours, time.perf_counter() - t0)
        os.killpg(result.pid, 9)
        while result.pid in ctl._children:  # let the reaper record the exit before the next launch
            time.sleep(0.005)
        spec = spec_from_meta(json.loads((folder / "meta.json").read_text()))
        t0 = time.perf_counter()
        child, _ = spawn_logged(
            spec.command(folder / "train.py"),
            log_path=folder / "bare.log",
            marker="bare",
            env=spec.environment(),
            cwd=folder,
        )
        update_meta(folder, {"pid": child.pid, "status": "running", "launch": spec.to_meta()})
        t_bare = min(t_bare, time.perf_counter() - t0)
        os.killpg(child.pid, 9)
        child.wait()
    print(
        f"  launch under the lock {t_ours * 1000:.1f} ms, spawn + the same meta.json record {t_bare * 1000:.1f} ms"
    )
    return t_ours / t_bare


def _race(home: Path, run_id: str, starters: list[list[str]]) -> list[int]:
    conn = Connection.open(home)
    conn.controller.create(run_id, SLEEPER)
    folder = home / run_id
    counts = []
    env = {**os.environ, "TWINKLE_HOME": str(home)}
    for _ in range(TRIALS):
        meta = json.loads((folder / "meta.json").read_text())
        meta["status"] = "paused"
        (folder / "meta.json").write_text(json.dumps(meta))
        procs = [
            subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE) for cmd in starters
        ]
        for p in procs:
            p.communicate(timeout=60)
        alive = _run_pids(folder)
        counts.append(len(alive))
        _kill(alive)
    return counts


def main() -> int:
    ok = True
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "home"
        home.mkdir()
        ok &= report("launch under the run lock / spawn + record", bench_launch_cost(home), 3.0)
        cli = [sys.executable, "-m", "twinkle_auto", "resume"]
        counts = _race(home, "race", [[*cli, "race"], [*cli, "race"]])
        print(f"  two concurrent resume, {TRIALS} trials: run processes per trial {sorted(set(counts))}")
        ok &= report(f"most run processes after a resume race ({TRIALS} trials)", max(counts), 1, "")
        counts = _race(home, "fix", [[*cli, "fix"], [sys.executable, "-c", RELAUNCH, "fix"]])
        print(
            f"  resume vs relaunch under run_lock, {TRIALS} trials: run processes per trial {sorted(set(counts))}"
        )
        ok &= report(f"most run processes after resume vs relaunch ({TRIALS} trials)", max(counts), 1, "")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
