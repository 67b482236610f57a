"""A words-only answer that repeats figures earlier turns' tools reported is asked again, with a read
required; only a call to a tool that reads replaces it (graphs/chat/freshness.py)."""

from __future__ import annotations

import json
from pathlib import Path

from fakes import ScriptedChatModel
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langgraph.checkpoint.memory import InMemorySaver

from twinkle_auto.connection import Connection
from twinkle_auto.graphs.chat.freshness import kept_reread, note, restated
from twinkle_auto.graphs.chat.graph import compile_chat_graph
from twinkle_auto.graphs.chat.steps import step_message
from twinkle_auto.tools import get_tools
from twinkle_auto.tools.base import ToolContext, reads_only

EARLIER = [
    HumanMessage("start the server with the mock backend"),
    AIMessage(
        "", tool_calls=[{"name": "start_server", "args": {"backend": "mock", "total_gpus": 1}, "id": "s"}]
    ),
    ToolMessage('{"url": "http://127.0.0.1:8000", "status": "running", "step": 40}', tool_call_id="s"),
    AIMessage("The server is up on 1 GPU."),
]


def test_figures_from_an_earlier_turns_tools_are_restated() -> None:
    turn = [*EARLIER, HumanMessage("how many GPUs are there?")]
    assert restated(AIMessage("There is 1 GPU available."), turn) == ["1"]
    assert restated(AIMessage("It is at step 40.0, on port 8000."), turn) == ["40", "8000"]


def test_what_is_not_a_restated_figure() -> None:
    asked = [*EARLIER, HumanMessage("is step 40 the last one?")]
    assert restated(AIMessage("Step 40 was the last one logged."), asked) == []  # the person's figure
    question = [*EARLIER, HumanMessage("what learning rate suits LoRA?")]
    assert restated(AIMessage("Try 2e-4 with rank 16, for 3 epochs."), question) == []  # no tool said it
    names = [*EARLIER, HumanMessage("which model should I use?")]
    assert restated(AIMessage("Qwen2.5-1.5B, or run sft-1 again on v1.0."), names) == []  # parts of names
    read = [*EARLIER, HumanMessage("how many GPUs?"), ToolMessage('{"count": 2}', tool_call_id="x")]
    assert restated(AIMessage("There is 1 GPU busy."), read) == []  # a tool has run this turn
    assert restated(AIMessage("Hi! 1 thing at a time."), [HumanMessage("hi")]) == []  # no tool ever ran
    call = AIMessage("", tool_calls=[{"name": "get_cluster_info", "args": {}, "id": "c"}])
    assert restated(call, [*EARLIER, HumanMessage("GPUs?")]) == []


def test_a_step_of_the_request_is_not_the_start_of_a_turn() -> None:
    """A multi-step request's second step follows the first step's tool results: they are this turn's."""
    turn = [
        HumanMessage("list my runs, then tell me the step"),
        step_message(["list my runs", "tell me the step"], 0),
        AIMessage("", tool_calls=[{"name": "list_training_runs", "args": {}, "id": "l"}]),
        ToolMessage('{"runs": [{"run_id": "a", "step": 12}]}', tool_call_id="l"),
        AIMessage("One run, a."),
        step_message(["list my runs", "tell me the step"], 1),
    ]
    assert restated(AIMessage("Run a is at step 12."), [*EARLIER, *turn]) == []


def test_the_note_names_the_figures() -> None:
    assert "1 comes from earlier" in note(["1"]) and "Read it again" in note(["1"])
    assert "1, 40 came" in note(["1", "40"]) and "Read them again" in note(["1", "40"])


def test_only_tools_that_read_are_declared_so(home: Path) -> None:
    tools = {t.name: t for t in get_tools(ToolContext(Connection.open(home)))}
    reading = {name for name, tool in tools.items() if reads_only(tool)}
    assert {"list_training_runs", "get_training_status", "get_cluster_info", "search_models"} <= reading
    for changes in ("pause_training", "stop_training", "select_run", "zoom_chart", "start_server"):
        assert changes not in reading
    pause = AIMessage("", tool_calls=[{"name": "pause_training", "args": {}, "id": "p"}])
    assert not kept_reread(pause, tools)
    assert kept_reread(
        AIMessage("", tool_calls=[{"name": "list_training_runs", "args": {}, "id": "r"}]), tools
    )
    assert not kept_reread(AIMessage("words"), tools) and not kept_reread(None, tools)


# ------------------------------------------------------------------------------------ through the graph
def _run(home: Path, run_id: str, step: int) -> None:
    folder = home / run_id
    folder.mkdir(exist_ok=True)
    (folder / "meta.json").write_text(json.dumps({"run_id": run_id, "status": "finished", "model_id": "m"}))
    (folder / "metrics.jsonl").write_text(
        "".join(json.dumps({"step": i, "loss": 1 / i}) + "\n" for i in range(1, step + 1))
    )


def _two_turns(home: Path, second: str, *answers: object) -> tuple[ScriptedChatModel, list]:
    """A first turn that lists run exp at step 5, the run going on to step 12, then `second`, answered
    by the scripted `answers`; returns the model (its calls) and the history."""
    _run(home, "exp", 5)
    llm = ScriptedChatModel(responses=[_listing("l1"), "You have one run, exp, at step 5.", *answers])
    ctx = ToolContext(Connection.open(home))
    tools = get_tools(ctx, search=False)
    graph = compile_chat_graph(llm, tools, checkpointer=InMemorySaver(), context=ctx)
    config = {"configurable": {"thread_id": "t"}}
    graph.invoke({"messages": [HumanMessage("list my training runs")]}, config, context=ctx)
    _run(home, "exp", 12)  # the run went on between the turns
    return llm, graph.invoke({"messages": [HumanMessage(second)]}, config, context=ctx)["messages"]


def _listing(i: str) -> AIMessage:
    return AIMessage("", tool_calls=[{"name": "list_training_runs", "args": {}, "id": i}])


def test_a_stale_answer_is_replaced_by_a_fresh_read_and_never_kept(home: Path) -> None:
    llm, messages = _two_turns(
        home,
        "where is exp now?",
        "Run exp is at step 5.",  # the next turn, from memory: stale
        _listing("l2"),  # asked again with a call required
        lambda messages: f"Run exp is at step {json.loads(messages[-1].content)['runs'][0]['step']}.",
    )
    assert messages[-1].content == "Run exp is at step 12."
    assert not any(m.content == "Run exp is at step 5." for m in messages)  # the stale answer is gone
    assert llm.choices[3] == "required" and [c for i, c in enumerate(llm.choices) if i != 3] == [None] * 4
    sent = llm.calls[3][-1]
    assert isinstance(sent, HumanMessage) and "5 comes from earlier" in sent.content
    assert not any("comes from earlier" in str(m.content) for m in messages)  # the note is not kept


def test_a_forced_call_that_would_change_something_is_dropped(home: Path) -> None:
    pause = AIMessage("", tool_calls=[{"name": "pause_training", "args": {"run_id": "exp"}, "id": "p"}])
    llm, messages = _two_turns(home, "where is exp now?", "Run exp was at step 5.", pause)
    assert messages[-1].content == "Run exp was at step 5."  # the first answer stands
    assert not any(
        isinstance(m, AIMessage) and m.tool_calls and m.tool_calls[0]["name"] == "pause_training"
        for m in messages
    )
    assert len(llm.calls) == 4


def test_an_answer_with_figures_no_tool_gave_is_not_asked_again(home: Path) -> None:
    llm, messages = _two_turns(
        home, "what learning rate suits LoRA?", "Try a learning rate of 2e-4 and 3 epochs."
    )
    assert messages[-1].content == "Try a learning rate of 2e-4 and 3 epochs."
    assert len(llm.calls) == 3
