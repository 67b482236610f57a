"""Runs as Ray jobs on a real local Ray head (marker `ray`): start, status, logs, pause, resume, stop.

The head is ours, started by pid with its dashboard (the Jobs API lives there) and stopped by pid in
teardown; no `ray stop`.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import tempfile
import textwrap
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import read_meta, run_cli, wait_for

from twinkle_auto.connection.process import child_env, spawn_logged
from twinkle_auto.server import cluster as rc

pytestmark = [
    pytest.mark.ray,
    pytest.mark.slow,
    pytest.mark.skipif(
        importlib.util.find_spec("ray") is None, reason="ray not installed (pip install 'ray')"
    ),
]

SCRIPT = textwrap.dedent(
    """
    import json, os, sys, time
    import helper
    from twinkle_auto.runtime import TrainingRuntime
    rt = TrainingRuntime(); rt.start(script_path=__file__)
    report = {"argv": sys.argv[1:], "cwd": os.getcwd(), "helper": helper.VALUE, "lr": os.environ.get("LR"),
              "secrets": sorted(k for k in os.environ if k.startswith("TWINKLE_LLM") or k == "OPENAI_API_KEY")}
    print("REPORT " + json.dumps(report), flush=True)
    step = rt.get_resume_info()["last_step"]
    while True:
        step += 1
        rt.log_metrics(step=step, loss=1.0 / step)
        time.sleep(0.02)
    """
)


@pytest.fixture(scope="module")
def ray_dashboard() -> Iterator[str]:
    """Our own Ray head with its dashboard on free ports; yields the dashboard URL."""
    temp = Path(tempfile.mkdtemp(prefix="tar-", dir="/tmp"))
    host = "127.0.0.1"
    flags = ("--dashboard-port",) + rc.NODE_PORTS + rc.HEAD_PORTS
    ports = dict(zip(flags, rc.free_ports(len(flags), host), strict=True))  # distinct, as start_cluster's
    dash = ports["--dashboard-port"]
    cmd = [
        sys.executable, "-m", "ray.scripts.scripts", "start", "--block",
        "--head", "--disable-usage-stats", f"--node-ip-address={host}", f"--temp-dir={temp}",
        "--num-cpus=2", "--include-dashboard=true", f"--dashboard-host={host}",
        "--node-manager-port=0", "--object-manager-port=0", "--min-worker-port=0", "--max-worker-port=0",
        *(f"{flag}={port}" for flag, port in ports.items()),
    ]  # fmt: skip
    env = child_env(rc.RAY_ENV)
    env.pop("RAY_ADDRESS", None)
    child, ctime = spawn_logged(cmd, log_path=temp / "head.log", marker="ray head for jobs", env=env)
    url = f"http://{host}:{dash}"

    def ready() -> bool:
        try:
            with urllib.request.urlopen(f"{url}/api/jobs/", timeout=2) as resp:
                return resp.status == 200
        except OSError:
            return child.poll() is not None  # fail fast below if the head died

    try:
        wait_for(ready, timeout=120, interval=0.5)
        assert child.poll() is None, (temp / "head.log").read_text()[-2000:]
        yield url
    finally:
        rc.stop_session(child.pid, ctime, grace=15)
        child.wait(timeout=30)


def _reports(home: Path, run_id: str) -> list[dict]:
    path = home / run_id / "output.log"
    text = path.read_text() if path.exists() else ""
    return [json.loads(line[7:]) for line in text.splitlines() if line.startswith("REPORT ")]


def _steps(home: Path, run_id: str) -> list[int]:
    path = home / run_id / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(line)["step"] for line in path.read_text().splitlines() if line.strip()]


def _status(run_id: str) -> dict:
    return json.loads(run_cli("status", run_id, "--json").stdout)


def test_a_run_as_a_ray_job(home: Path, tmp_path: Path, ray_dashboard: str) -> None:
    proj = tmp_path / "proj"
    proj.mkdir()
    (proj / "train.py").write_text(SCRIPT)
    (proj / "helper.py").write_text("VALUE = 'sibling'\n")
    secrets = {"TWINKLE_LLM_API_KEY": "sk-assistant", "OPENAI_API_KEY": "sk-openai"}
    started = run_cli(
        "start", "rj", "--script", str(proj / "train.py"), "--launcher", "ray", "--ray-address", ray_dashboard,
        "--env", "LR=0.3", "--", "--epochs", "2", env=secrets, timeout=120,
    )  # fmt: skip
    assert started.returncode == 0, started.stderr
    assert "Ray job" in started.stdout
    meta = read_meta(home, "rj")
    first_job = meta["ray_job"]["submission_id"]
    assert meta["launch"]["launcher"] == "ray" and "pid" not in meta
    report = wait_for(lambda: _reports(home, "rj"), timeout=90)[0]  # the job's log, streamed into output.log
    assert report == {
        "argv": ["--epochs", "2"],
        "cwd": str(proj),
        "helper": "sibling",
        "lr": "0.3",
        "secrets": [],
    }
    wait_for(lambda: len(_steps(home, "rj")) >= 5, timeout=60)
    status = _status("rj")
    assert (
        status["process"] == "alive"
        and status["effective_status"] == "running"
        and status["launcher"] == "ray"
    )
    assert "REPORT" in run_cli("logs", "rj", "-n", "50").stdout

    again = run_cli("resume", "rj")
    assert again.returncode == 1 and "already running as Ray job" in again.stderr

    assert run_cli("pause", "rj", timeout=120).returncode == 0
    status = _status("rj")
    assert status["status"] == "paused" and status["process"] == "dead"
    paused_at = max(_steps(home, "rj"))
    time.sleep(1.0)  # a job that still ran would write more steps meanwhile
    assert max(_steps(home, "rj")) == paused_at

    resumed = run_cli("resume", "rj", timeout=120)
    assert resumed.returncode == 0, resumed.stderr
    assert read_meta(home, "rj")["ray_job"]["submission_id"] != first_job
    wait_for(lambda: max(_steps(home, "rj")) > paused_at + 5, timeout=90)
    steps = _steps(home, "rj")
    assert steps == sorted(set(steps)) and steps[steps.index(paused_at) + 1] == paused_at + 1
    wait_for(lambda: len(_reports(home, "rj")) == 2, timeout=60)  # the log streamer trails the metrics

    stopped = run_cli("stop", "rj", "--grace", "5", timeout=120)
    assert stopped.returncode == 0, stopped.stderr
    status = _status("rj")
    assert status["status"] == "stopped" and status["process"] == "dead"
    log = (home / "rj" / "output.log").read_text()
    assert log.count("as Ray job twinkle-rj-") == 2
