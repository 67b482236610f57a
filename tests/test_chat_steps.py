"""Requests of several steps are handed to the model one step at a time (graphs/chat/steps.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fakes import ScriptedChatModel
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langgraph.checkpoint.memory import InMemorySaver

from twinkle_auto.connection import Connection
from twinkle_auto.graphs.chat.graph import compile_chat_graph, window
from twinkle_auto.graphs.chat.steps import (
    MAX_STEPS,
    UNDONE,
    described_not_done,
    next_step,
    split_steps,
    step_message,
)
from twinkle_auto.tools import get_tools
from twinkle_auto.tools.base import Scope, ToolContext, is_step_message, latest_request


@pytest.mark.parametrize(
    ("text", "steps"),
    [
        (
            "list my runs, then pause the one that is running",
            ["list my runs", "pause the one that is running"],
        ),
        ("check beta and then stop it", ["check beta", "stop it"]),
        ("what GPUs are there? after that start the server", ["what GPUs are there", "start the server"]),
        ("select beta and plot its loss", ["select beta", "plot its loss"]),
        (
            "show me the runs, find the failed one and show its log",
            ["show me the runs", "find the failed one", "show its log"],
        ),
        ("resume alpha. once that is done, zoom to 10-20", ["resume alpha", "zoom to 10-20"]),
        ("list runs; also plot the reward", ["list runs", "plot the reward"]),
    ],
)
def test_a_list_of_things_to_do_splits_into_its_steps(text: str, steps: list[str]) -> None:
    assert split_steps(text) == steps


@pytest.mark.parametrize(
    "text",
    [
        "plot loss and reward",  # "and" between metrics joins arguments
        "stop the server and free the GPUs",  # one action and its purpose
        "can you show me the runs",  # a verb after plain words is no boundary
        "ok, show me the runs",  # a one-word lead-in is no step
        "pause and resume beta",
        "kill beta, it's useless",
        "tear down the server, I'm done for today",
        "if beta is failing, stop it",  # a step said alone would lose its condition
        "when the loss drops below 1, pause it and plot the reward",
        "once it reaches step 500 then pause it",
        "what's the difference between LoRA and full fine-tuning?",
        "",
    ],
)
def test_what_is_one_request_stays_whole(text: str) -> None:
    assert split_steps(text) == ([" ".join(text.split())] if text.strip() else [])


def test_a_long_paragraph_is_not_a_list_of_steps() -> None:
    text = ", ".join(f"show run{i}" for i in range(MAX_STEPS + 1))
    assert split_steps(text) == [text]


def test_step_messages_hand_out_each_step_once_and_are_not_the_persons_words() -> None:
    person = HumanMessage("check beta and then stop it")
    first = next_step([person])
    assert first is not None and is_step_message(first)
    assert first.content == "Step 1 of 2 of my request: check beta"
    answer = AIMessage("beta is running.")
    second = next_step([person, first, answer])
    assert second is not None and second.content.endswith("stop it")
    assert next_step([person, first, answer, second, AIMessage("Stopped.")]) is None
    assert next_step([HumanMessage("how is beta?")]) is None
    # the tools read the words of the step being done (resolve_run: "stop it" acts on what it names)
    assert latest_request({"messages": [person, first, answer, second]}) == "stop it"
    assert latest_request({"messages": [person, first]}) == "check beta"
    # a step saved without its words (an older checkpoint): the person's whole request
    old_step = HumanMessage(first.content, additional_kwargs={"twinkle_step": 1})
    assert latest_request({"messages": [person, old_step]}) == person.content


def test_the_window_starts_on_the_persons_message_not_on_a_step() -> None:
    person = HumanMessage("list runs, then pause beta")
    history = [HumanMessage("old"), AIMessage("old answer"), person, step_message(["a", "b"], 0)]
    history += [AIMessage(f"filler {i}") for i in range(3)]
    assert window(history, size=4)[0] is person


def _seed(home: Path, run_id: str, status: str) -> None:
    folder = home / run_id
    folder.mkdir()
    (folder / "meta.json").write_text(json.dumps({"run_id": run_id, "status": status, "model_id": "m"}))
    (folder / "metrics.jsonl").write_text(
        "".join(json.dumps({"step": i, "loss": 2 / i}) + "\n" for i in range(1, 20))
    )
    (folder / "train.py").write_text("print('v1')\n")


def _call(name: str, args: dict | None = None, i: int = 0) -> AIMessage:
    return AIMessage(content="", tool_calls=[{"name": name, "args": args or {}, "id": f"call_{name}_{i}"}])


def test_the_graph_hands_the_second_step_after_the_first_is_answered(home: Path) -> None:
    _seed(home, "alpha", "finished")
    _seed(home, "beta", "finished")
    ctx = ToolContext(Connection.open(home))
    tools = get_tools(ctx, search=False)
    seen: list[str] = []

    def after(expect: str, response: AIMessage | str):
        def answer(messages):
            last = messages[-1]
            seen.append(str(last.content))
            assert expect in str(last.content), last
            return response

        return answer

    llm = ScriptedChatModel(
        responses=[
            after("Step 1 of 2 of my request: list my runs", _call("list_training_runs")),
            lambda messages: "You have alpha and beta.",
            after("Step 2 of 2 of my request: select beta", _call("select_run", {"run_id": "beta"}, 1)),
            lambda messages: "beta is selected.",
        ]
    )
    graph = compile_chat_graph(llm, tools, checkpointer=InMemorySaver(), context=ctx)
    cfg = {"configurable": {"thread_id": "steps"}}
    out = graph.invoke({"messages": [HumanMessage("list my runs, then select beta")]}, cfg, context=ctx)
    assert out["selected_run"] == "beta"  # the second step really ran
    names = [m.name for m in out["messages"] if isinstance(m, ToolMessage)]
    assert names == ["list_training_runs", "select_run"]
    assert out["messages"][-1].content == "beta is selected."
    assert len(llm.calls) == 4 and len(seen) == 2
    # the model saw the person's whole request in every call, before the step
    assert all(any(m.content == "list my runs, then select beta" for m in call) for call in llm.calls)
    # a one-step request in the same thread is not split and hands out nothing
    llm.responses = ["Hello!"]
    out = graph.invoke({"messages": [HumanMessage("thanks")]}, cfg, context=ctx)
    assert not is_step_message(llm.calls[-1][-1]) and out["messages"][-1].content == "Hello!"
    scope = Scope(ctx, out)
    assert scope.resolve_run(None) == "beta"


def test_a_step_described_instead_of_done_is_asked_once_more_with_a_call_required(home: Path) -> None:
    _seed(home, "alpha", "finished")
    _seed(home, "beta", "finished")
    ctx = ToolContext(Connection.open(home))
    tools = get_tools(ctx, search=False)
    described = "To select beta, you can use the select_run function with run_id beta."
    llm = ScriptedChatModel(
        responses=[
            _call("list_training_runs"),
            "You have alpha and beta.",
            described,  # step 2 talked about, not done
            _call("select_run", {"run_id": "beta"}, 1),  # asked again, a call required
            "beta is selected.",
        ]
    )
    graph = compile_chat_graph(llm, tools, checkpointer=InMemorySaver(), context=ctx)
    cfg = {"configurable": {"thread_id": "undone"}}
    out = graph.invoke({"messages": [HumanMessage("list my runs, then select beta")]}, cfg, context=ctx)
    assert out["selected_run"] == "beta"
    assert llm.choices == [None, None, None, "required", None]  # required once, not for the answer after
    assert UNDONE in str(llm.calls[3][-1].content)
    assert not any(described in str(m.content) for m in llm.calls[3])  # the described answer is not shown
    assert not any(described in str(m.content) for m in out["messages"])  # nor kept
    assert out["messages"][-1].content == "beta is selected."


def test_an_answer_repeating_itself_on_a_step_is_not_done_but_a_whole_request_may_name_tools() -> None:
    names = {"list_training_runs", "pause_training"}
    request = HumanMessage("list my runs, then pause the running one")
    first = AIMessage("You have two runs: a and b.")
    step2 = step_message(["list my runs", "pause the running one"], 1)
    history = [request, step_message(["list my runs", "pause the running one"], 0), first, step2]
    assert described_not_done(AIMessage("You have two  runs: a and B."), history, names)  # said again
    assert not described_not_done(AIMessage("Paused a."), history, names)
    assert not described_not_done(_call("pause_training", {"run_id": "a"}), history, names)
    # a whole request (no step) may rightly be answered with the tools' names
    asked = [HumanMessage("which tools do you have?")]
    assert not described_not_done(AIMessage("I have list_training_runs and pause_training."), asked, names)
    # a tool name inside a longer word is not a tool named
    assert not described_not_done(AIMessage("see my_list_training_runs_notes"), history, names)
