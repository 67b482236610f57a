"""Tools for training runs: list, status, select, pause, resume, stop, update the script.

Results are compact JSON sized for an LLM. Refusals raise ToolError with one line the model can act on.
`stop_training` and `update_script` destroy or replace something: they carry a describer (see
tools/base.py) and the chat graph asks the person first. `select_run` changes the session (graph state)
through `Command(update=…)`. Starting a run lives in tools/training.py.

The verbs are distinct on purpose, and the descriptions say how: pause keeps the run to be resumed, stop
ends it for good; resume continues a paused run, start creates a new one.
"""

from __future__ import annotations

import difflib
from typing import Any

from langchain_core.tools import BaseTool
from langgraph.prebuilt import ToolRuntime
from pydantic import AliasChoices, Field

from twinkle_auto.connection.store import RunStatus
from twinkle_auto.monitor.snapshot import trends
from twinkle_auto.tools.base import (
    Approval,
    Scope,
    ToolArgs,
    ToolContext,
    ToolError,
    approved_calls,
    compact,
    make_tool,
)
from twinkle_auto.tools.scripts import MAX_SCRIPT_CHARS, check_source, review_update
from twinkle_auto.tools.verbs import RUN_ACTIONS

RUN_ID = AliasChoices("run_id", "run", "id", "name", "run_name")


class RunArg(ToolArgs):
    GROUNDED = GUESS_IS_DEFAULT = ("run_id",)  # an id nobody gave: the selected run, as if left out
    run_id: str | None = Field(
        default=None,
        validation_alias=RUN_ID,
        description="Id of the run, as the person wrote it; leave out for the selected run",
    )


RESUMABLE = ("paused", "stopped", "crashed", "failed")


class PauseArgs(RunArg):
    RUN_STATES = ("running",)
    STATE_HINTS = {
        # the pointer is safe: a resume_training for words of pausing is refused (ResumeArgs.NEVER_FOR)
        "paused": "it is already paused; resume_training is what lets it go on",
        **{state: "it has no process to pause" for state in RESUMABLE if state != "paused"},
    }
    # No ASKED_BY: a pause keeps the run whatever the words, and "take a break, we'll pick it up
    # tomorrow" asks for a pause in words of resuming; a pause of a paused run is refused by its state.


class ResumeArgs(RunArg):
    RUN_STATES = RESUMABLE
    STATE_HINTS = {
        "running": "it is already going",
        "finished": "it has nothing left to do; start_training makes a new run",
    }
    ASKED_BY = RUN_ACTIONS
    NEVER_FOR = ("pause_training", "stop_training")


class StopArgs(RunArg):
    # a paused run can be ended too: "stop it for good" marks it stopped (Controller.stop)
    RUN_STATES = ("running", "stopping", "paused")
    STATE_HINTS = dict.fromkeys(("stopped", "crashed", "failed", "finished"), "it has already ended")
    ASKED_BY = RUN_ACTIONS
    NEVER_FOR = ("pause_training", "resume_training")  # a run asked to wait or go on is never ended


class SelectArgs(ToolArgs):
    # the run to talk about is the person's to name or describe ("the chat one"): a select_run of an id
    # nobody gave (the 1.5B model's answer to "cheers") is sent back
    GROUNDED = ("run_id",)
    ASKED_BY = RUN_ACTIONS
    NEVER_FOR = tuple(RUN_ACTIONS)  # "freeze sft-chat" asks for a pause, not for a run to talk about
    run_id: str = Field(validation_alias=RUN_ID, description="Id of the run, as the person wrote it")


class UpdateScriptArgs(ToolArgs):
    GROUNDED = GUESS_IS_DEFAULT = ("run_id",)  # an id nobody gave: the selected run, as if left out
    run_id: str | None = Field(
        default=None,
        validation_alias=RUN_ID,
        description="Id of the run, as the person wrote it; leave out for the selected run",
    )
    script: str = Field(
        description=f"The complete new train.py (Python source, at most {MAX_SCRIPT_CHARS} characters), "
        "not a diff"
    )


def status_brief(s: RunStatus) -> dict[str, Any]:
    return {
        "run_id": s.run_id,
        "status": s.effective_status,
        "step": s.last_step,
        "total_steps": s.total_steps,
        "model": s.model_id,
    }


def make_run_tools(ctx: ToolContext | None = None) -> list[BaseTool]:
    """The run tools; `ctx` is the fallback context when a graph is invoked without one."""

    def scope(runtime: Any, name: str) -> Scope:
        return Scope.of(runtime, ctx, name)

    def list_training_runs(runtime: ToolRuntime[Any, Any] = None) -> Any:  # type: ignore[assignment]
        s = scope(runtime, "list_training_runs")
        runs = [status_brief(r) for r in s.connection.store.list_runs()]
        by_status: dict[str, list[str]] = {}
        for run in runs:
            by_status.setdefault(str(run["status"]), []).append(run["run_id"])
        # people name runs by state ("the running one", "the one that crashed"): say it up front
        return compact(
            {"selected": s.selected_run, "by_status": by_status, "runs": runs[:30], "total": len(runs)}
        )

    def get_training_status(run_id: str | None = None, runtime: ToolRuntime[Any, Any] = None) -> Any:  # type: ignore[assignment]
        s = scope(runtime, "get_training_status")
        store = s.connection.store
        run = s.run_or_selected(run_id)
        st = store.status(run)
        rows = store.last_metrics(run, 200)
        auto = store.auto_state(run)
        data: dict[str, Any] = {
            **status_brief(st),
            "process": st.process,
            "script_version": st.script_version,
            "error": st.error,
            "last": {k: v for k, v in (st.last_metrics or {}).items() if k != "ts"},
            "trends": trends(rows, keys=6),
        }
        if auto.get("decision"):
            data["monitor"] = {"decision": auto.get("decision"), "diagnosis": auto.get("diagnosis")}
        if auto.get("fix_attempts"):
            data["fix_attempts"] = auto["fix_attempts"]
        return compact(data, budget=2500)

    def select_run(run_id: str, runtime: ToolRuntime[Any, Any] = None) -> Any:  # type: ignore[assignment]
        s = scope(runtime, "select_run")
        run_id = s.resolve_run(run_id) or run_id
        st = s.connection.store.status(run_id)
        chart = {**s.chart, "step_range": None}
        return s.reply(compact({"selected": run_id, **status_brief(st)}), selected_run=run_id, chart=chart)

    def pause_training(run_id: str | None = None, runtime: ToolRuntime[Any, Any] = None) -> Any:  # type: ignore[assignment]
        s = scope(runtime, "pause_training")
        run = s.run_or_selected(run_id, PauseArgs.RUN_STATES)
        s.connection.controller.pause(run)
        step = s.connection.store.status(run).last_step
        return compact({"paused": run, "step": step, "note": "resume_training continues it"})

    def resume_training(run_id: str | None = None, runtime: ToolRuntime[Any, Any] = None) -> Any:  # type: ignore[assignment]
        s = scope(runtime, "resume_training")
        run = s.run_or_selected(run_id, ResumeArgs.RUN_STATES)
        result = s.connection.controller.resume(run)
        return compact({"resumed": run, "pid": result.pid, "launch": result.launch_count})

    def stop_training(run_id: str | None = None, runtime: ToolRuntime[Any, Any] = None) -> Any:  # type: ignore[assignment]
        s = scope(runtime, "stop_training")
        run = s.run_or_selected(run_id, StopArgs.RUN_STATES)
        result = s.connection.controller.stop(run)
        return compact(
            {
                "stopped": run,
                "status": result.status,
                "checkpoint": result.checkpoint,
                "killed": result.killed,
            }
        )

    def update_script(script: str, run_id: str | None = None, runtime: ToolRuntime[Any, Any] = None) -> Any:  # type: ignore[assignment]
        s = scope(runtime, "update_script")
        run = s.run_or_selected(run_id)
        text = check_source(script)
        old = s.connection.store.script(run)
        findings = review_update(old, text, s.connection.store.path(run))
        if findings and s.tool_call_id not in approved_calls(s):
            listed = "; ".join(f"{f.get('rule')}: {f.get('message')}" for f in findings[:4])
            raise ToolError(
                f"refused: the guards flag this script ({listed}). It runs only if the person approves it "
                "after seeing these findings; tell them, or change the script so it passes."
            )
        update = s.connection.controller.update_script(run, text)
        diff = update.diff if len(update.diff) < 1500 else update.diff[:1500] + "\n…"
        return compact(
            {"updated": run, "archived_as": update.archived_as, "version": update.version, "diff": diff}
        )

    def _describe_stop(args: dict[str, Any], s: Scope) -> Approval:
        run = s.resolve_run(args.get("run_id"), StopArgs.RUN_STATES)
        if run and s.connection.store.status(run).effective_status == "paused":
            return {
                "text": f"Stop the paused run {run!r} for good? It is marked stopped; its checkpoints stay."
            }
        return {"text": f"Stop run {run!r} for good? It saves a checkpoint and exits (pause would keep it)."}

    def _describe_update(args: dict[str, Any], s: Scope) -> Approval:
        run = s.run_or_selected(args.get("run_id"))
        store = s.connection.store
        old = store.script(run)
        new = str(args.get("script") or "")
        diff = "".join(
            difflib.unified_diff(
                old.splitlines(keepends=True),
                new.splitlines(keepends=True),
                fromfile="train.py (current)",
                tofile="train.py (new)",
            )
        )
        findings = review_update(old, new, store.path(run))
        text = f"Replace train.py of run {run!r} (the current one is archived; it is not relaunched)?"
        return {
            "text": text,
            "diff": diff,
            "script": new,
            "findings": findings,
            "unsafe": bool(findings),
            "editable": "script",
        }

    specs: list[tuple[Any, type, str, Any]] = [
        (
            list_training_runs,
            None,
            "List every training run with its status (running, paused, failed, finished…), step and model. "
            "Use it to see what runs exist or to find a run's id.",
            None,
        ),
        (
            get_training_status,
            RunArg,
            "Detailed status of one run: process, progress, latest metric values, recent trends and the "
            "monitor's verdict. Use it for questions about how a run is doing.",
            None,
        ),
        (
            select_run,
            SelectArgs,
            "Make a run the selected (current) one, so later questions, charts and commands use it "
            "without an id. Only changes the selection: it starts, pauses or resumes nothing.",
            None,
        ),
        (
            pause_training,
            PauseArgs,
            "Pause a running run: a temporary, reversible hold. Its process saves and exits, the run "
            "keeps everything, and resume_training later continues it from the same step. To end a run "
            "for good use stop_training.",
            None,
        ),
        (
            resume_training,
            ResumeArgs,
            "Resume an existing run that is paused, stopped or crashed: relaunch it so it continues from "
            "its last saved step. For any request to let an existing run go on again; start_training is "
            "only for a new run.",
            None,
        ),
        (
            stop_training,
            StopArgs,
            "End a training run permanently: it saves a final checkpoint and exits, not to be continued. "
            "For a temporary hold use pause_training. Acts on one run, not on the server "
            "(that is shutdown_server).",
            _describe_stop,
        ),
        (
            update_script,
            UpdateScriptArgs,
            "Replace a run's train.py with a complete new version (the old one is archived as "
            "train_v{N}.py). Does not relaunch: call resume_training after.",
            _describe_update,
        ),
    ]
    return [
        make_tool(
            func=fn,
            name=fn.__name__,
            description=description,
            args_schema=schema,  # None: inferred (keeps the injected runtime)
            approval=approval,
            reads_only=fn in (list_training_runs, get_training_status),
        )
        for fn, schema, description, approval in specs
    ]
