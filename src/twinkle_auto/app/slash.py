"""Slash commands: what a person can do with no LLM at all (or while it is down)."""

from __future__ import annotations

import shlex
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from twinkle_auto.connection.errors import RunError
from twinkle_auto.runtime.format import RunIdError
from twinkle_auto.tools.base import MAX_CHART_KEYS, ToolContext

HELP = """Slash commands (no LLM needed):
  /runs                 list runs                 /status [RUN]      status of a run
  /select RUN           select a run              /chart             chart of the selected run
  /pause, /resume       pause / resume selected   /stop              stop selected (asks first)
  /metrics a,b          chart these (max 4)       /zoom A B          chart steps A..B
  /reset                chart all steps again     /skills            loaded skills
  /help                 this help                 /quit              leave (Ctrl-D too)
Anything else is sent to the assistant. Ctrl-C cancels the current answer."""


@dataclass
class SlashResult:
    text: str | None = None
    """Rich markup to print."""
    renderable: Any = None
    chart: bool = False
    quit: bool = False


Confirm = Callable[[str], Awaitable[bool]]


class SlashCommands:
    def __init__(
        self, ctx: ToolContext, *, confirm: Confirm, auto_approve: bool = False, skills: Any = None
    ) -> None:
        self.ctx = ctx
        self.confirm = confirm
        self.auto_approve = auto_approve
        self.skills = skills

    async def handle(self, line: str) -> SlashResult:
        try:
            parts = shlex.split(line[1:])
        except ValueError as exc:
            return SlashResult(f"[red]cannot parse command: {exc}[/]")
        if not parts:
            return SlashResult(HELP)
        name, args = parts[0].lower(), parts[1:]
        handler = getattr(self, f"cmd_{name}", None)
        if handler is None:
            return SlashResult(f"[red]unknown command /{name}[/]; /help lists them")
        try:
            return await handler(args)
        except (RunError, RunIdError, ValueError) as exc:
            return SlashResult(f"[red]{exc}[/]")

    def _run(self, args: list[str]) -> str:
        run = args[0] if args else self.ctx.selected_run
        if not run:
            raise RunError("no run selected: /select RUN first (or /runs to list them)")
        return run

    async def cmd_help(self, args: list[str]) -> SlashResult:
        return SlashResult(HELP)

    async def cmd_quit(self, args: list[str]) -> SlashResult:
        return SlashResult(quit=True)

    cmd_exit = cmd_quit

    async def cmd_runs(self, args: list[str]) -> SlashResult:
        from rich.table import Table

        runs = self.ctx.connection.store.list_runs()
        if not runs:
            return SlashResult(f"no runs in {self.ctx.connection.store.home}")
        table = Table(box=None, pad_edge=False)
        for col in ("", "run", "status", "step", "model"):
            table.add_column(col)
        for s in runs:
            mark = "▶" if s.run_id == self.ctx.selected_run else ""
            step = (
                f"{s.last_step}/{s.total_steps}"
                if s.total_steps
                else str(s.last_step if s.last_step is not None else "-")
            )
            table.add_row(mark, s.run_id, s.effective_status, step, s.model_id or "-")
        return SlashResult(renderable=table)

    async def cmd_status(self, args: list[str]) -> SlashResult:
        s = self.ctx.connection.store.status(self._run(args))
        auto = self.ctx.connection.store.auto_state(s.run_id)
        last = "  ".join(
            f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
            for k, v in (s.last_metrics or {}).items()
            if k != "ts"
        )
        lines = [
            f"[bold]{s.run_id}[/]  {s.effective_status}  (process {s.process}{f', pid {s.pid}' if s.pid else ''})",
            f"step {s.last_step}/{s.total_steps or '?'}  model {s.model_id or '-'}  train.py v{s.script_version or 1}",
        ]
        if last:
            lines.append(last)
        if s.error:
            lines.append(f"[red]{s.error}[/]")
        if auto.get("decision"):
            lines.append(f"monitor: {auto['decision']} — {auto.get('diagnosis', '')}")
        return SlashResult("\n".join(lines))

    async def cmd_select(self, args: list[str]) -> SlashResult:
        if not args:
            return SlashResult("usage: /select RUN")
        self.ctx.connection.store.require(args[0])
        self.ctx.selected_run = args[0]
        self.ctx.chart.step_range = None
        self.ctx.emit("selected", args[0])
        return SlashResult(f"selected [bold]{args[0]}[/]", chart=True)

    async def cmd_pause(self, args: list[str]) -> SlashResult:
        run = self._run(args)
        self.ctx.connection.controller.pause(run)
        return SlashResult(f"paused {run}; /resume continues it")

    async def cmd_resume(self, args: list[str]) -> SlashResult:
        run = self._run(args)
        result = self.ctx.connection.controller.resume(run)
        return SlashResult(f"resumed {run} (pid {result.pid}, launch #{result.launch_count})")

    async def cmd_stop(self, args: list[str]) -> SlashResult:
        run = self._run(args)
        if not self.auto_approve and not await self.confirm(
            f"Stop run {run}? It saves a checkpoint and exits."
        ):
            return SlashResult("not stopped")
        result = self.ctx.connection.controller.stop(run)
        how = "killed after the grace period" if result.killed else "stopped"
        return SlashResult(
            f"{run} {how}" + (f", checkpoint {result.checkpoint}" if result.checkpoint else "")
        )

    async def cmd_chart(self, args: list[str]) -> SlashResult:
        self._run([])
        return SlashResult(chart=True)

    async def cmd_metrics(self, args: list[str]) -> SlashResult:
        keys = [k.strip() for k in " ".join(args).replace(" ", ",").split(",") if k.strip()]
        if not keys:
            return SlashResult("usage: /metrics loss,reward (at most 4)")
        if len(keys) > MAX_CHART_KEYS:
            return SlashResult(f"[red]at most {MAX_CHART_KEYS} metrics[/]")
        self.ctx.chart.keys = keys
        self.ctx.emit("chart", self.ctx.chart)
        return SlashResult(chart=bool(self.ctx.selected_run))

    async def cmd_zoom(self, args: list[str]) -> SlashResult:
        try:
            lo, hi = (int(a) for a in args[:2])
        except ValueError:
            return SlashResult("usage: /zoom FIRST_STEP LAST_STEP")
        self.ctx.chart.step_range = (min(lo, hi), max(lo, hi))
        self.ctx.emit("chart", self.ctx.chart)
        return SlashResult(chart=bool(self.ctx.selected_run))

    async def cmd_reset(self, args: list[str]) -> SlashResult:
        self.ctx.chart.step_range = None
        self.ctx.emit("chart", self.ctx.chart)
        return SlashResult(chart=bool(self.ctx.selected_run))

    async def cmd_skills(self, args: list[str]) -> SlashResult:
        if self.skills is None:
            return SlashResult("no skills loaded")
        rows = self.skills.list()
        if not rows:
            return SlashResult(
                "skills are still loading" if not getattr(self.skills, "ready", True) else "no skills"
            )
        return SlashResult(
            "\n".join(f"  {r['name']:<28} {r['source']:<10} {r.get('description', '')[:70]}" for r in rows)
        )
