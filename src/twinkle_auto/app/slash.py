"""Slash commands: what a person can do with no LLM at all (or while it is down).

They act on the same session as the chat graph: `SessionView` mirrors the graph's session state
(selected run, chart view) for drawing, and records what a slash command changed, so the app writes it
into the graph state (checkpointed, kept by `--resume`) with the next turn or at exit.
"""

from __future__ import annotations

import shlex
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from rich.markup import escape

from twinkle_auto.connection import Connection
from twinkle_auto.connection.errors import RunError
from twinkle_auto.connection.text import printable
from twinkle_auto.runtime.format import RunIdError
from twinkle_auto.tools.base import MAX_CHART_KEYS

HELP = """Slash commands (no LLM needed):
  /runs                 list runs                 /status [RUN]      status of a run
  /select RUN           select a run              /chart             chart of the selected run
  /pause, /resume       pause / resume selected   /stop              stop selected (asks first)
  /metrics a,b          chart these (max 4)       /zoom A B          chart steps A..B
  /reset                default chart, all steps  /skills            loaded skills
  /help                 this help                 /quit              leave (Ctrl-D too)
Anything else is sent to the assistant. Ctrl-C cancels the current answer."""


@dataclass
class SessionView:
    """The app's copy of the graph's session state, and the changes not yet written back to it."""

    connection: Connection
    selected_run: str | None = None
    chart_keys: list[str] = field(default_factory=list)
    step_range: tuple[int, int] | None = None
    changes: dict[str, Any] = field(default_factory=dict)

    def chart(self) -> dict[str, Any]:
        return {
            "keys": list(self.chart_keys),
            "step_range": list(self.step_range) if self.step_range else None,
        }

    def select(self, run_id: str) -> None:
        self.selected_run = run_id
        self.step_range = None
        self.changes.update(selected_run=run_id, chart=self.chart())

    def set_chart(self, keys: list[str] | None = None, step_range: Any = "keep") -> None:
        if keys is not None:
            self.chart_keys = list(keys)
        if step_range != "keep":
            self.step_range = tuple(step_range) if step_range else None  # type: ignore[assignment]
        self.changes["chart"] = self.chart()

    def load(self, values: dict[str, Any]) -> bool:
        """Take the graph's session state; True when what the chart shows changed."""
        before = (self.selected_run, list(self.chart_keys), self.step_range)
        if "selected_run" in values:
            self.selected_run = values.get("selected_run") or None
        chart = values.get("chart")
        if isinstance(chart, dict):
            self.chart_keys = [str(k) for k in chart.get("keys") or []]
            rng = chart.get("step_range")
            self.step_range = (int(rng[0]), int(rng[1])) if rng else None
        return before != (self.selected_run, list(self.chart_keys), self.step_range)

    def take_changes(self) -> dict[str, Any]:
        changes, self.changes = self.changes, {}
        return changes


def esc(value: object) -> str:
    """Data (model ids, errors, metric names, diagnoses) printed inside markup: `[/x]` must print as text,
    and control bytes from a log must not reach the terminal."""
    return escape(printable(str(value)))


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
        self, view: SessionView, *, confirm: Confirm, auto_approve: bool = False, skills: Any = None
    ) -> None:
        self.view = view
        self.connection = view.connection
        self.confirm = confirm
        self.auto_approve = auto_approve
        self.skills = skills

    async def handle(self, line: str) -> SlashResult:
        try:
            parts = shlex.split(line[1:])
        except ValueError as exc:
            return SlashResult(f"[red]cannot parse command: {esc(exc)}[/]")
        if not parts:
            return SlashResult(HELP)
        name, args = parts[0].lower(), parts[1:]
        handler = getattr(self, f"cmd_{name}", None)
        if handler is None:
            return SlashResult(f"[red]unknown command /{esc(name)}[/]; /help lists them")
        try:
            return await handler(args)
        except (RunError, RunIdError, ValueError) as exc:
            return SlashResult(f"[red]{esc(exc)}[/]")

    def _run(self, args: list[str]) -> str:
        run = args[0] if args else self.view.selected_run
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

        runs = self.connection.store.list_runs()
        if not runs:
            return SlashResult(f"no runs in {self.connection.store.home}")
        table = Table(box=None, pad_edge=False)
        for col in ("", "run", "status", "step", "model"):
            table.add_column(col)
        for s in runs:
            mark = "▶" if s.run_id == self.view.selected_run else ""
            step = (
                f"{s.last_step}/{s.total_steps}"
                if s.total_steps
                else str(s.last_step if s.last_step is not None else "-")
            )
            table.add_row(mark, s.run_id, s.effective_status, step, esc(s.model_id or "-"))
        return SlashResult(renderable=table)

    async def cmd_status(self, args: list[str]) -> SlashResult:
        s = self.connection.store.status(self._run(args))
        auto = self.connection.store.auto_state(s.run_id)
        last = "  ".join(
            esc(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}")
            for k, v in (s.last_metrics or {}).items()
            if k != "ts"
        )
        lines = [
            f"[bold]{s.run_id}[/]  {s.effective_status}  (process {s.process}{f', pid {s.pid}' if s.pid else ''})",
            f"step {s.last_step}/{s.total_steps or '?'}  model {esc(s.model_id or '-')}  "
            f"train.py v{s.script_version or 1}",
        ]
        if last:
            lines.append(last)
        if s.error:
            lines.append(f"[red]{esc(s.error)}[/]")
        if auto.get("decision"):
            lines.append(esc(f"monitor: {auto['decision']} — {auto.get('diagnosis', '')}"))
        return SlashResult("\n".join(lines))

    async def cmd_select(self, args: list[str]) -> SlashResult:
        if not args:
            return SlashResult("usage: /select RUN")
        self.connection.store.require(args[0])
        self.view.select(args[0])
        return SlashResult(f"selected [bold]{args[0]}[/]", chart=True)

    async def cmd_pause(self, args: list[str]) -> SlashResult:
        run = self._run(args)
        self.connection.controller.pause(run)
        return SlashResult(f"paused {run}; /resume continues it")

    async def cmd_resume(self, args: list[str]) -> SlashResult:
        run = self._run(args)
        result = self.connection.controller.resume(run)
        return SlashResult(f"resumed {run} (pid {result.pid}, launch #{result.launch_count})")

    async def cmd_stop(self, args: list[str]) -> SlashResult:
        run = self._run(args)
        if not self.auto_approve and not await self.confirm(
            f"Stop run {run}? It saves a checkpoint and exits."
        ):
            return SlashResult("not stopped")
        result = self.connection.controller.stop(run)
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
        self.view.set_chart(keys=keys)
        return SlashResult(chart=bool(self.view.selected_run))

    async def cmd_zoom(self, args: list[str]) -> SlashResult:
        try:
            lo, hi = (int(a) for a in args[:2])
        except ValueError:
            return SlashResult("usage: /zoom FIRST_STEP LAST_STEP")
        self.view.set_chart(step_range=(min(lo, hi), max(lo, hi)))
        return SlashResult(chart=bool(self.view.selected_run))

    async def cmd_reset(self, args: list[str]) -> SlashResult:
        self.view.set_chart(keys=[], step_range=None)
        return SlashResult(chart=bool(self.view.selected_run))

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
