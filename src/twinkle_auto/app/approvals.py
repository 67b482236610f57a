"""How the terminal asks the person about a tool call: the whole script, the guards' findings, a choice.

The chat graph interrupts with an `Approval` per call (tools/base.py): one-line text, the script that
will run, the diff against what it replaces, and what the guards found. The person sees all of it
before answering — the script syntax-highlighted, through the pager when it is longer than the screen
— then approves, rejects, or edits the script in $EDITOR (the edited call is asked about again).
A call the guards mark unsafe runs only on a typed "yes".
"""

from __future__ import annotations

import os
import shlex
import subprocess
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.syntax import Syntax
from rich.text import Text

AskLine = Callable[[str], Awaitable[str]]
PAGER_MARGIN = 8
"""Lines left for the question and findings: a longer script goes through the pager."""


def render_approval(console: Console, call: dict[str, Any]) -> None:
    """Print what will run: the text, the findings, then the script or the diff."""
    console.print(Text(str(call.get("text") or f"Run {call.get('name')}?"), style="bold"))
    script = str(call.get("script") or "")
    diff = str(call.get("diff") or "")
    body: Any = None
    if diff.strip():
        body = Syntax(diff, "diff", theme="ansi_dark", background_color="default")
        length = diff.count("\n") + 1
    elif script.strip():
        body = Syntax(script, "python", theme="ansi_dark", line_numbers=True, background_color="default")
        length = script.count("\n") + 1
    if body is not None:
        if length > max(10, console.size.height - PAGER_MARGIN) and console.is_terminal:
            with console.pager(styles=True):
                console.print(body)
        else:
            console.print(body)
    findings = call.get("findings") or []
    if findings:
        style = "bold red" if call.get("unsafe") else "yellow"
        console.print(Text(f"The guards found {len(findings)} thing(s) in this script:", style=style))
        for f in findings:
            where = f" (line {f['line']})" if f.get("line") else ""
            console.print(
                Text(f"  • [{f.get('family')}/{f.get('rule')}] {f.get('message')}{where}", style=style)
            )
    elif call.get("script") or call.get("diff"):
        console.print(Text("The guards found nothing to flag.", style="dim"))


def edit_text(text: str, suffix: str = ".py") -> str | None:
    """Open $VISUAL/$EDITOR on a copy of `text`; the edited text, or None when the editor failed."""
    editor = os.environ.get("VISUAL") or os.environ.get("EDITOR") or "vi"
    with tempfile.TemporaryDirectory(prefix="twinkle-edit-") as tmp:
        path = Path(tmp) / f"train{suffix}"
        path.write_text(text, encoding="utf-8")
        try:
            code = subprocess.call([*shlex.split(editor), str(path)])
        except OSError:
            return None
        if code != 0:
            return None
        return path.read_text(encoding="utf-8")


def edited_args(call: dict[str, Any], new_script: str) -> dict[str, Any]:
    """The call's arguments with the person's script in place of whatever produced the old one."""
    args = dict(call.get("args") or {})
    field = str(call.get("editable") or "script")
    args[field] = new_script
    if field == "script":
        for name in ("recipe", "script_path", "params", "model", "dataset", "max_steps"):
            args.pop(name, None)
    return args


async def ask_approval(console: Console, call: dict[str, Any], ask: AskLine) -> Any:
    """The person's answer for one call: True, False, or {"action": "edit", "args": …}."""
    render_approval(console, call)
    editable = bool(call.get("editable")) and bool(call.get("script"))
    unsafe = bool(call.get("unsafe"))
    options = "yes/no/edit" if editable else "yes/no"
    question = (
        f"Run it anyway? Type 'yes' to approve despite the findings ({options}) "
        if unsafe
        else f"Approve? [{'y/N/e' if editable else 'y/N'}] "
    )
    while True:
        answer = (await ask(question)).strip().lower()
        if editable and answer in ("e", "edit"):
            new = edit_text(str(call.get("script") or ""))
            if new is None:
                console.print(Text("the editor failed; nothing changed", style="yellow"))
                continue
            return {"action": "edit", "args": edited_args(call, new)}
        if unsafe:
            return answer == "yes"
        return answer in ("y", "yes")
