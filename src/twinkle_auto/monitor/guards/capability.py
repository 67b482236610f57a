"""Capability guard: what the patched script can *do* that the original could not.

A fix is code an LLM wrote from text an untrusted process printed. Whatever the patch says it fixes, it
must not give the script a new way to act on the machine: start processes, talk to the network, delete
files or change permissions, run code built at run time, load pickles, write outside the run folder, or
change the environment. The guard reads both versions with `ast` and lists every *use* of such a
capability: each reference, with aliases resolved (`import os as o`, `from os import system as s`,
`sp = subprocess`, `f = os.system`) and obfuscation folded (`getattr(__import__("o"+"s"), "sys"+"tem")`,
`__builtins__["exec"]`, `sys.modules["os"]`, base64/rot13/hex-decoded names). A use the original already
had (same capability, same call) is not new; a new call site of an old capability is. Anything it cannot
resolve is refused, not guessed: a computed `getattr` name, a module passed around as a value.
"""

from __future__ import annotations

import ast
from collections import Counter
from dataclasses import dataclass

from twinkle_auto.monitor.guards.ast_util import (
    dotted,
    index,
    keyword,
    snippet,
)
from twinkle_auto.monitor.guards.catalog import (
    COPY_FUNCTIONS,
    DANGEROUS_ATTRIBUTES,
    DELETE_METHODS,
    ENV_METHODS,
    ENVIRON,
    LINK_FUNCTIONS,
    OPEN_FUNCTIONS,
    OUTPUT_KEYWORDS,
    PATH_CONSTRUCTORS,
    PATH_METHODS_SAME,
    PATH_MOVE_METHODS,
    PERMISSION_METHODS,
    PURE_MODULES,
    RISKY_MODULES,
    SAFE_YAML_LOADERS,
    SAVE_FUNCTIONS,
    SAVE_METHODS,
    TRUSTED_MODULES,
    URL,
    classify,
    under,
)
from twinkle_auto.monitor.guards.findings import GuardFinding
from twinkle_auto.monitor.guards.folding import fold_str
from twinkle_auto.monitor.guards.paths import RunPaths, path_root
from twinkle_auto.monitor.guards.resolve import Resolver
from twinkle_auto.monitor.guards.rules import RuleSet, Scripts

rules = RuleSet("unsafe")


def _string_args(node: ast.Call) -> list[str]:
    values = [*node.args, *(kw.value for kw in node.keywords)]
    return [v.value for v in values if isinstance(v, ast.Constant) and isinstance(v.value, str)]


@dataclass(frozen=True)
class Use:
    """One use of a capability: `rule` is the finding's rule id, `what` names it for a person."""

    rule: str
    what: str
    signature: str
    line: int


# -------------------------------------------------------------------------------------- the analysis
class _Analysis:
    """Every capability use in one script."""

    def __init__(self, tree: ast.AST, run_dir: str | None, roots: set[str] | None = None) -> None:
        self.tree = tree
        self.r = Resolver(tree)
        self.writes: list[tuple[ast.Call, ast.AST | None, str]] = []
        self.dirs: list[ast.AST] = []
        self._find_writes()
        self.paths = RunPaths(self.r, roots if roots is not None else set(), run_dir)

    # --- writes
    def _find_writes(self) -> None:
        for node in index(self.tree).of_type(ast.Call):
            assert isinstance(node, ast.Call)
            func = self.r.resolve(node.func)
            target = self._write_target(node, func)
            if target is not None:
                self.writes.append((node, target[0], target[1]))
                continue
            if func & {"os.makedirs", "os.mkdir"} and node.args:
                self.dirs.append(node.args[0])
            elif isinstance(node.func, ast.Attribute) and node.func.attr == "mkdir":
                self.dirs.append(node.func.value)
            for kw in node.keywords:
                if kw.arg in OUTPUT_KEYWORDS:
                    self.writes.append((node, kw.value, f"{kw.arg}={snippet(kw.value, 40)}"))

    def _write_target(self, node: ast.Call, func: frozenset[str]) -> tuple[ast.AST | None, str] | None:
        def arg(position: int | None, name: str | None) -> ast.AST | None:
            if position is not None and len(node.args) > position:
                return node.args[position]
            return keyword(node, name) if name else None

        if func & OPEN_FUNCTIONS:
            mode_node = arg(1, "mode")
            mode = "r" if mode_node is None else fold_str(mode_node, self.r.constants)
            if mode is None or set(mode) & set("wax+"):
                return arg(0, "file") or arg(0, "filename"), snippet(node, 50)
            return None
        if "os.open" in func:
            flags = arg(1, "flags")
            if flags is not None and self.r.resolve(flags) == {"os.O_RDONLY"}:
                return None
            return arg(0, "path"), snippet(node, 50)
        if func & COPY_FUNCTIONS or func & LINK_FUNCTIONS:
            return arg(1, "dst"), snippet(node, 50)
        for name in func:
            if name in SAVE_FUNCTIONS:
                target = arg(*SAVE_FUNCTIONS[name])
                return (target, snippet(node, 50)) if target is not None else None
        if isinstance(node.func, ast.Attribute) and not func:
            method = node.func.attr
            if method in SAVE_METHODS:
                position, name = SAVE_METHODS[method]
                if position is None:
                    return node.func.value, snippet(node, 50)
                target = arg(position, name)
                return (target, snippet(node, 50)) if target is not None else None
            if method == "open" and self._path_like(node.func.value):
                mode = fold_str(arg(0, "mode"), self.r.constants) if arg(0, "mode") is not None else "r"
                if mode is None or set(mode) & set("wax+"):
                    return node.func.value, snippet(node, 50)
            if method == "touch" and self._path_like(node.func.value):
                return node.func.value, snippet(node, 50)
        return None

    def _path_like(self, node: ast.AST) -> bool:
        """Provably a pathlib path: built by Path(...), a `/` join on one, or a name assigned one."""
        if isinstance(node, ast.Call):
            return bool(self.r.resolve(node.func) & PATH_CONSTRUCTORS - {"os.path.join"}) or (
                isinstance(node.func, ast.Attribute)
                and node.func.attr in PATH_METHODS_SAME | {"joinpath"}
                and self._path_like(node.func.value)
            )
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div):
            return self._path_like(node.left)
        if isinstance(node, ast.Attribute) and node.attr == "parent":
            return self._path_like(node.value)
        if isinstance(node, ast.Name) and node.id in self.r.constants:
            return self._path_like(self.r.constants[node.id])
        return False

    def output_roots(self) -> set[str]:
        """Names this script writes under: a patch may keep writing there."""
        roots = {path_root(target) for _, target, _ in self.writes} | {path_root(d) for d in self.dirs}
        return {root for root in roots if root}

    # --- every use
    def uses(self, *, all_writes: bool = False) -> list[Use]:
        """Capability uses; writes only when not provably inside the run folder (all of them if asked)."""
        result: list[Use] = []
        idx = index(self.tree)
        kinds = (ast.Name, ast.Attribute, ast.Subscript, ast.Call, ast.AugAssign)
        for node in [node for kind in kinds for node in idx.of_type(kind)]:
            if isinstance(node, (ast.Name, ast.Attribute, ast.Subscript, ast.Call)):
                result.extend(self._reference(node))
            if isinstance(node, ast.Call):
                result.extend(self._call_checks(node))
            if (
                isinstance(node, ast.Attribute)
                and node.attr in DANGEROUS_ATTRIBUTES
                and not any(classify(name) for name in self.r.resolve(node))
            ):
                result.append(self._use("dynamic-code", f"access to {node.attr}", node))
            result.extend(self._env(node))
        for call, target, text in self.writes:
            if all_writes or not self.paths.inside(target):
                result.append(
                    Use(
                        "write-outside-run",
                        f"a write not provably inside the run folder: {text}",
                        f"write:{ast.unparse(call)}",
                        call.lineno,
                    )
                )
        return result

    def _use(self, rule: str, what: str, node: ast.AST) -> Use:
        return Use(
            rule, what, f"{rule}:{what}:{ast.unparse(self._context(node))}", getattr(node, "lineno", 0)
        )

    def _context(self, node: ast.AST) -> ast.AST:
        """The call (or statement) a use sits in: what is compared between old and new."""
        current = node
        while current in self.r.parent_of:
            if isinstance(current, (ast.Call, ast.stmt)):
                return current
            current = self.r.parent_of[current]
        return current

    def _reference(self, node: ast.AST) -> list[Use]:
        if isinstance(node, (ast.Name, ast.Attribute, ast.Subscript)) and not isinstance(node.ctx, ast.Load):
            return []
        names = self.r.resolve(node)
        found = sorted({(rule, name) for name in names if (rule := classify(name))})
        parent = self.r.parent_of.get(node)
        if found:
            chained = isinstance(parent, (ast.Attribute, ast.Subscript)) and parent.value is node
            if chained and any(classify(name) for name in self.r.resolve(parent)):
                return []  # the longer chain is the use: `subprocess.run`, not `subprocess`
            rule, name = found[0]
            called = isinstance(parent, ast.Call) and parent.func is node
            return [self._use(rule, f"{'a call to' if called else 'a reference to'} {name}", node)]
        if isinstance(node, ast.Name) and names & RISKY_MODULES and self._escapes(node, parent):
            module = sorted(names & RISKY_MODULES)[0]
            return [self._use("dynamic-code", f"the {module} module used as a value", node)]
        return []

    def _escapes(self, node: ast.Name, parent: ast.AST | None) -> bool:
        """A module object that leaves an attribute chain could reach any of its functions unseen."""
        if isinstance(parent, (ast.Attribute, ast.Subscript)) and parent.value is node:
            return False
        inspected = {"getattr", "hasattr", "vars", "id", "print", "repr", "type"}
        if (
            isinstance(parent, ast.Call)
            and parent.args
            and parent.args[0] is node
            and self.r.resolve(parent.func) & inspected
        ):
            return False
        if isinstance(parent, (ast.Assign, ast.AnnAssign, ast.NamedExpr)) and parent.value is node:
            targets = parent.targets if isinstance(parent, ast.Assign) else [parent.target]
            return not all(isinstance(target, ast.Name) for target in targets)
        return not isinstance(parent, (ast.Compare, ast.Expr))

    def _call_checks(self, node: ast.Call) -> list[Use]:
        func = self.r.resolve(node.func)
        result: list[Use] = []
        attribute_functions = func & {"getattr", "setattr", "delattr"}
        if attribute_functions and len(node.args) >= 2 and fold_str(node.args[1], self.r.constants) is None:
            which = sorted(attribute_functions)[0]
            result.append(self._use("dynamic-code", f"{which} with a computed name", node))
        getter = func & {"operator.attrgetter", "operator.methodcaller"}
        if getter and (not node.args or fold_str(node.args[0], self.r.constants) is None):
            result.append(self._use("dynamic-code", "operator.attrgetter with a computed name", node))
        if "vars" in func and not node.args:
            result.append(self._use("dynamic-code", "a call to vars()", node))
        importer = func & {"__import__", "importlib.import_module"}
        if importer and node.args and fold_str(node.args[0], self.r.constants) is None:
            result.append(self._use("dynamic-code", "an import of a computed module name", node))
        remote = keyword(node, "trust_remote_code")
        if remote is not None and not (isinstance(remote, ast.Constant) and not remote.value):
            result.append(self._use("dynamic-code", "trust_remote_code (runs code from the model hub)", node))
        url = next((text for text in _string_args(node) if URL.match(text)), None)
        if url is not None:
            result.append(self._use("network", f"a call to a URL: {snippet(node, 50)}", node))
        if "torch.load" in func:
            weights_only = keyword(node, "weights_only")
            if (isinstance(weights_only, ast.Constant) and weights_only.value is False) or keyword(
                node, "pickle_module"
            ):
                result.append(self._use("deserialize", "a pickle load: torch.load(weights_only=False)", node))
        if "numpy.load" in func:
            allow = keyword(node, "allow_pickle")
            if allow is not None and not (isinstance(allow, ast.Constant) and allow.value is False):
                result.append(self._use("deserialize", "a pickle load: numpy.load(allow_pickle=True)", node))
        if "yaml.load" in func or "yaml.load_all" in func:
            loader = keyword(node, "Loader") or (node.args[1] if len(node.args) > 1 else None)
            if loader is None or dotted(loader).rsplit(".", 1)[-1] not in SAFE_YAML_LOADERS:
                result.append(self._use("deserialize", "an unsafe yaml.load", node))
        if isinstance(node.func, ast.Attribute) and not func:
            method = node.func.attr
            if method in DELETE_METHODS or (method in PATH_MOVE_METHODS and self._path_like(node.func.value)):
                result.append(
                    self._use("file-delete", f"a call to .{method}() on {snippet(node.func.value, 30)}", node)
                )
            elif method in PERMISSION_METHODS:
                result.append(
                    self._use(
                        "permission-change", f"a call to .{method}() on {snippet(node.func.value, 30)}", node
                    )
                )
        return result

    def _env(self, node: ast.AST) -> list[Use]:
        target: ast.AST | None = None
        if isinstance(node, ast.Subscript) and isinstance(node.ctx, (ast.Store, ast.Del)):
            target = node.value
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, (ast.Store, ast.Del)):
            target = node
        elif isinstance(node, ast.AugAssign):
            target = node.target
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in ENV_METHODS
        ):
            target = node.func.value
        if target is None or not self.r.resolve(target) & ENVIRON:
            return []
        statement = self._statement(node)
        return [
            Use(
                "env-mutation",
                f"an environment change: {snippet(statement, 50)}",
                f"env:{ast.unparse(statement)}",
                statement.lineno,
            )
        ]

    def _statement(self, node: ast.AST) -> ast.stmt:
        current = node
        while not isinstance(current, ast.stmt) and current in self.r.parent_of:
            current = self.r.parent_of[current]
        return current


# ------------------------------------------------------------------------------------------- imports
def _imports(tree: ast.AST) -> list[tuple[str, int]]:
    result = []
    for node in index(tree).nodes:
        if isinstance(node, ast.Import):
            result.extend((alias.name, node.lineno) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            result.append(("." * node.level + (node.module or ""), node.lineno))
    return result


def _pure(module: str) -> bool:
    return module.split(".")[0] in PURE_MODULES or under(module, TRUSTED_MODULES)


def _capability_module(module: str) -> bool:
    return classify(module) is not None or under(module, RISKY_MODULES - {"io", "pathlib", "sys", "os"})


def _new_imports(old: ast.AST, new: ast.AST) -> list[tuple[str, int]]:
    """Modules the patch imports that the original did not (a submodule of a package it had is not new,
    unless the submodule itself is a capability such as `torch.hub` or `urllib.request`)."""
    old_modules = {module for module, _ in _imports(old)}
    old_tops = {module.split(".")[0] for module in old_modules if not module.startswith(".")}
    seen: set[str] = set()
    result = []
    for module, line in _imports(new):
        if module in old_modules or module in seen or _pure(module):
            continue
        if module.split(".")[0] in old_tops and not _capability_module(module):
            continue
        seen.add(module)
        result.append((module, line))
    return result


# ------------------------------------------------------------------------------------------- rules
@rules.rule("new-import", needs_old=False)
def rule_no_new_import(s: Scripts) -> list[GuardFinding]:
    """A new module is new code the script can run; only modules that merely compute are let in."""
    assert s.new_tree is not None
    return [
        rules.finding("new-import", f"adds an import of {module} (line {line})", line)
        for module, line in _new_imports(s.old_capability_tree, s.new_tree)
    ]


@rules.rule("capability", needs_old=False)
def rule_no_new_capability(s: Scripts) -> list[GuardFinding]:
    """A use of a process, network, deletion, permission, environment, dynamic-code or write capability
    that the original did not have at that call site."""
    assert s.new_tree is not None
    old = _Analysis(s.old_capability_tree, s.run_dir)
    new = _Analysis(s.new_tree, s.run_dir, roots=old.output_roots())
    remaining = Counter(use.signature for use in old.uses(all_writes=True))
    findings: list[GuardFinding] = []
    for use in sorted(new.uses(), key=lambda u: u.line):
        if remaining[use.signature] > 0:
            remaining[use.signature] -= 1
            continue
        finding = rules.finding(use.rule, f"adds {use.what} (line {use.line})", use.line)
        if finding not in findings:
            findings.append(finding)
    findings.extend(_redirected_outputs(s, old, new))
    return findings


def _redirected_outputs(s: Scripts, old: _Analysis, new: _Analysis) -> list[GuardFinding]:
    """An output dir the script already wrote to, now pointed elsewhere: its old writes would follow."""
    assert s.new_tree is not None
    old_assigned = _assigned_roots(s.old_capability_tree, old.output_roots())
    old_values = {ast.unparse(value) for values in old_assigned.values() for value in values}
    findings = []
    for name, values in _assigned_roots(s.new_tree, old.output_roots()).items():
        for value in values:
            if ast.unparse(value) in old_values or new.paths.inside(value):
                continue
            findings.append(
                rules.finding(
                    "write-outside-run",
                    f"adds a write not provably inside the run folder: output dir {name} set to {snippet(value, 40)} "
                    f"(line {value.lineno})",
                    value.lineno,
                )
            )
    return findings


def _assigned_roots(tree: ast.AST, roots: set[str]) -> dict[str, list[ast.expr]]:
    result: dict[str, list[ast.expr]] = {}
    for node in index(tree).nodes:
        if isinstance(node, (ast.Assign, ast.AnnAssign)) and node.value is not None:
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                text = dotted(target) or (ast.unparse(target) if isinstance(target, ast.Subscript) else "")
                if text in roots:
                    result.setdefault(text, []).append(node.value)
    return result


def capabilities(tree: ast.AST, *, run_dir: str | None = None) -> list[GuardFinding]:
    """Everything a whole script can do, for a person approving it: imports, then uses by line."""
    findings = []
    modules: set[str] = set()
    for module, line in _imports(tree):
        if not _pure(module) and module not in modules:
            modules.add(module)
            findings.append(rules.finding("new-import", f"imports {module} (line {line})", line))
    uses = sorted(_Analysis(tree, run_dir).uses(), key=lambda u: u.line)
    seen: set[tuple[str, int]] = set()
    for use in uses:
        if (use.what, use.line) not in seen:
            seen.add((use.what, use.line))
            findings.append(rules.finding(use.rule, f"{use.what} (line {use.line})", use.line))
    return findings
