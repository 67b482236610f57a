"""Checks on a training script before a tool runs it: it parses, fits, and what the guards find.

A script a chat model writes is untrusted code. Before start_training or update_script runs one, the
person sees it whole with the guards' findings: what it may do (new imports, processes, network,
deletions, dynamic code, writes outside the run — `monitor.guards.script_capabilities`) and, for an
update, whether it guts the training it replaces (`review_patch`, or `check_patch` where the richer
review is not available). The findings are plain dicts (`Finding`) so they travel in an interrupt.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from twinkle_auto.tools.base import Finding, ToolError

MAX_SCRIPT_CHARS = 200_000


def check_source(script: str) -> str:
    """The script if it is Python that parses and fits; else a ToolError saying what to fix."""
    if not script or not script.strip():
        raise ToolError("the script is empty; pass the complete Python source")
    if len(script) > MAX_SCRIPT_CHARS:
        raise ToolError(f"script is {len(script)} characters; the limit is {MAX_SCRIPT_CHARS}")
    try:
        compile(script, "train.py", "exec")
    except SyntaxError as exc:
        raise ToolError(f"the script does not parse: {exc.msg} at line {exc.lineno}") from None
    return script


def read_script_file(script_path: str) -> str:
    """A script the person named: a FIFO, a device (/dev/zero) or an oversized file is refused unread."""
    from twinkle_auto.connection.errors import RunError
    from twinkle_auto.connection.store import read_script_file as read_checked

    path = Path(script_path).expanduser()
    if not os.path.lexists(path):
        raise ToolError(f"script_path {script_path} does not exist")
    try:
        return read_checked(path)
    except RunError as exc:
        raise ToolError(str(exc)) from None


def _finding(raw: Any, family: str = "") -> Finding:
    if isinstance(raw, str):
        return {"family": family or "guard", "rule": family or "guard", "message": raw, "line": None}
    return {
        "family": str(getattr(raw, "family", family) or family),
        "rule": str(getattr(raw, "rule", "") or ""),
        "message": str(getattr(raw, "message", raw)),
        "line": getattr(raw, "line", None),
    }


def script_findings(source: str, run_dir: Path | None) -> list[Finding]:
    """What a new script may do beyond training inside its run folder (empty when it parses clean)."""
    try:
        from twinkle_auto.monitor.guards import script_capabilities
    except ImportError:
        return []
    try:
        return [_finding(f, "capability") for f in script_capabilities(source, run_dir=run_dir)]
    except SyntaxError:
        return []


def review_update(old: str, new: str, run_dir: Path | None) -> list[Finding]:
    """Findings of replacing `old` by `new`: gaming the training and new capabilities."""
    try:
        from twinkle_auto.monitor.guards import review_patch
    except ImportError:
        from twinkle_auto.monitor.guards import check_patch

        return [_finding(v, "gaming") for v in check_patch(old, new)]
    review = review_patch(old, new, run_dir=run_dir)
    return [_finding(f) for f in getattr(review, "findings", review)]
