"""`twinkle-auto check RUN`: one monitor tick, printed; exit 0 LGTM, 1 WARNING, 2 FIX."""

from __future__ import annotations

import argparse
import sys
from typing import Any

EXIT_CODES = {"LGTM": 0, "WARNING": 1, "FIX": 2}


def check_once(
    run_id: str, *, llm: Any = None, use_llm: bool = True, policy: str = "on", ask: Any = None
) -> dict[str, Any]:
    """Run one tick of the monitor graph on a run and return its result as plain data.

    With policy `ask`, `ask(question_payload) -> bool` answers the fix approval (no answer means no).
    """
    from langgraph.checkpoint.memory import InMemorySaver
    from langgraph.types import Command

    from twinkle_auto.connection import Connection
    from twinkle_auto.graphs.monitor.graph import compile_monitor_graph, monitor_thread

    connection = Connection.open()
    connection.store.require(run_id)
    graph = compile_monitor_graph(
        llm, connection, policy=policy, use_llm=use_llm, checkpointer=InMemorySaver()
    )
    config = monitor_thread(run_id)
    state = graph.invoke({"run_id": run_id}, config)
    while state.get("__interrupt__"):
        payload = state["__interrupt__"][0].value
        approved = bool(ask(payload)) if ask is not None else False
        state = graph.invoke(Command(resume=approved), config)
    return {
        "run_id": run_id,
        "decision": state.get("decision", "LGTM"),
        "findings": state.get("findings", []),
        "diagnosis": state.get("diagnosis", ""),
        "verdict_source": state.get("verdict_source", "rules"),
        "fixed": bool(state.get("fixed")),
        "archived_as": state.get("archived_as"),
        "fix_attempts": state.get("fix_attempts", 0),
        "message": state.get("message"),
        "relaunch": state.get("relaunch"),
    }


def _ask_on_terminal(payload: dict[str, Any]) -> bool:
    if not sys.stdin.isatty():
        print("fix needs approval but stdin is not a terminal: not applied", file=sys.stderr)
        return False
    print(payload.get("diagnosis", ""))
    print(payload.get("patch", ""))
    return input(f"{payload.get('question', 'Apply?')} [y/N] ").strip().lower() in ("y", "yes")


def run_check(args: argparse.Namespace) -> int:
    from twinkle_auto.app.commands import emit_json

    llm = None
    if not args.no_llm:
        from twinkle_auto.app.llm import make_chat_model

        llm = make_chat_model(args.llm_base_url, args.llm_model, args.llm_api_key, timeout=60, max_retries=1)
    policy = "off" if args.no_fix else args.auto_fix
    result = check_once(args.run, llm=llm, use_llm=not args.no_llm, policy=policy, ask=_ask_on_terminal)
    if args.json:
        emit_json(result)
    else:
        from rich.console import Console

        console = Console()
        style = {"LGTM": "green", "WARNING": "yellow", "FIX": "bold red"}[result["decision"]]
        console.print(
            f"[{style}]{result['decision']}[/] {args.run}: {result['diagnosis']}  ({result['verdict_source']})"
        )
        for f in result["findings"]:
            console.print(f"  - [{f.get('severity')}] {f.get('kind')}: {f.get('message')}")
        if result["message"]:
            console.print(result["message"])
    return EXIT_CODES.get(result["decision"], 1)
