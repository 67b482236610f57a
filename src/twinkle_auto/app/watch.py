"""`twinkle-auto watch`: the monitor without the chat, for a terminal multiplexer or a systemd unit.

It watches every run under TWINKLE_HOME (new ones are picked up on the next round), wakes when a watched
process exits, and prints one line per event — or, with `--json`, one JSON object per line with `ts`,
`run_id`, `event`, `decision`, `message` and details. `--webhook URL` (repeatable) posts every event from
a background sender (alerts.py), so a slow webhook never holds a tick.

One daemon per TWINKLE_HOME: it holds `auto/watch.lock` (an flock the kernel drops if it dies) and
describes itself in `auto/watch.json`. A chat opened meanwhile sees that, ticks nothing itself, and shows
the daemon's verdicts from the runs' persisted monitor state; the per-run fix lock makes sure that even
without this courtesy two assistants never fix one run at once.

Under `--auto-fix ask` without a terminal there is nobody to ask: the patch is announced as an
`approval_needed` event and not applied. SIGTERM (or Ctrl-C) stops it cleanly with exit status 0:
ticks in flight get a few seconds to finish and queued webhooks a few more to go out.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import queue
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from twinkle_auto.connection.errors import RunError
from twinkle_auto.runtime import format as fmt

try:
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]

WATCH_LOCK = "watch.lock"
WATCH_FILE = "watch.json"
WEBHOOK_DRAIN_S = 5.0


def _auto_dir(home: str | Path) -> Path:
    return Path(home) / "auto"


def daemon_presence(home: str | Path) -> dict[str, Any] | None:
    """The running watch daemon of this TWINKLE_HOME (its watch.json), or None when there is none.

    Presence is the lock, not the file: a daemon killed with SIGKILL leaves watch.json behind, but the
    kernel has released its flock, so it is not taken for a live one.
    """
    lock = _auto_dir(home) / WATCH_LOCK
    if fcntl is None:  # pragma: no cover
        return None
    try:
        fd = os.open(lock, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                return fmt.read_json_file(_auto_dir(home) / WATCH_FILE)
            except (OSError, ValueError):
                return {"pid": None}
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


@contextlib.contextmanager
def hold_presence(home: str | Path, info: dict[str, Any]) -> Iterator[None]:
    """Be the one watch daemon of `home` while the block runs; RunError (one line) if another is."""
    folder = _auto_dir(home)
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / WATCH_LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                other = daemon_presence(home) or {}
                raise RunError(
                    f"another `twinkle-auto watch` (pid {other.get('pid')}) is already watching {home}"
                ) from None
        fmt.atomic_write_json(folder / WATCH_FILE, info)
        try:
            yield
        finally:
            with contextlib.suppress(OSError):
                os.unlink(folder / WATCH_FILE)
    finally:
        os.close(fd)  # releases the flock


def _clean(event: dict[str, Any]) -> dict[str, Any]:
    """Strings in an event come from training logs and LLM text: no terminal escapes downstream."""
    from twinkle_auto.connection.text import printable

    return {k: printable(v) if isinstance(v, str) else v for k, v in event.items()}


def format_line(event: dict[str, Any]) -> str:
    """The text form: `2026-12-01 09:41:07 verdict        run-a FIX: KeyError: 'targets' …` (one line)."""
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(event.get("ts") or time.time())))
    message = " ".join(str(event.get("message") or "").split("\n", 1)[0].split())
    return f"{when} {event.get('event', ''):<15} {event.get('run_id', '')} {event.get('decision') or '-'}: {message}"


class LineWriter:
    """Lines to a stream from a thread of its own, in order: a stdout nobody reads (a paused pager, a
    stuck pipe) holds this thread, never the ticks. Past `limit` queued lines new ones are dropped and
    counted, so memory stays bounded however long the reader is gone."""

    def __init__(self, write: Callable[[str], Any], flush: Callable[[], Any], limit: int = 10_000) -> None:
        self._write, self._flush = write, flush
        self._queue: queue.Queue[str | None] = queue.Queue(maxsize=limit)
        self.dropped = 0
        self._thread = threading.Thread(target=self._run, name="watch-stdout", daemon=True)
        self._thread.start()

    def put(self, line: str) -> None:
        try:
            self._queue.put_nowait(line)
        except queue.Full:
            self.dropped += 1

    def close(self, timeout: float = 5.0) -> None:
        """Write what is queued (for at most `timeout` seconds)."""
        try:
            self._queue.put(None, timeout=timeout)
        except queue.Full:
            return
        self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            line = self._queue.get()
            if line is None:
                return
            try:
                self._write(line + "\n")
                self._flush()
            except (OSError, ValueError):  # a closed pipe must not stop the watch
                pass


def printer(as_json: bool, put: Callable[[str], Any]) -> Callable[[dict[str, Any]], None]:
    """An event listener that turns each event into one line (JSON or text) for `put`."""
    from twinkle_auto.app.commands import _strict

    def on_event(event: dict[str, Any]) -> None:
        put(json.dumps(_strict(event), default=str, allow_nan=False) if as_json else format_line(event))

    return on_event


def _positive(value: float, name: str) -> float:
    if not math.isfinite(value) or value <= 0:
        raise RunError(f"{name} must be a finite number of seconds > 0, got {value!r}")
    return value


def _terminal_ask(policy: str) -> Callable[[str, dict[str, Any]], Any]:
    """Under `ask` on a terminal: one question at a time; otherwise nobody answers (None: not applied)."""
    lock = asyncio.Lock()

    async def ask(run_id: str, payload: dict[str, Any]) -> bool | None:
        if policy != "ask" or not sys.stdin.isatty():
            return None
        async with lock:
            return await asyncio.to_thread(_prompt, payload)

    return ask


def _prompt(payload: dict[str, Any]) -> bool:
    from twinkle_auto.connection.text import printable

    for key in ("diagnosis", "warning", "patch"):
        if payload.get(key):
            print(printable(str(payload[key])), file=sys.stderr)
    answer = input(f"{printable(str(payload.get('question', 'Apply this fix?')))} [y/N] ")
    return answer.strip().lower() in ("y", "yes")


async def _serve(loop: Any, once: bool) -> None:
    stop = asyncio.Event()
    running = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            running.add_signal_handler(sig, stop.set)
    if once:
        tick = asyncio.ensure_future(loop.tick_all())
        stopper = asyncio.ensure_future(stop.wait())
        await asyncio.wait([tick, stopper], return_when=asyncio.FIRST_COMPLETED)
        stopper.cancel()
        if not tick.done():
            tick.cancel()
        await loop.drain(0 if stop.is_set() else 1.0)
        return
    await loop.run(stop)


def run_watch(args: argparse.Namespace) -> int:
    """The `watch` subcommand (see the module docstring); 0 on SIGTERM, Ctrl-C or after `--once`."""
    from twinkle_auto.app.alerts import WebhookError, WebhookSender
    from twinkle_auto.app.monitor_loop import MonitorLoop
    from twinkle_auto.connection import Connection

    interval = _positive(float(args.interval), "--interval")
    policy = args.watch_auto_fix or getattr(args, "auto_fix", None) or "on"
    try:
        sender = WebhookSender(list(args.webhook or []), args.webhook_format) if args.webhook else None
    except WebhookError as exc:
        raise RunError(str(exc)) from None
    connection = Connection.open()
    home = connection.store.home
    llm = None
    if not args.no_llm:
        from twinkle_auto.app.llm import make_chat_model

        llm = make_chat_model(args.llm_base_url, args.llm_model, args.llm_api_key, timeout=120, max_retries=1)
    out = LineWriter(sys.stdout.write, sys.stdout.flush)
    show = printer(args.json, out.put)

    def on_event(event: dict[str, Any]) -> None:
        event = _clean(event)
        show(event)
        if sender is not None:
            sender.send(event)

    loop = MonitorLoop(
        connection,
        llm,
        interval=interval,
        policy=policy,
        ask=_terminal_ask(policy),
        use_llm=not args.no_llm,
        on_event=on_event,
        max_llm_calls=max(1, int(args.max_llm_calls)),
        follow_daemon=False,
    )
    info = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started": time.time(),
        "interval": interval,
        "policy": policy,
        "webhooks": len(args.webhook or []),
    }
    with hold_presence(home, info):
        if not args.once:
            print(
                f"twinkle-auto watch: watching runs under {home} every {interval:g} s (auto-fix {policy}, "
                f"{'rules only' if args.no_llm else args.llm_model}); SIGTERM or Ctrl-C stops",
                file=sys.stderr,
                flush=True,
            )
        try:
            asyncio.run(_serve(loop, args.once))
        finally:
            out.close()
            if sender is not None:
                sender.close(WEBHOOK_DRAIN_S)
    return 0


def add_parser(sub: Any, parents: list[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    """The `watch` subcommand's options (cli.py registers it with one call)."""
    from twinkle_auto.app.alerts import FORMATS

    p = sub.add_parser("watch", parents=parents, help="watch every run (the monitor without the chat)")
    p.add_argument("--interval", type=float, default=30.0, help="seconds between checks of every run (30)")
    p.add_argument(
        "--webhook", action="append", default=[], metavar="URL", help="POST every event here (repeatable)"
    )
    p.add_argument("--webhook-format", choices=FORMATS, default="generic", help="body shape (generic)")
    p.add_argument(
        "--auto-fix",
        dest="watch_auto_fix",
        choices=("on", "ask", "off"),
        default=None,
        help="crashed runs: fix, ask first (needs a terminal), or only tell (default: the global --auto-fix)",
    )
    p.add_argument("--once", action="store_true", help="check every run once, print the events, exit")
    p.add_argument("--no-llm", action="store_true", help="rules only: no verdicts or patches from the LLM")
    p.add_argument("--max-llm-calls", type=int, default=2, help="LLM calls in flight across runs (2)")
    p.set_defaults(handler=run_watch)
    return p
