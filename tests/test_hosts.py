"""A run that lives on another host sharing the run folders: shown, judged on its files, never touched."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import psutil
from conftest import run_cli

from twinkle_auto.connection.store import RunStore
from twinkle_auto.runtime.launch_info import hostname

OTHER = "gpu-node-7"


def _remote_run(home: Path, pid: int, ctime: float) -> Path:
    folder = home / "far"
    folder.mkdir()
    (folder / "train.py").write_text("import time\ntime.sleep(300)\n")
    meta = {
        "run_id": "far", "status": "running", "model_id": "m", "config": {}, "script_version": 1,
        "start_time": time.time() - 60, "host": OTHER,
        # a live pid here, with its true create time: on this host it would look like ours
        "pid": pid, "pgid": pid, "pid_create_time": ctime,
    }  # fmt: skip
    (folder / "meta.json").write_text(json.dumps(meta))
    with open(folder / "metrics.jsonl", "w") as f:
        for step in range(1, 4):
            f.write(json.dumps({"ts": time.time() - 30 + step, "step": step, "loss": 1.0 / step}) + "\n")
    return folder


def test_a_run_from_another_host_is_shown_remote_and_never_signalled_or_relaunched(home: Path) -> None:
    local = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"], start_new_session=True)
    try:
        folder = _remote_run(home, local.pid, psutil.Process(local.pid).create_time())
        status = json.loads(run_cli("status", "far", "--json").stdout)
        assert status["process"] == "remote" and status["remote"] is True and status["host"] == OTHER
        assert status["effective_status"] == "running", (
            "a remote run is not 'crashed' for lack of a local pid"
        )
        assert 25 <= status["last_metric_age"] < 600
        shown = run_cli("status", "far", env={"COLUMNS": "200"}).stdout
        assert f"remote ({OTHER})" in shown and "last metric" in shown
        assert f"remote ({OTHER})" in run_cli("runs", env={"COLUMNS": "200"}).stdout

        for verb, extra in (("pause", []), ("stop", ["--grace", "0"]), ("resume", [])):
            result = run_cli(verb, "far", *extra)
            assert result.returncode == 1, (verb, result.stdout)
            assert OTHER in result.stderr and "there" in result.stderr, result.stderr
            assert len(result.stderr.strip().splitlines()) == 1
            assert local.poll() is None, f"{verb} signalled a pid recorded by another host"
        assert not (folder / "output.log").exists(), "something was launched for a remote run"
        assert json.loads((folder / "meta.json").read_text())["status"] == "running"
    finally:
        local.kill()
        local.wait()


def test_the_runtime_records_the_host_and_a_local_run_is_not_remote(home: Path) -> None:
    script = "from twinkle_auto.runtime import TrainingRuntime\nrt = TrainingRuntime('here'); rt.start(); rt.finish()\n"
    subprocess.run([sys.executable, "-c", script], check=True, timeout=60)
    meta = json.loads((home / "here" / "meta.json").read_text())
    assert meta["host"] == hostname()
    status = RunStore(home).status("here")
    assert not status.remote and status.host == hostname() and status.process_label == status.process


CRASH_LOG = (
    "step 3 loss 0.33\n"
    "Traceback (most recent call last):\n"
    '  File "/srv/job/train.py", line 12, in <module>\n'
    "    loss = model(batch)['los']\n"
    "KeyError: 'los'\n"
)


def test_the_monitor_judges_a_remote_run_on_its_files_and_names_the_host(home: Path) -> None:
    """A traceback in a remote run's log is a WARNING that says where to act, never a FIX here; a remote run
    whose metrics stopped is a STALL (its files are the only sign of life); nothing is launched or signalled."""
    local = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"], start_new_session=True)
    try:
        folder = _remote_run(home, local.pid, psutil.Process(local.pid).create_time())
        (folder / "output.log").write_text(CRASH_LOG)
        script_before = (folder / "train.py").read_text()
        result = run_cli("check", "far", "--json", "--no-llm")
        verdict = json.loads(result.stdout)
        assert result.returncode == 1 and verdict["decision"] == "WARNING", result.stdout
        assert OTHER in verdict["diagnosis"] and "KeyError" in verdict["diagnosis"]
        assert (folder / "train.py").read_text() == script_before and not list(folder.glob("train_v*.py"))
        assert local.poll() is None

        (folder / "output.log").write_text("step 3 loss 0.33\n")
        old = time.time() - 3600
        with open(folder / "metrics.jsonl", "w") as f:
            f.write(json.dumps({"ts": old, "step": 3, "loss": 0.33}) + "\n")
        stalled = json.loads(run_cli("check", "far", "--json", "--no-llm").stdout)
        assert stalled["decision"] == "WARNING", stalled
        assert [f["kind"] for f in stalled["findings"] if f["severity"] != "info"] == ["STALL"], stalled
        assert OTHER in stalled["diagnosis"]
        assert local.poll() is None and json.loads((folder / "meta.json").read_text())["status"] == "running"
    finally:
        local.kill()
        local.wait()
