"""`langgraph dev` serves langgraph.json: both graphs load and answer once through the HTTP API.

The server is the real one (langgraph-cli[inmem]) started in the repo root, on 127.0.0.1 and a free port,
with its LLM pointed at a scripted OpenAI-compatible stub; it is stopped through its own process group.
What this proves is what LangGraph Studio needs: the module-level graphs of `graphs/deploy.py` import with
collaborators from the environment, compile without a checkpointer, and run with the server's own.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from openai_stub import Rule, StubLLM

pytestmark = pytest.mark.slow

langgraph_sdk = pytest.importorskip("langgraph_sdk")

ROOT = Path(__file__).resolve().parents[1]
LANGGRAPH = Path(sys.executable).parent / "langgraph"
START_TIMEOUT_S = 90.0
CHAT_ANSWER = "You have one run, lg-crash, and it failed."
VERDICT = {"decision": "FIX", "diagnosis": "KeyError 'targets': the record key is 'target'; fix the script."}
CRASH_LOG = (
    "===== twinkle-auto: launch #1 (start) of train.py v1 =====\n"
    "Traceback (most recent call last):\n"
    '  File "train.py", line 3, in <module>\n'
    '    y = rec["targets"]\n'
    "KeyError: 'targets'\n"
)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _crashed_run_folder(home: Path, run_id: str) -> None:
    folder = home / run_id
    folder.mkdir(parents=True)
    meta = {"run_id": run_id, "status": "failed", "pid": None, "exit_code": 1, "model_id": "tiny"}
    (folder / "meta.json").write_text(json.dumps(meta))
    (folder / "metrics.jsonl").write_text(
        "".join(json.dumps({"step": i, "loss": 1.0}) + "\n" for i in (1, 2))
    )
    (folder / "output.log").write_text(CRASH_LOG)
    (folder / "train.py").write_text('rec = {"target": 1}\nfor step in range(3):\n    y = rec["targets"]\n')


def _tail(path: Path, chars: int = 3000) -> str:
    return path.read_text(errors="replace")[-chars:] if path.exists() else "(no log)"


@pytest.fixture
def stub_llm() -> Iterator[StubLLM]:
    stub = StubLLM(
        [
            Rule(match="Rule decision", text=json.dumps(VERDICT)),  # the monitor's verdict prompt
            Rule(match="list my runs", tool_calls=[("list_training_runs", {})]),
            Rule(after_tool=True, text=CHAT_ANSWER),
        ]
    )
    stub.start()
    yield stub
    stub.stop()


@pytest.fixture
def dev_server(tmp_path: Path, home: Path, stub_llm: StubLLM) -> Iterator[str]:
    """`langgraph dev` in the repo root; yields its URL; killed by process group at teardown."""
    if not LANGGRAPH.exists():
        pytest.skip("langgraph-cli[inmem] is not installed (pip install -e '.[dev]')")
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    assert stub_llm._server is not None
    env = {
        **os.environ,
        "TWINKLE_HOME": str(home),
        "TWINKLE_LLM_BASE_URL": f"http://127.0.0.1:{stub_llm._server.server_address[1]}/v1",
        "TWINKLE_LLM_MODEL": "stub-model",
        "TWINKLE_LLM_API_KEY": "x",
        "LANGGRAPH_CLI_NO_ANALYTICS": "1",
        "LANGSMITH_TRACING": "false",
        "LANGCHAIN_TRACING_V2": "false",
    }
    # the in-memory server keeps its state in ./.langgraph_api: remove it unless it was there before
    state_dir = ROOT / ".langgraph_api"
    had_state_dir = state_dir.exists()
    log_path = tmp_path / "langgraph-dev.log"
    cmd = [str(LANGGRAPH), "dev", "--host", "127.0.0.1", "--port", str(port), "--no-browser", "--no-reload"]
    with open(log_path, "wb") as log:
        server = subprocess.Popen(
            cmd,
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if server.poll() is not None:
                pytest.fail(f"langgraph dev exited with code {server.returncode}:\n{_tail(log_path)}")
            try:
                with urllib.request.urlopen(f"{url}/ok", timeout=2) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"langgraph dev did not answer in {START_TIMEOUT_S:.0f}s:\n{_tail(log_path)}")
            time.sleep(0.5)
        yield url
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGTERM)
            try:
                server.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)
                server.wait(timeout=10)
        if not had_state_dir:
            shutil.rmtree(state_dir, ignore_errors=True)


def test_langgraph_dev_serves_the_chat_and_monitor_graphs(
    dev_server: str, home: Path, stub_llm: StubLLM, tmp_path: Path
) -> None:
    _crashed_run_folder(home, "lg-crash")
    client = langgraph_sdk.get_sync_client(url=dev_server, api_key=None)
    assistants = {a["graph_id"]: a["assistant_id"] for a in client.assistants.search()}
    assert {"chat", "monitor"} <= set(assistants)
    for graph_id in ("chat", "monitor"):  # Studio builds its input form from these
        schemas = client.assistants.get_schemas(assistants[graph_id])
        assert schemas["input_schema"] is not None, f"{graph_id}: no input schema (see the server log)"
        assert schemas["output_schema"] is not None, f"{graph_id}: no output schema"

    chat = client.runs.wait(
        None, "chat", input={"messages": [{"role": "human", "content": "list my runs"}]}, raise_error=True
    )
    messages = chat["messages"]
    assert messages[-1]["type"] == "ai" and messages[-1]["content"] == CHAT_ANSWER
    tool_results = [m for m in messages if m["type"] == "tool"]
    assert tool_results and tool_results[0]["name"] == "list_training_runs"
    assert "lg-crash" in tool_results[0]["content"]  # the tool read the TWINKLE_HOME we gave the server

    monitor = client.runs.wait(None, "monitor", input={"run_id": "lg-crash"}, raise_error=True)
    assert monitor["decision"] == "FIX" and monitor["verdict_source"] == "llm"
    assert monitor["diagnosis"] == VERDICT["diagnosis"]
    assert any(f["kind"] == "CODE_ERROR" for f in monitor["findings"])
    assert "auto-fix is off" in monitor["message"]  # deploy.py serves the monitor with policy="off"
    assert not (home / "lg-crash" / "train_v1.py").exists()
    assert any(body.get("model") == "stub-model" for body in stub_llm.requests)
