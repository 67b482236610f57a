"""Process control with real training processes and real signals."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest
from conftest import EXAMPLES, metric_steps, read_meta, run_cli, wait_for

from twinkle_auto.connection import process as proc
from twinkle_auto.connection.errors import NotOurProcessError, RunStateError, UnknownRunError

pytestmark = pytest.mark.slow

TINY = EXAMPLES / "tiny" / "train.py"


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_start_pause_resume_stop_with_the_tiny_example(home: Path, controller) -> None:
    env = {"STEP_SLEEP": "0.01", "TOTAL_STEPS": "100000"}
    first = controller.start("tiny", TINY.read_text(), model_id="linreg", env=env)
    wait_for(lambda: len(metric_steps(home, "tiny")) >= 20)
    assert controller.store.status("tiny").effective_status == "running"

    controller.pause("tiny")
    assert _gone(first.pid)
    meta = read_meta(home, "tiny")
    assert meta["status"] == "paused"
    paused_at = max(metric_steps(home, "tiny"))

    second = controller.resume("tiny")
    assert second.launch_count == 2 and second.pid != first.pid
    wait_for(lambda: max(metric_steps(home, "tiny")) > paused_at + 10)
    steps = metric_steps(home, "tiny")
    after = steps[steps.index(paused_at) + 1 :]
    assert after and min(after) > 1, "resumed run started again from step 1"
    # a checkpoint-based resume may replay the few steps after the last checkpoint, never from 0
    assert min(after) >= paused_at - 60

    result = controller.stop("tiny")
    assert result.status == "stopped" and not result.killed
    assert result.checkpoint and Path(home / "tiny" / "checkpoint.json").exists()
    ckpt = json.loads((home / "tiny" / "checkpoint.json").read_text())
    meta = read_meta(home, "tiny")
    assert meta["status"] == "stopped"
    assert meta["progress"]["last_step"] >= ckpt["step"] > paused_at
    log = (home / "tiny" / "output.log").read_text()
    assert log.count("===== twinkle-auto: launch #") == 2
    assert "launch #2 (resume)" in log
    assert controller.store.status("tiny").effective_status == "stopped"


def test_a_paused_run_can_be_stopped_for_good_and_still_resumed(home: Path, controller) -> None:
    """Pause then "stop it for good": no process is left to signal, so the stop only records that the
    person ended it; the checkpoints stay and a later resume still continues from where it was."""
    env = {"STEP_SLEEP": "0.01", "TOTAL_STEPS": "100000"}
    first = controller.start("held", TINY.read_text(), env=env)
    wait_for(lambda: len(metric_steps(home, "held")) >= 20)
    controller.pause("held")
    paused_at = max(metric_steps(home, "held"))

    result = controller.stop("held")
    assert (result.status, result.killed) == ("stopped", False)
    meta = read_meta(home, "held")
    assert meta["status"] == "stopped" and "while paused" in meta["note"] and meta["end_time"]
    assert controller.store.status("held").effective_status == "stopped"
    assert _gone(first.pid)
    with pytest.raises(RunStateError, match="not running"):
        controller.stop("held")  # once stopped, there is nothing left to stop

    second = controller.resume("held")
    wait_for(lambda: max(metric_steps(home, "held")) > paused_at + 5)
    assert second.launch_count == 2
    assert controller.stop("held").status == "stopped"


def test_launching_a_running_run_is_refused(home: Path, controller) -> None:
    controller.start("busy", TINY.read_text(), env={"STEP_SLEEP": "0.05", "TOTAL_STEPS": "100000"})
    wait_for(lambda: metric_steps(home, "busy"))
    with pytest.raises(RunStateError, match="already running"):
        controller.launch("busy")
    with pytest.raises(RunStateError, match="already running"):
        controller.resume("busy")
    with pytest.raises(RunStateError, match="already running"):
        controller.start("busy", "print(1)\n")
    controller.pause("busy")


def test_operations_on_unknown_or_idle_runs_are_refused(home: Path, controller) -> None:
    with pytest.raises(UnknownRunError):
        controller.pause("ghost")
    with pytest.raises(ValueError, match="invalid run id"):
        controller.start("../x", "print(1)\n")
    controller.create("idle", "print(1)\n")
    with pytest.raises(RunStateError, match="not running"):
        controller.stop("idle")
    with pytest.raises(RunStateError, match="not running"):
        controller.pause("idle")


def test_signalling_a_pid_that_is_not_ours_is_refused(home: Path, controller) -> None:
    stranger = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        controller.create("claim", "print(1)\n")
        folder = home / "claim"
        meta = read_meta(home, "claim")
        # meta says "running" with the stranger's pid but a different create time (a reused pid)
        meta.update(status="running", pid=stranger.pid, pgid=stranger.pid, pid_create_time=1.0)
        (folder / "meta.json").write_text(json.dumps(meta))
        with pytest.raises(RunStateError):
            controller.stop("claim")
        with pytest.raises(NotOurProcessError):
            proc.send(read_meta(home, "claim"), 15)
        assert stranger.poll() is None, "a process that is not ours was signalled"
    finally:
        stranger.kill()
        stranger.wait()


def _script(body: str) -> str:
    return textwrap.dedent(body)


def test_stop_without_a_handler_and_with_a_handler_that_hangs(home: Path, controller) -> None:
    plain = _script(
        """
        import time
        from twinkle_auto.runtime import TrainingRuntime
        rt = TrainingRuntime(); rt.start()
        for step in range(1, 100000):
            rt.log_metrics(step=step, loss=1.0); time.sleep(0.01)
        """
    )
    controller.start("plain", plain)
    wait_for(lambda: metric_steps(home, "plain"))
    result = controller.stop("plain")
    assert result.status == "stopped" and not result.killed

    stubborn = _script(
        """
        import signal, time
        from twinkle_auto.runtime import TrainingRuntime
        rt = TrainingRuntime(); rt.start()
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        for step in range(1, 100000):
            rt.log_metrics(step=step, loss=1.0); time.sleep(0.01)
        """
    )
    controller.start("stubborn", stubborn)
    wait_for(lambda: metric_steps(home, "stubborn"))
    result = controller.stop("stubborn", grace=1.0)
    assert result.killed and result.status == "stopped"
    meta = read_meta(home, "stubborn")
    assert meta["status"] == "stopped" and "grace period" in meta["note"]


def test_stop_kills_the_whole_process_group(home: Path, controller) -> None:
    parent = _script(
        """
        import subprocess, sys, time
        from twinkle_auto.runtime import TrainingRuntime
        rt = TrainingRuntime(); rt.start()
        worker = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
        open("worker.pid", "w").write(str(worker.pid))
        for step in range(1, 100000):
            rt.log_metrics(step=step, loss=1.0); time.sleep(0.01)
        """
    )
    controller.start("group", parent)
    pid_file = home / "group" / "worker.pid"
    wait_for(pid_file.exists)
    worker = int(wait_for(lambda: pid_file.read_text().strip()))
    controller.pause("group")
    wait_for(lambda: _gone(worker), timeout=10)


def test_a_crash_is_recorded_with_its_exit_code(home: Path, controller) -> None:
    controller.start("crash", "import sys\nprint('boom')\nsys.exit(3)\n")
    wait_for(lambda: read_meta(home, "crash").get("exit_code") is not None)
    meta = read_meta(home, "crash")
    assert meta["exit_code"] == 3 and meta["status"] == "failed" and "code 3" in meta["error"]


def test_update_script_archives_without_ever_overwriting(home: Path, controller) -> None:
    controller.create("upd", "print('v1')\n")
    folder = home / "upd"
    first = controller.update_script("upd", "print('v2')\n")
    assert first.archived_as == "train_v1.py" and first.version == 2
    assert "-print('v1')" in first.diff and "+print('v2')" in first.diff
    (folder / "train_v2.py").write_text("someone else's archive\n")  # a gap filled by hand
    second = controller.update_script("upd", "print('v3')\n")
    assert second.archived_as == "train_v3.py"
    assert (folder / "train_v2.py").read_text() == "someone else's archive\n"
    assert (folder / "train_v1.py").read_text() == "print('v1')\n"
    assert (folder / "train.py").read_text() == "print('v3')\n"
    assert read_meta(home, "upd")["script_version"] == 4
    same = controller.update_script("upd", "print('v3')\n")
    assert same.archived_as is None and same.diff == ""


def test_launch_env_marks_output_as_captured(home: Path, controller) -> None:
    script = _script(
        """
        import os
        from twinkle_auto.runtime import TrainingRuntime
        rt = TrainingRuntime(); rt.start()
        print("run", os.environ["TWINKLE_RUN_ID"], os.getcwd())
        rt.finish()
        """
    )
    controller.start("env", script)
    wait_for(lambda: read_meta(home, "env").get("status") == "finished")
    log = (home / "env" / "output.log").read_text()
    assert f"run env {home / 'env'}" in log
    assert "started by hand" not in log  # not teed twice
    assert log.count("Training started") == 1
    assert os.environ.get("TWINKLE_RUN_ID") is None


# ------------------------------------------------------------------ issue 11: never doubles, never strays
def _write_meta(home: Path, run_id: str, meta: dict) -> None:
    (home / run_id / "meta.json").write_text(json.dumps(meta))


def _procs_running(folder: Path) -> list[int]:
    script = str(folder / "train.py")
    pids = []
    for p in psutil.process_iter(["cmdline", "status"]):
        cmdline = p.info["cmdline"] or [""]
        python = os.path.basename(cmdline[0]).startswith("python")
        if p.info["status"] != psutil.STATUS_ZOMBIE and python and script in cmdline:
            pids.append(p.pid)
    return pids


SLEEPY = "import time\ntime.sleep(120)\n"


def test_a_live_run_with_a_corrupt_meta_json_refuses_resume(home: Path, controller) -> None:
    first = controller.start("torn", SLEEPY)
    (home / "torn" / "meta.json").write_text('{"status": "running", "pid": ')  # cut by a crash
    result = run_cli("resume", "torn")
    assert result.returncode == 1
    assert "still running" in result.stderr and "corrupt" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert _procs_running(home / "torn") == [first.pid]
    os.killpg(first.pid, 9)


def test_a_resume_whose_meta_json_write_fails_stops_what_it_spawned(home: Path, controller) -> None:
    import resource

    controller.create("full", SLEEPY)
    folder = home / "full"
    (folder / "output.log").write_text("")
    big = {"status": "paused", "run_id": "full", "pad": "x" * 4096}
    _write_meta(home, "full", big)
    limit = 2048  # meta.json no longer fits (EFBIG), the launch marker in output.log still does

    def _limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    result = subprocess.run(
        [sys.executable, "-m", "twinkle_auto", "resume", "full"],
        capture_output=True,
        text=True,
        timeout=60,
        preexec_fn=_limit,
    )
    assert result.returncode == 1, result.stdout
    assert "could not record the launch" in result.stderr and "was stopped" in result.stderr
    assert "launch #1 (resume)" in (folder / "output.log").read_text(), "nothing was spawned"
    assert _procs_running(folder) == []
    assert json.loads((folder / "meta.json").read_text())["status"] == "paused"


TWINKLE_KIT_META = {"run_id": "kit", "status": "running", "model_id": "m", "config": {}, "script_version": 1}


def test_a_foreign_process_named_in_a_twinkle_kit_meta_survives_pause_and_stop(
    home: Path, controller
) -> None:
    foreign = subprocess.Popen(["sleep", "300"])
    try:
        controller.create("kit", SLEEPY)
        # twinkle-kit's format: pid and start_time, no pid_create_time; the pid is someone else's sleep
        _write_meta(home, "kit", {**TWINKLE_KIT_META, "pid": foreign.pid, "start_time": time.time() + 5})
        for verb in ("pause", "stop"):
            result = run_cli(verb, "kit")
            assert result.returncode == 1, result.stdout
            assert "not provably this run's process" in result.stderr
            assert len(result.stderr.strip().splitlines()) == 1
            assert foreign.poll() is None, f"{verb} signalled a process that is not ours"
        status = json.loads(run_cli("status", "kit", "--json").stdout)
        assert status["effective_status"] == "crashed"  # not ours, so the run's own process is gone
    finally:
        foreign.kill()
        foreign.wait()


def test_a_twinkle_kit_run_that_runs_its_script_is_provably_ours(home: Path, tmp_path: Path) -> None:
    """The positive side of the rule: the run's own train.py, in its folder, is ours without a create time."""
    folder = home / "kit2"
    folder.mkdir()
    (folder / "train.py").write_text(SLEEPY)
    child = subprocess.Popen([sys.executable, "train.py"], cwd=folder, start_new_session=True)
    try:
        _write_meta(
            home,
            "kit2",
            {
                **TWINKLE_KIT_META,
                "run_id": "kit2",
                "pid": child.pid,
                "start_time": time.time() + 1,
                "script_path": str(folder / "train.py"),
            },
        )
        status = json.loads(run_cli("status", "kit2", "--json").stdout)
        assert status["process"] == "alive"
        result = run_cli("pause", "kit2")
        assert result.returncode == 0, result.stderr
        child.wait(timeout=10)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()


def test_an_editor_or_tail_on_train_py_is_not_a_second_copy_of_the_run(home: Path, controller) -> None:
    controller.create("viewed", SLEEPY)
    _write_meta(home, "viewed", {"run_id": "viewed", "status": "paused"})
    viewer = subprocess.Popen(["tail", "-f", str(home / "viewed" / "train.py")], stdout=subprocess.DEVNULL)
    try:
        result = run_cli("resume", "viewed")
        assert result.returncode == 0, result.stderr
        pid = read_meta(home, "viewed")["pid"]
        assert _procs_running(home / "viewed") == [pid]
        os.killpg(pid, 9)
    finally:
        viewer.kill()
        viewer.wait()


def test_a_pid_out_of_range_is_not_a_pid(home: Path, controller) -> None:
    controller.create("huge", SLEEPY)
    _write_meta(home, "huge", {"run_id": "huge", "status": "running", "pid": 2**40})
    status = json.loads(run_cli("status", "huge", "--json").stdout)
    assert status["process"] == "unknown" and status["pid"] is None
    for verb in ("pause", "stop"):
        result = run_cli(verb, "huge")
        assert result.returncode == 1 and "not a valid pid" in result.stderr, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1


def test_update_script_of_a_symlinked_train_py_archives_content_and_never_writes_the_target(
    home: Path, tmp_path: Path
) -> None:
    from twinkle_auto.connection.control import RunController
    from twinkle_auto.connection.store import RunStore

    outside = tmp_path / "shared_train.py"
    outside.write_text("print('original')\n")
    folder = home / "linked"
    folder.mkdir()
    (folder / "meta.json").write_text('{"run_id": "linked", "status": "failed"}')
    (folder / "train.py").symlink_to(outside)
    update = RunController(RunStore(home)).update_script("linked", "print('fixed')\n")
    archive = folder / update.archived_as
    assert not archive.is_symlink() and archive.read_text() == "print('original')\n"
    assert outside.read_text() == "print('original')\n", "the link's target outside the run was written"
    assert not (folder / "train.py").is_symlink() and (folder / "train.py").read_text() == "print('fixed')\n"
