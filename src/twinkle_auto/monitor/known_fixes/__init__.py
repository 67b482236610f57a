"""Deterministic repairs for frequent, well-understood training crashes, tried before any LLM.

Some crashes have one right fix that does not need judgement: a keyword a library renamed, a tokenizer
without a pad token, an integer tensor averaged, a batch left on the CPU while the model is elsewhere,
and the autograd errors whose message names the cure (`.detach()` before `.numpy()`, a loss left per
sample, an in-place update of a tensor backward needs, a recurrent state never detached).
A 1.5B model gets these wrong surprisingly often (it renames the wrong argument, or casts the labels
instead of the logits); a recipe gets them right every time and costs no tokens. Each recipe fires only
on evidence from both sides: the error names the pattern AND the script has the exact construct the
error is about at a traceback frame (or, for keywords, a unique call site). Each recipe is right for the
pattern in general, never for one script, and cites the public report it comes from. A recipe returns
the whole new script; the caller still runs the guards on it.

Recipes are tried in catalogue order: library API changes, dtypes, shapes, devices, autograd, data.
"""

from __future__ import annotations

import ast

from twinkle_auto.connection.tracebacks import traceback_text
from twinkle_auto.monitor.fix_context import error_text, script_frames
from twinkle_auto.monitor.known_fixes import autograd, data, devices, dtypes, libraries, shapes
from twinkle_auto.monitor.known_fixes.base import Catalogue, Crash, KnownFix

__all__ = ["KnownFix", "RECIPES", "find_known_fix"]

RECIPES: Catalogue = [
    *libraries.RECIPES,
    *dtypes.RECIPES,
    *shapes.RECIPES,
    *devices.RECIPES,
    *autograd.RECIPES,
    *data.RECIPES,
]
"""Every recipe, in the order they are tried."""


def find_known_fix(script: str, traceback: str, *, script_path: str = "train.py") -> KnownFix | None:
    """The first catalogue repair that applies to this crash, or None (then the LLM is asked)."""
    try:
        tree = ast.parse(script)
    except (SyntaxError, ValueError):
        return None
    block = traceback_text(traceback) or traceback
    crash = Crash(
        script, tree, error_text(block), script_frames(block, script_path, len(script.splitlines()))
    )
    for _, attempt in RECIPES:
        fix = attempt(crash)
        if fix is None or fix.new_script == script:
            continue
        try:
            ast.parse(fix.new_script)
        except SyntaxError:
            continue
        return fix
    return None
