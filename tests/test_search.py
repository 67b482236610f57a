"""search_models / search_datasets through the real modelscope client against a local fake hub."""

from __future__ import annotations

import json
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hubserver import HubServer, model_entry

from twinkle_auto.connection import Connection
from twinkle_auto.skills.hub import HUB_TIMEOUT, REQUEST_TIMEOUT
from twinkle_auto.tools.base import RESULT_BUDGET, ToolContext, ToolError
from twinkle_auto.tools.search import MAX_LIMIT, _date, _result, make_search_tools

pytest.importorskip("modelscope_hub", reason="needs the search extra (modelscope)")


@pytest.fixture
def hub_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The client's config and cache in tmp, no token: tests never touch ~/.modelscope."""
    monkeypatch.setenv("MODELSCOPE_HOME", str(tmp_path / "ms-home"))
    monkeypatch.setenv("MODELSCOPE_CACHE", str(tmp_path / "ms-cache"))
    monkeypatch.delenv("MODELSCOPE_API_TOKEN", raising=False)


@pytest.fixture
def hub(hub_env: None, monkeypatch: pytest.MonkeyPatch) -> Iterator[HubServer]:
    with HubServer() as server:
        monkeypatch.setenv("MODELSCOPE_ENDPOINT", server.url)
        server.models = [
            model_entry("Qwen/Qwen2.5-7B-Instruct", 812345, updated="2025-03-01T08:00:00Z"),
            model_entry("Qwen/Qwen2.5-0.5B-Instruct", 99000, updated="2024-11-02T00:00:00Z"),
            model_entry("Qwen/Qwen3-4B", 50000, updated="2025-05-01T00:00:00Z"),
            model_entry("deepseek-ai/DeepSeek-R1", 7, task="text-generation"),
        ]
        server.datasets = [
            model_entry("modelscope/gsm8k", 120000, task="text2text-generation"),
            model_entry("AI-ModelScope/MATH-500", 3000, task="question-answering"),
        ]
        yield server


@pytest.fixture
def tools(home: Path) -> dict[str, object]:
    ctx = ToolContext(connection=Connection.open(home))
    return {t.name: t for t in make_search_tools(ctx)}


def _fast_tools(home: Path, timeout: float) -> dict[str, object]:
    ctx = ToolContext(connection=Connection.open(home))
    return {t.name: t for t in make_search_tools(ctx, timeout=timeout)}


def test_tools_and_schema(tools: dict) -> None:
    assert sorted(tools) == ["search_datasets", "search_models"]
    for tool in tools.values():
        assert set(tool.args) == {"query", "limit"}
        assert tool.args["limit"]["default"] == 5


def test_search_models_compact_results(hub: HubServer, tools: dict) -> None:
    answer = json.loads(tools["search_models"].invoke({"query": "qwen2.5 instruct"}))
    assert answer["query"] == "qwen2.5 instruct"
    assert answer["total"] == 2
    assert answer["results"] == [
        {
            "id": "Qwen/Qwen2.5-7B-Instruct",
            "downloads": 812345,
            "task": "text-generation",
            "updated": "2025-03-01",
        },
        {
            "id": "Qwen/Qwen2.5-0.5B-Instruct",
            "downloads": 99000,
            "task": "text-generation",
            "updated": "2024-11-02",
        },
    ]
    (method, path, query), *_ = hub.requests
    assert (method, path) == ("GET", "/openapi/v1/models")
    assert query == {"search": "qwen2.5 instruct", "page_number": "1", "page_size": "5"}


def test_search_datasets_uses_dataset_route(hub: HubServer, tools: dict) -> None:
    answer = json.loads(tools["search_datasets"].invoke({"query": "gsm8k", "limit": 3}))
    assert [r["id"] for r in answer["results"]] == ["modelscope/gsm8k"]
    assert answer["results"][0]["task"] == "text2text-generation"
    assert hub.requests[-1][1] == "/openapi/v1/datasets"
    assert hub.requests[-1][2]["page_size"] == "3"


def test_limit_is_clamped(hub: HubServer, tools: dict) -> None:
    tools["search_models"].invoke({"query": "qwen", "limit": 500})
    assert hub.requests[-1][2]["page_size"] == str(MAX_LIMIT)
    answer = json.loads(tools["search_models"].invoke({"query": "qwen", "limit": 0}))
    assert hub.requests[-1][2]["page_size"] == "1"
    assert len(answer["results"]) == 1
    assert answer["total"] == 3


def test_empty_results_say_so(hub: HubServer, tools: dict) -> None:
    answer = json.loads(tools["search_models"].invoke({"query": "no-such-thing-xyz"}))
    assert answer["total"] == 0
    assert answer["results"] == []
    assert "no models found" in answer["note"]


def test_empty_query_is_refused_without_asking(hub: HubServer, tools: dict) -> None:
    with pytest.raises(ToolError, match="empty"):
        tools["search_models"].invoke({"query": "   "})
    assert hub.requests == []


def test_result_fits_the_budget(hub: HubServer, tools: dict) -> None:
    hub.models = [model_entry(f"some-long-organisation-name/model-{i:03d}-" + "x" * 60, i) for i in range(40)]
    text = tools["search_models"].invoke({"query": "model", "limit": 20})
    assert len(text) <= RESULT_BUDGET
    answer = json.loads(text)  # never cut mid-JSON
    assert answer["shown"] == len(answer["results"]) < 20
    assert answer["total"] == 40


@pytest.mark.parametrize(
    ("status", "code", "message", "expected"),
    [
        (500, "InternalServerError", "database on fire", "HTTP 500: database on fire"),
        (503, "ServiceUnavailable", "maintenance", "HTTP 503: maintenance"),
        (429, "RateLimitExceed", "slow down", "HTTP 429: slow down"),
        (401, "InvalidAuthentication", "bad token", "HTTP 401: bad token"),
    ],
)
def test_error_answers_become_one_line_tool_errors(
    hub: HubServer, tools: dict, status: int, code: str, message: str, expected: str
) -> None:
    hub.fail("models", status=status, code=code, message=message)
    started = time.monotonic()
    with pytest.raises(ToolError) as info:
        tools["search_models"].invoke({"query": "qwen"})
    assert time.monotonic() - started < 2.0
    assert f"ModelScope search failed: {expected}" in str(info.value)
    assert "\n" not in str(info.value)
    assert hub.hits("models") == 1  # retries cut to one attempt


def test_malformed_json_is_reported_not_taken_for_no_results(hub: HubServer, tools: dict) -> None:
    hub.malformed("models")
    with pytest.raises(ToolError, match="not JSON"):
        tools["search_models"].invoke({"query": "qwen"})


def test_unexpected_json_shape(hub: HubServer, tools: dict) -> None:
    hub.malformed("datasets", body=b'{"success": true, "data": {"foo": 1}}')
    with pytest.raises(ToolError, match="no list of datasets"):
        tools["search_datasets"].invoke({"query": "gsm8k"})


def test_success_false_in_a_200_answer(hub: HubServer, tools: dict) -> None:
    hub.malformed("models", body=b'{"success": false, "code": "X", "message": "search is disabled"}')
    with pytest.raises(ToolError, match="refused the search: search is disabled"):
        tools["search_models"].invoke({"query": "qwen"})


def test_slow_hub_answers_within_the_deadline_then_at_once(hub: HubServer, home: Path) -> None:
    hub.slow("models", 30.0)
    tools = _fast_tools(home, timeout=1.0)
    started = time.monotonic()
    with pytest.raises(ToolError, match="ModelScope is not reachable .*did not answer within 1 s"):
        tools["search_models"].invoke({"query": "qwen"})
    elapsed = time.monotonic() - started
    assert 0.9 <= elapsed < 2.0
    hits = hub.hits("models")
    started = time.monotonic()
    with pytest.raises(ToolError, match="Do not retry now"):
        tools["search_datasets"].invoke({"query": "gsm8k"})
    assert time.monotonic() - started < 0.2
    assert hub.hits("datasets") == 0 and hub.hits("models") == hits  # remembered, not asked again


def test_slow_but_within_deadline_is_fine(hub: HubServer, home: Path) -> None:
    hub.slow("models", 0.5)
    answer = json.loads(_fast_tools(home, timeout=3.0)["search_models"].invoke({"query": "deepseek"}))
    assert answer["results"][0]["id"] == "deepseek-ai/DeepSeek-R1"


def test_offline_hub_answers_fast(hub_env: None, monkeypatch: pytest.MonkeyPatch, tools: dict) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("MODELSCOPE_ENDPOINT", f"http://127.0.0.1:{port}")
    started = time.monotonic()
    with pytest.raises(ToolError) as info:
        tools["search_models"].invoke({"query": "qwen"})
    assert time.monotonic() - started < 2.0
    assert f"ModelScope is not reachable (connection to 127.0.0.1:{port} refused)" in str(info.value)


def test_missing_client_is_explained(monkeypatch: pytest.MonkeyPatch, tools: dict) -> None:
    monkeypatch.setitem(sys.modules, "modelscope_hub", None)  # import fails
    with pytest.raises(ToolError, match=r"not installed.*twinkle-auto\[search\]"):
        tools["search_models"].invoke({"query": "qwen"})


def test_deadline_defaults() -> None:
    assert HUB_TIMEOUT == 10.0
    assert REQUEST_TIMEOUT < HUB_TIMEOUT


def test_legacy_and_odd_entries_are_read() -> None:
    legacy = {"Path": "damo", "Name": "nlp_model", "Downloads": 12, "Tasks": [{"Name": "fill-mask"}]}
    legacy["LastUpdatedTime"] = 1735689600  # epoch seconds
    assert _result(legacy) == {
        "id": "damo/nlp_model",
        "downloads": 12,
        "task": "fill-mask",
        "updated": "2025-01-01",
    }
    assert _result({"id": "a/b", "last_modified": 1735689600000})["updated"] == "2025-01-01"  # milliseconds
    assert _result({"display_name": "no id"}) is None
    assert _date("not a date") == "not a date"
