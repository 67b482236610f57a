"""End to end with the real Twinkle server in mock mode (marker `twinkle_server`, CPU only).

start_server → healthy → list_supported_models shows mock-model → a training script on the Twinkle
client API is started, paused, resumed and stopped by the run controller → shutdown_server leaves no
process of ours. One server start for the whole module (~35-80 s, ~5 GB RSS).
"""

from __future__ import annotations

import importlib.util
import json
import time
from pathlib import Path

import pytest
from conftest import EXAMPLES, metric_steps, read_meta, wait_for
from stubs.server_helpers import alive, free_port

from twinkle_auto.connection import Connection
from twinkle_auto.server.manager import ServerManager
from twinkle_auto.tools.base import ToolContext
from twinkle_auto.tools.server import make_server_tools

pytestmark = [
    pytest.mark.twinkle_server,
    pytest.mark.slow,
    pytest.mark.skipif(
        importlib.util.find_spec("twinkle") is None or importlib.util.find_spec("ray") is None,
        reason="needs the server extra: twinkle-kit[server,client]==0.5.1 and ray[serve]",
    ),
]

SCRIPT = EXAMPLES / "twinkle_client" / "train.py"


def test_mock_server_training_pause_resume_stop(home: Path) -> None:
    conn = Connection.open(home, stop_grace=20)
    manager = ServerManager(home, object_store_mb=500)
    tools = {t.name: t for t in make_server_tools(ToolContext(conn), manager)}
    port = free_port()
    ours: list[int] = []
    try:
        t0 = time.monotonic()
        started = json.loads(tools["start_server"].invoke({"backend": "mock", "port": port}))
        ready_s = time.monotonic() - t0
        assert started["status"] == "started" and started["url"] == f"http://127.0.0.1:{port}"
        ours = [p.pid for p in manager.processes()]
        again = json.loads(tools["start_server"].invoke({"backend": "mock", "port": port}))
        assert again["status"] == "already_running"
        models = json.loads(tools["list_supported_models"].invoke({}))
        assert models["supported_models"] == ["mock-model"]
        info = json.loads(tools["get_cluster_info"].invoke({}))
        assert info["server"]["healthy"] is True and info["ray"]["ours"] is True

        env = {
            "TWINKLE_SERVER_URL": started["url"],
            "TOTAL_STEPS": "2000",
            "STEP_SLEEP": "0.05",
            "SAVE_EVERY": "5",
        }
        ctl = conn.controller
        launched = ctl.start("tw-e2e", SCRIPT.read_text(), env=env)
        ours.append(launched.pid)
        wait_for(lambda: len(metric_steps(home, "tw-e2e")) >= 8, timeout=180)

        assert ctl.pause("tw-e2e") == "paused"
        paused_at = max(metric_steps(home, "tw-e2e"))
        assert alive([launched.pid]) == []

        resumed = ctl.resume("tw-e2e")
        ours.append(resumed.pid)
        wait_for(lambda: max(metric_steps(home, "tw-e2e")) >= paused_at + 5, timeout=180)
        log = (home / "tw-e2e" / "output.log").read_text()
        assert "(resume) of train.py" in log and "Resumed from step" in log and "checkpoint of step" in log
        steps = metric_steps(home, "tw-e2e")
        assert steps == sorted(steps) and len(steps) == len(set(steps))  # continued, not restarted

        stopped = ctl.stop("tw-e2e")
        assert stopped.status == "stopped" and not stopped.killed
        meta = read_meta(home, "tw-e2e")
        assert meta["shutdown"]["checkpoint"].startswith("twinkle://")
        assert (home / "tw-e2e" / "checkpoint.txt").read_text().split()[1] == meta["shutdown"]["checkpoint"]

        t1 = time.monotonic()
        down = json.loads(tools["shutdown_server"].invoke({}))
        stop_s = time.monotonic() - t1
        assert down["status"] == "stopped"
        assert alive(ours) == [] and manager.processes() == []
        print(f"\nmock server: ready {ready_s:.1f}s, shutdown {stop_s:.1f}s")
    finally:
        manager.shutdown()
        assert alive(ours) == []
