"""The `twinkle-auto` command: the chat (no subcommand) and subcommands that need no LLM.

Imports are lazy: `twinkle-auto --version` and the subcommands must not pay for langchain or rich
before they need them.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from twinkle_auto import __version__

log = logging.getLogger("twinkle_auto.cli")

DEFAULT_LLM_BASE_URL = "http://localhost:11434/v1"
DEFAULT_LLM_MODEL = "qwen3.5"
DEFAULT_LLM_API_KEY = "not-needed"


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="twinkle-auto",
        description="Control, watch and repair training runs by talking to them.",
    )
    parser.add_argument("--version", "-V", action="version", version=f"twinkle-auto {__version__}")
    parser.add_argument(
        "--run-id", "-r", default=os.environ.get("TWINKLE_AUTO_RUN_ID"), help="run to attach the chat to"
    )
    parser.add_argument(
        "--llm-base-url",
        default=os.environ.get("TWINKLE_LLM_BASE_URL", DEFAULT_LLM_BASE_URL),
        help=f"OpenAI-compatible endpoint (env TWINKLE_LLM_BASE_URL, default {DEFAULT_LLM_BASE_URL})",
    )
    parser.add_argument(
        "--llm-model",
        default=os.environ.get("TWINKLE_LLM_MODEL", DEFAULT_LLM_MODEL),
        help=f"model name (env TWINKLE_LLM_MODEL, default {DEFAULT_LLM_MODEL})",
    )
    parser.add_argument(
        "--llm-api-key",
        default=os.environ.get("TWINKLE_LLM_API_KEY", DEFAULT_LLM_API_KEY),
        help="API key (env TWINKLE_LLM_API_KEY); never written to the log",
    )
    parser.add_argument(
        "--verbose",
        "-v",
        action="store_true",
        default=_env_flag("TWINKLE_AUTO_VERBOSE"),
        help="DEBUG logging to ./auto.log (env TWINKLE_AUTO_VERBOSE)",
    )
    parser.add_argument(
        "--home", default=None, help="run folders (env TWINKLE_HOME, default ~/.cache/twinkle)"
    )
    chat = parser.add_argument_group("chat")
    chat.add_argument("--session", default=None, help="name of the conversation to open or create")
    chat.add_argument("--resume", action="store_true", help="continue the last conversation")
    chat.add_argument("--yes", "-y", action="store_true", help="do not ask before destructive actions")
    chat.add_argument(
        "--auto-fix",
        choices=("on", "ask", "off"),
        default=os.environ.get("TWINKLE_AUTO_FIX", "on"),
        help="monitor policy for crashed runs: fix, ask first, or only tell (default on)",
    )
    chat.add_argument("--monitor-interval", type=float, default=30.0, help="seconds between monitor ticks")
    chat.add_argument(
        "--stall-seconds",
        type=float,
        default=300.0,
        help="a live run without a new metric this long is stalled",
    )
    chat.add_argument("--llm-gguf", default=None, help="serve this GGUF model locally (llama.cpp) and use it")
    chat.add_argument(
        "--no-bell", action="store_true", help="no terminal bell on a fix, a question or a finished run"
    )

    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    json_parent = argparse.ArgumentParser(add_help=False)
    json_parent.add_argument("--json", action="store_true", help="machine-readable output with stable keys")

    sub.add_parser("runs", parents=[json_parent], help="list the runs")
    p = sub.add_parser("status", parents=[json_parent], help="status of one run")
    p.add_argument("run")
    p = sub.add_parser(
        "start", parents=[json_parent], help="start a run from a training script (its arguments after --)"
    )
    p.add_argument("run")
    p.add_argument("--script", required=True, help="the training script (copied to the run as train.py)")
    p.add_argument("--model-id", default=None)
    p.add_argument(
        "--cwd", default=None, help="working directory of the run (default: the script's directory)"
    )
    p.add_argument(
        "--env", action="append", default=[], metavar="K=V", help="a setting for the run (repeatable)"
    )
    p.add_argument(
        "--pass-env", action="append", default=[], metavar="NAME", help="let a credential through by name"
    )
    p.add_argument("--launcher", choices=("python", "torchrun", "accelerate", "ray"), default="python")
    p.add_argument(
        "--nproc-per-node", type=int, default=None, help="processes per node (torchrun, accelerate)"
    )
    p.add_argument(
        "--launcher-args",
        default=None,
        help="more launcher options as one string: --launcher-args='--standalone --max-restarts 0'",
    )
    p.add_argument("--ray-address", default=None, help="Ray dashboard address for --launcher ray")
    p.set_defaults(script_args=[])  # filled from what follows `--` (see main)
    for verb, text in (("pause", "pause a run (kill; resume relaunches)"), ("resume", "resume a paused run")):
        p = sub.add_parser(verb, parents=[json_parent], help=text)
        p.add_argument("run")
    p = sub.add_parser("stop", parents=[json_parent], help="stop a run (SIGTERM: checkpoint, then exit)")
    p.add_argument("run")
    p.add_argument("--grace", type=float, default=None, help="seconds before SIGKILL (default 15)")
    p = sub.add_parser("logs", parents=[json_parent], help="last lines of a run's output.log")
    p.add_argument("run")
    p.add_argument("-n", type=int, default=50, help="number of lines (default 50)")
    p = sub.add_parser("metrics", parents=[json_parent], help="last metrics of a run")
    p.add_argument("run")
    p.add_argument("--keys", default=None, help="comma-separated metric names (default: all)")
    p.add_argument("--last", type=int, default=20, help="number of entries (default 20)")
    p = sub.add_parser("check", parents=[json_parent], help="one monitor tick on a run")
    p.add_argument("run")
    p.add_argument("--no-llm", action="store_true", help="rules only")
    p.add_argument("--no-fix", action="store_true", help="diagnose, never rewrite")
    from twinkle_auto.app.watch import add_parser as add_watch_parser

    add_watch_parser(sub, [json_parent])
    from twinkle_auto.recipes.cli import add_parser as add_recipe_parser

    add_recipe_parser(sub, [json_parent])
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    # Everything after the first `--` belongs to the training script (argparse mangles it in subcommands).
    script_args: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, script_args = argv[:cut], argv[cut + 1 :]
    args = parser.parse_args(argv)
    if script_args:
        if args.command != "start":
            parser.error("arguments after -- are passed to the training script: only `start` takes them")
        args.script_args = script_args
    from twinkle_auto.app.logging_setup import setup_logging

    setup_logging(args.verbose, secrets=[args.llm_api_key])
    from twinkle_auto.connection.process import register_secret

    register_secret(args.llm_api_key)  # never passed on to a training process, whatever its name
    log.debug("argv=%s", list(argv) if argv is not None else sys.argv[1:])
    if args.home:
        os.environ["TWINKLE_HOME"] = args.home
    if args.command is None:
        return _chat(args)
    from twinkle_auto.app import commands

    handler: Callable[[Any], int] = getattr(args, "handler", None) or getattr(commands, f"cmd_{args.command}")
    try:
        return handler(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # every failure is one line, with the detail in auto.log
        from twinkle_auto.app.commands import one_line_error

        log.exception("command %s failed", args.command)
        print(f"error: {one_line_error(exc)}", file=sys.stderr)
        return 1


def _chat(args: argparse.Namespace) -> int:
    from twinkle_auto.app.chat import run_chat

    try:
        return run_chat(args)
    except KeyboardInterrupt:
        return 130
