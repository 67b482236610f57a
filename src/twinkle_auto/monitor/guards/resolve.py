"""Name resolution for the capability guard: what an expression refers to, aliases and obfuscation seen through.

`Resolver(tree).resolve(expr)` answers with dotted names (`o.system` → `os.system`), following imports
(`import os as o`, `from os import system as s`), assignments (`sp = subprocess`, `f = os.system`),
`getattr` with a name built from literals, `__import__`/`importlib.import_module`, `sys.modules[...]`,
`__builtins__[...]`, `vars(module)[...]` and `module.__dict__[...]`.
"""

from __future__ import annotations

import ast

from twinkle_auto.monitor.guards.ast_util import index, keyword, parents, single_assignments
from twinkle_auto.monitor.guards.catalog import BUILTIN_NAMES
from twinkle_auto.monitor.guards.folding import fold_str


class Resolver:
    """Resolves expressions to the dotted names of what they refer to (`o.system` → `os.system`).

    Flow-insensitive on purpose: a name assigned a module anywhere refers to it everywhere, so no order
    of statements hides an alias. Results are sets because a name can be bound to several things.
    """

    def __init__(self, tree: ast.AST) -> None:
        self.tree = tree
        self.nodes = index(tree).nodes
        self.parent_of = parents(tree)
        self.constants = single_assignments(tree)
        self.aliases: dict[str, set[str]] = {}
        self.star_modules: list[str] = []
        self.defined: set[str] = set()
        self.stored: set[str] = set()
        self.memo: dict[int, frozenset[str]] = {}
        self._collect()

    def _collect(self) -> None:
        assignments: list[tuple[str, ast.expr]] = []
        idx = index(self.tree)
        wanted = (
            ast.Import,
            ast.ImportFrom,
            ast.FunctionDef,
            ast.AsyncFunctionDef,
            ast.ClassDef,
            ast.Assign,
            ast.AnnAssign,
            ast.NamedExpr,
            ast.Name,
            ast.arg,
        )
        for node in [node for kind in wanted for node in idx.of_type(kind)]:
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.asname:
                        self.aliases.setdefault(alias.asname, set()).add(alias.name)
                    else:
                        top = alias.name.split(".")[0]
                        self.aliases.setdefault(top, set()).add(top)
            elif isinstance(node, ast.ImportFrom):
                module = "." * node.level + (node.module or "")
                for alias in node.names:
                    if alias.name == "*":
                        self.star_modules.append(module)
                    else:
                        self.aliases.setdefault(alias.asname or alias.name, set()).add(
                            f"{module}.{alias.name}"
                        )
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                self.defined.add(node.name)
            elif isinstance(node, ast.Assign):
                for target in node.targets:
                    assignments.extend(_pairs(target, node.value))
            elif isinstance(node, (ast.AnnAssign, ast.NamedExpr)) and node.value is not None:
                assignments.extend(_pairs(node.target, node.value))
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                self.stored.add(node.id)
            elif isinstance(node, ast.arg):
                self.stored.add(node.arg)
        for _ in range(4):  # aliases of aliases: `a = os; b = a`
            changed = False
            self.memo.clear()
            for name, value in assignments:
                targets = self.resolve(value)
                known = self.aliases.setdefault(name, set())
                if not targets <= known:
                    known |= targets
                    changed = True
            if not changed:
                break
        self.memo.clear()

    def resolve(self, node: ast.AST) -> frozenset[str]:
        key = id(node)
        if key not in self.memo:
            self.memo[key] = frozenset()  # cycles resolve to nothing
            self.memo[key] = frozenset(_normal(name) for name in self._resolve(node))
        return self.memo[key]

    def _resolve(self, node: ast.AST) -> set[str]:
        if isinstance(node, ast.Name):
            return self._name(node.id)
        if isinstance(node, ast.Attribute):
            if node.attr == "__dict__":
                return set()
            return {f"{base}.{node.attr}" for base in self.resolve(node.value)}
        if isinstance(node, ast.Subscript):
            return self._subscript(node)
        if isinstance(node, ast.Call):
            return self._call(node)
        if isinstance(node, ast.NamedExpr):
            return set(self.resolve(node.value))
        if isinstance(node, ast.IfExp):
            return set(self.resolve(node.body) | self.resolve(node.orelse))
        if isinstance(node, ast.BoolOp):
            return {name for value in node.values for name in self.resolve(value)}
        if isinstance(node, ast.Lambda):
            return set()
        return set()

    def _name(self, name: str) -> set[str]:
        if name in self.aliases and self.aliases[name]:
            return set(self.aliases[name])
        if name == "__builtins__":
            return {"builtins"}
        if name in self.defined:
            return set()
        if name in BUILTIN_NAMES:
            return {name}
        if self.star_modules and name not in self.stored and name not in self.aliases:
            return {f"{module}.{name}" for module in self.star_modules}
        return set()

    def _subscript(self, node: ast.Subscript) -> set[str]:
        key = fold_str(node.slice, self.constants)
        value = node.value
        if key is None:
            return set()
        if isinstance(value, ast.Attribute) and value.attr == "__dict__":
            return {f"{base}.{key}" for base in self.resolve(value.value)}
        if isinstance(value, ast.Call):
            func = self.resolve(value.func)
            if func & {"globals", "locals", "vars"} and not value.args:
                return self._name(key)
            if "vars" in func and len(value.args) == 1:
                return {f"{base}.{key}" for base in self.resolve(value.args[0])}
        bases = self.resolve(value)
        if bases & {"sys.modules", "builtins"}:
            return {key}
        return set()

    def _call(self, node: ast.Call) -> set[str]:
        if isinstance(node.func, ast.Lambda):
            return set(self.resolve(node.func.body))
        func = self.resolve(node.func)
        args = node.args
        if "getattr" in func and 2 <= len(args) <= 3:
            key = fold_str(args[1], self.constants)
            return {f"{base}.{key}" for base in self.resolve(args[0])} if key else set()
        if func & {"__import__", "importlib.__import__"} and args:
            key = fold_str(args[0], self.constants)
            if key is None:
                return set()
            return {key} if len(args) >= 4 or keyword(node, "fromlist") is not None else {key.split(".")[0]}
        if "importlib.import_module" in func and args:
            key = fold_str(args[0], self.constants)
            return {key} if key else set()
        if isinstance(node.func, ast.Call) and "operator.attrgetter" in self.resolve(node.func.func):
            inner = node.func.args
            key = fold_str(inner[0], self.constants) if len(inner) == 1 else None
            return {f"{base}.{key}" for base in self.resolve(args[0])} if key and args else set()
        return set()


def _pairs(target: ast.AST, value: ast.expr) -> list[tuple[str, ast.expr]]:
    """(name, value) for each simple name a statement binds: `a = x`, `a, b = x, y`, `a = b = x`."""
    if isinstance(target, ast.Name):
        return [(target.id, value)]
    same_shape = isinstance(target, (ast.Tuple, ast.List)) and isinstance(value, (ast.Tuple, ast.List))
    if same_shape and len(target.elts) == len(value.elts):
        return [pair for t, v in zip(target.elts, value.elts) for pair in _pairs(t, v)]
    return []


def _normal(name: str) -> str:
    while name.startswith("builtins."):
        name = name[len("builtins.") :]
    return name
