"""The part of a crashed script an LLM needs to fix it, within a token budget.

Sending the whole script fails twice over: a 1,000-line script does not fit a small model's context, and
even when it fits, a small model loses the failing line in it and answers by re-emitting the script. A
person fixing a crash reads the traceback frames that are in their script, the function around each,
where the names on the failing line come from, and skims the rest. This module builds exactly that, as a
numbered excerpt (the line numbers are the ones structured edits refer to), and shrinks it to fit the
budget by narrowing windows and dropping the outline before it drops anything near the failing line.
Pure functions: no I/O, no LLM.
"""

from __future__ import annotations

import ast
import math
import os
import re
from dataclasses import dataclass, field

from twinkle_auto.connection.tracebacks import parse_traceback, traceback_text

__all__ = [
    "CHARS_PER_TOKEN",
    "FixContext",
    "ScriptFrame",
    "build_fix_context",
    "error_text",
    "estimate_tokens",
    "script_frames",
]

CHARS_PER_TOKEN = 2.5
"""Numbered code excerpts tokenise at ~2.6 characters per token with Qwen2.5's tokenizer (measured with
the served model's /tokenize on a 1,000-line excerpt: 2,803 chars -> 1,099 tokens); 2.5 errs on the
large side, so a budget in estimated tokens is a budget in real ones."""
FUNCTION_WHOLE_LINES = 40
"""An enclosing function up to this long is shown whole; a longer one as a window around the frame."""
WINDOWS = (12, 8, 5, 3, 1)
"""Lines shown either side of a frame's line, widest first; the builder narrows until the budget fits."""
MAX_DEFINITIONS_PER_NAME = 2
"""The latest assignments of a name before the failing line are the ones that explain its value."""
DEFINITION_WHOLE_LINES = 12
"""A def/class/statement defining a used name is shown whole up to this many lines, else its header."""
MAX_LINE_CHARS = 240
"""Lines longer than this are cut in the excerpt (never the failing line), so one data literal cannot
eat the budget."""
MAX_ERROR_CHARS = 600
WHOLE_SCRIPT_LINES = 60
"""Scripts up to this many lines are shown whole (when they fit the budget): nothing to focus away."""
MAX_OUTLINE = 40
"""Outline headers shown at most (those nearest the failing lines): past that an outline is noise."""


@dataclass(frozen=True)
class ScriptFrame:
    """One traceback frame that points into the script: its 1-based line and function name."""

    line: int
    function: str


@dataclass
class FixContext:
    """What to show the model: `text` (error, frames, numbered excerpt, outline) and what it is made of.

    `lines` are the script lines shown in the excerpt, `failing_lines` the frames' lines in the script
    (outermost first, so the last one is where it failed), `approx_tokens` the estimated size of `text`.
    """

    text: str
    lines: list[int]
    error: str
    failing_lines: list[int]
    approx_tokens: int
    frames: list[ScriptFrame] = field(default_factory=list)


def estimate_tokens(text: str) -> int:
    """A conservative token count without a tokenizer (see CHARS_PER_TOKEN)."""
    return math.ceil(len(text) / CHARS_PER_TOKEN)


# ------------------------------------------------------------------------------------------ traceback
def _is_script_file(file: str, script_path: str) -> bool:
    file = file.replace("\\", "/")
    script = script_path.replace("\\", "/")
    base = os.path.basename(script)
    if "site-packages/" in file or "dist-packages/" in file:
        return False
    if file in (script, base) or file.endswith("/" + base):
        return True
    # Relaunched runs execute train.py from the run folder, older ones an archived train_vN.py.
    stem, ext = os.path.splitext(base)
    return bool(re.fullmatch(re.escape(stem) + r"_v\d+" + re.escape(ext), os.path.basename(file)))


def script_frames(
    traceback: str, script_path: str = "train.py", n_lines: int | None = None
) -> list[ScriptFrame]:
    """The frames of the deciding traceback that are in the script, outermost first.

    Parsed by the one traceback parser (connection.tracebacks); frames of archived versions of the
    script (train_v2.py) count too, since a relaunch may have run one. A SyntaxError report
    (``File "train.py", line 12`` without a function) is a frame. Lines beyond `n_lines` are dropped
    (a traceback from another version of the script).
    """
    parsed = parse_traceback(traceback)
    if parsed is None:
        return []
    frames = []
    for frame in parsed.frames:
        if frame.line is None or not _is_script_file(frame.file, script_path):
            continue
        if n_lines is not None and not 1 <= frame.line <= n_lines:
            continue
        frames.append(ScriptFrame(frame.line, frame.function.strip()))
    return frames


def error_text(traceback: str) -> str:
    """The deciding exception, `Name: message`, in the library's words (empty when there is none)."""
    parsed = parse_traceback(traceback)
    if parsed is None:
        tail = [line.strip() for line in traceback.splitlines() if line.strip()][-3:]
        return "\n".join(tail)[:MAX_ERROR_CHARS]
    text = f"{parsed.exception}: {parsed.message}" if parsed.message else parsed.exception
    return text[:MAX_ERROR_CHARS]


# ------------------------------------------------------------------------------------------------ ast
def _parse(script: str) -> ast.Module | None:
    try:
        return ast.parse(script)
    except (SyntaxError, ValueError):
        return None


def _span(node: ast.AST) -> tuple[int, int]:
    start = min([node.lineno, *(d.lineno for d in getattr(node, "decorator_list", []))])  # type: ignore[attr-defined]
    return start, node.end_lineno or node.lineno  # type: ignore[attr-defined]


def _enclosing(tree: ast.Module, line: int) -> list[ast.AST]:
    """Compound statements containing `line`, outermost first."""
    chain: list[ast.AST] = []
    nodes: list[ast.AST] = list(tree.body)
    while nodes:
        inner = None
        for node in nodes:
            if isinstance(node, ast.stmt) and _span(node)[0] <= line <= _span(node)[1]:
                inner = node
                break
        if inner is None:
            break
        chain.append(inner)
        nodes = [child for child in ast.iter_child_nodes(inner) if isinstance(child, ast.stmt)]
    return chain


def statement_at(tree: ast.Module, line: int) -> ast.AST | None:
    """The innermost statement spanning `line` (a compound statement when `line` is its header)."""
    chain = _enclosing(tree, line)
    return chain[-1] if chain else None


def _names_used(stmt: ast.AST) -> list[str]:
    """Names read by the failing statement (for a compound statement, by its header), in source order."""
    if isinstance(stmt, (ast.For, ast.AsyncFor, ast.While, ast.If, ast.With, ast.AsyncWith)):
        header = [getattr(stmt, attr, None) for attr in ("iter", "test")]
        nodes: list[ast.AST] = [part for part in header if isinstance(part, ast.AST)]
        nodes.extend(item.context_expr for item in getattr(stmt, "items", []))
    elif isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Try)):
        nodes = []
    else:
        nodes = [stmt]
    seen: dict[str, None] = {}
    for node in nodes:
        for child in ast.walk(node):
            if isinstance(child, ast.Name):
                seen.setdefault(child.id, None)
    return list(seen)


def _definitions(tree: ast.Module, name: str, before: int) -> list[tuple[int, int]]:
    """Spans that bind `name` in the script (assignments, defs, classes, imports, loop/with targets)."""
    found: list[tuple[int, int]] = []
    for node in ast.walk(tree):
        binds = False
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            binds = node.name == name
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            binds = any((alias.asname or alias.name.split(".")[0]) == name for alias in node.names)
        elif isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            binds = any(isinstance(t, ast.Name) and t.id == name for tg in targets for t in ast.walk(tg))
        elif isinstance(node, (ast.For, ast.AsyncFor)):
            binds = any(isinstance(t, ast.Name) and t.id == name for t in ast.walk(node.target))
            if binds:
                found.append((node.lineno, node.lineno))
                continue
        elif isinstance(node, (ast.With, ast.AsyncWith)):
            binds = any(
                item.optional_vars is not None
                and any(isinstance(t, ast.Name) and t.id == name for t in ast.walk(item.optional_vars))
                for item in node.items
            )
            if binds:
                found.append((node.lineno, node.lineno))
                continue
        elif isinstance(node, ast.arguments):
            continue
        if binds:
            start, end = _span(node)
            if end - start + 1 > DEFINITION_WHOLE_LINES:
                end = start
            found.append((start, end))
    earlier = sorted(span for span in found if span[0] < before)
    chosen = earlier[-MAX_DEFINITIONS_PER_NAME:] or sorted(found)[:1]
    return chosen


def _outline(tree: ast.Module) -> list[int]:
    """Header lines of defs, classes and loops: the shape of the script in a few lines."""
    out = []
    for node in ast.walk(tree):
        if isinstance(
            node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.For, ast.While, ast.With)
        ):
            out.append(node.lineno)
    return sorted(set(out))


# ---------------------------------------------------------------------------------------- rendering
def _render_line(lines: list[str], number: int, failing: set[int]) -> str:
    text = lines[number - 1]
    if len(text) > MAX_LINE_CHARS and number not in failing:
        text = text[: MAX_LINE_CHARS - 3] + "..."
    mark = ">" if number in failing else " "
    return f"{mark}{number:5d} | {text}"


def _render(
    lines: list[str],
    shown: set[int],
    outline: list[int],
    failing: set[int],
    error: str,
    frames: list[ScriptFrame],
    script_name: str,
) -> str:
    parts = [f"Error:\n{error}"]
    if frames:
        where = "\n".join(f"  line {f.line}" + (f" in {f.function}" if f.function else "") for f in frames)
        parts.append(f"Traceback frames in {script_name} (outermost first, the last one failed):\n{where}")
    else:
        parts.append(f"The traceback names no line of {script_name}.")
    body: list[str] = []
    previous = 0
    for number in sorted(shown):
        if previous and number > previous + 1:
            body.append("      ...")
        body.append(_render_line(lines, number, failing))
        previous = number
    if previous and previous < len(lines):
        body.append("      ...")
    parts.append(
        f"Numbered excerpt of {script_name} ({len(lines)} lines; '>' marks the failing lines; "
        "lines not shown are unchanged):\n" + "\n".join(body)
    )
    rest = [n for n in outline if n not in shown]
    if rest:
        parts.append(
            "Outline of the rest (headers only):\n"
            + "\n".join(f"{n:6d} | {lines[n - 1].strip()[:100]}" for n in rest)
        )
    return "\n\n".join(parts) + "\n"


def _frame_lines(tree: ast.Module | None, frame_line: int, window: int, n_lines: int) -> set[int]:
    """The enclosing function (whole if short) or a window around the frame, plus its block headers."""
    lo, hi = max(1, frame_line - window), min(n_lines, frame_line + window)
    shown = set(range(lo, hi + 1))
    if tree is None:
        return shown
    chain = _enclosing(tree, frame_line)
    for node in chain:
        start, end = _span(node)
        shown.add(node.lineno)  # every enclosing header: the model sees which loop/def it is in
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and end - start + 1 <= min(
            FUNCTION_WHOLE_LINES, 4 * window + 1
        ):
            shown.update(range(start, end + 1))
    stmt = chain[-1] if chain else None
    if stmt is not None and not isinstance(stmt, (ast.FunctionDef, ast.ClassDef, ast.For, ast.While, ast.If)):
        start, end = _span(stmt)
        if end - start < 2 * window + 1:
            shown.update(range(start, end + 1))  # the whole failing statement, even a multi-line call
    return {n for n in shown if 1 <= n <= n_lines}


def build_fix_context(
    script: str, traceback: str, *, script_path: str = "train.py", max_tokens: int = 2500
) -> FixContext:
    """The focused context for fixing `script` after `traceback`, at most ~`max_tokens` tokens.

    `traceback` may be a whole log tail: its last fatal traceback is used. When the traceback names no
    line of the script, the excerpt is the head of the script.
    """
    lines = script.splitlines()
    n_lines = len(lines)
    block = traceback_text(traceback) or traceback
    error = error_text(block)
    frames = script_frames(block, script_path, n_lines)
    failing = [f.line for f in frames]
    failing_set = set(failing)
    tree = _parse(script)
    name = os.path.basename(script_path) or "train.py"

    definitions: list[tuple[int, int]] = []
    if tree is not None and frames:
        for frame in reversed(frames):
            stmt = statement_at(tree, frame.line)
            if stmt is None:
                continue
            for used in _names_used(stmt):
                definitions.extend(_definitions(tree, used, frame.line))
    outline_all = _outline(tree) if tree is not None else []

    text = ""
    shown: set[int] = set()
    if n_lines <= WHOLE_SCRIPT_LINES:
        # A short script is shown whole: its imports and setup are context too, and cost little.
        shown = set(range(1, n_lines + 1))
        text = _render(lines, shown, [], failing_set, error, frames, name)
        if estimate_tokens(text) <= max_tokens:
            return FixContext(text, sorted(shown), error, failing, estimate_tokens(text), frames)
    for window in WINDOWS:
        for with_defs, outline_limit in ((True, MAX_OUTLINE), (True, 15), (False, 0)):
            shown = set()
            if frames:
                # The innermost frame gets the full window, outer frames a narrower one.
                for i, frame in enumerate(reversed(frames)):
                    shown |= _frame_lines(
                        tree, frame.line, window if i == 0 else max(1, window // 3), n_lines
                    )
            else:
                shown = set(range(1, min(n_lines, 8 * window) + 1))
            if with_defs:
                for start, end in definitions:
                    shown.update(range(start, end + 1))
            outline = _nearest(outline_all, failing, outline_limit)
            text = _render(lines, shown, outline, failing_set, error, frames, name)
            if estimate_tokens(text) <= max_tokens:
                return FixContext(text, sorted(shown), error, failing, estimate_tokens(text), frames)
    return FixContext(text, sorted(shown), error, failing, estimate_tokens(text), frames)


def _nearest(outline: list[int], failing: list[int], limit: int) -> list[int]:
    """The `limit` outline headers closest to the failing lines, in line order."""
    if limit <= 0:
        return []
    if not failing:
        return outline[:limit]
    ranked = sorted(outline, key=lambda n: min(abs(n - f) for f in failing))
    return sorted(ranked[:limit])
