"""The chat graph over the real OpenAI wire protocol (langchain-openai's ChatOpenAI) against a scripted
HTTP server: retries on 5xx and 429, timeouts, malformed tool-call JSON, an unknown model."""

from __future__ import annotations

import time
from pathlib import Path

import openai
import pytest
from langchain_core.messages import HumanMessage, ToolMessage
from langgraph.checkpoint.memory import InMemorySaver
from openai_stub import Rule, StubLLM

from twinkle_auto.app.chat import describe_llm_error, probe_llm
from twinkle_auto.app.llm import make_chat_model
from twinkle_auto.connection import Connection
from twinkle_auto.graphs.chat.graph import compile_chat_graph
from twinkle_auto.graphs.chat.streaming import CUT_NOTE
from twinkle_auto.tools import get_tools
from twinkle_auto.tools.base import ToolContext


@pytest.fixture
def stub():
    llm = StubLLM()
    url = llm.start()
    yield llm, url
    llm.stop()


def _graph(url: str, home: Path, **model_kw):
    ctx = ToolContext(Connection.open(home))
    tools = get_tools(ctx, server=False, search=False)
    model = make_chat_model(url, "stub-model", "key", **model_kw)
    return compile_chat_graph(model, tools, checkpointer=InMemorySaver())


CFG = {"configurable": {"thread_id": "wire"}}


def test_tool_call_over_the_wire_then_answer(stub, home: Path) -> None:
    llm, url = stub
    llm.rules = [
        Rule(match="runs", tool_calls=[("list_training_runs", {})]),
        Rule(after_tool=True, text="No runs yet."),
    ]
    out = _graph(url, home).invoke({"messages": [HumanMessage("list runs")]}, CFG)
    assert out["messages"][-1].content == "No runs yet."
    assert llm.requests[0]["tools"] and llm.requests[1]["messages"][-1]["role"] == "tool"


def test_5xx_and_429_are_retried_with_backoff(stub, home: Path) -> None:
    llm, url = stub
    llm.rules = [Rule(status=500, times=1), Rule(status=429, times=1), Rule(text="finally")]
    t0 = time.monotonic()
    out = _graph(url, home, max_retries=2).invoke({"messages": [HumanMessage("hi")]}, CFG)
    assert out["messages"][-1].content == "finally"
    assert len(llm.requests) == 3 and time.monotonic() - t0 > 0.3  # the client waited between tries


def test_persistent_5xx_surfaces_as_one_line(stub, home: Path) -> None:
    llm, url = stub
    llm.rules = [Rule(status=503)]
    with pytest.raises(openai.APIStatusError) as info:
        _graph(url, home, max_retries=1).invoke({"messages": [HumanMessage("hi")]}, CFG)
    assert describe_llm_error(info.value).startswith("HTTP 503")


def test_timeout_is_bounded(stub, home: Path) -> None:
    llm, url = stub
    llm.rules = [Rule(text="too late", delay=5)]
    t0 = time.monotonic()
    with pytest.raises(openai.APITimeoutError):
        _graph(url, home, timeout=0.5, max_retries=0).invoke({"messages": [HumanMessage("hi")]}, CFG)
    assert time.monotonic() - t0 < 4


def test_malformed_tool_call_json_goes_back_to_the_model(stub, home: Path) -> None:
    llm, url = stub
    llm.rules = [
        Rule(match="pause", tool_calls=[("pause_training", '{"run_id": "x"')], times=1),
        Rule(after_tool=True, text="Sorry, my arguments were broken."),
    ]
    out = _graph(url, home).invoke({"messages": [HumanMessage("pause it")]}, CFG)
    errors = [m for m in out["messages"] if isinstance(m, ToolMessage)]
    assert errors and "not valid JSON" in errors[0].content
    assert out["messages"][-1].content == "Sorry, my arguments were broken."
    # the next request carried a tool result for the broken call: the server accepted the history
    assert llm.requests[-1]["messages"][-1]["role"] == "tool"


def test_unknown_model_and_unreachable_server_are_named(stub) -> None:
    llm, url = stub
    assert probe_llm(url, "k", "stub-model") is None
    llm.models = ("stub-model", "other-model")
    assert "unknown model 'qwen3.5'" in (probe_llm(url, "k", "qwen3.5") or "")
    assert probe_llm("http://127.0.0.1:9/v1", "k", "m", timeout=2)
    with pytest.raises(openai.NotFoundError) as info:
        make_chat_model(url, "no-such-model", "k", max_retries=0).invoke("hi")
    assert describe_llm_error(info.value).startswith("model not found")


def test_an_answer_that_loops_is_cut_and_the_stream_closed(stub, home: Path) -> None:
    """A small model repeating one sentence until the context is full is stopped after a few copies."""
    llm, url = stub
    llm.rules = [Rule(text="Started the server. " + "The server is running on CPU. " * 400)]
    out = _graph(url, home).invoke({"messages": [HumanMessage("start the server")]}, CFG)
    answer = out["messages"][-1].content
    assert answer.startswith("Started the server. The server is running on CPU.")
    assert answer.endswith(CUT_NOTE) and answer.count("running on CPU") <= 2 and len(answer) < 300
