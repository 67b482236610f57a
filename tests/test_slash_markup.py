"""Slash commands print run data inside rich markup: `[/x]` and control bytes in that data must print as
text (a MarkupError there ended the chat's /status and /runs)."""

from __future__ import annotations

import asyncio
import io
import json
from pathlib import Path

from rich.console import Console

from twinkle_auto.app.slash import SessionView, SlashCommands
from twinkle_auto.connection import Connection


def test_status_and_runs_print_markup_and_control_bytes_in_data_literally(home: Path) -> None:
    folder = home / "odd"
    folder.mkdir()
    meta = {"run_id": "odd", "status": "failed", "model_id": "org/[/x]model", "error": "bad [bold]x\x1b[2J"}
    (folder / "meta.json").write_text(json.dumps(meta))
    (folder / "metrics.jsonl").write_text(json.dumps({"step": 1, "[/loss]": 0.5}) + "\n")
    (folder / "auto_state.json").write_text(
        json.dumps({"decision": "WARNING", "diagnosis": "see [/red] here"})
    )
    slash = SlashCommands(SessionView(Connection.open(home)), confirm=lambda _q: asyncio.sleep(0, True))
    out = io.StringIO()
    console = Console(file=out, width=200, color_system=None)
    status = asyncio.run(slash.handle("/status odd"))
    console.print(status.text)
    runs = asyncio.run(slash.handle("/runs"))
    console.print(runs.renderable)
    text = out.getvalue()
    assert "org/[/x]model" in text and "[/loss]=0.5" in text and "see [/red] here" in text
    assert "bad [bold]x" in text and "\x1b" not in text
