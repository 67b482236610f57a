"""Runs on the Twinkle client API against the real Twinkle server in mock mode (marker twinkle_server, CPU).

One server for the module (mock-model plus a mock-model sampler), started and shut down by the server
tools: the hand-written client example is paused, resumed and stopped by the run controller;
twinkle-grpo runs, is stopped mid-way (SIGTERM saves a server-side checkpoint) and relaunched, and must
continue after the step it stopped at with reward metrics on every step; twinkle-sft runs to the end.
"""

from __future__ import annotations

import importlib.util
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import EXAMPLES, metric_steps, read_meta, wait_for
from recipe_data.helpers import GRPO_ROWS, SFT_ROWS, start_recipe_run, write_jsonl
from stubs.server_helpers import alive, free_port

from twinkle_auto.connection.control import RunController
from twinkle_auto.connection.store import RunStore
from twinkle_auto.runtime import format as fmt

pytestmark = [
    pytest.mark.twinkle_server,
    pytest.mark.slow,
    pytest.mark.skipif(
        importlib.util.find_spec("twinkle") is None or importlib.util.find_spec("ray") is None,
        reason="needs the server extra: twinkle-kit[server,client]==0.5.1 and ray[serve]",
    ),
]


@pytest.fixture(scope="module")
def mock_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One server for the module, started and shut down through the chat's own server tools.

    start_server → healthy → a second start reuses it → list_supported_models shows mock-model →
    get_cluster_info sees our Ray; at the end shutdown_server leaves no process of ours. (~35-80 s and
    ~5 GB RSS per start: the module's tests share it rather than each starting one.)
    """
    from twinkle_auto.connection import Connection
    from twinkle_auto.server.manager import ServerManager
    from twinkle_auto.tools.base import ToolContext
    from twinkle_auto.tools.server import make_server_tools

    home = tmp_path_factory.mktemp("server-home")
    manager = ServerManager(home, object_store_mb=500)
    tools = {t.name: t for t in make_server_tools(ToolContext(Connection.open(home)), manager)}
    port = free_port()
    request = {"backend": "mock", "port": port, "samplers": [{"model_id": "mock-model"}]}
    ours: list[int] = []
    try:
        t0 = time.monotonic()
        started = json.loads(tools["start_server"].invoke(request))
        ready_s = time.monotonic() - t0
        assert started["status"] == "started" and started["url"] == f"http://127.0.0.1:{port}", started
        ours = [p.pid for p in manager.processes()]
        again = json.loads(tools["start_server"].invoke(request))
        assert again["status"] == "already_running"
        models = json.loads(tools["list_supported_models"].invoke({}))
        assert "mock-model" in models["supported_models"], models
        info = json.loads(tools["get_cluster_info"].invoke({}))
        assert info["server"]["healthy"] is True and info["ray"]["ours"] is True
        # what the cluster has, not Ray's per-replica placement-group keys, nor the server's files again
        assert "CPU" in info["ray"]["total"] and not [k for k in info["ray"]["total"] if "_group_" in k]
        assert "log" not in info["server"] and "ray" not in info["server"]
        yield started["url"]
        t1 = time.monotonic()
        down = json.loads(tools["shutdown_server"].invoke({}))
        assert down["status"] == "stopped", down
        assert alive(ours) == [] and manager.processes() == []
        print(f"\nmock server: ready {ready_s:.1f}s, shutdown {time.monotonic() - t1:.1f}s")
    finally:
        manager.shutdown()
        assert alive(ours) == []


def rows(home: Path, run_id: str) -> list[dict]:
    text = (home / run_id / "metrics.jsonl").read_text()
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def wait_exit(home: Path, run_id: str, launch: int, timeout: float = 180) -> dict:
    def ended() -> bool:
        meta = read_meta(home, run_id)
        return meta.get("launch_count") == launch and meta.get("exit_code") is not None

    wait_for(ended, timeout=timeout)
    return read_meta(home, run_id)


def test_client_example_pauses_resumes_and_stops(mock_server: str, home: Path) -> None:
    """examples/twinkle_client/train.py: pause ends the process, resume continues at the next step from
    its checkpoint (not a restart), stop saves a server-side checkpoint that checkpoint.txt names."""
    ctl = RunController(RunStore(home), stop_grace=20)
    env = {"TWINKLE_SERVER_URL": mock_server, "TOTAL_STEPS": "2000", "STEP_SLEEP": "0.05", "SAVE_EVERY": "5"}
    launched = ctl.start("tw-e2e", (EXAMPLES / "twinkle_client" / "train.py").read_text(), env=env)
    ours = [launched.pid]
    try:
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
    finally:
        if alive(ours):
            ctl.stop("tw-e2e")
    meta = read_meta(home, "tw-e2e")
    assert meta["shutdown"]["checkpoint"].startswith("twinkle://")
    assert (home / "tw-e2e" / "checkpoint.txt").read_text().split()[1] == meta["shutdown"]["checkpoint"]
    assert alive(ours) == []


def test_twinkle_grpo_rewards_pause_stop_and_relaunch(mock_server: str, home: Path, tmp_path: Path) -> None:
    """Pause (SIGKILL) and resume continue at the next step from the weights handed to the sampler; stop
    (SIGTERM) saves a full checkpoint that the relaunch loads; every step has reward metrics."""
    ctl = RunController(RunStore(home), stop_grace=20)
    data = write_jsonl(tmp_path / "math.jsonl", GRPO_ROWS)
    rendered = start_recipe_run(
        ctl,
        "grpo",
        "twinkle-grpo",
        {
            "model": "mock-model",
            "dataset": str(data),
            "server_url": mock_server,
            "max_steps": 16,
            "save_every": 100,
            "max_new_tokens": 8,
            "step_sleep": 0.2,
        },
    )
    assert rendered.notes == [f"model mock-model is served at {mock_server}"]
    try:
        wait_for(lambda: len(metric_steps(home, "grpo")) >= 3, timeout=180)
        assert ctl.pause("grpo") == "paused"
        paused_at = max(metric_steps(home, "grpo"))
        ctl.resume("grpo")
        wait_for(lambda: max(metric_steps(home, "grpo")) >= paused_at + 2, timeout=180)
        stopped = ctl.stop("grpo")
        assert stopped.status == "stopped" and not stopped.killed
        meta = read_meta(home, "grpo")
        stop_step = meta["shutdown"]["step"]
        assert meta["shutdown"]["checkpoint"].startswith("twinkle://") and stop_step < 16
        ctl.resume("grpo")
        meta = wait_exit(home, "grpo", launch=3)
    finally:
        for _pid, child in list(ctl._children.items()):
            if child.poll() is None:
                ctl.stop("grpo")
    log = (home / "grpo" / "output.log").read_text()
    assert meta["status"] in fmt.FINISHED_STATUSES and meta["exit_code"] == 0, log[-3000:]
    assert f"Resumed from step {paused_at} (checkpoint of step" in log and "weights only" in log
    assert f"Resumed from step {stop_step} (checkpoint of step {stop_step}:" in log
    assert metric_steps(home, "grpo") == list(range(1, 17))  # continued each time, nothing twice
    lines = rows(home, "grpo")
    for row in lines:
        assert {"reward", "reward_accuracy", "reward_format", "reward_std", "completion_length"} <= row.keys()
        assert 0.0 <= row["reward"] <= 2.0 and row["completion_length"] == 8
    # the mock samples token ids; some final numbers hit the answers, so some steps train
    assert any(r["reward"] > 0 for r in lines) and any("loss" in r for r in lines)
    assert (home / "grpo" / "checkpoint.txt").read_text().split()[0] == "16"


def test_twinkle_sft_runs_to_the_end(mock_server: str, home: Path, tmp_path: Path) -> None:
    ctl = RunController(RunStore(home), stop_grace=20)
    data = write_jsonl(tmp_path / "sft.jsonl", SFT_ROWS)
    start_recipe_run(
        ctl,
        "sft",
        "twinkle-sft",
        {
            "model": "mock-model",
            "dataset": str(data),
            "server_url": mock_server,
            "max_steps": 6,
            "save_every": 3,
        },
    )
    meta = wait_exit(home, "sft", launch=1)
    log = (home / "sft" / "output.log").read_text()
    assert meta["status"] in fmt.FINISHED_STATUSES and meta["exit_code"] == 0, log[-3000:]
    lines = rows(home, "sft")
    assert [r["step"] for r in lines] == [1, 2, 3, 4, 5, 6]
    assert all(isinstance(r["loss"], float) and 0 <= r["loss"] <= 1 for r in lines)
    assert meta["config"]["lora_rank"] == 8 and meta["model_id"] == "mock-model"


def test_start_training_tool_runs_the_grpo_recipe(mock_server: str, home: Path, tmp_path: Path) -> None:
    """What the chat does for "start a GRPO training with mock-model on this data": the tool renders the
    recipe and launches it; the run reports rewards against the server."""
    from twinkle_auto.connection import Connection
    from twinkle_auto.tools.base import ToolContext
    from twinkle_auto.tools.training import make_training_tools

    conn = Connection.open(home, stop_grace=20)
    tools = {t.name: t for t in make_training_tools(ToolContext(conn))}
    listed = json.loads(tools["list_recipes"].invoke({}))
    assert "twinkle-grpo" in [r["name"] for r in listed["recipes"]]
    data = write_jsonl(tmp_path / "this-data.jsonl", GRPO_ROWS)
    answer = json.loads(
        tools["start_training"].invoke(
            {
                "recipe": "twinkle-grpo",
                "model": "mock-model",
                "dataset": str(data),
                "max_steps": 200,
                "run_id": "chat-grpo",
                "params": {"server_url": mock_server, "max_new_tokens": 8, "step_sleep": 0.1},
            }
        )
    )
    assert answer["started"] == "chat-grpo"
    try:
        wait_for(lambda: len(metric_steps(home, "chat-grpo")) >= 3, timeout=180)
        assert all("reward" in r for r in rows(home, "chat-grpo"))
        meta = read_meta(home, "chat-grpo")
        assert meta["model_id"] == "mock-model" and meta["config"]["num_generations"] == 4
    finally:
        stopped = conn.controller.stop("chat-grpo")
    assert stopped.status == "stopped"
