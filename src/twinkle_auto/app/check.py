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

    With policy `ask`, `ask(question_payload) -> bool | None` answers the fix approval; None (or no
    `ask`) means unanswered: nothing is applied or counted, and the patch is offered again next time.
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
        answer = ask(payload) if ask is not None else None
        approved = None if answer is None else bool(answer)
        state = graph.invoke(Command(resume={"approved": approved}), config)
    return {
        "run_id": run_id,
        "decision": state.get("decision", "LGTM"),
        "findings": state.get("findings", []),
        "diagnosis": state.get("diagnosis", ""),
        "verdict_source": state.get("verdict_source", "rules"),
        "fixed": bool(state.get("fixed")),
        "archived_as": state.get("archived_as"),
        "fix_attempts": state.get("fix_attempts", 0),
        "message": "\n".join(m for m in (state.get("verify_message"), state.get("message")) if m) or None,
        "relaunch": state.get("relaunch"),
        "fix_status": state.get("fix_status"),
        "fix": state.get("fix"),
        "prompt_tokens": state.get("prompt_tokens") or [],
    }


def _ask_on_terminal(payload: dict[str, Any]) -> bool | None:
    if not sys.stdin.isatty():
        print("fix needs approval but stdin is not a terminal: not applied", file=sys.stderr)
        return None
    from twinkle_auto.connection.text import printable

    print(printable(str(payload.get("diagnosis", ""))))
    print(printable(f"{payload.get('summary', '')} ({payload.get('source', '')})"))
    if payload.get("warning"):
        print(printable(str(payload["warning"])))
    print(printable(str(payload.get("patch", ""))))
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
        from rich.markup import escape

        from twinkle_auto.connection.text import printable

        def safe(text: Any) -> str:  # log and LLM text: no terminal escapes, no rich markup
            return escape(printable(str(text)))

        console = Console()
        style = {"LGTM": "green", "WARNING": "yellow", "FIX": "bold red"}[result["decision"]]
        console.print(
            f"[{style}]{result['decision']}[/] {args.run}: {safe(result['diagnosis'])}  "
            f"({safe(result['verdict_source'])})"
        )
        for f in result["findings"]:
            console.print(f"  - \\[{f.get('severity')}] {f.get('kind')}: {safe(f.get('message'))}")
        if result["message"]:
            console.print(printable(result["message"]), markup=False, highlight=False)
    return EXIT_CODES.get(result["decision"], 1)
