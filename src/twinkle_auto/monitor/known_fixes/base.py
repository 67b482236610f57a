"""What every recipe of the catalogue shares: the crash it reads, the fix it returns, the registry,
and edits of the script at ast positions (so an edit touches only the text it means to)."""

from __future__ import annotations

import ast
import re
from collections.abc import Callable
from dataclasses import dataclass

from twinkle_auto.monitor.fix_context import ScriptFrame
from twinkle_auto.monitor.guards.ast_util import call_name as callee_name

__all__ = [
    "Catalogue",
    "Crash",
    "KnownFix",
    "Recipe",
    "SourceText",
    "append_suffix",
    "bindings_of",
    "callee_name",
    "failing_statement",
    "frame_statements",
    "in_scope",
    "last_assignment",
    "line_of",
    "parents_of",
    "collector",
    "scope_of",
    "statement_at",
]


@dataclass
class KnownFix:
    """A repair from the catalogue: which recipe, its public source, what it changed, the new script."""

    name: str
    source: str
    summary: str
    new_script: str


@dataclass(frozen=True)
class Crash:
    script: str
    tree: ast.Module
    error: str
    frames: list[ScriptFrame]


Recipe = Callable[[Crash], KnownFix | None]
Catalogue = list[tuple[str, Recipe]]
"""(name, recipe) pairs, in the order they are tried."""


def collector(catalogue: Catalogue) -> Callable[[str], Callable[[Recipe], Recipe]]:
    """A decorator `@recipe("name")` that appends to one module's catalogue, in definition order."""

    def recipe(name: str) -> Callable[[Recipe], Recipe]:
        def register(fn: Recipe) -> Recipe:
            catalogue.append((name, fn))
            return fn

        return register

    return recipe


# ---------------------------------------------------------------------------------- source editing
class SourceText:
    """Edits of the script at ast positions (ast columns are UTF-8 byte offsets), applied bottom-up."""

    def __init__(self, script: str) -> None:
        self.script = script
        self.lines = script.splitlines(keepends=True)
        self.starts = [0]
        for line in self.lines:
            self.starts.append(self.starts[-1] + len(line))
        self.edits: list[tuple[int, int, str]] = []

    def offset(self, lineno: int, col: int) -> int:
        line = self.lines[lineno - 1]
        return self.starts[lineno - 1] + len(line.encode()[:col].decode(errors="ignore"))

    def start(self, node: ast.AST) -> int:
        return self.offset(node.lineno, node.col_offset)  # type: ignore[attr-defined]

    def end(self, node: ast.AST) -> int:
        return self.offset(node.end_lineno, node.end_col_offset)  # type: ignore[attr-defined]

    def replace(self, start: int, end: int, text: str) -> None:
        self.edits.append((start, end, text))

    def result(self) -> str:
        out = self.script
        for start, end, text in sorted(self.edits, reverse=True):
            out = out[:start] + text + out[end:]
        return out


def statement_at(tree: ast.Module, line: int) -> ast.stmt | None:
    """The innermost simple statement (or compound header) spanning `line`."""
    best: ast.stmt | None = None
    for node in ast.walk(tree):
        spans = isinstance(node, ast.stmt) and node.lineno <= line <= (node.end_lineno or node.lineno)
        if spans and (best is None or node.lineno >= best.lineno):
            best = node
    return best


def failing_statement(crash: Crash) -> ast.stmt | None:
    """The statement at the innermost script frame: where the script failed (an outer frame's call
    did not fail itself), or None when no frame is in the script."""
    statements = frame_statements(crash)
    return statements[0] if statements else None


def frame_statements(crash: Crash) -> list[ast.stmt]:
    """Statements at the script's traceback frames, innermost first."""
    out = []
    for frame in reversed(crash.frames):
        stmt = statement_at(crash.tree, frame.line)
        if stmt is not None and stmt not in out:
            out.append(stmt)
    return out


def line_of(node: ast.AST) -> int:
    return node.lineno  # type: ignore[attr-defined]


def last_assignment(tree: ast.Module, name: str, before: int) -> ast.Assign | None:
    found: ast.Assign | None = None
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Assign) and node.lineno < before and len(node.targets) == 1):
            continue
        target = node.targets[0]
        named = isinstance(target, ast.Name) and target.id == name
        if named and (found is None or node.lineno > found.lineno):
            found = node
    return found


# ------------------------------------------------------------ scopes, bindings, appended method calls
def parents_of(tree: ast.Module) -> dict[ast.AST, ast.AST]:
    return {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}


def scope_of(node: ast.AST, parents: dict[ast.AST, ast.AST]) -> ast.AST:
    """The function (or the module) a node runs in: names are bound per scope."""
    while node in parents:
        node = parents[node]
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            return node
    return node


def in_scope(scope: ast.AST) -> list[ast.AST]:
    """Every node of `scope` outside nested functions and classes (their names are their own)."""
    out: list[ast.AST] = []
    todo = list(ast.iter_child_nodes(scope))
    while todo:
        node = todo.pop()
        out.append(node)
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)):
            todo.extend(ast.iter_child_nodes(node))
    return out


def bindings_of(scope: ast.AST, name: str) -> list[ast.stmt]:
    """Statements of `scope` that bind `name` (assignments, augmented ones, for targets), by line."""
    found = []
    for node in in_scope(scope):
        if isinstance(node, ast.Assign):
            targets = [t for target in node.targets for t in ast.walk(target)]
        elif isinstance(node, (ast.AugAssign, ast.AnnAssign, ast.For, ast.AsyncFor)):
            targets = list(ast.walk(node.target))
        else:
            continue
        if any(isinstance(t, ast.Name) and t.id == name for t in targets):
            found.append(node)
    return sorted(found, key=line_of)


def append_suffix(text: SourceText, node: ast.AST, suffix: str) -> bool:
    """Append `suffix` (".mean()") to the expression `node`, parenthesising it unless it is one operand
    or already stands in its own parentheses; False when its source cannot be located."""
    segment = ast.get_source_segment(text.script, node)
    if segment is None:
        return False
    start, end = text.start(node), text.end(node)
    if isinstance(node, (ast.Name, ast.Attribute, ast.Call, ast.Subscript)):
        text.replace(end, end, suffix)
        return True
    before = text.script[:start].rstrip()
    after = text.script[end:].lstrip()
    own_parens = (
        before.endswith("(")
        and after.startswith(")")
        and not re.search(r"[\w)\]]\Z", before[:-1].rstrip(" \t"))
    )
    if own_parens:
        close = text.script.index(")", end) + 1
        text.replace(close, close, suffix)
    else:
        text.replace(start, end, f"({segment}){suffix}")
    return True
