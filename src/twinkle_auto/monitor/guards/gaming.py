"""Gaming guards: ways a patch makes a crash vanish without fixing it, judged by meaning, not spelling.

An LLM asked to make a crash go away has cheap ways to succeed that are not fixes: swallow the error,
skip the failing step, end the loop early, cut the number of steps, train on a slice of the data, drop
the records that crash. Each leaves a script that exits 0. Every rule compares the old and the patched
script and complains only about what the patch added, so whatever the user already wrote (their own
``try/except``, their own ``data[:n]``, their own ``if step >= total: break``) is never held against a fix.
"""

from __future__ import annotations

import ast
import re
from collections import Counter
from dataclasses import dataclass

from twinkle_auto.monitor.guards.ast_util import (
    TRY_TYPES,
    Found,
    ancestors,
    call_name,
    calls,
    const,
    dotted,
    effective,
    fmt,
    found,
    index,
    number,
    parents,
    snippet,
    surplus,
    trainer_train_calls,
    training_loops,
)
from twinkle_auto.monitor.guards.findings import GuardFinding
from twinkle_auto.monitor.guards.rules import RuleSet, Scripts

BROAD_EXCEPTIONS = frozenset({"Exception", "BaseException"})
QUIET_CALLS = frozenset(
    {
        "print",
        "log",
        "debug",
        "info",
        "warning",
        "warn",
        "error",
        "exception",
        "critical",
        "print_exc",
        "print_exception",
        "write",
    }
)
"""A handler whose body is only these calls, pass, `...`, continue/break, a constant or a constant
assignment, and never raises, swallows the error."""
EXIT_FUNCTIONS = frozenset({"sys.exit", "exit", "quit", "os._exit"})

WORK_KEYS = frozenset(
    {
        "max_steps",
        "num_train_epochs",
        "epochs",
        "num_epochs",
        "n_epochs",
        "max_epochs",
        "total_steps",
        "steps",
        "n_steps",
        "num_steps",
        "train_steps",
        "max_train_steps",
        "max_samples",
        "num_samples",
        "max_train_samples",
        "num_train_samples",
        "train_size",
        "dataset_size",
        "n_iters",
        "num_iters",
        "iterations",
        "max_iters",
    }
)
"""Settings (assignments, keyword arguments, dict keys, argparse defaults, env defaults) that say how
much work the user asked for, compared case-insensitively with dashes read as underscores."""
DATA_NAME_HINTS = ("data", "train", "sample", "example")
DATA_NAME_TOKENS = frozenset({"ds"})
"""A name is dataset-like if it contains a hint or has a token (split on non-letters) like `ds`."""
DATA_SPLIT_HINTS = ("train", "valid", "test", "eval", "split")
"""`dataset["train"][:100]` cuts a split; `example["text"][:512]` only truncates one field (allowed)."""
DATA_CUT_METHODS = frozenset({"take", "shard", "head"})
"""Methods that keep part of a dataset-like receiver; plus `.select(range(...))` and `Subset(...)`."""

rules = RuleSet("gaming")


# --------------------------------------------------------------------------- swallowing the error
def _is_broad(handler: ast.ExceptHandler) -> bool:
    if handler.type is None:
        return True
    types = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
    return any(dotted(t).rsplit(".", 1)[-1] in BROAD_EXCEPTIONS for t in types)


def _is_quiet(statement: ast.stmt) -> bool:
    """A statement that only reports or skips: what a handler holds when it hides an error."""
    if isinstance(statement, (ast.Pass, ast.Continue, ast.Break)):
        return True
    if isinstance(statement, ast.Return):
        return statement.value is None or isinstance(statement.value, ast.Constant)
    if isinstance(statement, (ast.Assign, ast.AnnAssign)):
        return isinstance(statement.value, ast.Constant)
    if isinstance(statement, ast.Expr):
        value = statement.value
        return isinstance(value, ast.Constant) or (
            isinstance(value, ast.Call) and call_name(value) in QUIET_CALLS
        )
    return False


def _raises(body: list[ast.stmt]) -> bool:
    return any(isinstance(node, ast.Raise) for statement in body for node in ast.walk(statement))


def _trys(tree: ast.AST) -> list[ast.Try]:
    return index(tree).of_type(*TRY_TYPES)  # type: ignore[return-value]


def _wraps_training_loop(tree: ast.AST, node: ast.Try) -> bool:
    idx = index(tree)
    return any(idx.contains(statement, loop) for loop in idx.training_loops for statement in node.body)


def _handler_text(handler: ast.ExceptHandler) -> str:
    head = "except" if handler.type is None else f"except {snippet(handler.type, 30)}"
    if handler.name:
        head += f" as {handler.name}"
    return f"{head}: {snippet(handler.body[0], 30)}"


def _swallowing_handlers(tree: ast.AST) -> list[Found]:
    """Handlers that hide a crash: broad (or around training calls), only quiet statements, no raise.

    A broad handler on a `try` around a whole training loop is left to `rule_no_try_around_loop`,
    so one construct gets one message.
    """
    idx = index(tree)
    result: list[Found] = []
    for node in _trys(tree):
        trains = idx.trains_in(node.body)
        for handler in node.handlers:
            broad = _is_broad(handler)
            quiet = all(_is_quiet(statement) for statement in handler.body)
            if quiet and (broad or trains) and not (broad and _wraps_training_loop(tree, node)):
                result.append(found(handler, text=_handler_text(handler)))
    for node in idx.nodes:
        if isinstance(node, (ast.With, ast.AsyncWith)):
            trains = idx.trains_in(node.body)
            for item in node.items:
                expr = item.context_expr
                if isinstance(expr, ast.Call) and call_name(expr) == "suppress":
                    broad = any(dotted(arg).rsplit(".", 1)[-1] in BROAD_EXCEPTIONS for arg in expr.args)
                    if broad or trains:
                        result.append(found(expr, line=node.lineno, text=f"with {snippet(expr)}"))
    return result


@rules.rule("error-swallowing")
def rule_no_error_swallowing(s: Scripts) -> list[GuardFinding]:
    """`except Exception: pass` makes the crash disappear and the training with it."""
    assert s.old_tree is not None and s.new_tree is not None
    return [
        rules.finding(
            "error-swallowing",
            f"new error swallowing at line {item.line}: `{item.text}` hides the crash instead of fixing it",
            item.line,
        )
        for item in surplus(_swallowing_handlers(s.old_tree), _swallowing_handlers(s.new_tree))
    ]


def _loop_wrapping_trys(tree: ast.AST) -> list[Found]:
    return [
        found(handler, line=node.lineno, text=_handler_text(handler))
        for node in _trys(tree)
        if _wraps_training_loop(tree, node)
        for handler in node.handlers
        if _is_broad(handler) and not _raises(handler.body)
    ]


@rules.rule("try-around-loop")
def rule_no_try_around_loop(s: Scripts) -> list[GuardFinding]:
    """A broad handler around the whole loop that does not re-raise ends a failed run as a success."""
    assert s.old_tree is not None and s.new_tree is not None
    return [
        rules.finding(
            "try-around-loop",
            f"new try/except around the training loop at line {item.line} catches everything without "
            f"re-raising (`{item.text}`); the crash would be hidden",
            item.line,
        )
        for item in surplus(_loop_wrapping_trys(s.old_tree), _loop_wrapping_trys(s.new_tree))
    ]


# ------------------------------------------------------------------------------------ early exits
def _exits_with_zero(args: list[ast.expr]) -> bool:
    return not args or (len(args) == 1 and isinstance(args[0], ast.Constant) and args[0].value in (0, None))


def _is_success_exit(node: ast.AST) -> bool:
    """`sys.exit()`, `sys.exit(0)`, `os._exit(0)`, `exit()`, `raise SystemExit`: status 0, looks done."""
    if isinstance(node, ast.Call):
        return dotted(node.func) in EXIT_FUNCTIONS and _exits_with_zero(node.args)
    if isinstance(node, ast.Raise) and node.exc is not None:
        if isinstance(node.exc, ast.Call):
            return dotted(node.exc.func) == "SystemExit" and _exits_with_zero(node.exc.args)
        return dotted(node.exc) == "SystemExit"
    return False


def _success_exits(tree: ast.AST) -> list[Found]:
    """Exits with status 0 where they cut training short: in a handler, in or before the loop."""
    parent_of = parents(tree)
    loops = training_loops(tree)
    ends = [node.end_lineno or node.lineno for node in [*loops, *trainer_train_calls(tree)]]
    last_training_line = max(ends, default=0)
    result = []
    for node in index(tree).nodes:
        if not _is_success_exit(node):
            continue
        chain = list(ancestors(node, parent_of))
        if any(isinstance(a, ast.ExceptHandler) for a in chain):
            where = "inside an except handler"
        elif any(a in loops for a in chain):
            where = "inside the training loop"
        elif node.lineno <= last_training_line:  # type: ignore[attr-defined]
            where = "before training ends"
        else:
            continue
        result.append(Found(f"{where}:{ast.unparse(node)}", node.lineno, f"`{snippet(node)}` {where}"))  # type: ignore[attr-defined]
    return result


@rules.rule("early-exit")
def rule_no_early_exit(s: Scripts) -> list[GuardFinding]:
    """`sys.exit(0)` before or inside the loop, or in a handler, reports success for unfinished work."""
    assert s.old_tree is not None and s.new_tree is not None
    return [
        rules.finding(
            "early-exit",
            f"new {item.text} (line {item.line}); it would end the run as a success without training",
            item.line,
        )
        for item in surplus(_success_exits(s.old_tree), _success_exits(s.new_tree))
    ]


# ------------------------------------------------------------------------------- cutting the work
@dataclass(frozen=True)
class _Setting:
    key: str
    value: float | None
    """The literal value; None when the script computes it."""
    node: ast.AST
    line: int


def _work_key(name: str) -> str | None:
    key = name.strip().lstrip("-").replace("-", "_").lower()
    return key if key in WORK_KEYS else None


def _target_name(target: ast.AST) -> str | None:
    if isinstance(target, ast.Name):
        return target.id
    if isinstance(target, ast.Attribute):
        return target.attr
    if isinstance(target, ast.Subscript) and isinstance(const(target.slice), str):
        return str(const(target.slice))
    return None


def _settings(tree: ast.AST) -> list[_Setting]:
    """Every place the script sets a work-size key, with its numeric value when it is a literal."""
    result: list[_Setting] = []

    def add(name: object, value: ast.AST | None, line: int, *, allow_str: bool = False) -> None:
        key = _work_key(name) if isinstance(name, str) else None
        if key is not None and value is not None:
            result.append(_Setting(key, number(value, allow_str=allow_str), value, line))

    for node in index(tree).nodes:
        if isinstance(node, ast.Assign):
            for target in node.targets:
                if isinstance(target, ast.Tuple) and isinstance(node.value, ast.Tuple):
                    for t, v in zip(target.elts, node.value.elts):
                        add(_target_name(t), v, node.lineno)
                else:
                    add(_target_name(target), node.value, node.lineno)
        elif isinstance(node, ast.AnnAssign):
            add(_target_name(node.target), node.value, node.lineno)
        elif isinstance(node, ast.Dict):
            for k, v in zip(node.keys, node.values):
                add(const(k), v, v.lineno)
        elif isinstance(node, ast.Call):
            for kw in node.keywords:
                add(kw.arg, kw.value, kw.value.lineno)
            name = call_name(node)
            options = [str(const(a)) for a in node.args if isinstance(const(a), str)]
            if name == "add_argument" and options:
                dest = next((kw.value for kw in node.keywords if kw.arg == "dest"), None)
                option = const(dest) if isinstance(const(dest), str) else max(options, key=len)
                default = next((kw.value for kw in node.keywords if kw.arg == "default"), None)
                add(option, default, node.lineno, allow_str=True)
            elif name in ("getenv", "get") and len(node.args) == 2:
                add(const(node.args[0]), node.args[1], node.lineno, allow_str=True)
    return result


def _cut(old: list[float], new: list[float]) -> tuple[float, float] | None:
    """(was, now) when `new` brings in a value smaller than the one it replaced (or than any old one)."""
    old_left, new_left = Counter(old), Counter(new)
    removed, added = list((old_left - new_left).elements()), list((new_left - old_left).elements())
    for value in added:
        reference = max(removed, key=effective) if removed else min(old, key=effective)
        if effective(value) < effective(reference):
            return reference, value
    return None


def _is_cap(node: ast.AST) -> bool:
    return isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "min"


def _shrinking_updates(tree: ast.AST) -> list[Found]:
    """`max_steps //= 100` and friends."""
    result = []
    for node in index(tree).of_type(ast.AugAssign):
        if not isinstance(node, ast.AugAssign):
            continue
        name = _target_name(node.target)
        if not name or _work_key(name) is None:
            continue
        factor = number(node.value)
        shrinks = isinstance(node.op, (ast.Sub, ast.Div, ast.FloorDiv, ast.RShift, ast.Mod)) or (
            isinstance(node.op, ast.Mult) and factor is not None and factor < 1
        )
        if shrinks:
            result.append(found(node))
    return result


@rules.rule("work-cut")
def rule_work_not_cut(s: Scripts) -> list[GuardFinding]:
    """Fewer steps, epochs or samples make any crash vanish; the user's numbers are not the LLM's."""
    assert s.old_tree is not None and s.new_tree is not None
    old, new = _settings(s.old_tree), _settings(s.new_tree)
    result = []
    for key in sorted({setting.key for setting in old if setting.value is not None}):
        old_values = [st.value for st in old if st.key == key and st.value is not None]
        new_settings = [st for st in new if st.key == key]
        if not new_settings:
            result.append(
                rules.finding(
                    "work-cut",
                    f"{key} removed (was {fmt(old_values[0])}); keep the amount of work the user set",
                )
            )
            continue
        new_values = [st.value for st in new_settings if st.value is not None]
        cut = _cut(old_values, new_values) if new_values else None
        if cut is not None:
            line = next(st.line for st in new_settings if st.value == cut[1])
            result.append(
                rules.finding(
                    "work-cut", f"{key} cut from {fmt(cut[0])} to {fmt(cut[1])} (line {line})", line
                )
            )
    caps_old = [found(st.node, st.line, f"{st.key} = {snippet(st.node)}") for st in old if _is_cap(st.node)]
    caps_new = [found(st.node, st.line, f"{st.key} = {snippet(st.node)}") for st in new if _is_cap(st.node)]
    result.extend(
        rules.finding("work-cut", f"work capped with `{item.text}` at line {item.line}", item.line)
        for item in surplus(caps_old, caps_new)
    )
    result.extend(
        rules.finding("work-cut", f"work cut with `{item.text}` at line {item.line}", item.line)
        for item in surplus(_shrinking_updates(s.old_tree), _shrinking_updates(s.new_tree))
    )
    return result


def _data_name(node: ast.AST) -> str:
    """A name for what is sliced: `train_ds`, `self.data`, `dataset["train"]`, `load_dataset(...)`."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    if isinstance(node, ast.Subscript):
        key = const(node.slice)
        if isinstance(key, str) and any(hint in key.lower() for hint in DATA_SPLIT_HINTS):
            return f"{_data_name(node.value)}_{key}"
        return ""  # a field of one record, or a computed index: not a dataset
    if isinstance(node, ast.Call):
        return call_name(node)
    return ""


def data_like(node: ast.AST) -> bool:
    name = _data_name(node).lower()
    tokens = set(re.split(r"[^a-z]+", name))
    return any(hint in name for hint in DATA_NAME_HINTS) or bool(tokens & DATA_NAME_TOKENS)


def _is_data_cut_call(call: ast.Call) -> bool:
    name = call_name(call)
    if name == "Subset":
        return True
    if not isinstance(call.func, ast.Attribute):
        return False
    if name == "select":
        return bool(call.args) and _is_partial_range(call.args[0])
    return name in DATA_CUT_METHODS and data_like(call.func.value)


def _is_partial_range(node: ast.AST) -> bool:
    """`range(100)`, `range(0, n, 2)`: yes; `range(len(ds))`, the whole dataset in order: no."""
    if not (isinstance(node, ast.Call) and call_name(node) == "range"):
        return False
    whole = len(node.args) == 1 and isinstance(node.args[0], ast.Call) and call_name(node.args[0]) == "len"
    return not whole


def _data_cuts(tree: ast.AST) -> list[Found]:
    """Places that train on a fixed part of the data: `ds[:100]`, `.select(range(100))`, `.take(8)`..."""
    result = []
    for node in index(tree).nodes:
        if isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Slice):
            upper = number(node.slice.upper) if node.slice.upper is not None else None
            lower_ok = node.slice.lower is None or number(node.slice.lower) is not None
            if upper is not None and upper >= 0 and lower_ok and data_like(node.value):
                result.append(found(node, text=snippet(node, keep_end=True)))
        elif isinstance(node, ast.Call):
            if _is_data_cut_call(node):
                result.append(found(node, text=snippet(node, keep_end=True)))
            for kw in node.keywords:
                split = const(kw.value)
                if kw.arg == "split" and isinstance(split, str) and re.search(r"\[[^\]]*:[^\]]*\]|%", split):
                    result.append(found(kw.value, text=f"split={split!r}"))
    return result


@rules.rule("data-cut")
def rule_data_not_cut(s: Scripts) -> list[GuardFinding]:
    """Training on a slice of the dataset hides data-dependent crashes and is not the user's run."""
    assert s.old_tree is not None and s.new_tree is not None
    return [
        rules.finding(
            "data-cut",
            f"dataset cut: `{item.text}` at line {item.line} is new; train on all the data the user set",
            item.line,
        )
        for item in surplus(_data_cuts(s.old_tree), _data_cuts(s.new_tree))
    ]


def _loop_bounds(tree: ast.AST) -> list[tuple[str, float, int]]:
    """(kind, bound, line) for training loops `for … in range(N)` and `while step < N`, N a literal.

    Only loops that train count: a retry loop `for attempt in range(3)` is the fix's business.
    """
    result = []
    for node in training_loops(tree):
        if isinstance(node, (ast.For, ast.AsyncFor)):
            for call in calls(node.iter):
                if call_name(call) == "range" and call.args:
                    stop = call.args[0] if len(call.args) == 1 else call.args[1]
                    value = number(stop)
                    if value is not None:
                        result.append(("for-loop range", value, node.lineno))
        elif isinstance(node, ast.While) and isinstance(node.test, ast.Compare):
            for op, right in zip(node.test.ops, node.test.comparators):
                value = number(right)
                if isinstance(op, (ast.Lt, ast.LtE)) and value is not None:
                    result.append(("while-loop bound", value, node.lineno))
    return result


@rules.rule("loop-bound-cut")
def rule_loop_bounds_not_cut(s: Scripts) -> list[GuardFinding]:
    """`range(1000)` → `range(10)` is `max_steps` cut by another name."""
    assert s.old_tree is not None and s.new_tree is not None
    old, new = _loop_bounds(s.old_tree), _loop_bounds(s.new_tree)
    result = []
    for kind in sorted({k for k, _, _ in old}):
        cut = _cut([v for k, v, _ in old if k == kind], [v for k, v, _ in new if k == kind])
        if cut is not None:
            line = next(ln for k, v, ln in new if k == kind and v == cut[1])
            result.append(
                rules.finding(
                    "loop-bound-cut", f"{kind} cut from {fmt(cut[0])} to {fmt(cut[1])} (line {line})", line
                )
            )
    return result
