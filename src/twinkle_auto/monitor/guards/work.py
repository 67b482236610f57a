"""Gaming guards about the amount of work: steps, epochs, samples, the data and the loop's bounds.

Fewer steps or less data make almost any crash vanish, and they are the user's numbers, not the LLM's.
A setting is compared by what it means: a work setting is one of the usual names *or* whatever the
training loop's bound reads (`for step in range(N)` makes `N` one), and a bound is cut when the patch
wraps it in something that can only make it smaller (`min()`, `islice()`, a slice, a range step, an
extra `and`, a division) or replaces it with a literal.
"""

from __future__ import annotations

import ast
import re
from collections import Counter
from dataclasses import dataclass

from twinkle_auto.monitor.guards.ast_util import (
    Found,
    cached,
    call_name,
    calls,
    const,
    effective,
    fmt,
    found,
    index,
    number,
    snippet,
    surplus,
    training_loops,
)
from twinkle_auto.monitor.guards.findings import GuardFinding
from twinkle_auto.monitor.guards.rules import RuleSet, Scripts

CAP_CALLS = frozenset({"min", "max", "islice", "takewhile", "dropwhile", "filterfalse", "compress"})
"""Calls that can only make a loop bound (or a work setting) smaller, whatever they wrap."""
CAP_METHODS = frozenset({"take", "head", "shard", "select", "skip"})
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
        "n_train",
        "num_train",
        "n_samples",
        "n_examples",
        "num_examples",
    }
)
"""Settings (assignments, keyword arguments, dict keys, argparse defaults, env defaults) that say how
much work the user asked for, compared case-insensitively with dashes read as underscores."""
DATA_NAME_HINTS = ("data", "train", "sample", "example", "loader", "batch", "record")
DATA_NAME_TOKENS = frozenset({"ds", "dl", "rows", "lines", "texts", "corpus"})
"""A name is dataset-like if it contains a hint or has a token (split on non-letters) like `ds`."""
DATA_SPLIT_HINTS = ("train", "valid", "test", "eval", "split")
"""`dataset["train"][:100]` cuts a split; `example["text"][:512]` only truncates one field (allowed)."""
DATA_CUT_METHODS = frozenset({"take", "shard", "head"})
DATASET_CONSTRUCTORS = ("Dataset", "DataLoader", "Subset")
"""What is sliced with a literal inside `TensorDataset(X[:32], y[:32])` is the data, whatever its name."""
"""Methods that keep part of a dataset-like receiver; plus `.select(range(...))` and `Subset(...)`."""

rules = RuleSet("gaming")


# ------------------------------------------------------------------------------- cutting the work
@dataclass(frozen=True)
class _Setting:
    key: str
    value: float | None
    """The literal value; None when the script computes it."""
    node: ast.AST
    line: int


def _work_key(name: str, keys: frozenset[str] = WORK_KEYS) -> str | None:
    key = name.strip().lstrip("-").replace("-", "_").lower()
    return key if key in keys else None


def _bound_names(expr: ast.AST | None) -> set[str]:
    """Names a loop bound is made of (`args.max_steps + 1` → max_steps), not looking inside calls."""
    if isinstance(expr, ast.Name):
        return {expr.id.lower()}
    if isinstance(expr, ast.Attribute):
        return {expr.attr.lower()}
    if isinstance(expr, ast.BinOp):
        return _bound_names(expr.left) | _bound_names(expr.right)
    if isinstance(expr, ast.UnaryOp):
        return _bound_names(expr.operand)
    return set()


def work_keys(tree: ast.AST) -> frozenset[str]:
    """The work settings of this script: the usual names, plus whatever sets its training loop's bound
    (`for step in range(N)` makes `N` a work setting, whatever it is called)."""
    names: set[str] = set()
    for loop in training_loops(tree):
        if isinstance(loop, (ast.For, ast.AsyncFor)):
            if isinstance(loop.iter, ast.Call) and call_name(loop.iter) == "range" and loop.iter.args:
                args = loop.iter.args
                names |= _bound_names(args[0] if len(args) == 1 else args[1])
        elif isinstance(loop.test, ast.Compare):
            left, ops, rights = loop.test.left, loop.test.ops, loop.test.comparators
            for op, right in zip(ops, rights):
                if isinstance(op, (ast.Lt, ast.LtE)):
                    names |= _bound_names(right)
                elif isinstance(op, (ast.Gt, ast.GtE)):
                    names |= _bound_names(left)
    return WORK_KEYS | frozenset(names)


def _target_name(target: ast.AST) -> str | None:
    if isinstance(target, ast.Name):
        return target.id
    if isinstance(target, ast.Attribute):
        return target.attr
    if isinstance(target, ast.Subscript) and isinstance(const(target.slice), str):
        return str(const(target.slice))
    return None


def _settings(tree: ast.AST, keys: frozenset[str] = WORK_KEYS) -> list[_Setting]:
    """Every place the script sets a work-size key, with its numeric value when it is a literal."""
    result: list[_Setting] = []

    def add(name: object, value: ast.AST | None, line: int, *, allow_str: bool = False) -> None:
        key = _work_key(name, keys) if isinstance(name, str) else None
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


def _shrinking_updates(tree: ast.AST, keys: frozenset[str] = WORK_KEYS) -> list[Found]:
    """`max_steps //= 100` and friends."""
    result = []
    for node in index(tree).of_type(ast.AugAssign):
        if not isinstance(node, ast.AugAssign):
            continue
        name = _target_name(node.target)
        if not name or _work_key(name, keys) is None:
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
    keys = work_keys(s.old_tree)
    old, new = _settings(s.old_tree, keys), _settings(s.new_tree, keys)
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
    old_markers: dict[str, Counter[str]] = {}
    for st in old:
        old_markers.setdefault(st.key, Counter()).update(cap_markers(st.node))
    for st in new:
        if (
            st.value is None
            and not _is_cap(st.node)
            and cap_markers(st.node) - old_markers.get(st.key, Counter())
        ):
            caps_new.append(found(st.node, st.line, f"{st.key} = {snippet(st.node)}"))
    result.extend(
        rules.finding("work-cut", f"work capped with `{item.text}` at line {item.line}", item.line)
        for item in surplus(caps_old, caps_new)
    )
    result.extend(
        rules.finding("work-cut", f"work cut with `{item.text}` at line {item.line}", item.line)
        for item in surplus(_shrinking_updates(s.old_tree, keys), _shrinking_updates(s.new_tree, keys))
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


def _literal_slice(node: ast.AST) -> bool:
    if not isinstance(node, ast.Slice):
        return isinstance(node, ast.Tuple) and any(_literal_slice(e) for e in node.elts)
    return any(
        number(bound) is not None for bound in (node.lower, node.upper, node.step) if bound is not None
    )


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


def data_cuts(tree: ast.AST) -> list[Found]:
    """Places that train on a fixed part of the data: `ds[:100]`, `.select(range(100))`, `.take(8)`..."""
    return cached(tree, "data_cuts", lambda: _data_cuts(tree))


def _data_cuts(tree: ast.AST) -> list[Found]:
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
            elif call_name(node).endswith(DATASET_CONSTRUCTORS):
                for arg in [*node.args, *(kw.value for kw in node.keywords)]:
                    if isinstance(arg, ast.Subscript) and _literal_slice(arg.slice):
                        result.append(found(arg, text=snippet(arg, keep_end=True)))
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
        for item in surplus(data_cuts(s.old_tree), data_cuts(s.new_tree))
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


def cap_markers(expr: ast.AST) -> Counter[str]:
    """What in an expression can only make a bound smaller: `min()`, `islice()`, a slice, a range step,
    an `and`, division, subtraction (but `len(x) - 1`, an index bound kept in range, is not a cut)."""
    markers: Counter[str] = Counter()
    for node in ast.walk(expr):
        if isinstance(node, ast.Call):
            name = call_name(node)
            if name in CAP_CALLS or (name == "zip" and len(node.args) >= 2):
                markers[f"{name}()"] += 1
            elif isinstance(node.func, ast.Attribute) and name in CAP_METHODS:
                markers[f".{name}()"] += 1
            elif name == "range" and len(node.args) == 3:
                markers["a range step"] += 1
        elif isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Slice):
            if node.slice.upper is not None or node.slice.step is not None or node.slice.lower is not None:
                markers["a slice"] += 1
        elif isinstance(node, ast.IfExp):
            markers["a conditional value"] += 1
        elif isinstance(node, ast.BoolOp) and isinstance(node.op, ast.And):
            markers["an extra `and` condition"] += len(node.values) - 1
        elif isinstance(node, ast.Compare) and len(node.ops) > 1:
            markers["a chained comparison"] += 1
        elif isinstance(node, ast.BinOp):
            if isinstance(node.op, (ast.FloorDiv, ast.Div, ast.Mod, ast.RShift)):
                markers["a division"] += 1
            elif isinstance(node.op, ast.Sub) and not (
                isinstance(node.left, ast.Call) and call_name(node.left) == "len" and number(node.right) == 1
            ):
                markers["a subtraction"] += 1
            elif isinstance(node.op, ast.Mult) and any(
                (value := number(side)) is not None and value < 1 for side in (node.left, node.right)
            ):
                markers["a factor below 1"] += 1
    return markers


def _loop_key(loop: ast.AST) -> str:
    if isinstance(loop, (ast.For, ast.AsyncFor)):
        return "for " + ast.unparse(loop.target)
    names = sorted(n.id for n in ast.walk(loop.test) if isinstance(n, ast.Name))
    return "while " + (names[0] if names else "")


def _bound(loop: ast.AST) -> ast.AST:
    return loop.iter if isinstance(loop, (ast.For, ast.AsyncFor)) else loop.test


def _literals(expr: ast.AST) -> Counter[float]:
    return Counter(
        float(node.value)
        for node in ast.walk(expr)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, (int, float))
        and not isinstance(node.value, bool)
        and node.value >= 2
    )


def _loop_pairs(old: ast.AST, new: ast.AST) -> list[tuple[ast.AST, ast.AST]]:
    """Old and new training loops matched by their loop variable (`for step`, `while step`), in order."""
    remaining: dict[str, list[ast.AST]] = {}
    for loop in training_loops(old):
        remaining.setdefault(_loop_key(loop), []).append(loop)
    pairs, unmatched = [], []
    for loop in training_loops(new):
        candidates = remaining.get(_loop_key(loop))
        if candidates:
            pairs.append((candidates.pop(0), loop))
        else:
            unmatched.append(loop)
    left = [loop for loops in remaining.values() for loop in loops]
    for loop in unmatched:  # the loop variable changed too (`for _, batch in zip(range(5), loader)`)
        same_kind = [
            old_loop for old_loop in left if isinstance(old_loop, ast.While) == isinstance(loop, ast.While)
        ]
        if same_kind:
            left.remove(same_kind[0])
            pairs.append((same_kind[0], loop))
    return pairs


def _bound_changes(old: ast.AST, new: ast.AST) -> list[GuardFinding]:
    result = []
    for old_loop, new_loop in _loop_pairs(old, new):
        old_bound, new_bound = _bound(old_loop), _bound(new_loop)
        if ast.unparse(old_bound) == ast.unparse(new_bound):
            continue
        header = snippet(new_bound, 50)
        for marker in sorted(cap_markers(new_bound) - cap_markers(old_bound)):
            result.append(
                rules.finding(
                    "loop-bound-cut",
                    f"training loop bound capped with {marker} (line {new_loop.lineno}): `{header}`",
                    new_loop.lineno,
                )
            )
        both_literal = _numeric_bound(old_loop) is not None and _numeric_bound(new_loop) is not None
        added = sorted((_literals(new_bound) - _literals(old_bound)).elements())
        if added and not both_literal:
            result.append(
                rules.finding(
                    "loop-bound-cut",
                    f"training loop bound now uses the literal {fmt(added[0])} (line {new_loop.lineno}): `{header}`",
                    new_loop.lineno,
                )
            )
    return result


def _numeric_bound(loop: ast.AST) -> float | None:
    if isinstance(loop, (ast.For, ast.AsyncFor)):
        if isinstance(loop.iter, ast.Call) and call_name(loop.iter) == "range" and loop.iter.args:
            args = loop.iter.args
            return number(args[0] if len(args) == 1 else args[1])
        return None
    test = loop.test
    if isinstance(test, ast.Compare) and len(test.comparators) == 1:
        return number(test.comparators[0])
    return None


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
    return result + _bound_changes(s.old_tree, s.new_tree)
