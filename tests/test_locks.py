"""The per-run launch lock: real processes racing through the real CLI never start a run twice."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import psutil
import pytest
from conftest import wait_for

from twinkle_auto.connection.locks import held, run_lock

TRIALS = int(os.environ.get("TWINKLE_RACE_TRIALS", "10"))
"""Trials per race here; benchmarks/bench_launch.py runs the full 50 (TWINKLE_RACE_TRIALS=50 does it here)."""

SLEEPER = textwrap.dedent(
    """
    import time
    from twinkle_auto.runtime import TrainingRuntime
    rt = TrainingRuntime(); rt.start()
    time.sleep(120)
    """
)

HOLD_LOCK = textwrap.dedent(
    """
    import sys, time
    from twinkle_auto.connection.locks import run_lock
    with run_lock(sys.argv[1]) as got:
        print("held" if got else "busy", flush=True)
        time.sleep(60)
    """
)


def test_the_lock_is_reentrant_in_one_thread_and_exclusive_across_processes(tmp_path: Path) -> None:
    folder = tmp_path / "run"
    with run_lock(folder) as first:
        assert first and held(folder)
        with run_lock(folder, wait=False) as nested:
            assert nested
        assert held(folder), "leaving a nested lock released the outer one"
        other = subprocess.run(
            [
                sys.executable,
                "-c",
                "import sys; from twinkle_auto.connection.locks import run_lock\n"
                "with run_lock(sys.argv[1], timeout=0.3) as got: print(got)",
                str(folder),
            ],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert other.stdout.strip() == "False"
    assert not held(folder)


def test_a_killed_holder_releases_the_lock(tmp_path: Path) -> None:
    folder = tmp_path / "run"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(folder)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with run_lock(folder, wait=False) as got:
            assert not got
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=10)
        with run_lock(folder, timeout=5) as got:
            assert got, "the kernel did not release the lock of a dead holder"
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()


def _cli(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "twinkle_auto", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _run_processes(folder: Path) -> list[psutil.Process]:
    """Live processes running this run's train.py or working in its folder (however they got there)."""
    script = str(folder / "train.py")
    found = []
    for p in psutil.process_iter(["cmdline", "cwd", "status"]):
        if p.info["status"] == psutil.STATUS_ZOMBIE:
            continue
        cmdline = p.info["cmdline"] or []
        if p.info["cwd"] == str(folder) or any(arg == script for arg in cmdline):
            found.append(p)
    return found


def _kill_all(procs: list[psutil.Process]) -> None:
    for p in procs:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass

    def gone() -> bool:
        for p in procs:
            try:
                if p.status() != psutil.STATUS_ZOMBIE:
                    return False
            except psutil.NoSuchProcess:
                continue
        return True

    wait_for(gone, timeout=10, interval=0.01)


def _paused_run(home: Path, controller, run_id: str) -> Path:
    controller.create(run_id, SLEEPER)
    folder = home / run_id
    meta = json.loads((folder / "meta.json").read_text())
    meta["status"] = "paused"
    (folder / "meta.json").write_text(json.dumps(meta))
    return folder


def _race(folder: Path, starters: list, trials: int) -> list[int]:
    """Run `trials` races; return the number of run processes after each one."""
    counts = []
    for _ in range(trials):
        procs = [start() for start in starters]
        outs = [p.communicate(timeout=60) for p in procs]
        # every launcher has returned: whatever it started is already running
        alive = _run_processes(folder)
        counts.append(len(alive))
        codes = sorted(p.returncode for p in procs)
        assert codes == [0, 1], (outs, len(counts), (folder / "output.log").read_text()[-1500:])
        loser = next(err for p, (_, err) in zip(procs, outs, strict=True) if p.returncode == 1)
        assert "already running" in loser or "in progress" in loser, loser
        assert len(loser.strip().splitlines()) == 1, loser
        _kill_all(alive)
    return counts


@pytest.mark.slow
def test_two_concurrent_resumes_start_exactly_one_process(home: Path, controller) -> None:
    folder = _paused_run(home, controller, "race")
    counts = _race(folder, [lambda: _cli("resume", "race"), lambda: _cli("resume", "race")], TRIALS)
    print(f"\ntwo concurrent resume, {TRIALS} trials: process counts {sorted(set(counts))}")
    assert counts == [1] * TRIALS


RELAUNCH = textwrap.dedent(
    """
    import sys
    from twinkle_auto.connection import Connection
    from twinkle_auto.connection.errors import RunError
    from twinkle_auto.connection.locks import run_lock
    conn = Connection.open()
    folder = conn.store.path(sys.argv[1])
    # what the monitor does: decide under the lock, then relaunch inside it (the controller re-enters it)
    with run_lock(folder) as got:
        try:
            if conn.store.status(sys.argv[1]).process in ("alive", "stopped"):
                raise RunError("already running")
            conn.controller.launch(sys.argv[1], reason="auto-fix")
        except RunError as exc:
            print(exc, file=sys.stderr)
            sys.exit(1)
    """
)


@pytest.mark.slow
def test_resume_racing_a_relaunch_under_the_run_lock_starts_exactly_one(home: Path, controller) -> None:
    folder = _paused_run(home, controller, "fixrace")

    def relaunch() -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-c", RELAUNCH, "fixrace"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    counts = _race(folder, [lambda: _cli("resume", "fixrace"), relaunch], TRIALS)
    print(f"\nresume racing a relaunch under run_lock, {TRIALS} trials: process counts {sorted(set(counts))}")
    assert counts == [1] * TRIALS


def test_a_launch_waits_for_a_fix_in_progress_then_says_so(home: Path, controller) -> None:
    folder = _paused_run(home, controller, "busy")
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(folder)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        controller.lock_timeout = 0.3
        from twinkle_auto.connection.errors import RunStateError

        with pytest.raises(RunStateError, match="in progress"):
            controller.resume("busy")
        assert _run_processes(folder) == []
    finally:
        holder.kill()
        holder.wait()
    result = controller.resume("busy")  # the holder is gone: the launch goes ahead
    wait_for(lambda: psutil.pid_exists(result.pid))
    assert [p.pid for p in _run_processes(folder)] == [result.pid]
