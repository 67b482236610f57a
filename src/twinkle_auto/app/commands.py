"""The subcommands: rich tables for people, `--json` with stable keys for scripts.

JSON output is strict JSON: NaN and infinities become the strings "NaN", "Infinity", "-Infinity", so jq
and other strict parsers read it and the fact is not lost.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

from twinkle_auto.connection.control import RunController
from twinkle_auto.connection.errors import RunError
from twinkle_auto.connection.store import RunStatus, RunStore
from twinkle_auto.runtime.format import RunIdError


def one_line_error(exc: BaseException) -> str:
    if isinstance(exc, (RunError, RunIdError)):
        text = str(exc)
    elif isinstance(exc, OSError):
        text = f"{exc.strerror or exc}: {exc.filename}" if exc.filename else str(exc)
    else:
        text = f"{type(exc).__name__}: {exc}"
    return " ".join(text.split()) or type(exc).__name__


def _strict(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if value != value else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, dict):
        return {k: _strict(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_strict(v) for v in value]
    return value


def emit_json(data: Any) -> None:
    sys.stdout.write(json.dumps(_strict(data), indent=2, allow_nan=False) + "\n")


def _console() -> Any:
    from rich.console import Console

    return Console()


def _when(ts: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(ts)) if ts else "-"


def _num(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return "-" if value is None else str(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        return f"{value:.4g}"
    return str(value)


_STATUS_STYLE = {
    "running": "green",
    "crashed": "bold red",
    "failed": "red",
    "paused": "yellow",
    "stopped": "cyan",
    "finished": "blue",
    "corrupt": "bold red",
}


def _progress(s: RunStatus) -> str:
    if s.last_step is None:
        return "-"
    return f"{s.last_step}/{s.total_steps}" if s.total_steps else str(s.last_step)


def cmd_runs(args: argparse.Namespace) -> int:
    store = RunStore()
    runs = store.list_runs()
    if args.json:
        emit_json({"runs": [r.as_dict() for r in runs]})
        return 0
    from rich.table import Table

    table = Table(title=f"training runs in {store.home}")
    for col in ("run", "status", "process", "step", "model", "started", "script"):
        table.add_column(col)
    for r in runs:
        style = _STATUS_STYLE.get(r.effective_status, "")
        table.add_row(
            r.run_id,
            f"[{style}]{r.effective_status}[/]" if style else r.effective_status,
            r.process,
            _progress(r),
            r.model_id or "-",
            _when(r.start_time),
            f"v{r.script_version}" if r.script_version else "-",
        )
    console = _console()
    if runs:
        console.print(table)
    else:
        console.print(f"no runs in {store.home}")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    s = RunStore().status(args.run)
    if args.json:
        emit_json(s.as_dict())
        return 0
    from rich.table import Table

    table = Table(show_header=False, title=f"run {s.run_id}")
    table.add_column(style="bold")
    table.add_column()
    rows = [
        ("status", s.effective_status + (f" (stored: {s.status})" if s.status != s.effective_status else "")),
        ("process", f"{s.process}" + (f" (pid {s.pid})" if s.pid else "")),
        ("model", s.model_id or "-"),
        ("step", _progress(s)),
        ("started", _when(s.start_time)),
        ("ended", _when(s.end_time)),
        ("script", f"v{s.script_version}" if s.script_version else "-"),
        ("archived", ", ".join(f"v{v}" for v in s.archived_versions) or "-"),
    ]
    if s.error:
        rows.append(("error", s.error))
    if s.last_metrics:
        rows.append(
            ("last metrics", "  ".join(f"{k}={_num(v)}" for k, v in s.last_metrics.items() if k != "ts"))
        )
    for key, value in rows:
        table.add_row(key, value)
    _console().print(table)
    return 0


def cmd_start(args: argparse.Namespace) -> int:
    from twinkle_auto.connection.store import read_script_file

    script = Path(args.script)
    text = read_script_file(script)
    try:
        compile(text, str(script), "exec")
    except SyntaxError as exc:
        raise RunError(f"script {args.script} does not parse: {exc.msg} at line {exc.lineno}") from None
    result = RunController(RunStore()).start(args.run, text, model_id=args.model_id)
    data = {
        "run_id": result.run_id,
        "status": "running",
        "pid": result.pid,
        "launch_count": result.launch_count,
        "script_version": result.script_version,
    }
    if args.json:
        emit_json(data)
    else:
        _console().print(
            f"started run [bold]{result.run_id}[/] (pid {result.pid}, train.py v{result.script_version})"
        )
    return 0


def cmd_pause(args: argparse.Namespace) -> int:
    status = RunController(RunStore()).pause(args.run)
    if args.json:
        emit_json({"run_id": args.run, "status": status})
    else:
        _console().print(f"paused run [bold]{args.run}[/]; `twinkle-auto resume {args.run}` continues it")
    return 0


def cmd_resume(args: argparse.Namespace) -> int:
    result = RunController(RunStore()).resume(args.run)
    if args.json:
        emit_json(
            {
                "run_id": result.run_id,
                "status": "running",
                "pid": result.pid,
                "launch_count": result.launch_count,
                "script_version": result.script_version,
            }
        )
    else:
        _console().print(
            f"resumed run [bold]{result.run_id}[/] (pid {result.pid}, launch #{result.launch_count})"
        )
    return 0


def cmd_stop(args: argparse.Namespace) -> int:
    result = RunController(RunStore()).stop(args.run, grace=args.grace)
    data = {
        "run_id": result.run_id,
        "status": result.status,
        "killed": result.killed,
        "checkpoint": result.checkpoint,
    }
    if args.json:
        emit_json(data)
    else:
        how = "killed after the grace period" if result.killed else "stopped gracefully"
        extra = f", checkpoint {result.checkpoint}" if result.checkpoint else ""
        _console().print(f"run [bold]{result.run_id}[/] {how} (status {result.status}{extra})")
    return 0


def cmd_logs(args: argparse.Namespace) -> int:
    store = RunStore()
    store.require(args.run)
    lines = store.log_lines(args.run, max(0, args.n))
    if args.json:
        emit_json({"run_id": args.run, "lines": lines})
    else:
        sys.stdout.write("".join(line + "\n" for line in lines))
    return 0


def cmd_metrics(args: argparse.Namespace) -> int:
    store = RunStore()
    store.require(args.run)
    entries = store.last_metrics(args.run, max(0, args.last))
    from twinkle_auto.connection.metrics import metric_keys

    keys = [k.strip() for k in args.keys.split(",") if k.strip()] if args.keys else metric_keys(entries)
    known = set(metric_keys(entries))
    missing = [k for k in keys if k not in known]
    if args.keys and entries and len(missing) == len(keys):
        raise RunError(
            f"none of {', '.join(keys)} in the last {len(entries)} entries; have: {', '.join(sorted(known))}"
        )
    rows = [{"step": e.get("step"), "ts": e.get("ts"), **{k: e.get(k) for k in keys}} for e in entries]
    if args.json:
        emit_json({"run_id": args.run, "keys": keys, "entries": rows})
        return 0
    from rich.table import Table

    table = Table(title=f"run {args.run}: last {len(rows)} metrics")
    table.add_column("step", justify="right")
    for key in keys:
        table.add_column(key, justify="right")
    for row in rows:
        table.add_row(_num(row["step"]), *(_num(row[k]) for k in keys))
    _console().print(table)
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    from twinkle_auto.app.check import run_check

    return run_check(args)
