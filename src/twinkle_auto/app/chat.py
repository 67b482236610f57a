"""The terminal chat: prompt_toolkit input, rich output, the chat graph, the monitor in the background.

The prompt is usable at once: the LLM check, skills and the monitor start as background tasks. Monitor
messages arrive above the prompt without garbling it (prompt_toolkit's patch_stdout while waiting for
input; rich Live's own redirection while an answer streams). Ctrl-C cancels the current answer and keeps
the session; Ctrl-D quits. A question (an approval, or a fix the monitor wants to apply under
`--auto-fix ask`) must be answered before the next message.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import threading
from collections import deque
from pathlib import Path
from typing import Any

from rich.console import Console, Group
from rich.markdown import Markdown
from rich.markup import escape
from rich.syntax import Syntax
from rich.text import Text

from twinkle_auto.app.chart import CHART_ROWS, render_chart
from twinkle_auto.app.slash import SessionView, SlashCommands, SlashResult
from twinkle_auto.connection import Connection

log = logging.getLogger("twinkle_auto.chat")

PROMPT = "you> "
LLM_PROBE_TIMEOUT_S = 5.0


def llm_unreachable_line(base_url: str, reason: str) -> str:
    return f"LLM at {base_url} not reachable: {reason}; slash commands still work"


def describe_llm_error(exc: BaseException) -> str:
    """One line for a failed LLM call: what kind of failure, without a stack trace."""
    name = type(exc).__name__
    status = getattr(exc, "status_code", None)
    text = " ".join(str(exc).split())[:200]
    if status == 404 or "model" in text.lower() and "not found" in text.lower():
        return f"model not found ({text})"
    if status:
        return f"HTTP {status}: {text}"
    return f"{name}: {text}" if text else name


def probe_llm(base_url: str, api_key: str, model: str, timeout: float = LLM_PROBE_TIMEOUT_S) -> str | None:
    """None when the endpoint answers /models (and knows the model if it lists any), else the reason."""
    import json
    import urllib.error
    import urllib.request

    url = base_url.rstrip("/") + "/models"
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {api_key}"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            body = json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as exc:
        return f"HTTP {exc.code} from {url}"
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        reason = getattr(exc, "reason", exc)
        return f"{type(reason).__name__}: {reason}" if not isinstance(reason, str) else reason
    except ValueError:
        return f"{url} did not answer JSON"
    ids = [m.get("id") for m in body.get("data", []) if isinstance(m, dict)] if isinstance(body, dict) else []
    if ids and model not in ids and len(ids) > 1:
        return f"unknown model {model!r} (the server has {', '.join(map(str, ids[:5]))})"
    return None


class ChatApp:
    def __init__(self, args: argparse.Namespace, *, llm: Any = None) -> None:
        from twinkle_auto.app.sessions import SessionIndex, choose_session, thread_id
        from twinkle_auto.tools.base import ToolContext

        self.args = args
        self.console = Console(highlight=False)
        self.connection = Connection.open()
        self.home = self.connection.store.home
        self.view = SessionView(self.connection)
        if args.run_id:
            self.view.select(args.run_id)
        self.session = choose_session(
            self.home, getattr(args, "session", None), getattr(args, "resume", False)
        )
        self.index = SessionIndex(self.home)
        self.config = {"configurable": {"thread_id": thread_id(self.session)}, "recursion_limit": 100}
        self.auto_approve = bool(getattr(args, "yes", False))
        self.skills = self._skills()
        self.ctx = ToolContext(self.connection, skills=self.skills)
        """The graph's runtime context: collaborators only; the session is graph state."""
        self.slash = SlashCommands(
            self.view, confirm=self.confirm, auto_approve=self.auto_approve, skills=self.skills
        )
        self._llm = llm
        self.llm: Any = None
        self.graph: Any = None
        self.checkpointer: Any = None
        self.ready: asyncio.Task[None] | None = None
        self.monitor_stop = asyncio.Event()
        self.questions: deque[tuple[asyncio.Future[bool], str]] = deque()
        self.loop: asyncio.AbstractEventLoop | None = None
        self.prompt_session: Any = None
        self.llm_error: str | None = None
        self.turn_task: asyncio.Task[None] | None = None
        self.cancel_flag = threading.Event()
        self.chart_dirty = False

    def _build(self) -> None:
        """The heavy part (LLM client, tools, graph, checkpoints), done in a thread after the prompt shows."""
        from twinkle_auto.app.sessions import open_checkpointer
        from twinkle_auto.tools import get_tools

        if getattr(self.args, "llm_gguf", None) and self._llm is None:
            self._serve_gguf(self.args.llm_gguf)
        self.llm = self._llm if self._llm is not None else self._make_llm()
        self.checkpointer = open_checkpointer(self.home)
        self.tools = get_tools(self.ctx)
        self.graph = self._build_graph()
        self._restore_view()

    # ----------------------------------------------------------------------------------------- set-up
    def _serve_gguf(self, path: str) -> None:
        """`--llm-gguf`: llama.cpp on 127.0.0.1 in a child process of ours, stopped when the app ends."""
        from twinkle_auto.app.local_llm import serve

        log_path = Path(self.home) / "auto" / "llm-server.log"
        self.local_llm = serve(path, log_path=log_path).start()
        self.args.llm_base_url = self.local_llm.base_url
        self.args.llm_model = "local"

    def _make_llm(self) -> Any:
        from twinkle_auto.app.llm import make_chat_model

        return make_chat_model(self.args.llm_base_url, self.args.llm_model, self.args.llm_api_key)

    def _skills(self) -> Any:
        try:
            from twinkle_auto.skills import SkillManager
        except ImportError:
            return None
        return SkillManager(self.home)

    def _build_graph(self) -> Any:
        from twinkle_auto.graphs.chat.graph import compile_chat_graph

        return compile_chat_graph(
            self.llm,
            self.tools,
            checkpointer=self.checkpointer,
            auto_approve=self.auto_approve,
            context=self.ctx,
        )

    def _restore_view(self) -> None:
        """A resumed session shows the run and chart view it had (a --run given now wins)."""
        state = self.graph.get_state(self.config)
        values = dict(state.values) if state and state.values else {}
        if self.view.changes.get("selected_run"):
            values.pop("selected_run", None)
            values.pop("chart", None)
        if self.view.load(values) and self.view.selected_run:
            steps = (
                f", steps {self.view.step_range[0]}-{self.view.step_range[1]}" if self.view.step_range else ""
            )
            keys = f", metrics {', '.join(self.view.chart_keys)}" if self.view.chart_keys else ""
            self.say(
                Text(f"resumed session: run {self.view.selected_run} selected{keys}{steps}", style="dim")
            )
            text = self.chart_text() if self.view.connection.store.exists(self.view.selected_run) else None
            if text is not None:
                self.say(text)

    def sync_view(self) -> None:
        """After a turn: take the session the tools left in the graph state."""
        state = self.graph.get_state(self.config)
        if state and state.values and self.view.load(dict(state.values)):
            self.chart_dirty = True

    def save_view(self) -> None:
        """Write slash-command changes into the graph state now (at exit, so --resume keeps them)."""
        if self.graph is None or not self.view.changes:
            return
        state = self.graph.get_state(self.config)
        if state and state.next:
            return  # a question is pending; the changes go with the next turn instead
        self.graph.update_state(self.config, self.view.take_changes(), as_node="agent")

    # ---------------------------------------------------------------------------------------- output
    def say(self, renderable: Any) -> None:
        """Print from any thread: scheduled on the app's loop so it never interleaves with the prompt."""
        if self.loop is not None and threading.current_thread() is not threading.main_thread():
            self.loop.call_soon_threadsafe(self.console.print, renderable)
        else:
            self.console.print(renderable)

    def monitor_message(self, run_id: str, message: str) -> None:
        style = "bold red" if " FIX " in message else "yellow"
        self.say(Text(message, style=style))

    def chart_text(self) -> Text | None:
        run = self.view.selected_run
        if not run:
            return None
        entries = self.connection.store.last_metrics(run, CHART_ROWS)
        width = max(40, min(120, self.console.width - 4))
        chart = render_chart(entries, self.view.chart_keys, self.view.step_range, width=width, title=run)
        return Text.from_ansi(chart)

    def show_chart(self) -> None:
        text = self.chart_text()
        if text is not None:
            self.console.print(text)
        self.chart_dirty = False

    # --------------------------------------------------------------------------------------- questions
    async def ask_monitor(self, run_id: str, payload: dict[str, Any]) -> bool:
        """A fix under `--auto-fix ask`: shown above the prompt; the next line typed answers it."""
        assert self.loop is not None
        future: asyncio.Future[bool] = self.loop.create_future()
        self.console.print(
            Text(f"[Monitor] FIX proposed for {run_id}: {payload.get('diagnosis', '')}", style="bold")
        )
        self.console.print(
            Syntax(str(payload.get("patch", "")), "diff", theme="ansi_dark", background_color="default")
        )
        self.questions.append((future, f"apply this fix to {run_id} and relaunch? [y/N] "))
        if self.prompt_session is not None and self.prompt_session.app.is_running:
            self.prompt_session.app.invalidate()
        return await future

    def _prompt_text(self) -> str:
        return self.questions[0][1] if self.questions else PROMPT

    async def confirm(self, question: str) -> bool:
        if self.auto_approve:
            return True
        answer = await self.prompt_session.prompt_async(f"{question} [y/N] ")
        return answer.strip().lower() in ("y", "yes")

    # -------------------------------------------------------------------------------------------- turns
    def _stream(self, graph_input: Any, sink: Any) -> Any:
        """Run the graph in this (worker) thread, streaming tokens and tool events to `sink`."""
        from langchain_core.messages import AIMessage, AIMessageChunk, HumanMessage, ToolMessage

        stream = self.graph.stream(
            graph_input, self.config, context=self.ctx, stream_mode=["messages", "updates"]
        )
        streaming = None  # the model call whose tokens are shown: a new call clears them, words or not
        for mode, chunk in stream:
            if self.cancel_flag.is_set():
                break
            if mode == "messages":
                message, meta = chunk
                if (
                    isinstance(message, AIMessageChunk)
                    and meta.get("langgraph_node") == "agent"
                    and (message.content or message.id != streaming)
                ):
                    streaming = message.id
                    sink("token", (message.id, str(message.content or "")))
            elif mode == "updates":
                for node, update in (chunk or {}).items():
                    if node == "__interrupt__":
                        sink("interrupt", update[0].value)
                        continue
                    for msg in (update or {}).get("messages", []) if isinstance(update, dict) else []:
                        if isinstance(msg, AIMessage) and node == "agent":
                            sink("ai", msg)
                        elif isinstance(msg, HumanMessage) and node == "agent":
                            sink("step", msg)  # the graph handing the model one step of the request
                        elif isinstance(msg, ToolMessage):
                            sink("tool_result", msg)
        return None

    async def run_turn(self, text: str) -> None:
        from langchain_core.messages import HumanMessage
        from langgraph.types import Command
        from rich.live import Live

        assert self.ready is not None
        await self.ready
        # dangling tool calls of a cancelled turn are answered inside the graph (its repair node)
        graph_input: Any = {"messages": [HumanMessage(text)], **self.view.take_changes()}
        self.cancel_flag.clear()
        while True:
            with Live(Markdown(""), console=self.console, refresh_per_second=12, transient=False) as live:
                view = _TurnView(live)

                def threadsafe_sink(kind: str, payload: Any, view: _TurnView = view) -> None:
                    assert self.loop is not None
                    self.loop.call_soon_threadsafe(view.sink, kind, payload)

                await asyncio.to_thread(self._stream, graph_input, threadsafe_sink)
                await asyncio.sleep(0)  # let queued sink calls run inside Live
            interrupts = view.interrupts
            if not interrupts or self.cancel_flag.is_set():
                break
            approved = await self._answer_approval(interrupts[-1])
            graph_input = Command(resume=approved)
        self.index.touch(self.session)
        await asyncio.to_thread(self.sync_view)
        await asyncio.to_thread(self._prune)
        if self.chart_dirty:
            self.show_chart()

    def _prune(self) -> None:
        from twinkle_auto.app.sessions import prune

        try:
            prune(self.checkpointer, self.session)
        except Exception:  # pruning is housekeeping
            log.exception("pruning checkpoints failed")

    async def _answer_approval(self, payload: dict[str, Any]) -> Any:
        from twinkle_auto.app.approvals import ask_approval

        answers: dict[str, Any] = {}
        for call in payload.get("calls", []):
            answers[call["id"]] = await ask_approval(self.console, call, self._ask_line)
        return answers

    async def _ask_line(self, question: str) -> str:
        return str(await self.prompt_session.prompt_async(question))

    # ---------------------------------------------------------------------------------------- main loop
    async def _check_llm(self) -> None:
        if getattr(self.args, "llm_gguf", None):
            assert self.ready is not None
            try:
                await self.ready
            except Exception as exc:  # the local model failed to start: say so once, keep the app
                self.say(
                    Text(
                        llm_unreachable_line(str(self.args.llm_gguf), describe_llm_error(exc)), style="yellow"
                    )
                )
                return
        reason = await asyncio.to_thread(
            probe_llm, self.args.llm_base_url, self.args.llm_api_key, self.args.llm_model
        )
        self.llm_error = reason
        if reason:
            self.say(Text(llm_unreachable_line(self.args.llm_base_url, reason), style="yellow"))

    async def _run_monitor(self) -> None:
        assert self.ready is not None
        await self.ready
        from dataclasses import replace

        from twinkle_auto.app.alerts import bell
        from twinkle_auto.app.monitor_loop import MonitorLoop
        from twinkle_auto.monitor.thresholds import DEFAULT_THRESHOLDS

        interval = float(getattr(self.args, "monitor_interval", 30.0) or 30.0)
        policy = getattr(self.args, "auto_fix", "on") or "on"
        stall = float(getattr(self.args, "stall_seconds", None) or DEFAULT_THRESHOLDS.stall_seconds)
        self.monitor = MonitorLoop(
            self.connection,
            self.llm,
            interval=interval,
            policy=policy,
            notify=self.monitor_message,
            ask=self.ask_monitor,
            thresholds=replace(DEFAULT_THRESHOLDS, stall_seconds=stall),
            on_event=bell(lambda _: self.console.bell(), enabled=not getattr(self.args, "no_bell", False)),
            follow_daemon=True,  # a running `twinkle-auto watch` is the fixer; show its verdicts
        )
        await self.monitor.run(self.monitor_stop)

    def _start_background(self) -> list[asyncio.Task[Any]]:
        self.ready = asyncio.create_task(asyncio.to_thread(self._build))
        tasks = [self.ready, asyncio.create_task(self._check_llm()), asyncio.create_task(self._run_monitor())]
        if self.skills is not None and hasattr(self.skills, "load_async"):
            tasks.append(asyncio.create_task(self.skills.load_async()))
        return tasks

    def _banner(self) -> None:
        run = f", attached to run [bold]{escape(self.view.selected_run)}[/]" if self.view.selected_run else ""
        gguf = getattr(self.args, "llm_gguf", None)
        llm = (
            f"local model {Path(gguf).name} (loading)"
            if gguf
            else f"{self.args.llm_model} at {self.args.llm_base_url}"
        )
        self.console.print(
            f"[bold]twinkle-auto[/] — session [bold]{escape(self.session)}[/]{run}. LLM {escape(llm)}. "
            "/help for commands, Ctrl-D to quit."
        )

    async def run(self) -> int:
        from prompt_toolkit import PromptSession
        from prompt_toolkit.history import FileHistory
        from prompt_toolkit.patch_stdout import patch_stdout

        self.loop = asyncio.get_running_loop()
        history = Path(self.home) / "auto" / "history"
        history.parent.mkdir(parents=True, exist_ok=True)
        self.prompt_session = PromptSession(history=FileHistory(str(history)))
        self._banner()
        if self.view.selected_run and not self.connection.store.exists(self.view.selected_run):
            self.console.print(Text(f"run {self.view.selected_run!r} does not exist yet", style="yellow"))
        elif self.view.selected_run:
            self.show_chart()
        background = self._start_background()
        try:
            while True:
                try:
                    with patch_stdout(raw=True):
                        line = await self.prompt_session.prompt_async(self._prompt_text)
                except KeyboardInterrupt:
                    continue
                except EOFError:
                    break
                if self.questions:
                    future, _ = self.questions.popleft()
                    if not future.done():
                        future.set_result(line.strip().lower() in ("y", "yes"))
                    continue
                line = line.strip()
                if not line:
                    continue
                if line.startswith("/"):
                    result = await self.slash.handle(line)
                    if self._show(result):
                        break
                    continue

                await self._guarded_turn(line)
        finally:
            try:
                self.save_view()
            except Exception:  # a failed save loses a slash-command selection, never the session
                log.exception("saving the session view failed")
            self.monitor_stop.set()
            for task in background:
                task.cancel()
            await asyncio.gather(*background, return_exceptions=True)
            if self.checkpointer is not None:
                self.checkpointer.conn.close()
            if getattr(self, "local_llm", None) is not None:
                self.local_llm.stop()
        return 0

    def _show(self, result: SlashResult) -> bool:
        if result.text:
            self.console.print(result.text)
        if result.renderable is not None:
            self.console.print(result.renderable)
        if result.chart:
            self.show_chart()
        return result.quit

    async def _guarded_turn(self, line: str) -> None:
        assert self.loop is not None
        self.turn_task = asyncio.create_task(self.run_turn(line))

        def cancel() -> None:
            # The graph runs in a worker thread: it stops at its next streamed chunk, so the checkpoint is
            # never written by two runs at once. Dangling tool calls are answered before the next turn.
            self.cancel_flag.set()

        try:
            self.loop.add_signal_handler(signal.SIGINT, cancel)
        except (NotImplementedError, RuntimeError):
            pass
        try:
            await self.turn_task
            if self.cancel_flag.is_set():
                self.console.print("[dim](cancelled)[/]")
        except Exception as exc:  # the app never dies of an LLM error
            log.exception("turn failed")
            self.console.print(
                Text(llm_unreachable_line(self.args.llm_base_url, describe_llm_error(exc)), style="yellow")
            )
        finally:
            try:
                self.loop.remove_signal_handler(signal.SIGINT)
            except (NotImplementedError, RuntimeError):
                pass
            self.turn_task = None


class _TurnView:
    """What one streamed turn shows: tokens as live markdown, one line per tool call and result."""

    def __init__(self, live: Any) -> None:
        self.live = live
        self.buffer: list[str] = []
        self.answer_id: Any = None
        """The model call the buffered tokens belong to: a new one replaces them (an answer the graph
        sent back, such as one that repeated stale figures, is not shown beside the one that follows)."""
        self.interrupts: list[dict[str, Any]] = []

    def sink(self, kind: str, payload: Any) -> None:
        live = self.live
        if kind == "token":
            answer_id, text = payload
            if answer_id != self.answer_id:
                self.answer_id = answer_id
                self.buffer.clear()
            self.buffer.append(text)
            live.update(Markdown("".join(self.buffer)))
        elif kind == "ai":
            # the finished message replaces its streamed tokens, rendered once as markdown
            self.buffer.clear()
            live.update(Markdown(""))
            if str(payload.content or "").strip():
                live.console.print(Markdown(str(payload.content)))
            for call in payload.tool_calls:
                args = ", ".join(f"{k}={_short(v)}" for k, v in (call.get("args") or {}).items())
                live.console.print(Text(f"⚙ {call['name']}({args})", style="cyan"))
        elif kind == "step":
            self.buffer.clear()
            live.update(Markdown(""))
            live.console.print(Text(f"→ {_short(payload.content, 160)}", style="dim"))
        elif kind == "tool_result":
            style = "red" if getattr(payload, "status", "") == "error" else "dim"
            live.console.print(Text(f"  ↳ {_short(payload.content, 160)}", style=style))
        elif kind == "interrupt":
            self.interrupts.append(payload)


def _short(value: Any, limit: int = 60) -> str:
    text = value if isinstance(value, str) else repr(value)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def run_chat(args: argparse.Namespace) -> int:
    app = ChatApp(args)
    return asyncio.run(app.run())


__all__ = ["ChatApp", "Group", "run_chat"]
