"""The server pipeline without Ray or twinkle-kit: a fake Twinkle launcher on a joined 'cluster'.

Covers what must hold whatever the server is: idempotent start, refusal of a different server, the
start lock, a launcher dying or hanging during start-up, busy ports, bad input — each with a clear
message and nothing of ours left running — plus the tools' schemas, approval text and errors.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import wait_for
from stubs.server_helpers import FAKE_SERVER, alive, fake_server_cmd, free_port, use_stub_smi

from twinkle_auto.connection import Connection
from twinkle_auto.server.manager import ServerBusyError, ServerError, ServerManager, StartRequest
from twinkle_auto.server.plan import PlanError
from twinkle_auto.tools.base import Scope, ToolContext, ToolError, needs_approval
from twinkle_auto.tools.server import StartServerArgs, make_server_tools, split_gpus

_GCS = socket.create_server(("127.0.0.1", 0))
"""A port that accepts connections, as a joined cluster's GCS does (join_cluster probes it)."""
JOIN = f"127.0.0.1:{_GCS.getsockname()[1]}"  # a 'cluster the user runs': the fake launcher never talks to Ray


@pytest.fixture
def manager(home: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ServerManager]:
    monkeypatch.setenv("FAKE_DELAY", "0.3")
    mgr = ServerManager(home, server_command=fake_server_cmd(), ready_timeout=20, launcher_grace=5)
    yield mgr
    pids = [p.pid for p in mgr.processes()]
    try:
        mgr.shutdown()
    except ServerBusyError:
        time.sleep(3)
        mgr.shutdown()
    assert alive(pids) == []


def mock_request(port: int, **kw: object) -> StartRequest:
    return StartRequest(backend="mock", port=port, ray_address=JOIN, **kw)  # type: ignore[arg-type]


def test_start_reuse_refuse_other_shutdown(manager: ServerManager, home: Path) -> None:
    port = free_port()
    started = manager.start(mock_request(port))
    assert started["status"] == "started" and started["url"] == f"http://127.0.0.1:{port}"
    assert started["ray"] == {"address": JOIN, "ours": False}
    pids = [p.pid for p in manager.processes()]
    assert pids == [started["pid"]]

    again = manager.start(mock_request(port))
    assert again["status"] == "already_running" and again["pid"] == started["pid"]
    with pytest.raises(ServerError, match="already running at .* call shutdown_server first"):
        manager.start(mock_request(port, model_id="other-model"))

    assert manager.status()["healthy"] is True
    assert manager.list_models() == {"url": started["url"], "supported_models": ["mock-model"]}
    # A second assistant (a new manager over the same home) sees and reuses the same server.
    other = ServerManager(home, server_command=fake_server_cmd())
    assert other.start(mock_request(port))["status"] == "already_running"

    result = other.shutdown()
    assert result["status"] == "stopped" and "left running (not ours)" in result["ray"]
    assert alive(pids) == []
    assert not (home / "auto" / "server.json").exists() and not (home / "auto" / "cluster.json").exists()
    assert manager.shutdown()["status"] == "not_running"


def test_server_dying_during_startup(
    manager: ServerManager, monkeypatch: pytest.MonkeyPatch, home: Path
) -> None:
    monkeypatch.setenv("FAKE_MODE", "die")
    with pytest.raises(ServerError) as err:
        manager.start(mock_request(free_port()))
    text = str(err.value)
    assert text.startswith("the Twinkle server exited during start-up (exit code 1)")
    assert "RuntimeError: fake deployment failed: out of GPU memory" in text
    assert "fake deployment failed" in err.value.log_tail
    assert manager.processes() == [] and manager.load_state() is None
    assert "fake twinkle server" in (home / "auto" / "server.log").read_text()


def test_server_never_ready_times_out(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_MODE", "hang")
    mgr = ServerManager(home, server_command=fake_server_cmd(), ready_timeout=3, launcher_grace=5)
    t0 = time.monotonic()
    with pytest.raises(
        ServerError, match=r"not ready within 3s \(stuck at app:models-mock-model: not deployed yet"
    ):
        mgr.start(mock_request(free_port()))
    assert time.monotonic() - t0 < 15
    assert mgr.processes() == [] and mgr.load_state() is None


def test_second_start_while_starting_is_refused(
    manager: ServerManager, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_DELAY", "3")
    port = free_port()
    outcome: dict[str, object] = {}
    first = threading.Thread(target=lambda: outcome.setdefault("r", manager.start(mock_request(port))))
    first.start()
    wait_for(lambda: (manager.load_state() or {}).get("pid"), timeout=10)
    other = ServerManager(manager.home, server_command=fake_server_cmd())
    with pytest.raises(ServerBusyError, match="a server start is already in progress"):
        other.start(mock_request(port))
    with pytest.raises(
        ServerBusyError, match="cannot shut the server down: a server start is already in progress"
    ):
        other.shutdown()
    first.join(30)
    assert outcome["r"]["status"] == "started"  # type: ignore[index]


def test_port_in_use_by_another_program(manager: ServerManager, home: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        with pytest.raises(ServerError, match=rf"port {port} on 127.0.0.1 is in use.*; pick another port"):
            manager.start(mock_request(port))
    assert manager.load_state() is None and not (home / "auto" / "cluster.json").exists()


def test_port_serving_a_twinkle_server_we_did_not_start(manager: ServerManager, tmp_path: Path) -> None:
    port = free_port()
    config = tmp_path / "foreign.yaml"
    config.write_text(
        json.dumps(
            {
                "http_options": {"host": "127.0.0.1", "port": port},
                "applications": [{"import_path": "server", "args": {"supported_models": ["x"]}}],
            }
        )
    )
    foreign = subprocess.Popen(
        [sys.executable, str(FAKE_SERVER), "--config", str(config)], stdout=subprocess.DEVNULL
    )
    try:
        wait_for(lambda: manager.server_url(f"http://127.0.0.1:{port}") and _answers(port), timeout=15)
        with pytest.raises(
            ServerError, match=rf"port {port} already serves a Twinkle server that twinkle-auto did not start"
        ):
            manager.start(mock_request(port))
        assert manager.list_models(f"http://127.0.0.1:{port}")["supported_models"] == ["x"]
    finally:
        foreign.kill()
        foreign.wait(10)


def _answers(port: int) -> bool:
    from twinkle_auto.server.health import twinkle_healthz

    return twinkle_healthz(f"http://127.0.0.1:{port}")


def test_bad_input_starts_nothing(
    manager: ServerManager, monkeypatch: pytest.MonkeyPatch, home: Path
) -> None:
    with pytest.raises(
        PlanError, match="unknown backend 'tensorflow'; use one of: transformers, megatron, mock"
    ):
        manager.start(StartRequest(model_id="m", backend="tensorflow", port=free_port()))
    use_stub_smi(monkeypatch, gpus=2)
    with pytest.raises(PlanError, match=r"need 4 GPUs \(model 4\) but only 2 of 2 are free \(free: 0, 1\)"):
        manager.start(StartRequest(model_id="Qwen/Qwen3.5-4B", train_gpus=4, port=free_port()))
    with pytest.raises(PlanError, match="port must be 1-65535"):
        manager.start(mock_request(70000))
    assert manager.load_state() is None and not (home / "auto" / "cluster.json").exists()


def test_stale_state_of_a_dead_start_is_cleared(manager: ServerManager, home: Path) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (home / "auto").mkdir(exist_ok=True)
    (home / "auto" / "server.json").write_text(
        json.dumps({"status": "starting", "pid": dead.pid, "create_time": 1.0})
    )
    assert manager.start(mock_request(free_port()))["status"] == "started"


# ------------------------------------------------------------------------------------------------ tools
@pytest.fixture
def tools(manager: ServerManager, home: Path) -> dict[str, object]:
    ctx = ToolContext(Connection.open(home))
    return {t.name: t for t in make_server_tools(ctx, manager)}


def test_tool_schemas_and_approval(tools: dict, manager: ServerManager, home: Path) -> None:
    assert set(tools) == {"start_server", "shutdown_server", "get_cluster_info", "list_supported_models"}
    schema = tools["start_server"].args_schema.model_json_schema()
    assert {"model_id", "train_gpus", "backend", "samplers", "port", "ray_address"} <= set(
        schema["properties"]
    )
    assert needs_approval(tools["start_server"]) is None
    describe = needs_approval(tools["shutdown_server"])
    assert describe is not None
    ask = describe({}, Scope(ToolContext(Connection.open(home), server=manager)))
    assert "model state held in the server" in ask["text"] and "destroyed" in ask["text"]


def test_one_gpu_count_is_the_whole_server_and_samplers_as_text_are_read(
    tools: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    """'Qwen3.5-4B and a Qwen3.5-72B sampler on 2 GPUs' = 2 GPUs in all (sampler 1, training 1), even
    when the model writes the sampler as a string instead of an object."""
    use_stub_smi(monkeypatch, gpus=2)
    args = StartServerArgs.model_validate(
        {"model": "Qwen/Qwen3.5-4B", "gpus": "2", "samplers": ["model_id='Qwen/Qwen3.5-72B' tp=1"]}
    )
    train, samplers = split_gpus(args.total_gpus, args.train_gpus, args.samplers, args.backend)
    assert (train, [(s.model_id, s.gpus) for s in samplers]) == (1, [("Qwen/Qwen3.5-72B", 1)])
    with pytest.raises(ToolError, match="leaving none for the training model; leave the samplers' gpus out"):
        tools["start_server"].invoke(
            {"model_id": "m", "total_gpus": 2, "samplers": [{"model_id": "s", "gpus": 2}]}
        )
    with pytest.raises(ToolError, match="give either total_gpus or train_gpus"):
        split_gpus(2, 2, args.samplers, "transformers")
    assert (
        StartServerArgs.model_validate({"samplers": '[{"model_id": "a/b", "gpus": 2}]'}).samplers[0].gpus == 2
    )


def test_shutdown_is_asked_about_through_the_chat_graph(manager: ServerManager, home: Path) -> None:
    """The describer contract as the graph uses it: the person reads what is destroyed, then it stops."""
    from fakes import ScriptedChatModel
    from langchain_core.messages import AIMessage, HumanMessage
    from langgraph.checkpoint.memory import InMemorySaver
    from langgraph.types import Command

    from twinkle_auto.graphs.chat.graph import compile_chat_graph
    from twinkle_auto.tools import get_tools

    started = manager.start(mock_request(free_port()))
    pids = [p.pid for p in manager.processes()]
    ctx = ToolContext(Connection.open(home), server=manager)
    shut = AIMessage("", tool_calls=[{"name": "shutdown_server", "args": {}, "id": "c1"}])
    graph = compile_chat_graph(
        ScriptedChatModel(responses=[shut, "stopped"]),
        get_tools(ctx, search=False),
        checkpointer=InMemorySaver(),
    )
    cfg = {"configurable": {"thread_id": "s"}}
    out = graph.invoke({"messages": [HumanMessage("shut the server down")]}, cfg, context=ctx)
    text = out["__interrupt__"][0].value["calls"][0]["text"]
    assert started["url"] in text and "destroyed" in text and "while describing" not in text
    assert alive(pids) == pids  # nothing ran before the answer
    out = graph.invoke(Command(resume=True), cfg, context=ctx)
    assert '"status":"stopped"' in out["messages"][-2].content
    assert alive(pids) == [] and manager.processes() == []


def test_tool_flow_and_errors(tools: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    use_stub_smi(monkeypatch, gpus=2, busy="1")
    info = json.loads(tools["get_cluster_info"].invoke({}))
    assert info["gpus"]["count"] == 2 and info["gpus"]["free"] == [0] and info["ray"] is None
    with pytest.raises(ToolError, match="no Twinkle server is running; call start_server first"):
        tools["list_supported_models"].invoke({})
    with pytest.raises(ToolError) as err:
        tools["start_server"].invoke({"model_id": "m", "backend": "jax"})
    assert "unknown backend 'jax'" in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(ToolError, match=r"need 3 GPUs \(model 1 \+ s 2\) but only 1 of 2 are free"):
        tools["start_server"].invoke(
            {"model_id": "m", "train_gpus": 1, "samplers": [{"model_id": "s", "gpus": 2}]}
        )

    port = free_port()
    out = json.loads(tools["start_server"].invoke({"backend": "mock", "port": port, "ray_address": JOIN}))
    assert out["status"] == "started" and out["model_id"] == "mock-model"
    models = json.loads(tools["list_supported_models"].invoke({}))
    assert models["supported_models"] == ["mock-model"]
    assert json.loads(tools["get_cluster_info"].invoke({}))["server"]["healthy"] is True
    stopped = json.loads(tools["shutdown_server"].invoke({}))
    assert stopped["status"] == "stopped"


def test_tool_error_for_dying_server_is_one_line(
    tools: dict, monkeypatch: pytest.MonkeyPatch, manager: ServerManager
) -> None:
    monkeypatch.setenv("FAKE_MODE", "die")
    with pytest.raises(ToolError) as err:
        tools["start_server"].invoke({"backend": "mock", "port": free_port(), "ray_address": JOIN})
    text = str(err.value)
    assert "exited during start-up" in text and f"server log: {manager.log_path}" in text and "\n" not in text


def test_joining_a_cluster_nobody_runs_fails_at_once_in_one_line(tmp_path: Path) -> None:
    """An address with nothing listening (a port just closed) is refused before anything is launched,
    not after Ray has retried its GCS for the whole start timeout."""
    from twinkle_auto.server.cluster import ClusterError, join_cluster

    probe = socket.create_server(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    started = time.monotonic()
    with pytest.raises(ClusterError) as err:
        join_cluster(tmp_path, f"127.0.0.1:{port}")
    assert time.monotonic() - started < 30
    assert f"no Ray cluster answers at 127.0.0.1:{port}" in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(ClusterError, match="port of 1-65535"):
        join_cluster(tmp_path, "127.0.0.1:http")


def test_ray_bookkeeping_resources_are_not_reported_as_capacity() -> None:
    from twinkle_auto.server.cluster import _bookkeeping

    pg = "b0321fea53726b0e5dbf8cc78d6901000000"
    for key in (f"CPU_group_{pg}", f"CPU_group_0_{pg}", f"bundle_group_0_{pg}", "node:127.0.0.1"):
        assert _bookkeeping(key), key
    for key in ("CPU", "GPU", "memory_gb", "object_store_memory_gb", "accelerator_type:H100", "my_group_x"):
        assert not _bookkeeping(key), key
