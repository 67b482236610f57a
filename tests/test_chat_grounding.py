"""A call naming a model, dataset, script, server, run or metric nobody named is sent back before it runs."""

from __future__ import annotations

from pathlib import Path

import pytest
from fakes import ScriptedChatModel
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langgraph.checkpoint.memory import InMemorySaver

from twinkle_auto.connection import Connection
from twinkle_auto.graphs.chat.graph import compile_chat_graph
from twinkle_auto.graphs.chat.grounding import (
    RunBook,
    amend,
    evidence,
    is_grounded,
    problems,
    refused_calls,
    ungrounded,
)
from twinkle_auto.tools import get_tools
from twinkle_auto.tools.base import ToolContext


@pytest.mark.parametrize(
    ("value", "said", "ok"),
    [
        ("Qwen/Qwen2.5-0.5B", "train Qwen2.5-0.5B on my data", True),  # a hub id's last part
        ("Qwen/Qwen2.5-0.5B-Instruct", "train qwen2.5 0.5b instruct", True),  # spacing and case
        ("/data/chat.jsonl", "fine-tune on /data/chat.jsonl please", True),
        ("mock-model", "start twinkle with mock-model", True),
        ("twinkle-llm", "hi there", False),
        ("https://huggingface.co", "look up qwen models on the hub", False),
        ("/home/me/model", "run the script /home/me/train.py", False),
        ("lr", "show all runs", False),  # short values stand as words, not across them
        ("kl", "chart kl and grad_norm", True),
        ("lr", "plot the learning rate", True),  # or the initials of consecutive words
    ],
)
def test_a_value_is_grounded_when_the_conversation_contains_it(value: str, said: str, ok: bool) -> None:
    assert is_grounded(value, evidence([HumanMessage(said)])) is ok


def test_the_models_own_words_are_not_evidence_but_tool_results_are() -> None:
    history = [HumanMessage("start a run"), AIMessage("I'll use twinkle-llm.")]
    assert not is_grounded("twinkle-llm", evidence(history))
    history.append(ToolMessage(content='{"models": ["twinkle-llm"]}', tool_call_id="x"))
    assert is_grounded("twinkle-llm", evidence(history))


def _ask(llm: ScriptedChatModel, tools: dict, ctx: ToolContext, words: str) -> dict:
    """One turn of a real chat graph with every tool, in a fresh thread."""
    graph = compile_chat_graph(llm, list(tools.values()), checkpointer=InMemorySaver(), context=ctx)
    return graph.invoke(
        {"messages": [HumanMessage(words)]}, {"configurable": {"thread_id": "g"}}, context=ctx
    )


def _tools(home: Path) -> tuple[ToolContext, dict]:
    ctx = ToolContext(Connection.open(home))
    return ctx, {t.name: t for t in get_tools(ctx, search=False)}


def test_aliases_of_a_grounded_field_are_checked_and_other_fields_are_free(home: Path) -> None:
    _, tools = _tools(home)
    said = evidence([HumanMessage("train mock-model with the twinkle grpo recipe")])
    call = {
        "name": "start_training",
        "args": {"recipe": "twinkle-grpo", "model_id": "llama-7b", "max_steps": 9},
    }
    assert ungrounded(call, tools["start_training"], said) == [("model_id", "llama-7b")]
    call["args"]["model_id"] = "mock-model"
    assert ungrounded(call, tools["start_training"], said) == []
    assert ungrounded({"name": "list_training_runs", "args": {}}, tools["list_training_runs"], said) == []


def test_an_invented_model_is_not_kept_and_the_model_answers_again_with_a_note(home: Path) -> None:
    ctx, tools = _tools(home)
    invented = AIMessage(
        "",
        tool_calls=[
            {"name": "start_training", "args": {"recipe": "twinkle-grpo", "model": "twinkle-llm"}, "id": "c1"}
        ],
    )
    seen: list = []

    def reply(messages):
        seen.append(messages)
        return "Hello! What would you like to do?"

    llm = ScriptedChatModel(responses=[invented, reply])
    out = _ask(llm, tools, ctx, "hi there")
    # the model read why, in a note after the person's message, and never saw its refused call
    note = seen[0][-1]
    assert isinstance(note, HumanMessage) and "model='twinkle-llm'" in note.content
    assert not any(isinstance(m, AIMessage) and m.tool_calls for m in seen[0])
    # nothing ran, nothing was asked, and neither the call nor the note is in the history
    assert [type(m).__name__ for m in out["messages"]] == ["HumanMessage", "AIMessage"]
    assert out["messages"][-1].content == "Hello! What would you like to do?"
    assert not [p for p in home.iterdir() if p.name != "auto"]


INVENTED = {"name": "start_training", "args": {"recipe": "trl-sft", "model": "gpt-4"}}
"""A start nobody asked for, with a model nobody named."""


def _script(*answers: dict | str) -> ScriptedChatModel:
    """A model that answers with these calls (each given an id c1, c2, …) and words, in order."""
    return ScriptedChatModel(
        responses=[
            AIMessage("", tool_calls=[{"id": f"c{i}", **a}]) if isinstance(a, dict) else a
            for i, a in enumerate(answers, 1)
        ]
    )


def test_a_tool_refused_twice_is_withheld_for_a_last_answer(home: Path) -> None:
    ctx, tools = _tools(home)
    # the second call word for word, as the 1.5B model does
    llm = _script(INVENTED, INVENTED, "Which model and dataset should I train on?")
    out = _ask(llm, tools, ctx, "focus on lora-test from now on")
    assert len(llm.calls) == 3
    note = llm.calls[2][-1]
    assert isinstance(note, HumanMessage) and "start_training is not for this request" in note.content
    assert "start_training" in llm.offered[1] and "start_training" not in llm.offered[2]
    assert {"select_run", "pause_training"} <= set(llm.offered[2])
    assert [type(m).__name__ for m in out["messages"]] == ["HumanMessage", "AIMessage"]
    assert out["messages"][-1].content == "Which model and dataset should I train on?"
    assert not [p for p in home.iterdir() if p.name != "auto"]


def test_an_answer_refused_a_third_time_is_not_run_and_the_person_is_asked(home: Path) -> None:
    """The checks are bounded: a third insisting answer (a server that ignores the offered tools) is not
    sent back again, and not run either: the person reads what was considered and why, and is asked."""
    ctx, tools = _tools(home)
    llm = _script(INVENTED, INVENTED, INVENTED, "done")
    out = _ask(llm, tools, ctx, "start a training")
    last = out["messages"][-1]
    assert isinstance(last, AIMessage) and not last.tool_calls
    assert last.content.startswith("I have not done anything") and "start_training" in last.content
    assert "the person" not in last.content and "you said" in last.content
    assert len(llm.calls) == 3  # no model call more
    assert not [p for p in home.iterdir() if p.name != "auto"]


def test_a_new_run_for_words_that_name_an_existing_run_is_refused(home: Path) -> None:
    """ "pick grpo-math back up": the 1.5B model started a new training (recipe twinkle-grpo, model
    "twinkle-grpo") for a request about the person's run. A new run with none of its own values named,
    for words that name a run, is sent back; the same call with a model the person named is not."""
    _, tools = _tools(home)
    (home / "grpo-math").mkdir()
    (home / "grpo-math" / "meta.json").write_text('{"run_id": "grpo-math", "status": "paused"}')
    request = "pick grpo-math back up"
    said = evidence([HumanMessage(request)])
    invented = {
        "name": "start_training",
        "args": {"recipe": "twinkle-grpo", "model": "twinkle-grpo"},
        "id": "c",
    }
    found = refused_calls(AIMessage("", tool_calls=[invented]), tools, said, request, ["grpo-math", "sft"])
    assert found and any("'grpo-math' is one of the person's runs" in c for c in found[0][1])
    # the run's id written as the model ("focus on lora-test" -> model "twinkle-models/lora-test") is
    # still no model of the person's: the call is about the run
    as_model = {**invented, "args": {"recipe": "twinkle-grpo", "model": "twinkle-models/grpo-math"}}
    found = refused_calls(AIMessage("", tool_calls=[as_model]), tools, said, request, ["grpo-math"])
    assert found and any("'grpo-math' is one of the person's runs" in c for c in found[0][1])
    named = "start grpo-math again as a new run of mock-model"
    said = evidence([HumanMessage(named)])
    call = {**invented, "args": {"recipe": "twinkle-grpo", "model": "mock-model"}}
    assert refused_calls(AIMessage("", tool_calls=[call]), tools, said, named, ["grpo-math"]) == []


def test_a_server_call_about_no_server_is_refused_and_withheld(home: Path) -> None:
    """Refused start_training, the 1.5B model turned to start_server for a run it wanted to work with: a
    server call in a conversation about no server is refused as well, and withheld."""
    ctx, tools = _tools(home)
    serve = {"name": "start_server", "args": {"backend": "transformers"}}
    llm = _script(INVENTED, serve, {"name": "select_run", "args": {"run_id": "sft-chat"}}, "Selected.")
    _ask(llm, tools, ctx, "I want to work with sft-chat now")
    assert "start_server" in llm.offered[1] and "start_server" not in llm.offered[2]
    assert "start_server is not for this request" in llm.calls[2][-1].content


def test_the_next_step_offers_every_tool_again(home: Path) -> None:
    ctx, tools = _tools(home)
    llm = _script(INVENTED, INVENTED, "Which model should I use?", "There are no runs yet.")
    _ask(llm, tools, ctx, "start something, then list my runs")
    assert len(llm.calls) == 4
    assert "start_training" not in llm.offered[2] and "start_training" in llm.offered[3]


def test_a_run_id_or_server_model_nobody_gave_is_dropped_for_the_default(home: Path) -> None:
    _, tools = _tools(home)
    said = evidence([HumanMessage("pause it")])
    for name, args in [
        ("pause_training", {"run_id": "your-run-id"}),
        ("plot_metrics", {"keys": ["loss"], "run": "selected_run_id"}),
        ("start_training", {"recipe": "trl-sft", "run_id": "my-new-run"}),
    ]:
        answer = AIMessage("", tool_calls=[{"name": name, "args": args, "id": "c"}])
        kept = amend(answer, tools, said, "pause it").tool_calls[0]["args"]
        assert not {"run_id", "run"} & set(kept), name
    server = AIMessage("", tool_calls=[{"name": "start_server", "args": {"model_id": "twinkle"}, "id": "c"}])
    said = evidence([HumanMessage("bring up the server in mock mode")])
    assert amend(server, tools, said, "bring up the server in mock mode").tool_calls[0]["args"] == {}
    # a cluster address nobody gave (the 1.5B model wrote one): dropped, we start our own; one given is kept
    words = "start the twinkle server with the mock backend on port 9100"
    invented = {"backend": "mock", "port": 9100, "ray_address": "localhost:10001"}
    server = AIMessage("", tool_calls=[{"name": "start_server", "args": invented, "id": "c"}])
    kept = amend(server, tools, evidence([HumanMessage(words)]), words).tool_calls[0]["args"]
    assert kept == {"backend": "mock", "port": 9100}
    words = "start the server in mock mode on my ray cluster at 10.0.0.5:6379"
    given = {"backend": "mock", "ray_address": "10.0.0.5:6379"}
    server = AIMessage("", tool_calls=[{"name": "start_server", "args": given, "id": "c"}])
    assert amend(server, tools, evidence([HumanMessage(words)]), words).tool_calls[0]["args"] == given
    said = evidence([HumanMessage("pause sft chat")])
    answer = AIMessage("", tool_calls=[{"name": "pause_training", "args": {"run_id": "sft-chat"}, "id": "c"}])
    assert amend(answer, tools, said, "pause sft chat").tool_calls[0]["args"] == {"run_id": "sft-chat"}


@pytest.mark.parametrize(
    ("words", "keys", "kept"),
    [
        ("only show steps 50 to 150", ["loss", "accuracy"], False),  # steps, not metrics
        ("I'd like to see the learning rate over time", ["lr"], True),  # initials of the words
        ("visualize the reward-ish metrics", ["reward", "accuracy"], True),  # one of them named
        ("chart kl and grad_norm", ["kl", "grad_norm"], True),
    ],
)
def test_metrics_to_plot_must_be_named(home: Path, words: str, keys: list, kept: bool) -> None:
    _, tools = _tools(home)
    call = {"name": "plot_metrics", "args": {"keys": keys}, "id": "c"}
    found = problems(call, tools["plot_metrics"], evidence([HumanMessage(words)]), words)
    assert (found == []) is kept, found


def test_an_invented_server_url_is_dropped_and_the_call_runs_on_our_server(home: Path) -> None:
    ctx, tools = _tools(home)
    call = {"name": "list_supported_models", "args": {"url": "https://huggingface.co"}, "id": "c1"}
    llm = ScriptedChatModel(responses=[AIMessage("", tool_calls=[call]), "done"])
    out = _ask(llm, tools, ctx, "tell me the models available on my server")
    made = next(m for m in out["messages"] if isinstance(m, AIMessage) and m.tool_calls)
    assert made.tool_calls[0]["args"] == {} and len(llm.calls) == 2
    result = next(m for m in out["messages"] if isinstance(m, ToolMessage))
    assert "huggingface" not in result.content  # asked our (absent) server, not the invented one


@pytest.mark.parametrize(
    ("request_words", "chosen", "amended"),
    [
        ("launch a plain pytorch fine-tune of m on d", "trl-sft", "torch-sft"),
        ("a supervised fine-tuning job through twinkle for m", "trl-sft", "twinkle-sft"),
        ("kick off a GRPO run on the twinkle server", "twinkle-sft", "twinkle-grpo"),
        ("start a trl grpo training", "trl-grpo", "trl-grpo"),
        ("train m on d", "trl-grpo", "trl-grpo"),  # nothing named: the model's choice stands
        ("train m with jax", "trl-sft", "trl-sft"),  # named what no recipe has: the tool answers
        ("a GRPO run please", "trl-grpo", "trl-grpo"),  # several fit and it chose one of them
    ],
)
def test_the_recipe_the_persons_words_fix_uniquely_is_the_one_that_runs(
    home: Path, request_words: str, chosen: str, amended: str
) -> None:
    _, tools = _tools(home)
    schema = tools["start_training"].args_schema
    assert schema.amend({"recipe": chosen, "model": "m"}, request_words)["recipe"] == amended
    assert schema.mismatches({"recipe": amended, "model": "m"}, request_words) == []


def test_a_recipe_against_the_persons_words_is_sent_back_when_several_would_fit(home: Path) -> None:
    ctx, tools = _tools(home)
    schema = tools["start_training"].args_schema
    found = schema.mismatches({"recipe": "torch-sft"}, "a GRPO run please")
    assert found and "twinkle-grpo or trl-grpo" in found[0] and "'torch-sft'" in found[0]
    wrong = {"recipe": "torch-sft", "model": "mock-model", "dataset": "/d.jsonl"}
    seen: list = []

    def reply(messages):
        seen.append(messages[-1])
        return "Should it run on the Twinkle server or on this machine with TRL?"

    llm = ScriptedChatModel(
        responses=[AIMessage("", tool_calls=[{"name": "start_training", "args": wrong, "id": "c1"}]), reply]
    )
    _ask(llm, tools, ctx, "start a GRPO run of mock-model on /d.jsonl")
    assert (
        seen[0].content.startswith("(Not done: start_training:")
        and "twinkle-grpo or trl-grpo" in seen[0].content
    )


@pytest.mark.parametrize(
    ("words", "skill", "about"),
    [
        ("good job", "training-metrics-debugging", False),
        ("what does GRPO stand for?", "training-metrics-debugging", False),
        ("my loss spikes, help me debug it", "training-metrics-debugging", True),  # a word of its name
        ("fix the script of dpo-old", "twinkle-training-scripts", True),
        ("show me your guide for this", "twinkle-training-scripts", True),  # asks for a guide as such
    ],
)
def test_a_guide_is_read_when_the_persons_words_are_about_it(words: str, skill: str, about: bool) -> None:
    from twinkle_auto.tools.skills import LoadSkillArgs

    assert (LoadSkillArgs.mismatches({"name": skill}, words) == []) is about


@pytest.mark.parametrize(
    ("words", "about_the_server"),
    [
        ("shut sft-chat down completely, no resuming", False),
        ("stop the server and free the GPUs", True),
        ("kill the ray cluster", True),
        ("tear down twinkle, I'm done", True),
    ],
)
def test_the_server_is_shut_down_only_when_the_person_talks_about_it(
    words: str, about_the_server: bool
) -> None:
    from twinkle_auto.tools.server import ShutdownArgs

    assert (ShutdownArgs.mismatches({}, words) == []) is about_the_server


@pytest.mark.parametrize(
    ("words", "kept"),
    [
        ("which deepseek models are on modelscope?", False),
        ("what models can my twinkle server train?", True),
        ("which models does the server support, the ones on the hub?", True),  # the server is named
    ],
)
def test_the_servers_models_are_not_the_hubs(home: Path, words: str, kept: bool) -> None:
    _, tools = _tools(home)
    call = {"name": "list_supported_models", "args": {}, "id": "c"}
    found = problems(call, tools["list_supported_models"], evidence([HumanMessage(words)]), words)
    assert (found == []) is kept, found


def _runs_on_disk(home: Path, **statuses: str) -> None:
    """Run folders with these stored statuses (no process: a `running` one reads as crashed)."""
    for run, status in statuses.items():
        (home / run).mkdir()
        (home / run / "meta.json").write_text(f'{{"run_id": "{run}", "status": "{status}"}}')


def test_an_action_on_a_run_whose_state_it_does_not_fit_is_refused_with_what_fits() -> None:
    """Pausing a paused run or resuming a running one is never what the person meant: the call is sent
    back with the run's state, what fits that state, and the runs the action does fit."""
    tools = {t.name: t for t in get_tools(ToolContext(Connection.open(Path("/nonexistent"))), search=False)}
    runs = RunBook(
        ["grpo-math", "sft-chat", "lora-test"],
        {"grpo-math": "paused", "sft-chat": "running", "lora-test": "finished"}.get,
    )

    def found(name: str, args: dict, request: str, selected: str | None = "grpo-math") -> list:
        call = AIMessage("", tool_calls=[{"name": name, "args": args, "id": "c"}])
        return refused_calls(call, tools, evidence([HumanMessage(request)]), request, runs, selected)

    (clauses,) = [f for _, f in found("pause_training", {"run_id": "grpo-math"}, "unpause grpo-math")]
    assert "'grpo-math' is paused" in clauses[-1] and "it is already paused" in clauses[-1]
    assert "(now running: sft-chat)" in clauses[-1]
    # no id: the call acts on the selected run, so that run's state is what counts
    assert found("pause_training", {}, "hold it for now")
    assert found("pause_training", {}, "hold it for now", selected="sft-chat") == []
    # an id the model got wrong acts on the one run the person named (as the tool resolves it)
    assert found("resume_training", {"run_id": "grpo"}, "let sft-chat go on")
    assert found("resume_training", {"run_id": "grpo-math"}, "let grpo-math go on") == []
    (stop,) = [f for _, f in found("stop_training", {"run_id": "lora-test"}, "end lora-test")]
    assert "'lora-test' is finished" in stop[-1]
    # an id nobody has is the tool's to report (it lists the runs); a read fits every state
    assert found("pause_training", {"run_id": "nope"}, "pause nope") == []
    assert found("get_training_status", {"run_id": "grpo-math"}, "how is grpo-math") == []


@pytest.mark.parametrize(
    ("name", "request_", "refused"),
    [
        ("resume_training", "pause it", "the person said 'pause', which asks for pause_training"),
        ("stop_training", "put sft-chat on hold", "the person said 'on hold', which asks for pause_training"),
        # a pause keeps the run: never sent back for its words ("…, we'll pick it up tomorrow")
        ("pause_training", "take a break with sft-chat, we'll pick it up again tomorrow", None),
        ("stop_training", "go on with sft-chat", "the person said 'go on', which asks for resume_training"),
        (
            "start_training",
            "carry on with the training",
            "the person said 'carry on', which asks for resume_training",
        ),
        (
            "start_training",
            "put the training on hold",
            "the person said 'on hold', which asks for pause_training",
        ),
        ("start_training", "stop the old run and launch a new one", None),
        (
            "start_training",
            "serve Qwen/Qwen3.5-8B on one GPU",
            "the person said 'serve', which asks for start_server",
        ),
        ("start_training", "a grpo run for mock-model on the twinkle server", None),
        ("resume_training", "restart it", None),  # "restart" may mean start over
        (
            "select_run",
            "pick grpo-math back up",
            "the person said 'pick … up', which asks for resume_training",
        ),
        (
            "select_run",
            "freeze sft-chat where it is",
            "the person said 'freeze', which asks for pause_training",
        ),
        ("select_run", "hold on, switch to sft-chat", None),  # "hold on" asks for no pause
        ("select_run", "switch to sft-chat", None),
        ("zoom_chart", "zoom all the way out", "the person said 'zoom … out', which asks for reset_chart"),
        (
            "zoom_chart",
            "show every step of the run again",
            "the person said 'every step', which asks for reset_chart",
        ),
        ("zoom_chart", "only show steps 50 to 150", None),
        ("zoom_chart", "reset the view and show only the last 100 steps", None),  # both: the model's
        ("resume_training", "kill sft-chat", "the person said 'kill', which asks for stop_training"),
        # asked to end a run, a pause still keeps it: not sent back (the approval shows what it does)
        ("pause_training", "terminate sft-chat", None),
        # words for two actions, or for none: the model's to weigh
        ("pause_training", "stop it for now, I'll resume it later", None),
        ("resume_training", "let sft-chat go", None),
        ("pause_training", "pause sft-chat", None),
    ],
)
def test_an_action_opposite_to_the_one_asked_for_is_sent_back(
    name: str, request_: str, refused: str | None
) -> None:
    """The 1.5B model answered "pause it" with resume_training, and "put it on hold" with stop_training:
    each schema names the akin actions' words and those it must never stand in for."""
    tools = {t.name: t for t in get_tools(ToolContext(Connection.open(Path("/nonexistent"))), search=False)}
    call = {"name": name, "args": {}, "id": "c"}
    found = problems(call, tools[name], evidence([HumanMessage(request_)]), request_)
    if refused is None:
        assert found == [], found
    else:
        wanted = refused.rsplit(" ", 1)[-1]
        assert found == [f"{refused}, not {name}: call {wanted} instead"]


def test_a_refused_pause_of_a_paused_run_never_runs_and_the_model_reads_why(home: Path) -> None:
    ctx, tools = _tools(home)
    _runs_on_disk(home, **{"grpo-math": "paused"})
    llm = _script({"name": "pause_training", "args": {"run_id": "grpo-math"}}, "grpo-math is already paused.")
    out = _ask(llm, tools, ctx, "unpause grpo-math")
    note = llm.calls[1][-1]
    assert isinstance(note, HumanMessage) and "'grpo-math' is paused" in note.content
    assert "resume_training" in note.content
    assert not any(isinstance(m, ToolMessage) for m in out["messages"])
    assert Connection.open(home).store.status("grpo-math").effective_status == "paused"


def test_a_request_about_a_run_refused_a_new_run_twice_is_offered_only_the_run_tools(home: Path) -> None:
    """ "switch to sft-chat": the 1.5B model answered start_training twice, then start_server once that
    was withheld. The request names one of the person's runs, so the last answer may only act on a run."""
    ctx, tools = _tools(home)
    _runs_on_disk(home, **{"sft-chat": "finished"})
    select = {"name": "select_run", "args": {"run_id": "sft-chat"}}
    llm = _script(INVENTED, INVENTED, select, "sft-chat is now selected.")
    out = _ask(llm, tools, ctx, "switch to sft-chat")
    offered = set(llm.offered[2])
    assert {"select_run", "get_training_status", "pause_training", "resume_training"} <= offered
    assert not offered & {"start_training", "start_server", "list_recipes", "shutdown_server"}
    assert "The request is about that run" in llm.calls[2][-1].content
    assert out["selected_run"] == "sft-chat"
    assert "start_training" in llm.offered[3]  # the next model call offers every tool again


def test_an_answer_that_copies_our_advice_is_replaced_by_what_was_not_done(home: Path) -> None:
    """Refused for metric names nobody gave, the 1.5B model answered with the note's own advice ("ask the
    person for what they did not give"): the person reads what was not done and why instead."""
    ctx, tools = _tools(home)
    _runs_on_disk(home, **{"grpo-math": "paused"})
    guess = {"name": "plot_metrics", "args": {"keys": ["accuracy", "format"]}}
    llm = _script(guess, "ask the person for what they did not give")
    out = _ask(llm, tools, ctx, "visualize the reward-ish metrics")
    last = out["messages"][-1].content
    assert last.startswith("I have not done anything") and "keys=['accuracy', 'format']" in last
    assert "ask the person" not in last
    # the same answer with no refusal before it is the model's own words, shown as they are
    llm = _script("ask the person for what they did not give")
    assert (
        _ask(llm, tools, ctx, "hello")["messages"][-1].content == "ask the person for what they did not give"
    )


def test_an_id_the_model_decorated_with_a_prefix_is_the_id_the_person_wrote(home: Path) -> None:
    _, tools = _tools(home)
    words = "start a trl grpo training of Qwen/Qwen2.5-0.5B-Instruct on modelscope/gsm8k for 50 steps"
    args = {
        "recipe": "trl-grpo",
        "model": "modelscope/Qwen/Qwen2.5-0.5B-Instruct",
        "dataset": "modelscope/gsm8k",
    }
    call = AIMessage("", tool_calls=[{"name": "start_training", "args": args, "id": "c"}])
    said = evidence([HumanMessage(words)])
    amended = amend(call, tools, said, words).tool_calls[0]["args"]
    assert amended["model"] == "Qwen/Qwen2.5-0.5B-Instruct" and amended["dataset"] == "modelscope/gsm8k"
    # a path keeps its folders, and an id nobody wrote any part of is left to the other checks
    for kept in ("/data/Qwen/Qwen2.5-0.5B-Instruct", "a/b/c"):
        call = AIMessage(
            "", tool_calls=[{"name": "start_training", "args": {**args, "model": kept}, "id": "c"}]
        )
        assert amend(call, tools, said, words).tool_calls[0]["args"]["model"] == kept


def test_a_script_the_person_named_runs_without_the_recipe_values_the_model_added(home: Path) -> None:
    """ "run the script /home/me/train.py as a new run called my-exp": the 1.5B model put the path in
    `script` (source code) beside a recipe with a model and dataset nobody named."""
    _, tools = _tools(home)
    words = "run the script /home/me/train.py as a new run called my-exp"
    args = {"recipe": "trl-sft", "model": "twinkle-auto", "dataset": "twinkle-auto", "params": {"lr": 1e-4}}
    args |= {"run_id": "my-exp", "script": "/home/me/train.py", "max_steps": 10000}
    call = AIMessage("", tool_calls=[{"name": "start_training", "args": args, "id": "c"}])
    amended = amend(call, tools, evidence([HumanMessage(words)]), words)
    assert amended.tool_calls[0]["args"] == {
        "run_id": "my-exp",
        "script": None,
        "script_path": "/home/me/train.py",
    }
    assert refused_calls(amended, tools, evidence([HumanMessage(words)]), words) == []
    # source code stays source code, and a path nobody named changes nothing
    source = {"script": "import time\nprint('hi')\n", "recipe": "trl-sft"}
    call = AIMessage("", tool_calls=[{"name": "start_training", "args": source, "id": "c"}])
    assert amend(call, tools, evidence([HumanMessage(words)]), words).tool_calls[0]["args"] == source
