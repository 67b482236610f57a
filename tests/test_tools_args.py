"""Tool arguments: typed schemas, repairs of common small-model slips, one-line errors the model can act
on, and the request set's hygiene (none of its requests appears in a prompt or a tool description)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langchain_core.utils.function_calling import convert_to_openai_tool
from langgraph.checkpoint.memory import InMemorySaver

from twinkle_auto.connection import Connection
from twinkle_auto.graphs.chat.graph import compile_chat_graph
from twinkle_auto.graphs.chat.prompts import BUDGET_SPENT, system_prompt
from twinkle_auto.tools import get_tools
from twinkle_auto.tools.base import ToolContext, tool_error_message
from twinkle_auto.tools.charts import PlotArgs, ZoomArgs
from twinkle_auto.tools.runs import RunArg
from twinkle_auto.tools.training import StartArgs, given_params

sys.path.insert(0, str(Path(__file__).parent / "chat_requests"))
import harness  # noqa: E402

APP_TOOLS = [
    "list_training_runs",
    "get_training_status",
    "select_run",
    "pause_training",
    "resume_training",
    "stop_training",
    "update_script",
    "start_training",
    "list_recipes",
    "plot_metrics",
    "zoom_chart",
    "reset_chart",
    "start_server",
    "shutdown_server",
    "get_cluster_info",
    "list_supported_models",
    "search_datasets",
    "search_models",
]
"""Every tool of the chat app in family order: runs, training, charts, server, search."""


def test_every_tool_of_the_app_is_in_get_tools_defaults(home: Path) -> None:
    names = {t.name for t in get_tools(ToolContext(Connection.open(home)))}
    assert set(APP_TOOLS) == names  # load_skill joins when a skill manager is given


def test_tools_the_chat_may_refuse_come_last_the_largest_last(home: Path) -> None:
    """Withholding a tool re-reads the prompt after it (see in_prompt_order): those are at the end."""
    from twinkle_auto.skills import SkillManager

    skills = SkillManager(home, community=False).start()
    skills.wait(5.0, community=False)
    tools = get_tools(ToolContext(Connection.open(home), skills=skills))
    names = [t.name for t in tools]
    refusable = {
        "select_run",
        "load_skill",
        "list_supported_models",
        "shutdown_server",
        "plot_metrics",
        "start_server",
        "start_training",
    }
    assert set(names[-len(refusable) :]) == refusable, names
    sizes = [len(json.dumps(convert_to_openai_tool(t))) for t in tools[-len(refusable) :]]
    assert sizes == sorted(sizes)
    # the others keep their family order
    assert names[: -len(refusable)] == [n for n in APP_TOOLS if n not in refusable]


def test_schemas_are_plain_and_every_argument_is_described(home: Path) -> None:
    for tool in get_tools(ToolContext(Connection.open(home))):
        spec = json.dumps(convert_to_openai_tool(tool))
        assert '{"type": "null"}' not in spec and '"title"' not in spec, tool.name
        params = convert_to_openai_tool(tool)["function"]["parameters"].get("properties", {})
        assert all(p.get("description") for p in params.values()), tool.name


@pytest.mark.parametrize(
    ("schema", "given", "want"),
    [
        (ZoomArgs, {"start": "100", "end": "200"}, {"start_step": 100, "end_step": 200}),
        (ZoomArgs, {"start_step": "null", "end_step": 50}, {"start_step": None, "end_step": 50}),
        (PlotArgs, {"metrics": "reward, kl"}, {"keys": ["reward", "kl"]}),
        (PlotArgs, {"keys": '["loss"]'}, {"keys": ["loss"]}),
        (PlotArgs, {"keys": "loss"}, {"keys": ["loss"]}),
        (RunArg, {"run": "alpha"}, {"run_id": "alpha"}),
        (
            StartArgs,
            {"recipe": "trl-sft", "params": '{"lr": 0.001}', "steps": "20"},
            {"params": {"lr": 0.001}, "max_steps": 20},
        ),
    ],
)
def test_common_slips_are_repaired(schema: type, given: dict, want: dict) -> None:
    got = schema.model_validate(given)
    read = {k: given_params(v) if k == "params" else v for k, v in ((k, getattr(got, k)) for k in want)}
    assert read == want


def test_recipe_parameters_are_a_closed_typed_object() -> None:
    """A free dict let the model write invented keys until its output limit (HTTP 500 from llama.cpp)."""
    spec = convert_to_openai_tool(StartArgs)["function"]["parameters"]["properties"]["params"]
    assert spec["additionalProperties"] is False and {"lr", "lora_rank", "num_generations"} <= set(
        spec["properties"]
    )
    got = StartArgs.model_validate({"recipe": "trl-sft", "params": {"learning_rate": "1e-4", "seed": "null"}})
    assert given_params(got.params) == {"lr": 1e-4}
    with pytest.raises(Exception) as err:
        StartArgs.model_validate({"recipe": "trl-sft", "params": {"eval_metric_min_steps": 1}})
    assert "eval_metric_min_steps" in tool_error_message(err.value, "start_training")


def test_what_cannot_be_repaired_is_one_line_naming_the_field() -> None:
    with pytest.raises(Exception) as err:
        ZoomArgs.model_validate({"start_step": "soon"})
    text = tool_error_message(err.value, "zoom_chart")
    assert text.startswith("Error: invalid arguments for zoom_chart: start_step:") and "\n" not in text
    assert '(got "soon")' in text and "call the tool again" in text


def test_start_training_from_a_recipe_renders_the_whole_script_for_approval(
    home: Path, tmp_path: Path
) -> None:
    """A recipe name and typed fields become a complete train.py shown before anything runs; a bad
    parameter is one line naming it; neither a recipe nor a script is refused with the recipes listed."""
    data = tmp_path / "sft.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"q{i}", "completion": f"a{i}"}) + "\n" for i in range(8)))
    ctx = ToolContext(Connection.open(home))
    tools = get_tools(ctx, search=False, server=False)
    start = {"name": "start_training", "id": "c1"}
    llm_calls = [
        AIMessage(
            "",
            tool_calls=[
                {
                    **start,
                    "args": {
                        "recipe": "torch-sft",
                        "model": str(tmp_path),
                        "dataset": str(data),
                        "params": {"lr": 5},
                    },
                }
            ],
        ),
        AIMessage("", tool_calls=[{**start, "id": "c2", "args": {"model": str(tmp_path)}}]),
        "ok",
    ]
    from fakes import ScriptedChatModel

    graph = compile_chat_graph(
        ScriptedChatModel(responses=llm_calls), tools, checkpointer=InMemorySaver(), auto_approve=True
    )
    out = graph.invoke(
        {"messages": [HumanMessage(f"train {tmp_path} on {data}")]},
        {"configurable": {"thread_id": "t"}},
        context=ctx,
    )
    errors = [m.content for m in out["messages"] if isinstance(m, ToolMessage)]
    assert "lr" in errors[0] and "\n" not in errors[0]
    assert "give exactly one of recipe (available: twinkle-grpo" in errors[1]
    assert not any(p.is_dir() for p in home.iterdir() if p.name != "auto")


def test_no_request_of_the_set_is_in_a_prompt_or_a_description(home: Path) -> None:
    requests = harness.load_requests()
    assert len(requests) >= 80
    tools = get_tools(ToolContext(Connection.open(home)))
    assert {r["steps"][0]["tool"] for r in requests if r["steps"]} >= {t.name for t in tools}
    assert (
        sum(1 for r in requests if not r["steps"]) >= 5
        and sum(1 for r in requests if len(r["steps"]) > 1) >= 8
    )
    texts = [system_prompt(), BUDGET_SPENT]
    for tool in tools:
        texts.append(json.dumps(convert_to_openai_tool(tool)))
    assert harness.leaks(texts) == []


def test_start_training_passes_launch_options_to_the_controller(home: Path, tmp_path: Path) -> None:
    """argv, env and cwd reach the real process; the run becomes the selected run (graph state)."""
    from conftest import wait_for
    from fakes import ScriptedChatModel

    script = tmp_path / "train.py"
    script.write_text(
        "import json, os, sys\n"
        "open('seen.json', 'w').write(json.dumps({'argv': sys.argv[1:], 'env': os.environ.get('MY_FLAG')}))\n"
    )
    work = tmp_path / "work"
    work.mkdir()
    ctx = ToolContext(Connection.open(home))
    args = {
        "script_path": str(script),
        "run_id": "opts",
        "argv": "--lr 0.1 --name 'a b'",
        "env": {"MY_FLAG": "1"},
        "cwd": str(work),
    }
    llm = ScriptedChatModel(
        responses=[AIMessage("", tool_calls=[{"name": "start_training", "args": args, "id": "c1"}]), "ok"]
    )
    graph = compile_chat_graph(
        llm, get_tools(ctx, search=False, server=False), checkpointer=InMemorySaver(), auto_approve=True
    )
    out = graph.invoke(
        {"messages": [HumanMessage(f"start {script} as opts")]},
        {"configurable": {"thread_id": "t"}},
        context=ctx,
    )
    assert out["selected_run"] == "opts", out["messages"][-2].content
    seen = wait_for(lambda: (work / "seen.json").exists() and json.loads((work / "seen.json").read_text()))
    assert seen == {"argv": ["--lr", "0.1", "--name", "a b"], "env": "1"}


@pytest.mark.parametrize(
    "fake", ["your-run-id", "selected_run_id", "<run_id>", "current", "your-run-id-here", "crashed_run_id"]
)
def test_a_placeholder_run_id_means_the_selected_run(fake: str) -> None:
    assert RunArg.model_validate({"run_id": fake}).run_id is None
    assert RunArg.model_validate({"run_id": "grpo-math"}).run_id == "grpo-math"


def test_a_tool_call_the_server_could_not_parse_is_asked_again(home: Path) -> None:
    """llama.cpp answers HTTP 500 when the model's tool-call JSON does not parse; the agent asks once more."""
    from fakes import ScriptedChatModel

    refused = RuntimeError("Error code: 500 - Failed to parse tool call arguments as JSON: parse error")
    llm = ScriptedChatModel(
        responses=[
            refused,
            AIMessage("", tool_calls=[{"name": "list_training_runs", "args": {}, "id": "c1"}]),
            "none",
        ]
    )
    ctx = ToolContext(Connection.open(home))
    graph = compile_chat_graph(llm, get_tools(ctx, search=False, server=False), checkpointer=InMemorySaver())
    out = graph.invoke(
        {"messages": [HumanMessage("runs?")]}, {"configurable": {"thread_id": "t"}}, context=ctx
    )
    assert out["messages"][-1].content == "none"
    assert "not valid JSON" in llm.calls[1][-1].content


def test_a_model_that_breaks_its_json_twice_answers_in_words(home: Path) -> None:
    from fakes import ScriptedChatModel

    refused = RuntimeError("Error code: 500 - Failed to parse tool call arguments as JSON: parse error")
    llm = ScriptedChatModel(responses=[refused, refused, "LoRA trains small adapter matrices."])
    ctx = ToolContext(Connection.open(home))
    graph = compile_chat_graph(llm, get_tools(ctx, search=False, server=False), checkpointer=InMemorySaver())
    out = graph.invoke(
        {"messages": [HumanMessage("what is LoRA?")]}, {"configurable": {"thread_id": "t"}}, context=ctx
    )
    assert out["messages"][-1].content == "LoRA trains small adapter matrices."
    assert llm.offered[2] == [] and "without calling a tool" in llm.calls[2][-1].content


def test_a_model_that_breaks_its_json_even_without_tools_gets_a_plain_reply(home: Path) -> None:
    """holdout #9 "unfreeze grpo-math": the 1.5B model wrote an update_script call with a runaway script
    three times, the last with no tool offered (llama.cpp still parses calls from the text). The person
    reads that nothing was done, not an HTTP 500."""
    from fakes import ScriptedChatModel

    refused = RuntimeError("Error code: 500 - Failed to parse tool call arguments as JSON: parse error")
    llm = ScriptedChatModel(responses=[refused, refused, refused])
    ctx = ToolContext(Connection.open(home))
    graph = compile_chat_graph(llm, get_tools(ctx, search=False, server=False), checkpointer=InMemorySaver())
    out = graph.invoke(
        {"messages": [HumanMessage("unfreeze it")]}, {"configurable": {"thread_id": "t"}}, context=ctx
    )
    last = out["messages"][-1]
    assert isinstance(last, AIMessage) and not last.tool_calls
    assert "nothing was done" in last.content
    assert len(llm.calls) == 3


def _status_run(home: Path, run_id: str) -> None:
    folder = home / run_id
    folder.mkdir(parents=True)
    (folder / "meta.json").write_text(json.dumps({"run_id": run_id, "status": "failed", "pid": None}))
    (folder / "metrics.jsonl").write_text(json.dumps({"step": 1, "loss": 1.0}) + "\n")


@pytest.mark.parametrize(
    "given, said, want",
    [
        (None, "how is sft-chat doing?", "sft-chat"),  # left out, the person named it
        ("your-run-id", "how is sft-chat doing?", "sft-chat"),  # a placeholder
        ("sft-chat-backup", "bring sft-chat back", "sft-chat"),  # a near miss that does not exist
        ("dpo-old", "how is sft-chat doing? and dpo-old?", "dpo-old"),  # an existing id is taken as given
        (None, "how is it doing?", "grpo-math"),  # nobody named: the selected run
        (None, "compare sft-chat and dpo-old", "grpo-math"),  # two named: not guessed
        (None, "how is sft-chat-2 doing?", "grpo-math"),  # a longer id is not sft-chat
        (None, "and sft-chat.", "sft-chat"),  # sentence punctuation after the id
        ("nope", "how is it doing?", "grpo-math"),  # an id the person never wrote is a guess: selected
        ("nope", "how is nope doing?", "nope"),  # the person's own unknown id: the tool reports it
        ("nope", "how is NOPE doing?", "nope"),  # written in other case, still theirs
        ("nope", "compare sft-chat and dpo-old", "nope"),  # two named, a third invented: not guessed
    ],
)
def test_a_command_acts_on_the_run_the_person_named(home: Path, given, said: str, want: str) -> None:
    from twinkle_auto.tools.base import Scope

    for run_id in ("sft-chat", "dpo-old", "grpo-math"):
        _status_run(home, run_id)
    scope = Scope(
        ToolContext(Connection.open(home)), {"messages": [HumanMessage(said)], "selected_run": "grpo-math"}
    )
    assert scope.resolve_run(given) == want


def _described_world(home: Path) -> None:
    """Four runs that differ in kind, task and model, as people tell them apart in words."""
    for run_id, model, status in (
        ("grpo-math", "Qwen/Qwen3.5-4B", "paused"),
        ("sft-chat", "Qwen/Qwen2.5-0.5B-Instruct", "stopped"),
        ("dpo-old", "Qwen/Qwen2.5-7B", "failed"),
        ("lora-test", "Qwen/Qwen2.5-0.5B", "finished"),
    ):
        (home / run_id).mkdir(parents=True)
        meta = {"run_id": run_id, "status": status, "model_id": model, "pid": None}
        (home / run_id / "meta.json").write_text(json.dumps(meta))


@pytest.mark.parametrize(
    "given, said, states, want",
    [
        (None, "is my chat finetune still alive?", (), "sft-chat"),  # the id's own word
        ("chat", "let's focus on the chat one", (), "sft-chat"),  # the model passed the fragment
        ("finetune", "is my chat finetune still alive?", (), "sft-chat"),  # or a word every run fits
        (None, "pick the math one back up", ("paused",), "grpo-math"),
        (None, "the 7b run, what happened?", (), "dpo-old"),  # the model's size
        (None, "how did the Qwen/Qwen2.5-7B run end?", (), "dpo-old"),  # the model's id, whole
        # two runs fit "qwen 0.5b": the action's states pick the one it applies to, else not guessed
        (None, "restart the qwen 0.5b run", ("stopped",), "sft-chat"),
        (None, "how is the qwen 0.5b run?", (), "grpo-math"),
        (None, "compare sft and grpo", (), "grpo-math"),  # two descriptions: the selected run
        (None, "how is sft-chat-2 doing?", (), "grpo-math"),  # a name of its own is no description
        ("grpo-math", "how is the chat one?", (), "grpo-math"),  # an existing id given is kept
        (None, "how is the llama run?", (), "grpo-math"),  # no run fits: the selected one
    ],
)
def test_a_command_acts_on_the_run_the_person_described(
    home: Path, given, said: str, states: tuple, want: str
) -> None:
    """People name runs by what they are ("the chat one", "the 7b run"): the run the words pick out,
    and only one, is what a call without a valid id acts on."""
    from twinkle_auto.tools.base import Scope

    _described_world(home)
    scope = Scope(
        ToolContext(Connection.open(home)), {"messages": [HumanMessage(said)], "selected_run": "grpo-math"}
    )
    assert scope.resolve_run(given, states) == want


def test_the_grounding_judges_a_described_run_as_the_tool_will_act_on_it() -> None:
    """A pause of "the chat one" acts on sft-chat, not on the selected (paused) run: the state check
    before the call runs must look at the same run, or it sends back a call that was right."""
    from twinkle_auto.graphs.chat import grounding
    from twinkle_auto.tools.base import run_words

    tools = {t.name: t for t in get_tools(ToolContext(Connection.open(Path("/nonexistent"))), search=False)}
    statuses = {"grpo-math": "paused", "sft-chat": "running", "dpo-old": "failed", "lora-test": "finished"}
    models = {"grpo-math": "Qwen/Qwen3.5-4B", "sft-chat": "Qwen/Qwen2.5-0.5B-Instruct"}
    models |= {"dpo-old": "Qwen/Qwen2.5-7B", "lora-test": "Qwen/Qwen2.5-0.5B"}
    runs = grounding.RunBook(list(statuses), statuses.get, lambda run: run_words(run, models[run]))
    for request, name, refused in (
        ("pause the chat one", "pause_training", False),  # sft-chat runs; the selected run is paused
        ("pause it", "pause_training", True),  # the selected run: already paused
        ("hold the qwen 0.5b run", "pause_training", False),  # of the two 0.5b runs, the running one
        ("resume the chat one", "resume_training", True),  # it is already going
        ("stop the math run for good", "stop_training", False),  # paused: it is marked stopped
        ("stop the lora test", "stop_training", True),  # finished: it has already ended
    ):
        call = AIMessage("", tool_calls=[{"name": name, "args": {}, "id": "c"}])
        said = grounding.evidence([HumanMessage(request)])
        found = grounding.refused_calls(call, tools, said, request, runs, "grpo-math")
        assert bool(found) is refused, (request, found)


def test_a_run_to_talk_about_is_one_the_person_named_described_or_a_tool_listed() -> None:
    """select_run changes what the rest of the chat acts on: an id nobody gave (the 1.5B model answered
    "cheers" with select_run("twinkle-auto-123")) is sent back; a run named, described or listed is not."""
    from langchain_core.messages import ToolMessage

    from twinkle_auto.graphs.chat import grounding
    from twinkle_auto.tools.base import run_words

    tools = {t.name: t for t in get_tools(ToolContext(Connection.open(Path("/nonexistent"))), search=False)}
    statuses = {"grpo-math": "paused", "sft-chat": "running"}
    models = {"grpo-math": "Qwen/Qwen3.5-4B", "sft-chat": "Qwen/Qwen2.5-0.5B-Instruct"}
    runs = grounding.RunBook(list(statuses), statuses.get, lambda run: run_words(run, models[run]))
    listed = ToolMessage('{"runs": [{"run_id": "grpo-math"}, {"run_id": "sft-chat"}]}', tool_call_id="l")
    for request, run_id, before, refused in (
        ("cheers", "twinkle-auto-123", [], True),
        ("cheers", "sft-chat", [], True),  # a real run, but nobody asked for it
        ("switch to sft-chat", "sft-chat", [], False),
        ("let's talk about the chat one", "sft-chat", [], False),  # described
        ("let's talk about the chat one", "chat", [], False),  # the model passed the fragment
        ("the second one", "sft-chat", [listed], False),  # a tool listed it
    ):
        call = AIMessage("", tool_calls=[{"name": "select_run", "args": {"run_id": run_id}, "id": "c"}])
        said = grounding.evidence([*before, HumanMessage(request)])
        found = grounding.refused_calls(call, tools, said, request, runs, "grpo-math")
        assert bool(found) is refused, (request, run_id, found)


def test_a_guessed_id_with_no_run_selected_or_no_conversation_is_reported_not_replaced(home: Path) -> None:
    from twinkle_auto.tools.base import Scope

    _status_run(home, "sft-chat")
    ctx = ToolContext(Connection.open(home))
    assert Scope(ctx, {"messages": [HumanMessage("how is it going?")]}).resolve_run("nope") == "nope"
    assert Scope(ctx, {"selected_run": "sft-chat"}).resolve_run("nope") == "nope"  # a CLI call: no words


def test_the_named_run_is_the_one_the_tool_and_its_approval_use(home: Path) -> None:
    """Through the graph: the model leaves the id out or invents one; the status and the script
    approval both name the run the person wrote, not the selected one."""
    from fakes import ScriptedChatModel

    for run_id in ("sft-chat", "grpo-math"):
        _status_run(home, run_id)
        (home / run_id / "train.py").write_text("print(1)\n")
    llm = ScriptedChatModel(
        responses=[
            AIMessage("", tool_calls=[{"name": "get_training_status", "args": {}, "id": "c1"}]),
            "done",
            AIMessage(
                "",
                tool_calls=[
                    {
                        "name": "update_script",
                        "args": {"run_id": "x-run-id", "script": "print(2)\n"},
                        "id": "c2",
                    }
                ],
            ),
        ]
    )
    ctx = ToolContext(Connection.open(home))
    graph = compile_chat_graph(llm, get_tools(ctx, search=False, server=False), checkpointer=InMemorySaver())
    cfg = {"configurable": {"thread_id": "t"}}
    out = graph.invoke(
        {"messages": [HumanMessage("how is sft-chat?")], "selected_run": "grpo-math"}, cfg, context=ctx
    )
    status = next(m for m in out["messages"] if isinstance(m, ToolMessage))
    assert json.loads(status.content)["run_id"] == "sft-chat", status.content
    out = graph.invoke({"messages": [HumanMessage("give sft-chat a script that prints 2")]}, cfg, context=ctx)
    ask = out["__interrupt__"][0].value["calls"][0]
    assert ask["name"] == "update_script" and "'sft-chat'" in ask["text"], ask
