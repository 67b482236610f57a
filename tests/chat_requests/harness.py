"""Measure the chat's tool choice with a real model on our own request set (requests.json).

The world the requests talk about is real: a TWINKLE_HOME with four runs (one a live process), the
bundled skills, the local hub stub for searches. Each request is said in a fresh thread of the real chat
graph with every tool the app has. Tools that only read or change the view (list, status, charts,
search, recipes, cluster info) run for real, so a multi-step request sees real results; the first call
that would act on the world (pause, stop, start, server…) is where the request ends, and its arguments
are judged without running it.

Figures: first-tool accuracy (the first call, or no call for chat requests), argument validity (that
call's arguments validate against the tool's schema and say what was asked), multi-step completion
(every expected call made, in order, with valid arguments).

The requests are ours, written for this measure: none may appear in a prompt or a tool description
(`leaks` checks it).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent
REQUESTS = HERE / "requests.json"
HOLDOUT = HERE / "holdout.json"
SELECTED = "grpo-math"
RUNS_TO_EXECUTE = frozenset(
    {
        "list_training_runs",
        "get_training_status",
        "select_run",
        "plot_metrics",
        "zoom_chart",
        "reset_chart",
        "list_recipes",
        "get_cluster_info",
        "list_supported_models",
        "search_datasets",
        "search_models",
        "load_skill",
    }
)
"""Tools that only read or change the view: executed for real during a request."""
MAX_STEPS = 6


def load_requests(
    subset: bool = False, holdout: bool = False, path: Path | None = None
) -> list[dict[str, Any]]:
    """Our request set (or its subset), a holdout set (requests written after the chat's rules and never
    used to shape them, measured to see how far the set's figure carries to new phrasings), or the set in
    `path`."""
    requests = json.loads((path or (HOLDOUT if holdout else REQUESTS)).read_text())
    return [r for r in requests if r["subset"]] if subset else requests


# ---------------------------------------------------------------------------------------------- world
def seed_world(home: Path, examples: Path) -> Any:
    """Four runs: grpo-math paused (selected), sft-chat running (a real process), dpo-old failed,
    lora-test finished. Returns the Connection whose controller launched sft-chat."""
    from twinkle_auto.connection import Connection

    def run(run_id: str, meta: dict[str, Any], rows: list[dict[str, Any]]) -> None:
        folder = home / run_id
        folder.mkdir(parents=True)
        (folder / "meta.json").write_text(json.dumps({"run_id": run_id, **meta}))
        (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        (folder / "train.py").write_text("print('train')\n")

    grpo = [
        {
            "step": i,
            "loss": 0.5 - i / 1000,
            "reward": i / 300,
            "reward_std": 0.2,
            "kl": 0.01,
            "grad_norm": 1.0,
            "lr": 1e-5,
        }
        for i in range(1, 301)
    ]
    run(
        "grpo-math",
        {
            "status": "paused",
            "model_id": "Qwen/Qwen3.5-4B",
            "progress": {"last_step": 300, "total_steps": 1000},
        },
        grpo,
    )
    run(
        "dpo-old",
        {"status": "failed", "model_id": "Qwen/Qwen2.5-7B", "error": "KeyError: 'chosen'"},
        [{"step": i, "loss": 0.7} for i in range(1, 40)],
    )
    run(
        "lora-test",
        {"status": "finished", "model_id": "Qwen/Qwen2.5-0.5B"},
        [{"step": i, "loss": 1 / i} for i in range(1, 100)],
    )
    conn = Connection.open(home)
    # the tiny script reports its own model id ("linreg"), which would overwrite the world's: people
    # describe runs by their model ("the 0.5B Instruct run"), so the run must say the model it is
    model = "Qwen/Qwen2.5-0.5B-Instruct"
    script = (examples / "tiny" / "train.py").read_text().replace('model_id="linreg"', f'model_id="{model}"')
    assert model in script, "examples/tiny/train.py no longer sets model_id='linreg'"
    conn.controller.start(
        "sft-chat",
        script,
        model_id=model,
        env={"STEP_SLEEP": "0.5", "TOTAL_STEPS": "100000"},
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not conn.store.last_metrics("sft-chat", 1):
        time.sleep(0.1)
    return conn


def stop_world(conn: Any) -> None:
    """Kill every training process of this world: the harness's own and those the tools relaunched.

    A request such as "resume it" starts a process through the tools' controller, not the harness's, so
    processes are found by what they run: a script inside this world's private home (a fresh tmp folder,
    so whatever runs from it is ours).
    """
    import psutil

    for pid, child in list(conn.controller._children.items()):
        if child.poll() is None:
            try:
                os.killpg(pid, 9)
            except ProcessLookupError:
                pass
            child.wait(timeout=10)
    home = str(conn.store.home)
    for proc in psutil.process_iter(["pid", "cmdline"]):
        cmdline = proc.info.get("cmdline") or []
        if proc.pid != os.getpid() and any(arg.startswith(home + os.sep) for arg in cmdline):
            try:
                proc.kill()
            except psutil.Error:
                pass


def start_hub() -> Any:
    """The local ModelScope stub with a few models and datasets; MODELSCOPE_ENDPOINT points at it."""
    from hubserver import HubServer, model_entry

    hub = HubServer()
    hub.models = [
        model_entry(m, downloads=d)
        for m, d in [
            ("Qwen/Qwen2.5-0.5B-Instruct", 90000),
            ("Qwen/Qwen3.5-4B", 50000),
            ("LLM-Research/Llama-3.2-1B-Instruct", 30000),
            ("deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B", 40000),
            (
                "BAAI/bge-small-embedding",
                20000,
            ),
        ]
    ]
    hub.datasets = [
        model_entry(d, downloads=n, task="")
        for d, n in [
            ("modelscope/gsm8k", 80000),
            ("AI-MO/math-word-problems", 9000),
            ("chinese/dialogue-corpus", 5000),
            ("code/code-instructions", 7000),
        ]
    ]
    hub.start()
    os.environ["MODELSCOPE_ENDPOINT"] = hub.url
    return hub


# --------------------------------------------------------------------------------------------- judging
def _matches(spec: Any, value: Any) -> bool:
    if isinstance(spec, dict) and "contains" in spec:
        return spec["contains"].lower() in json.dumps(value, default=str).lower()
    if isinstance(spec, dict) and "contains_any" in spec:
        text = json.dumps(value, default=str).lower()
        return any(w.lower() in text for w in spec["contains_any"])
    if isinstance(spec, dict) and "in" in spec:
        return value in spec["in"]
    return value == spec


def args_ok(spec: dict[str, Any], args: dict[str, Any], selected: str | None) -> bool:
    for key, want in spec.items():
        if key == "$or":
            if not any(args_ok(alt, args, selected) for alt in want):
                return False
            continue
        got = args.get(key)
        if want == "$selected":
            if got not in (None, "", selected):
                return False
        elif not _matches(want, got):
            return False
    return True


def validated(tool: Any, args: dict[str, Any], resolve: Any = None) -> dict[str, Any] | None:
    """The call's arguments as the tool reads them (aliases and coercions applied, and the run it acts
    on resolved as the tool resolves it: `resolve` is `Scope.resolve_run` of the request); None if
    invalid."""
    schema = getattr(tool, "args_schema", None)
    try:
        if schema is None or not hasattr(schema, "model_validate"):
            return dict(args)
        model = schema.model_validate(args)
    except Exception:
        return None
    out = {k: getattr(model, k) for k in type(model).model_fields if k != "runtime"}
    if resolve is not None and "run_id" in out and tool.name not in NEW_RUN_TOOLS:
        out["run_id"] = resolve(out["run_id"], tuple(getattr(schema, "RUN_STATES", ()) or ()))
    return out


NEW_RUN_TOOLS = ("start_training",)
"""Tools whose run_id names a run to create: nothing to resolve."""


@dataclass
class Outcome:
    request: dict[str, Any]
    calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    answer: str = ""
    first_ok: bool = False
    args_ok: bool | None = None
    completed: bool | None = None
    error: str = ""
    seconds: float = 0.0

    def line(self) -> str:
        mark = (
            "OK  " if self.first_ok and self.args_ok is not False and self.completed is not False else "MISS"
        )
        calls = (
            ", ".join(f"{n}({json.dumps(a, default=str)[:70]})" for n, a in self.calls)
            or f"answer: {self.answer[:60]!r}"
        )
        flags = []
        if self.args_ok is False:
            flags.append("bad-args")
        if self.completed is False:
            flags.append("incomplete")
        head = f"{mark} #{self.request['id']:<3} {self.seconds:4.0f}s {self.request['say']!r:72}"
        return f"{head} -> {calls} {' '.join(flags)}{self.error}"


def judge(
    request: dict[str, Any],
    calls: list[tuple[str, dict[str, Any]]],
    tools: dict[str, Any],
    resolve: Any = None,
) -> Outcome:
    """Whether the calls do what the request asks: tool names, and the arguments as the tools read them.

    `resolve` is how a tool picks its run (Scope.resolve_run): one function, or one per call, of the
    state that call's tool reads (a step of a multi-step request is resolved on that step's words, and
    after a select_run on the run it selected), as the tools themselves do."""
    out = Outcome(request, calls)
    resolvers = list(resolve) if isinstance(resolve, (list, tuple)) else [resolve] * len(calls)
    steps = request["steps"]
    alt = request.get("tag", "").removeprefix("alt:") if request.get("tag", "").startswith("alt:") else None
    if not steps:
        out.first_ok = not calls
        return out
    if not calls:
        return out
    first_name, first_args = calls[0]
    want = steps[0]
    out.first_ok = first_name == want["tool"] or (alt is not None and first_name == alt)
    if out.first_ok:
        args = validated(tools[first_name], first_args, resolvers[0]) if first_name in tools else None
        out.args_ok = args is not None and (
            first_name != want["tool"] or args_ok(want["args"], args, SELECTED)
        )
    if len(steps) > 1:
        i = 0
        for (name, call_args), resolve_k in zip(calls, resolvers, strict=True):
            if i < len(steps) and name == steps[i]["tool"]:
                args = validated(tools[name], call_args, resolve_k) if name in tools else None
                if args is not None and args_ok(steps[i]["args"], args, SELECTED):
                    i += 1
        out.completed = i == len(steps)
    return out


def say(
    graph: Any, ctx: Any, request: dict[str, Any], thread: str
) -> tuple[list[tuple[str, dict[str, Any]]], str, list[Any]]:
    """One request in a fresh thread: the calls the model made (read-only ones executed), its answer,
    and for each call how its tool will pick the run (Scope.resolve_run of the state at that call)."""
    from langchain_core.messages import AIMessage, HumanMessage

    from twinkle_auto.graphs.chat.nodes import pending_calls
    from twinkle_auto.tools.base import Scope

    cfg = {"configurable": {"thread_id": thread}, "recursion_limit": 60}
    stop = {"interrupt_before": ["tools", "approve"]}
    graph.invoke(
        {"messages": [HumanMessage(request["say"])], "selected_run": SELECTED}, cfg, context=ctx, **stop
    )
    calls: list[tuple[str, dict[str, Any]]] = []
    resolvers: list[Any] = []
    wanted = max(1, len(request["steps"]))
    for _ in range(MAX_STEPS):
        state = graph.get_state(cfg)
        messages = state.values.get("messages", [])
        pending = pending_calls(messages)
        calls += [(c["name"], dict(c.get("args") or {})) for c in pending]
        resolvers += [Scope(ctx, dict(state.values)).resolve_run] * len(pending)
        if not state.next or not pending or len(calls) >= wanted:
            break  # judged on what the request needs: the rest of the turn would only cost time
        if any(c["name"] not in RUNS_TO_EXECUTE for c in pending):
            break
        graph.invoke(None, cfg, context=ctx, **stop)
    messages = graph.get_state(cfg).values.get("messages", [])
    last = next((m for m in reversed(messages) if isinstance(m, AIMessage)), None)
    return calls, str(last.content) if last is not None else "", resolvers


ANSWER_TOKENS = 512
"""Tokens the model may write per call while measuring. The app sets no cap; 160 (the first value) cut
long start_training calls mid-JSON, which llama.cpp then refuses with HTTP 500, a miss of the measure
rather than of the model. 512 holds any call of the set; only a rambling prose answer costs more."""


def summarize(outcomes: list[Outcome]) -> dict[str, Any]:
    n = len(outcomes)
    first = sum(o.first_ok for o in outcomes)
    with_args = [o for o in outcomes if o.args_ok is not None]
    good_args = sum(bool(o.args_ok) for o in with_args)
    multi = [o for o in outcomes if o.completed is not None]
    done = sum(bool(o.completed) for o in multi)
    overall = sum(o.first_ok and o.args_ok is not False and o.completed is not False for o in outcomes)
    return {
        "requests": n,
        "first_tool": f"{first}/{n}",
        "first_tool_pct": round(100 * first / max(n, 1), 1),
        "args_valid": f"{good_args}/{len(with_args)}",
        "args_valid_pct": round(100 * good_args / max(len(with_args), 1), 1),
        "multi_step": f"{done}/{len(multi)}",
        "multi_step_pct": round(100 * done / max(len(multi), 1), 1),
        "overall": f"{overall}/{n}",
        "overall_pct": round(100 * overall / max(n, 1), 1),
    }


def leaks(texts: list[str]) -> list[str]:
    """Requests whose wording appears in a prompt or a tool description (none may)."""
    blob = " ".join(" ".join(t.lower().split()) for t in texts)
    every = [r for path in sorted(HERE.glob("*.json")) for r in load_requests(path=path)]
    return [r["say"] for r in every if " ".join(r["say"].lower().split()) in blob]


def build(home: Path, llm: Any) -> tuple[Any, Any, dict[str, Any]]:
    """The chat graph as the app builds it (every tool, skills), over `home`."""
    from langgraph.checkpoint.memory import InMemorySaver

    from twinkle_auto.connection import Connection
    from twinkle_auto.graphs.chat.graph import compile_chat_graph
    from twinkle_auto.skills import SkillManager
    from twinkle_auto.tools import ToolContext, get_tools

    skills = SkillManager(home, community=False).start()
    skills.wait(5.0, community=False)
    ctx = ToolContext(Connection.open(home), skills=skills)
    tools = get_tools(ctx)
    graph = compile_chat_graph(llm, tools, checkpointer=InMemorySaver(), context=ctx)
    return graph, ctx, {t.name: t for t in tools}


def evaluate(
    home: Path, examples: Path, llm: Any, requests: list[dict[str, Any]], echo: Any = None
) -> tuple[list[Outcome], dict[str, Any]]:

    conn = seed_world(home, examples)
    hub = start_hub()
    try:
        graph, ctx, tools = build(home, llm)
        outcomes = []
        for request in requests:
            began = time.monotonic()
            try:
                calls, answer, resolvers = say(graph, ctx, request, f"req-{request['id']}")
                outcome = judge(request, calls, tools, resolve=resolvers)
                outcome.answer = answer
            except Exception as exc:  # an LLM failure is a miss, reported, not a crash of the measure
                outcome = Outcome(request, error=f" [{type(exc).__name__}: {str(exc)[:120]}]")
            outcome.seconds = time.monotonic() - began
            outcomes.append(outcome)
            if echo is not None:
                echo(outcome.line())
        return outcomes, summarize(outcomes)
    finally:
        hub.stop()
        stop_world(conn)
