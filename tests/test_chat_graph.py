"""The chat graph with a fake tool-calling model: round cap, trimming, approvals (approve, reject, edit,
unsafe scripts), session state through Command(update=…), repair of dangling calls, persistence, pruning."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from conftest import wait_for
from fakes import ScriptedChatModel
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.types import Command

from twinkle_auto.app.sessions import KEEP_CHECKPOINTS, open_checkpointer, prune, thread_id
from twinkle_auto.connection import Connection
from twinkle_auto.graphs.chat.graph import CANCELLED, DECLINED, build_chat_graph, compile_chat_graph, window
from twinkle_auto.tools import get_tools
from twinkle_auto.tools.base import ToolContext

SNAPSHOT = Path(__file__).parent / "snapshots" / "chat_graph.mmd"


def call(name: str, args: dict | None = None, i: int = 0) -> AIMessage:
    return AIMessage(content="", tool_calls=[{"name": name, "args": args or {}, "id": f"call_{name}_{i}"}])


def _seed(home: Path, run_id: str, status: str = "finished") -> None:
    folder = home / run_id
    folder.mkdir()
    (folder / "meta.json").write_text(json.dumps({"run_id": run_id, "status": status, "model_id": "m"}))
    (folder / "metrics.jsonl").write_text(
        "".join(json.dumps({"step": i, "loss": 2 / i, "reward": i / 10}) + "\n" for i in range(1, 30))
    )
    (folder / "train.py").write_text("print('v1')\n")


def _tools(home: Path) -> tuple[ToolContext, list]:
    ctx = ToolContext(Connection.open(home))
    return ctx, get_tools(ctx, search=False)


def config(name: str = "t") -> dict:
    return {"configurable": {"thread_id": thread_id(name)}}


def test_graph_drawing_matches_the_snapshot(home: Path) -> None:
    _, tools = _tools(home)
    drawing = build_chat_graph(ScriptedChatModel(), tools).compile().get_graph().draw_mermaid()
    if os.environ.get("UPDATE_SNAPSHOTS"):
        SNAPSHOT.write_text(drawing)
    assert drawing == SNAPSHOT.read_text()


def test_a_tool_round_trip_answers_with_real_data(home: Path) -> None:
    _seed(home, "alpha")
    _, tools = _tools(home)
    llm = ScriptedChatModel(responses=[call("list_training_runs"), "You have one run: alpha."])
    graph = compile_chat_graph(llm, tools, checkpointer=InMemorySaver())
    out = graph.invoke({"messages": [HumanMessage("List my training runs")]}, config())
    tool_msg = next(m for m in out["messages"] if isinstance(m, ToolMessage))
    assert '"run_id":"alpha"' in tool_msg.content
    assert out["messages"][-1].content == "You have one run: alpha."
    assert {t.name for t in llm.bound_tools} >= {"list_training_runs", "pause_training", "zoom_chart"}


def test_tool_rounds_are_capped_then_the_agent_answers_without_tools(home: Path) -> None:
    _seed(home, "alpha")
    _, tools = _tools(home)
    looping = [call("list_training_runs", i=i) for i in range(20)]
    llm = ScriptedChatModel(responses=looping)
    graph = compile_chat_graph(llm, tools, checkpointer=InMemorySaver(), max_tool_rounds=10)
    out = graph.invoke({"messages": [HumanMessage("loop forever")]}, config())
    tool_msgs = [m for m in out["messages"] if isinstance(m, ToolMessage)]
    assert len(tool_msgs) == 10
    last = out["messages"][-1]
    assert isinstance(last, AIMessage) and not last.tool_calls  # calls dropped: nobody would answer them
    assert any("tool budget" in str(m.content) for m in llm.calls[-1] if isinstance(m, SystemMessage))
    # the next turn starts a fresh budget
    llm.responses = [call("list_training_runs", i=99), "done"]
    out = graph.invoke({"messages": [HumanMessage("once more")]}, config())
    assert out["messages"][-1].content == "done" and out["tool_rounds"] == 1
    assert len([m for m in out["messages"] if isinstance(m, ToolMessage)]) == 11


def test_window_never_separates_a_tool_call_from_its_result() -> None:
    msgs = []
    for turn in range(40):
        msgs += [
            HumanMessage(f"q{turn}"),
            call("list_training_runs", i=turn),
            ToolMessage("r", tool_call_id=f"call_list_training_runs_{turn}"),
            AIMessage(f"a{turn}"),
        ]
    for size in range(1, 60):
        got = window(msgs, size)
        assert isinstance(got[0], HumanMessage)
        ids = {c["id"] for m in got if isinstance(m, AIMessage) for c in m.tool_calls}
        assert all(m.tool_call_id in ids for m in got if isinstance(m, ToolMessage))
    assert len(window(msgs, 50)) <= 50
    assert window(msgs, 2)[0].content == "q39"  # the current turn is kept whole


def test_the_window_moves_in_jumps_so_the_prompt_before_it_stays_the_same() -> None:
    """A local server reuses what it read up to the first changed token: between two jumps each turn's
    window starts where the last one did, and a jump keeps half a window."""
    msgs: list = []
    starts = []
    for turn in range(60):
        msgs += [HumanMessage(f"q{turn}"), AIMessage(f"a{turn}")]
        got = window(msgs, 50)
        assert len(got) >= min(len(msgs), 24)  # half a window, moved on to the person's message
        assert len(got) <= 50
        starts.append(got[0].content)
    changes = [i for i in range(1, len(starts)) if starts[i] != starts[i - 1]]
    assert changes == [25, 37, 49], changes  # turns where the window jumped: 3 re-reads in 60 turns, not 35


def test_the_llm_sees_the_last_50_messages_and_state_keeps_everything(home: Path) -> None:
    _, tools = _tools(home)
    llm = ScriptedChatModel(default="ok")
    graph = compile_chat_graph(llm, tools, checkpointer=InMemorySaver())
    for i in range(40):
        graph.invoke({"messages": [HumanMessage(f"message {i}")]}, config())
    assert len(graph.get_state(config()).values["messages"]) == 80
    sent = llm.calls[-1]
    assert isinstance(sent[0], SystemMessage) and len(sent) <= 51
    assert isinstance(sent[1], HumanMessage)


def test_approval_interrupt_then_refusal_goes_back_to_the_model(home: Path) -> None:
    _seed(home, "alpha")
    _, tools = _tools(home)
    new_script = "print('v2')\n"
    llm = ScriptedChatModel(
        responses=[call("update_script", {"run_id": "alpha", "script": new_script}), "Fine, I left it alone."]
    )
    graph = compile_chat_graph(llm, tools, checkpointer=InMemorySaver())
    out = graph.invoke({"messages": [HumanMessage("change the script of alpha")]}, config())
    question = out["__interrupt__"][0].value
    assert question["kind"] == "tool_approval"
    ask = question["calls"][0]
    assert "-print('v1')" in ask["diff"] and "+print('v2')" in ask["diff"]  # the diff is shown
    assert ask["script"] == new_script and ask["editable"] == "script"
    assert (home / "alpha" / "train.py").read_text() == "print('v1')\n"  # nothing ran yet
    out = graph.invoke(Command(resume=False), config())
    refusal = next(m for m in out["messages"] if isinstance(m, ToolMessage))
    assert refusal.content == DECLINED
    assert out["messages"][-1].content == "Fine, I left it alone."
    assert (home / "alpha" / "train.py").read_text() == "print('v1')\n"


def test_approval_yes_runs_the_tool(home: Path) -> None:
    _seed(home, "alpha")
    _, tools = _tools(home)
    llm = ScriptedChatModel(
        responses=[call("update_script", {"run_id": "alpha", "script": "print('v2')\n"}), "Done."]
    )
    graph = compile_chat_graph(llm, tools, checkpointer=InMemorySaver())
    graph.invoke({"messages": [HumanMessage("change alpha")]}, config())
    out = graph.invoke(Command(resume=True), config())
    assert (home / "alpha" / "train.py").read_text() == "print('v2')\n"
    assert (home / "alpha" / "train_v1.py").read_text() == "print('v1')\n"
    assert (
        '"archived_as":"train_v1.py"'
        in next(m for m in out["messages"] if isinstance(m, ToolMessage)).content
    )


def test_auto_approve_skips_the_question(home: Path) -> None:
    _seed(home, "alpha")
    _, tools = _tools(home)
    llm = ScriptedChatModel(
        responses=[call("update_script", {"run_id": "alpha", "script": "print(3)\n"}), "ok"]
    )
    graph = compile_chat_graph(llm, tools, checkpointer=InMemorySaver(), auto_approve=True)
    out = graph.invoke({"messages": [HumanMessage("change alpha")]}, config())
    assert "__interrupt__" not in out and (home / "alpha" / "train.py").read_text() == "print(3)\n"


def test_tool_errors_and_bad_arguments_reach_the_model_and_the_loop_goes_on(home: Path) -> None:
    _, tools = _tools(home)
    bad_json = AIMessage(
        content="",
        invalid_tool_calls=[
            {
                "name": "pause_training",
                "args": "{run_id: x",
                "id": "call_bad",
                "error": "Expecting property name",
            }
        ],
    )
    llm = ScriptedChatModel(
        responses=[
            call("pause_training", {"run_id": "../etc"}),
            call("zoom_chart", {"start_step": "soon"}),
            call("no_such_tool"),
            bad_json,
            "I could not do it.",
        ]
    )
    graph = compile_chat_graph(llm, tools, checkpointer=InMemorySaver())
    out = graph.invoke({"messages": [HumanMessage("pause ../etc")]}, config())
    errors = [m.content for m in out["messages"] if isinstance(m, ToolMessage)]
    assert "invalid run id" in errors[0]
    assert "start_step" in errors[1] and "integer" in errors[1]
    assert "no_such_tool" in errors[2]
    assert "not valid JSON" in errors[3]
    assert out["messages"][-1].content == "I could not do it."


def test_conversation_survives_reopening_the_sqlite_file(home: Path) -> None:
    _, tools = _tools(home)
    saver = open_checkpointer(home)
    graph = compile_chat_graph(ScriptedChatModel(default="first answer"), tools, checkpointer=saver)
    graph.invoke({"messages": [HumanMessage("remember the number 42")]}, config("keep"))
    saver.conn.close()
    saver2 = open_checkpointer(home)
    llm = ScriptedChatModel(default="second answer")
    graph2 = compile_chat_graph(llm, tools, checkpointer=saver2)
    graph2.invoke({"messages": [HumanMessage("what number?")]}, config("keep"))
    seen = [m.content for m in llm.calls[-1]]
    assert "remember the number 42" in seen and "first answer" in seen
    saver2.conn.close()


def test_pruning_keeps_the_file_bounded_and_the_history_whole(home: Path) -> None:
    _, tools = _tools(home)
    saver = open_checkpointer(home)
    llm = ScriptedChatModel(default="x" * 300)
    graph = compile_chat_graph(llm, tools, checkpointer=saver)
    sizes = []
    for turn in range(120):
        graph.invoke({"messages": [HumanMessage(f"turn {turn} " + "y" * 300)]}, config("long"))
        prune(saver, "long")
        if turn % 40 == 39:
            sizes.append((home / "auto" / "chat.sqlite").stat().st_size)
    rows = saver.conn.execute(
        "SELECT COUNT(*) FROM checkpoints WHERE thread_id=?", (thread_id("long"),)
    ).fetchone()[0]
    assert rows <= KEEP_CHECKPOINTS
    assert len(graph.get_state(config("long")).values["messages"]) == 240
    history_bytes = 240 * 400
    assert sizes[-1] < (KEEP_CHECKPOINTS + 4) * history_bytes + 512 * 1024, sizes
    saver.conn.close()


@pytest.mark.parametrize("bad", [[], ["", " "]])
def test_plot_metrics_validates(home: Path, bad: list) -> None:
    ctx, tools = _tools(home)
    tool = next(t for t in tools if t.name == "plot_metrics")
    with pytest.raises(Exception, match="metric"):
        tool.invoke({"keys": bad})


def test_more_metrics_than_a_chart_holds_keeps_the_ones_the_person_named(home: Path) -> None:
    """The 1.5B model answered "the reward-related metrics" with six keys (lr and loss among them): the
    chart shows what the person asked for, and the reply says what was left out, instead of an error
    the model then repeated to the person."""
    folder = home / "grpo"
    folder.mkdir()
    (folder / "meta.json").write_text(json.dumps({"run_id": "grpo", "status": "running", "model_id": "m"}))
    names = ["lr", "reward", "loss", "reward_std", "frac_reward_zero_std", "kl"]
    rows = [{"step": i, **{k: 0.1 * i for k in names}} for i in range(1, 20)]
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    ctx, tools = _tools(home)
    llm = ScriptedChatModel(responses=[call("plot_metrics", {"keys": names, "run_id": "grpo"}), "shown"])
    graph = compile_chat_graph(llm, tools, checkpointer=InMemorySaver())
    out = graph.invoke(
        {"messages": [HumanMessage("show me the reward-related metrics")]}, config(), context=ctx
    )
    assert out["chart"]["keys"] == ["reward", "reward_std", "frac_reward_zero_std", "lr"]
    reply = json.loads([m for m in out["messages"] if isinstance(m, ToolMessage)][-1].content)
    assert reply["not_shown"] == ["loss", "kl"]
    # four or fewer: charted as given, whatever the words
    llm = ScriptedChatModel(
        responses=[call("plot_metrics", {"keys": ["lr", "loss"], "run_id": "grpo"}), "ok"]
    )
    graph = compile_chat_graph(llm, tools, checkpointer=InMemorySaver())
    out = graph.invoke({"messages": [HumanMessage("chart lr and loss")]}, config("b"), context=ctx)
    assert out["chart"]["keys"] == ["lr", "loss"]


def test_tools_change_the_session_through_graph_state(home: Path) -> None:
    """select_run, plot_metrics, zoom_chart and reset_chart write the session into the checkpointed
    state; the next turn's tools default to the selected run."""
    _seed(home, "alpha")
    _seed(home, "beta")
    ctx, tools = _tools(home)
    llm = ScriptedChatModel(
        responses=[
            call("select_run", {"run": "alpha"}),
            call("plot_metrics", {"keys": "reward"}, i=1),
            call("zoom_chart", {"start_step": "20", "end_step": 10}, i=2),
            "shown",
            call("get_training_status", i=3),
            "alpha is finished",
            call("reset_chart", i=4),
            "reset",
        ]
    )
    graph = compile_chat_graph(llm, tools, checkpointer=InMemorySaver())
    out = graph.invoke(
        {"messages": [HumanMessage("chart the reward of alpha, steps 10-20")]}, config(), context=ctx
    )
    assert out["selected_run"] == "alpha"
    assert out["chart"] == {"keys": ["reward"], "step_range": [10, 20]}
    out = graph.invoke({"messages": [HumanMessage("how is it?")]}, config(), context=ctx)
    status = [m for m in out["messages"] if isinstance(m, ToolMessage)][-1]
    assert '"run_id":"alpha"' in status.content  # defaults to the selected run, read from state
    assert llm.calls[-1][0].content == llm.calls[0][0].content  # one system prompt: its prefix caches
    out = graph.invoke({"messages": [HumanMessage("reset")]}, config(), context=ctx)
    assert out["chart"] == {"keys": [], "step_range": None} and out["selected_run"] == "alpha"
    # another thread of the same graph and context has its own session
    other = graph.invoke({"messages": [HumanMessage("hi")]}, config("other"), context=ctx)
    assert other.get("selected_run") is None


def test_dangling_tool_calls_are_repaired_inside_the_graph(home: Path) -> None:
    """A turn cut off after the model asked for a tool (Ctrl-C) leaves a call without a result; the next
    turn answers it right after its message, so the model's API accepts the history."""
    _seed(home, "alpha")
    _, tools = _tools(home)
    llm = ScriptedChatModel(responses=[call("select_run", {"run_id": "alpha"}), "after"])
    graph = compile_chat_graph(llm, tools, checkpointer=InMemorySaver())
    graph.invoke({"messages": [HumanMessage("select alpha")]}, config(), interrupt_before=["tools"])
    assert graph.get_state(config()).next  # cut off before the tool ran
    out = graph.invoke({"messages": [HumanMessage("never mind")]}, config())
    kinds = [type(m).__name__ for m in out["messages"]]
    assert kinds == ["HumanMessage", "AIMessage", "ToolMessage", "HumanMessage", "AIMessage"]
    assert out["messages"][2].content == CANCELLED and out["messages"][2].tool_call_id == "call_select_run_0"
    assert out.get("selected_run") is None  # never ran
    sent = llm.calls[-1]
    assert [type(m).__name__ for m in sent[1:]] == kinds[:-1]


def test_an_abandoned_question_is_repaired_when_the_person_moves_on(home: Path) -> None:
    _seed(home, "alpha")
    _, tools = _tools(home)
    update = call("update_script", {"run_id": "alpha", "script": "print('v2')\n"})
    llm = ScriptedChatModel(responses=[update, "ok then"])
    graph = compile_chat_graph(llm, tools, checkpointer=InMemorySaver())
    out = graph.invoke({"messages": [HumanMessage("replace alpha's script with print v2")]}, config())
    assert "Replace train.py of run 'alpha'" in out["__interrupt__"][0].value["calls"][0]["text"]
    out = graph.invoke({"messages": [HumanMessage("something else")]}, config())
    answered = [m for m in out["messages"] if isinstance(m, ToolMessage)]
    assert [m.content for m in answered] == [CANCELLED]
    assert not graph.get_state(config()).next


def test_every_describer_follows_one_contract_through_the_graph(home: Path) -> None:
    """Each tool that asks first is described by the graph with (args, scope): no TypeError, real text."""
    _seed(home, "alpha")
    ctx, tools = _tools(home)
    asking = {t.name: t for t in tools if t.metadata and t.metadata.get("approval")}
    assert set(asking) == {"stop_training", "update_script", "start_training", "shutdown_server"}
    args = {
        "stop_training": {"run_id": "alpha"},
        "update_script": {"run_id": "alpha", "script": "print('v2')\n"},
        "start_training": {"run_id": "new", "script": "print('train')\n"},
        "shutdown_server": {},
    }
    for i, (name, a) in enumerate(args.items()):
        llm = ScriptedChatModel(responses=[call(name, a, i=i), "declined"])
        graph = compile_chat_graph(llm, tools, checkpointer=InMemorySaver())
        out = graph.invoke({"messages": [HumanMessage(name)]}, config(name), context=ctx)
        ask = out["__interrupt__"][0].value["calls"][0]
        assert "while describing" not in ask["text"] and len(ask["text"]) > 20, ask
        out = graph.invoke(Command(resume=False), config(name), context=ctx)
        assert out["messages"][-2].content == DECLINED
    assert not (home / "new").exists()


def test_start_training_shows_the_whole_script_and_edit_replaces_it(home: Path) -> None:
    ctx, tools = _tools(home)
    script = "".join(f"x{i} = {i}\n" for i in range(300)) + "print('done')\n"
    llm = ScriptedChatModel(
        responses=[call("start_training", {"run_id": "fresh", "script": script}), "started"]
    )
    graph = compile_chat_graph(llm, tools, checkpointer=InMemorySaver())
    out = graph.invoke({"messages": [HumanMessage("train")]}, config(), context=ctx)
    ask = out["__interrupt__"][0].value["calls"][0]
    assert ask["script"] == script and "301 lines" in ask["text"]  # whole, not 60 characters
    edited = "print('edited by the person')\n"
    out = graph.invoke(
        Command(resume={ask["id"]: {"action": "edit", "args": {"run_id": "fresh", "script": edited}}}),
        config(),
        context=ctx,
    )
    again = out["__interrupt__"][0].value["calls"][0]  # the edited call is asked about again
    assert again["script"] == edited and again["id"] == ask["id"]
    out = graph.invoke(Command(resume=True), config(), context=ctx)
    assert (home / "fresh" / "train.py").read_text() == edited
    assert out["selected_run"] == "fresh"
    wait_for(lambda: "edited by the person" in (home / "fresh" / "output.log").read_text())


def test_an_unsafe_update_runs_only_with_the_persons_explicit_approval(home: Path) -> None:
    """The guards flag a patch that guts the training; under --yes (auto-approve) the tool refuses it,
    after an explicit yes it runs."""
    _seed(home, "alpha")
    old = (
        "for step in range(1000):\n    loss = model.train_step(batch)\n    rt.log_metrics(step, loss=loss)\n"
    )
    (home / "alpha" / "train.py").write_text(old)
    gutted = "print('nothing to train')\n"
    ctx, tools = _tools(home)
    llm = ScriptedChatModel(
        responses=[call("update_script", {"run_id": "alpha", "script": gutted}), "refused"]
    )
    graph = compile_chat_graph(llm, tools, checkpointer=InMemorySaver(), auto_approve=True)
    out = graph.invoke({"messages": [HumanMessage("simplify alpha")]}, config("auto"), context=ctx)
    refusal = [m for m in out["messages"] if isinstance(m, ToolMessage)][-1]
    assert "refused" in refusal.content and (home / "alpha" / "train.py").read_text() == old

    llm = ScriptedChatModel(
        responses=[call("update_script", {"run_id": "alpha", "script": gutted}, i=1), "ok"]
    )
    graph = compile_chat_graph(llm, tools, checkpointer=InMemorySaver())
    out = graph.invoke({"messages": [HumanMessage("simplify alpha")]}, config("ask"), context=ctx)
    ask = out["__interrupt__"][0].value["calls"][0]
    assert ask["unsafe"] and ask["findings"] and all(f["message"] for f in ask["findings"])
    graph.invoke(Command(resume={ask["id"]: "yes"}), config("ask"), context=ctx)
    assert (home / "alpha" / "train.py").read_text() == gutted


def test_resume_keeps_the_selected_run_and_chart_view_in_a_sqlite_file(home: Path) -> None:
    _seed(home, "alpha")
    ctx, tools = _tools(home)
    saver = open_checkpointer(home)
    llm = ScriptedChatModel(
        responses=[
            call("select_run", {"run_id": "alpha"}),
            call("zoom_chart", {"start_step": 5, "end_step": 9}, i=1),
            "ok",
        ]
    )
    compile_chat_graph(llm, tools, checkpointer=saver).invoke(
        {"messages": [HumanMessage("zoom alpha")]}, config("kept"), context=ctx
    )
    saver.conn.close()
    saver2 = open_checkpointer(home)
    graph = compile_chat_graph(ScriptedChatModel(default="x"), tools, checkpointer=saver2)
    values = graph.get_state(config("kept")).values
    assert values["selected_run"] == "alpha" and values["chart"]["step_range"] == [5, 9]
    saver2.conn.close()


def test_a_tool_call_written_as_text_runs_or_is_asked_again_in_words(tmp_path) -> None:
    """Small models sometimes write a call as plain JSON the server does not recognise: a known tool's
    call runs; an unknown one is asked again once, and the person reads words, never the JSON."""
    from fakes import ScriptedChatModel
    from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
    from langgraph.checkpoint.memory import InMemorySaver

    from twinkle_auto.connection import Connection
    from twinkle_auto.graphs.chat.graph import compile_chat_graph
    from twinkle_auto.tools import get_tools
    from twinkle_auto.tools.base import ToolContext

    llm = ScriptedChatModel(
        responses=[
            '```json\n{"name": "list_training_runs", "arguments": {}}\n```',
            "You have no runs yet.",
            '{"name": "greet", "arguments": {"message": "Hello!"}}',
            "Hello! How can I help with your training?",
        ]
    )
    ctx = ToolContext(Connection.open(tmp_path / "home"))
    graph = compile_chat_graph(llm, get_tools(ctx, search=False, server=False), checkpointer=InMemorySaver())
    cfg = {"configurable": {"thread_id": "t"}}
    out = graph.invoke({"messages": [HumanMessage("runs?")]}, cfg, context=ctx)
    assert any(isinstance(m, ToolMessage) and m.name == "list_training_runs" for m in out["messages"])
    assert out["messages"][-1].content == "You have no runs yet."
    out = graph.invoke({"messages": [HumanMessage("hi there")]}, cfg, context=ctx)
    assert out["messages"][-1].content == "Hello! How can I help with your training?"
    assert "no tool named 'greet'" in llm.calls[-1][-1].content
    texts = [str(m.content) for m in out["messages"] if isinstance(m, AIMessage)]
    assert not any('"greet"' in t for t in texts)  # the JSON answer was never kept
