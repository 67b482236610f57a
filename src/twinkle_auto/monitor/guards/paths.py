"""Run-folder paths for the capability guard: is a path a script writes to provably inside the run folder?"""

from __future__ import annotations

import ast
import posixpath
import re

from twinkle_auto.monitor.guards.ast_util import call_name, dotted, index
from twinkle_auto.monitor.guards.catalog import (
    OPEN_FUNCTIONS,
    PATH_CONSTRUCTORS,
    PATH_METHODS_SAME,
    PATH_PASSTHROUGH,
)
from twinkle_auto.monitor.guards.folding import fold_str
from twinkle_auto.monitor.guards.resolve import Resolver


class RunPaths:
    """Decides whether a path expression is provably inside the run folder.

    Provable means: a literal relative path without `..` (the script runs in its run folder), a literal
    absolute path under `run_dir`, a path built from a name the original script already wrote to (its
    output dir), or the script's own folder (`os.path.dirname(__file__)`); then joined only with parts
    that cannot climb out (`..`) or restart at the root (an absolute part in a join).
    """

    def __init__(self, resolver: Resolver, roots: set[str], run_dir: str | None) -> None:
        self.r = resolver
        self.roots = roots
        self.run_dir = posixpath.normpath(run_dir) if run_dir else None
        self.runtimes: set[str] = set()
        """Names bound to a TrainingRuntime: its `run_dir` is the run folder by definition."""
        self.handles: set[str] = set()
        """Names bound to an opened file (`with open(...) as f`): writing to them is judged at the open."""
        moved: set[str] = set()
        for node in index(resolver.tree).nodes:
            if (
                isinstance(node, ast.Attribute)
                and node.attr == "run_dir"
                and not isinstance(node.ctx, ast.Load)
            ):
                moved.add(dotted(node.value))  # `rt.run_dir = "/etc"`: no longer the run folder
            elif isinstance(node, ast.Assign) and isinstance(node.value, ast.Call):
                names = {t.id for t in node.targets if isinstance(t, ast.Name)}
                if call_name(node.value) == "TrainingRuntime":
                    self.runtimes |= names
                elif resolver.resolve(node.value.func) & OPEN_FUNCTIONS:
                    self.handles |= names
            elif isinstance(node, ast.withitem) and isinstance(node.optional_vars, ast.Name):
                expr = node.context_expr
                if isinstance(expr, ast.Call) and (
                    resolver.resolve(expr.func) & OPEN_FUNCTIONS
                    or (isinstance(expr.func, ast.Attribute) and expr.func.attr == "open")
                ):
                    self.handles.add(node.optional_vars.id)
        self.runtimes -= moved

    def literal_ok(self, text: str) -> bool:
        parts = re.split(r"[\\/]+", text)
        if ".." in parts or not text:
            return False
        if text.startswith(("/", "\\")):
            return self.run_dir is not None and (posixpath.normpath(text) + "/").startswith(
                self.run_dir + "/"
            )
        return not text.startswith("~") and not re.match(r"^[A-Za-z]:", text)

    def inside(self, node: ast.AST | None, depth: int = 0) -> bool:
        if node is None or depth > 12:
            return False
        text = ast.unparse(node)
        if text in self.roots:
            return True
        if isinstance(node, ast.Name) and node.id in self.handles:
            return True
        if isinstance(node, ast.Attribute) and node.attr == "run_dir" and dotted(node.value) in self.runtimes:
            return True
        folded = fold_str(node, self.r.constants)
        if folded is not None:
            return self.literal_ok(folded)
        if isinstance(node, ast.Name) and node.id in self.r.constants:
            return self.inside(self.r.constants[node.id], depth + 1)
        if isinstance(node, ast.JoinedStr) and node.values:
            first, rest = node.values[0], node.values[1:]
            head = first.value if isinstance(first, ast.FormattedValue) else first
            return self.inside(head, depth + 1) and all(self.tail_ok(part) for part in rest)
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
            return self.inside(node.left, depth + 1) and self.tail_ok(node.right)
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div):
            return self.inside(node.left, depth + 1) and self.part_ok(node.right)
        if isinstance(node, ast.Attribute) and node.attr == "parent":
            return self.script_dir(node.value)
        if isinstance(node, ast.Call):
            func = self.r.resolve(node.func)
            if func & PATH_CONSTRUCTORS and node.args:
                return self.inside(node.args[0], depth + 1) and all(self.part_ok(a) for a in node.args[1:])
            if func & PATH_PASSTHROUGH and len(node.args) == 1:
                return self.inside(node.args[0], depth + 1)
            if "os.path.dirname" in func and len(node.args) == 1:
                return self.script_dir(node.args[0])
            if isinstance(node.func, ast.Attribute):
                method, base = node.func.attr, node.func.value
                if method in PATH_METHODS_SAME - {"with_name"}:
                    return self.inside(base, depth + 1)
                if method == "with_name":
                    return self.inside(base, depth + 1) and all(
                        self.part_ok(a) and "/" not in (fold_str(a, self.r.constants) or "")
                        for a in node.args
                    )
                if method == "joinpath":
                    return self.inside(base, depth + 1) and all(self.part_ok(a) for a in node.args)
        return False

    def script_dir(self, node: ast.AST) -> bool:
        """`__file__`, possibly made absolute: its folder is the run folder (train.py lives there)."""
        if isinstance(node, ast.Name) and node.id == "__file__":
            return True
        if isinstance(node, ast.Call):
            func = self.r.resolve(node.func)
            if func & (PATH_PASSTHROUGH | PATH_CONSTRUCTORS) and len(node.args) == 1:
                return self.script_dir(node.args[0])
            if isinstance(node.func, ast.Attribute) and node.func.attr in ("resolve", "absolute"):
                return self.script_dir(node.func.value)
        return False

    def part_ok(self, node: ast.AST) -> bool:
        """A later part of a join: relative and without `..` when known; a plain runtime name otherwise."""
        folded = fold_str(node, self.r.constants)
        if folded is not None:
            return self.literal_ok(folded)
        if isinstance(node, ast.JoinedStr):
            first = node.values[0] if node.values else None
            return (
                isinstance(first, ast.Constant)
                and self.literal_ok(str(first.value))
                and all(self.tail_ok(part) for part in node.values[1:])
            )
        return isinstance(node, (ast.Name, ast.Attribute))

    def tail_ok(self, node: ast.AST) -> bool:
        """A piece concatenated after the start of a path: it must not add `..`."""
        value = node.value if isinstance(node, ast.FormattedValue) else node
        folded = fold_str(value, self.r.constants)
        if folded is not None:
            return ".." not in re.split(r"[\\/]+", folded)
        if isinstance(value, ast.Call):  # `os.getpid()`, `str(step)`: runtime values built from no text
            return not any(
                isinstance(n, ast.Constant) and isinstance(n.value, (str, bytes)) for n in ast.walk(value)
            )
        return isinstance(value, (ast.Name, ast.Attribute))


def path_root(node: ast.AST | None) -> str | None:
    """The name a path expression starts from (`out_dir` in `os.path.join(out_dir, "x")`)."""
    if node is None:
        return None
    if isinstance(node, (ast.Name, ast.Attribute, ast.Subscript)):
        return ast.unparse(node)
    if isinstance(node, ast.JoinedStr) and node.values and isinstance(node.values[0], ast.FormattedValue):
        return path_root(node.values[0].value)
    if isinstance(node, ast.BinOp):
        return path_root(node.left)
    if isinstance(node, ast.Call):
        if node.args and (dotted(node.func) in ("os.path.join", "Path", "pathlib.Path", "str", "os.fspath")):
            return path_root(node.args[0])
        if isinstance(node.func, ast.Attribute) and node.func.attr in PATH_METHODS_SAME | {"joinpath"}:
            return path_root(node.func.value)
    return None
