"""Tools for training runs: list, status, start, select, pause, resume, stop, update the script.

Results are compact JSON sized for an LLM. Refusals raise ToolError with one line the model can act on.
start_training, stop_training and update_script replace or destroy something: they carry an approval
text (see tools/base.py), and the chat graph asks the person before they run.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

from langchain_core.tools import BaseTool, StructuredTool
from pydantic import BaseModel, Field

from twinkle_auto.connection.errors import RunError
from twinkle_auto.connection.store import RunStatus
from twinkle_auto.monitor.snapshot import trends
from twinkle_auto.runtime.format import RunIdError
from twinkle_auto.tools.base import ToolContext, ToolError, compact

MAX_SCRIPT_CHARS = 200_000


class RunArg(BaseModel):
    run_id: str | None = Field(default=None, description="the run id; omit to use the selected run")


class NoArgs(BaseModel):
    pass


class StartArgs(BaseModel):
    run_id: str = Field(description="new run id: letters, digits, '.', '_' and '-'")
    script: str | None = Field(default=None, description="the full training script (Python source)")
    script_path: str | None = Field(default=None, description="path of an existing training script")
    model_id: str | None = Field(default=None, description="model being trained, e.g. Qwen/Qwen3.5-4B")


class SelectArgs(BaseModel):
    run_id: str = Field(description="the run to select for status, charts and commands")


class UpdateScriptArgs(BaseModel):
    run_id: str | None = Field(default=None, description="the run id; omit to use the selected run")
    script: str = Field(description="the complete new train.py")


def _status_brief(s: RunStatus) -> dict[str, Any]:
    return {
        "run_id": s.run_id,
        "status": s.effective_status,
        "step": s.last_step,
        "total_steps": s.total_steps,
        "model": s.model_id,
    }


def _guard(fn: Any) -> Any:
    """Turn the connection's refusals into ToolErrors with their one-line text."""

    def wrapped(**kwargs: Any) -> Any:
        try:
            return fn(**kwargs)
        except (RunError, RunIdError) as exc:
            raise ToolError(str(exc)) from None

    wrapped.__name__ = fn.__name__
    wrapped.__doc__ = fn.__doc__
    return wrapped


def _read_script(script: str | None, script_path: str | None) -> str:
    if bool(script) == bool(script_path):
        raise ToolError("give exactly one of `script` (the source) or `script_path`")
    if script_path:
        path = Path(script_path).expanduser()
        try:
            script = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ToolError(f"script_path {script_path} does not exist") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ToolError(f"cannot read {script_path}: {exc}") from None
    assert script is not None
    if len(script) > MAX_SCRIPT_CHARS:
        raise ToolError(f"script is {len(script)} characters; the limit is {MAX_SCRIPT_CHARS}")
    try:
        compile(script, "train.py", "exec")
    except SyntaxError as exc:
        raise ToolError(f"the script does not parse: {exc.msg} at line {exc.lineno}") from None
    return script


def make_run_tools(ctx: ToolContext) -> list[BaseTool]:
    store = ctx.connection.store
    controller = ctx.connection.controller

    def list_training_runs() -> str:
        """List all training runs with their status, step and model (newest first)."""
        runs = [_status_brief(s) for s in store.list_runs()]
        return compact({"selected": ctx.selected_run, "runs": runs[:30], "total": len(runs)})

    def get_training_status(run_id: str | None = None) -> str:
        """Status of one run: process, progress, latest metrics, recent trends and the monitor's last verdict.
        Use it to answer 'how is the training going?'."""
        run = ctx.run_or_selected(run_id)
        s = store.status(run)
        rows = store.last_metrics(run, 200)
        auto = store.auto_state(run)
        data: dict[str, Any] = {
            **_status_brief(s),
            "process": s.process,
            "script_version": s.script_version,
            "error": s.error,
            "last": {k: v for k, v in (s.last_metrics or {}).items() if k != "ts"},
            "trends": trends(rows, keys=6),
        }
        if auto.get("decision"):
            data["monitor"] = {"decision": auto.get("decision"), "diagnosis": auto.get("diagnosis")}
        if auto.get("fix_attempts"):
            data["fix_attempts"] = auto["fix_attempts"]
        return compact(data, budget=2500)

    def start_training(
        run_id: str, script: str | None = None, script_path: str | None = None, model_id: str | None = None
    ) -> str:
        """Start a new training run from a script (its source or a path); it becomes the selected run."""
        text = _read_script(script, script_path)
        result = controller.start(run_id, text, model_id=model_id)
        ctx.selected_run = run_id
        ctx.emit("selected", run_id)
        return compact({"started": run_id, "pid": result.pid, "script_version": result.script_version})

    def select_run(run_id: str) -> str:
        """Select a run: later commands, status and the chart default to it."""
        s = store.status(run_id)
        ctx.selected_run = run_id
        ctx.chart.step_range = None
        ctx.emit("selected", run_id)
        return compact({"selected": run_id, **_status_brief(s)})

    def pause_training(run_id: str | None = None) -> str:
        """Pause a running run (its process is killed; the Twinkle server keeps model state). Resume continues it."""
        run = ctx.run_or_selected(run_id)
        controller.pause(run)
        return compact({"paused": run, "step": store.status(run).last_step})

    def resume_training(run_id: str | None = None) -> str:
        """Resume a paused or stopped run: relaunch its current train.py, which continues from its last step."""
        run = ctx.run_or_selected(run_id)
        result = controller.resume(run)
        return compact({"resumed": run, "pid": result.pid, "launch": result.launch_count})

    def stop_training(run_id: str | None = None) -> str:
        """Stop a run for good: SIGTERM so it saves a checkpoint, then it exits."""
        run = ctx.run_or_selected(run_id)
        result = controller.stop(run)
        return compact(
            {
                "stopped": run,
                "status": result.status,
                "checkpoint": result.checkpoint,
                "killed": result.killed,
            }
        )

    def update_script(script: str, run_id: str | None = None) -> str:
        """Replace a run's train.py (the old one is archived as train_v{N}.py). Does not relaunch."""
        run = ctx.run_or_selected(run_id)
        text = _read_script(script, None)
        update = controller.update_script(run, text)
        diff = update.diff if len(update.diff) < 1500 else update.diff[:1500] + "\n…"
        return compact(
            {"updated": run, "archived_as": update.archived_as, "version": update.version, "diff": diff}
        )

    def _describe_start(args: dict[str, Any]) -> str:
        source = f"script {args.get('script_path')}" if args.get("script_path") else "the script shown"
        lines = len(str(args.get("script") or "").splitlines())
        extra = f" ({lines} lines)" if lines else ""
        return f"Start training run {args.get('run_id')!r} from {source}{extra}?"

    def _describe_stop(args: dict[str, Any]) -> str:
        run = args.get("run_id") or ctx.selected_run
        return f"Stop run {run!r}? It saves a checkpoint and exits; resume relaunches it."

    def _describe_update(args: dict[str, Any]) -> str:
        run = args.get("run_id") or ctx.selected_run
        try:
            old = store.script(run) if run else ""
        except (RunError, RunIdError):
            old = ""
        diff = "".join(
            difflib.unified_diff(
                old.splitlines(keepends=True),
                str(args.get("script") or "").splitlines(keepends=True),
                fromfile="train.py (current)",
                tofile="train.py (new)",
            )
        )
        return f"Replace train.py of run {run!r} (the current one is archived)?\n{diff}"

    specs = [
        (list_training_runs, NoArgs, None),
        (get_training_status, RunArg, None),
        (start_training, StartArgs, _describe_start),
        (select_run, SelectArgs, None),
        (pause_training, RunArg, None),
        (resume_training, RunArg, None),
        (stop_training, RunArg, _describe_stop),
        (update_script, UpdateScriptArgs, _describe_update),
    ]
    return [
        StructuredTool.from_function(
            func=_guard(fn),
            name=fn.__name__,
            description=(fn.__doc__ or "").strip(),
            args_schema=schema,
            metadata={"approval": approval} if approval else {},
        )
        for fn, schema, approval in specs
    ]
