"""Runs the person points at by their state are named to the model (graphs/chat/run_refs.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fakes import ScriptedChatModel
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langgraph.checkpoint.memory import InMemorySaver

from twinkle_auto.connection import Connection
from twinkle_auto.graphs.chat.graph import compile_chat_graph
from twinkle_auto.graphs.chat.run_refs import referred_states, state_note
from twinkle_auto.tools import get_tools
from twinkle_auto.tools.base import ToolContext

RUNS = {"alpha": "running", "beta": "paused", "gamma": "finished", "delta": "crashed"}


@pytest.mark.parametrize(
    ("text", "states"),
    [
        ("pause the one that is running", ["running"]),
        ("stop the running job", ["running"]),
        ("resume whichever one is on hold", ["on hold"]),
        ("restart the runs that have crashed", ["crashed"]),
        ("show me the currently active run", ["active"]),
        ("delete my finished runs and the ones which are failing", ["finished", "failing"]),
        ("pause the job that's running", ["running"]),
    ],
)
def test_phrases_that_pick_runs_by_state(text: str, states: list[str]) -> None:
    assert referred_states(text) == states


@pytest.mark.parametrize(
    "text",
    [
        "is anything running?",  # a question about the runs: a tool reads them
        "what's running right now",
        "how is the training run going",  # "training run" is a run, not a state
        "why did it crash?",
        "pause it",
        "",
    ],
)
def test_questions_and_plain_requests_pick_no_run_by_state(text: str) -> None:
    assert referred_states(text) == []
    assert state_note(text, RUNS) is None


def test_the_note_names_the_runs_in_that_state_or_says_there_is_none() -> None:
    assert state_note("pause the one that is running", RUNS) == "(Status now: alpha is running.)"
    # a failing run is a crashed or a failed one
    assert state_note("look at the failing one", RUNS) == "(Status now: delta is crashed.)"
    none = state_note("stop the stopped one", RUNS)
    assert none is not None and "no run is stopped" in none and "beta is paused" in none
    # a request that names its run needs no note, whatever the state words around it
    assert state_note("pause alpha, the running one", RUNS) is None
    assert state_note("pause the running one", {}) is None


def _seed(home: Path, run_id: str, status: str) -> None:
    folder = home / run_id
    folder.mkdir()
    (folder / "meta.json").write_text(json.dumps({"run_id": run_id, "status": status, "model_id": "m"}))
    (folder / "metrics.jsonl").write_text(json.dumps({"step": 1, "loss": 1.0}) + "\n")
    (folder / "train.py").write_text("print('v1')\n")


def test_a_step_that_points_at_a_run_by_state_is_sent_with_the_runs_in_that_state(home: Path) -> None:
    _seed(home, "alpha", "finished")
    _seed(home, "beta", "failed")
    _seed(home, "gamma", "paused")
    ctx = ToolContext(Connection.open(home))
    tools = get_tools(ctx, search=False)
    llm = ScriptedChatModel(
        responses=[
            AIMessage(content="", tool_calls=[{"name": "list_training_runs", "args": {}, "id": "c0"}]),
            "You have alpha, beta and gamma.",
            AIMessage(
                content="", tool_calls=[{"name": "select_run", "args": {"run_id": "beta"}, "id": "c1"}]
            ),
            "beta is selected.",
        ]
    )
    graph = compile_chat_graph(llm, tools, checkpointer=InMemorySaver(), context=ctx)
    cfg = {"configurable": {"thread_id": "by-state"}}
    request = "list my runs, then select the one that has failed"
    out = graph.invoke({"messages": [HumanMessage(request)]}, cfg, context=ctx)
    assert out["selected_run"] == "beta"
    note = "(Status now: beta is failed.)"
    texts = [[str(m.content) for m in call] for call in llm.calls]
    assert note not in texts[0] and note not in texts[1]  # step 1 ("list my runs") points at no run
    assert texts[2][-1] == note  # step 2's answer is asked with the note after the step
    assert note not in texts[3]  # once the step's tool ran, its result speaks
    assert not any(note in str(m.content) for m in out["messages"])  # sent, never kept
    assert [m.name for m in out["messages"] if isinstance(m, ToolMessage)] == [
        "list_training_runs",
        "select_run",
    ]
