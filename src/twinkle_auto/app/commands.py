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

    return Console(emoji=False)


def _safe(value: Any) -> str:
    """Data (a model id, a metric name, an error a script printed) as literal text for rich.

    Rich reads `[...]` as markup: `[/x]` in a run's data would end the command with MarkupError, and
    escape sequences would reach the terminal. So every string from a run folder goes through here.
    """
    from rich.markup import escape

    from twinkle_auto.connection.text import printable

    return escape(printable(str(value)))


def check_grace(grace: Any) -> float | None:
    """`--grace` as finite seconds ≥ 0 (None: the default); RunError (one line) for nan, inf or -1.

    A NaN deadline is never reached, so `stop --grace nan` would wait forever.
    """
    if grace is None:
        return None
    try:
        value = float(grace)
    except (TypeError, ValueError):
        raise RunError(f"--grace must be a number of seconds, got {grace!r}") from None
    if not math.isfinite(value) or value < 0:
        raise RunError(f"--grace must be a finite number of seconds >= 0, got {grace!r}")
    return value


def _when(ts: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(ts)) if ts else "-"


def _num(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return "-" if value is None else str(value)
    if isinstance(value, int):
        return str(value) if abs(value) < 10**15 else f"{value:.4g}"
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        return f"{value:.4g}"
    return _safe(value)


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

    table = Table(title=f"training runs in {_safe(store.home)}")
    for col in ("run", "status", "process", "step", "model", "started", "script"):
        table.add_column(col)
    for r in runs:
        style = _STATUS_STYLE.get(r.effective_status, "")
        status = _safe(r.effective_status)
        table.add_row(
            _safe(r.run_id),
            f"[{style}]{status}[/]" if style else status,
            _safe(_process_text(r) if r.remote else r.process),
            _progress(r),
            _safe(r.model_id or "-"),
            _when(r.start_time),
            f"v{r.script_version}" if r.script_version else "-",
        )
    console = _console()
    if runs:
        console.print(table)
    else:
        console.print(f"no runs in {_safe(store.home)}")
    return 0


def _file_problems(store: RunStore, run_id: str) -> list[str]:
    """One line per run file that could not be read whole (malformed lines, a FIFO as output.log)."""
    from twinkle_auto.connection.logs import tail_log
    from twinkle_auto.connection.metrics import tail_metrics
    from twinkle_auto.runtime import format as fmt

    folder = store.path(run_id)
    found = [
        (fmt.METRICS_FILE, tail_metrics(folder / fmt.METRICS_FILE, 1).problem),
        (fmt.LOG_FILE, tail_log(folder / fmt.LOG_FILE, 1).problem),
    ]
    return [_about(name, problem) for name, problem in found if problem]


def _about(name: str, problem: str) -> str:
    return problem if problem.startswith(name) else f"{name}: {problem}"


def cmd_status(args: argparse.Namespace) -> int:
    store = RunStore()
    s = store.status(args.run)
    problems = _file_problems(store, s.run_id)
    if args.json:
        emit_json({**s.as_dict(), "problems": problems})
        return 0
    from rich.table import Table

    table = Table(show_header=False, title=f"run {_safe(s.run_id)}")
    table.add_column(style="bold")
    table.add_column()
    rows = [
        ("status", s.effective_status + (f" (stored: {s.status})" if s.status != s.effective_status else "")),
        ("process", _process_text(s)),
        ("model", s.model_id or "-"),
        ("step", _progress(s)),
        ("started", _when(s.start_time)),
        ("ended", _when(s.end_time)),
        ("script", f"v{s.script_version}" if s.script_version else "-"),
        ("archived", ", ".join(f"v{v}" for v in s.archived_versions) or "-"),
    ]
    if s.error:
        rows.append(("error", s.error))
    rows.extend(("problem", p) for p in problems)
    for key, value in rows:
        table.add_row(key, _safe(value))
    if s.last_metrics:  # _num escapes the values it formats; the names are escaped here
        shown = "  ".join(f"{_safe(k)}={_num(v)}" for k, v in s.last_metrics.items() if k != "ts")
        table.add_row("last metrics", shown)
    _console().print(table)
    return 0


def _process_text(s: RunStatus) -> str:
    """`alive (pid 12)`; a run on another host as `remote (host), last metric 5s ago`: act there."""
    if not s.remote:
        return s.process + (f" (pid {s.pid})" if s.pid else "")
    age = s.last_metric_age
    return s.process_label + (f", last metric {_age(age)} ago" if age is not None else ", no metrics yet")


def _age(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}min"
    return f"{seconds / 3600:.1f}h"


def cmd_start(args: argparse.Namespace) -> int:
    from twinkle_auto.connection.store import read_script_file

    script = Path(args.script)
    text = read_script_file(script)
    try:
        compile(text, str(script), "exec")
    except SyntaxError as exc:
        raise RunError(f"script {args.script} does not parse: {exc.msg} at line {exc.lineno}") from None
    from twinkle_auto.connection.launch import new_spec, parse_env_assignments, with_launcher_options

    # The script's directory, not the run folder, is where its relative paths and sibling modules live.
    source_dir = script.resolve().parent
    spec = new_spec(
        launcher=args.launcher,
        args=list(args.script_args or []),
        cwd=args.cwd if args.cwd is not None else source_dir,
        source_dir=source_dir,
        env=parse_env_assignments(args.env or []),
        pass_env=list(args.pass_env or []),
        ray_address=args.ray_address,
    )
    spec = with_launcher_options(spec, args.nproc_per_node, args.launcher_args)
    if args.ray_address and args.launcher != "ray":
        raise RunError("--ray-address needs --launcher ray")
    result = RunController(RunStore()).start(args.run, text, model_id=args.model_id, spec=spec)
    _print_launch(args, result, "started")
    return 0


def _print_launch(args: argparse.Namespace, result: Any, verb: str) -> None:
    data = {
        "run_id": result.run_id,
        "status": "running",
        "pid": result.pid,
        "launch_count": result.launch_count,
        "script_version": result.script_version,
        "ray_job": result.ray_job,
    }
    if args.json:
        emit_json(data)
        return
    where = f"Ray job {_safe(result.ray_job)}" if result.ray_job else f"pid {result.pid}"
    _console().print(
        f"{verb} run [bold]{_safe(result.run_id)}[/] ({where}, train.py v{result.script_version}, "
        f"launch #{result.launch_count})"
    )


def cmd_pause(args: argparse.Namespace) -> int:
    status = RunController(RunStore()).pause(args.run)
    if args.json:
        emit_json({"run_id": args.run, "status": status})
    else:
        _console().print(f"paused run [bold]{args.run}[/]; `twinkle-auto resume {args.run}` continues it")
    return 0


def cmd_resume(args: argparse.Namespace) -> int:
    result = RunController(RunStore()).resume(args.run)
    _print_launch(args, result, "resumed")
    return 0


def cmd_stop(args: argparse.Namespace) -> int:
    grace = check_grace(args.grace)
    result = RunController(RunStore()).stop(args.run, grace=grace)
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
        extra = f", checkpoint {_safe(result.checkpoint)}" if result.checkpoint else ""
        _console().print(f"run [bold]{result.run_id}[/] {how} (status {_safe(result.status)}{extra})")
    return 0


def cmd_logs(args: argparse.Namespace) -> int:
    store = RunStore()
    store.require(args.run)
    from twinkle_auto.connection.text import printable

    lines = [printable(line) for line in store.log_lines(args.run, max(0, args.n))]
    if args.json:
        emit_json({"run_id": args.run, "lines": lines})
    else:
        sys.stdout.write("".join(line + "\n" for line in lines))
    return 0


def cmd_metrics(args: argparse.Namespace) -> int:
    store = RunStore()
    folder = store.require(args.run)
    from twinkle_auto.connection.metrics import metric_keys, tail_metrics
    from twinkle_auto.runtime import format as fmt

    got = tail_metrics(folder / fmt.METRICS_FILE, max(0, args.last))
    entries = got.entries
    if got.problem and not entries:
        raise RunError(f"run {args.run!r}: {_about(fmt.METRICS_FILE, got.problem)}")

    keys = [k.strip() for k in args.keys.split(",") if k.strip()] if args.keys else metric_keys(entries)
    known = set(metric_keys(entries))
    missing = [k for k in keys if k not in known]
    if args.keys and entries and len(missing) == len(keys):
        raise RunError(
            f"none of {', '.join(keys)} in the last {len(entries)} entries; have: {', '.join(sorted(known))}"
        )
    rows = [{"step": e.get("step"), "ts": e.get("ts"), **{k: e.get(k) for k in keys}} for e in entries]
    if args.json:
        emit_json({"run_id": args.run, "keys": keys, "entries": rows, "problem": got.problem})
        return 0
    from rich.table import Table

    table = Table(title=f"run {_safe(args.run)}: last {len(rows)} metrics")
    table.add_column("step", justify="right")
    for key in keys:
        table.add_column(_safe(key), justify="right")
    for row in rows:
        table.add_row(_num(row["step"]), *(_num(row[k]) for k in keys))
    console = _console()
    console.print(table)
    if got.problem:
        console.print(f"[yellow]note[/]: {_safe(_about(fmt.METRICS_FILE, got.problem))}")
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    from twinkle_auto.app.check import run_check

    return run_check(args)
