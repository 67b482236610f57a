"""Honesty guard: a fix must fix the computation that failed, on the data the user gave it.

Three dishonest "fixes" make a crash vanish while leaving the script looking like itself: delete or
empty the statement that failed (comment it out, `pass`, `loss = torch.tensor(0.)`); change the input
data so the error cannot happen (`torch.randn(400, 2)` → `(400, 1)` when the model wants 1 feature, a
literal list in place of the dataset); or replace the script's work (most of it gone, or the training
moved into a function nobody calls). Model code is the fix's business: `nn.Linear(10, 5)` →
`nn.Linear(20, 5)` for 20-wide data is a fix, reshaping the data to 10 is not.
"""

from __future__ import annotations

import ast
import re
from collections import Counter

from twinkle_auto.monitor.guards.ast_util import (
    ancestors,
    call_name,
    dotted,
    index,
    is_training_call,
    snippet,
    surplus,
    training_loops,
)
from twinkle_auto.monitor.guards.findings import GuardFinding
from twinkle_auto.monitor.guards.gaming import constant_like
from twinkle_auto.monitor.guards.rules import RuleSet, Scripts
from twinkle_auto.monitor.guards.work import data_cuts

rules = RuleSet("honesty")

DATA_CONSTRUCTORS = frozenset(
    {
        "randn",
        "rand",
        "randint",
        "randperm",
        "normal",
        "uniform",
        "zeros",
        "ones",
        "full",
        "empty",
        "arange",
        "linspace",
        "tensor",
        "as_tensor",
        "array",
        "asarray",
        "make_classification",
        "make_regression",
        "make_blobs",
        "make_moons",
        "make_circles",
    }
)
"""Calls that create input data from literal shapes and values."""
DATA_SOURCES = frozenset(
    {
        "load_dataset",
        "read_csv",
        "read_json",
        "read_parquet",
        "read_table",
        "loadtxt",
        "genfromtxt",
        "from_dict",
        "from_list",
        "from_pandas",
        "open",
        "read_text",
    }
)
"""Calls that read input data from somewhere: which data (a name, a path, a split) is in their literals."""
DATA_KEYWORDS = frozenset(
    {
        "size",
        "shape",
        "n_samples",
        "n_features",
        "n_classes",
        "low",
        "high",
        "num_samples",
        "split",
        "data_files",
    }
)
"""Keyword arguments of those calls that say which data or how much of it."""
DATA_TOKENS = frozenset(
    {
        "x",
        "y",
        "xs",
        "ys",
        "xb",
        "yb",
        "inputs",
        "input",
        "targets",
        "target",
        "labels",
        "label",
        "features",
        "feats",
        "images",
        "imgs",
        "tokens",
        "text",
        "texts",
        "dataset",
        "ds",
        "data",
        "corpus",
        "samples",
        "examples",
        "records",
        "rows",
    }
)
"""A target named with one of these tokens (split on `_`, digits and case) holds input data."""
MODEL_BASES = ("Module", "LightningModule", "PreTrainedModel")
"""A class deriving from one of these is model code; anything else (a Dataset) may hold data."""

MAX_REMOVED_FRACTION = 0.5
"""A patch that removes more than this share of the original's code lines replaces the script's work..."""
MIN_REMOVED_LINES = 6
"""...when it removes at least this many (a tiny script may lose a couple of lines to a real fix)."""


# ------------------------------------------------------------------------- the failing computation
def _statements(tree: ast.AST) -> list[ast.stmt]:
    return [node for node in index(tree).nodes if isinstance(node, ast.stmt)]


def _innermost(tree: ast.AST, line: int) -> ast.stmt | None:
    """The smallest statement that covers `line` (the statement a traceback frame points into)."""
    best: ast.stmt | None = None
    for statement in _statements(tree):
        end = statement.end_lineno or statement.lineno
        if statement.lineno <= line <= end and (
            best is None or end - statement.lineno <= (best.end_lineno or best.lineno) - best.lineno
        ):
            best = statement
    return best


COMPOUND = (
    ast.For,
    ast.AsyncFor,
    ast.While,
    ast.If,
    ast.With,
    ast.AsyncWith,
    ast.Try,
    ast.FunctionDef,
    ast.AsyncFunctionDef,
    ast.ClassDef,
)


def _targets(statement: ast.stmt) -> set[str]:
    if isinstance(statement, ast.Assign):
        return {ast.unparse(t) for t in statement.targets}
    if isinstance(statement, (ast.AugAssign, ast.AnnAssign)):
        return {ast.unparse(statement.target)}
    return set()


def _call_names(node: ast.AST) -> set[str]:
    return {call_name(n) for n in ast.walk(node) if isinstance(n, ast.Call)} - {""}


def _keeps(old: ast.stmt, candidates: list[ast.stmt]) -> bool:
    """Whether the new statements still do what the failing one did (edited, not emptied)."""
    if isinstance(old, (ast.Import, ast.ImportFrom)):
        return any(isinstance(c, (ast.Import, ast.ImportFrom)) for c in candidates)
    targets, names = _targets(old), _call_names(old)
    for candidate in candidates:
        value = getattr(candidate, "value", None)
        if targets and _targets(candidate) & targets:
            if value is not None and not constant_like(value):
                return True
            continue
        if isinstance(old, ast.Return) and isinstance(candidate, ast.Return):
            if candidate.value is not None and not constant_like(candidate.value):
                return True
            continue
        if names & _call_names(candidate):
            return True
        if not names and not targets and not isinstance(candidate, (ast.Pass, ast.Expr)):
            return True  # an `assert`, `del`, `raise`: any real statement in its place is an edit
        if (
            not names
            and not targets
            and isinstance(candidate, ast.Expr)
            and not isinstance(candidate.value, ast.Constant)
        ):
            return True
    return False


def _input_names(node: ast.AST) -> set[str]:
    """Names a statement reads as values (its inputs), not the functions it calls by name: `criterion(out, y)`
    reads out and y, `x.float()` reads x. Swapping which function computes is an edit; dropping what it
    computes on is not."""
    called = {id(n.func) for n in ast.walk(node) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)}
    return {
        n.id
        for n in ast.walk(node)
        if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load) and id(n) not in called
    }


def _imported(tree: ast.AST) -> set[str]:
    names = set()
    for n in ast.walk(tree):
        if isinstance(n, (ast.Import, ast.ImportFrom)):
            names.update((a.asname or a.name).split(".")[0] for a in n.names)
    return names


def _dropped_inputs(old: ast.stmt, candidates: list[ast.stmt], modules: set[str]) -> list[str]:
    """Inputs of the failing statement that the edit removes without putting another input in their place.

    A fix may change how the failing computation reads its inputs (`rec['target']`, `rec.get(...)`,
    `y.long()`, `y.to(device)`) or which variable it reads (a wrong name replaced by the right one); removing
    a term (`pred - rec['targets']` becoming `pred`) makes the error go away by computing something else.
    """
    before = _input_names(getattr(old, "value", None) or old) - _targets(old) - modules  # np.abs → torch ops
    after: set[str] = set()
    for candidate in candidates:
        after |= _input_names(getattr(candidate, "value", None) or candidate)
    dropped = sorted(before - after)
    added = after - before - modules  # `torch.zeros(...)` in place of the data is a constant, not an input
    return dropped if len(dropped) > len(added) else []


@rules.rule("failing-code-removed")
def rule_failing_code_kept(s: Scripts) -> list[GuardFinding]:
    """The statement on a failing line must survive the fix, edited if need be, never deleted, commented
    out, turned into `pass` or made to produce a constant: that is hiding the crash, not fixing it."""
    assert s.old_tree is not None and s.new_tree is not None
    if not s.failing_lines:
        return []
    new_statements = [st for st in _statements(s.new_tree) if not isinstance(st, COMPOUND)]
    new_text = Counter(line.strip() for line in s.new_lines)
    modules = _imported(s.new_tree)
    findings = []
    seen: set[int] = set()
    for line in sorted(s.failing_lines):
        old = _innermost(s.old_tree, line)
        if old is None or isinstance(old, COMPOUND) or id(old) in seen:
            continue  # a loop or block header: the structure rules judge blocks
        seen.add(id(old))
        span = range(old.lineno, (old.end_lineno or old.lineno) + 1)
        mapped = {n for number in span for n in s.new_lines_of(number)}
        if all(s.line_kept(number) for number in span):
            continue  # kept as it was
        first = s.old_lines[old.lineno - 1].strip()
        if not mapped and new_text[first] > 0:
            continue  # moved, not removed
        candidates = [
            st
            for st in new_statements
            if mapped and st.lineno <= max(mapped) and (st.end_lineno or st.lineno) >= min(mapped)
        ]
        if _keeps(old, candidates):
            dropped = _dropped_inputs(old, candidates, modules)
            if dropped:
                findings.append(
                    rules.finding(
                        "failing-code-removed",
                        f"drops {', '.join(dropped)} from the failing statement `{snippet(old, 50)}` "
                        f"(old line {old.lineno}): the error goes away because something else is computed",
                        min(mapped) if mapped else None,
                    )
                )
            continue
        now = "; ".join(snippet(c, 40) for c in candidates[:2]) if candidates else "nothing"
        findings.append(
            rules.finding(
                "failing-code-removed",
                f"replaces the failing statement `{snippet(old, 50)}` (old line {old.lineno}) with {now}"
                if candidates
                else f"deletes the failing statement `{snippet(old, 50)}` (old line {old.lineno})",
                min(mapped) if mapped else None,
            )
        )
    return findings


# -------------------------------------------------------------------------------------- input data
def _data_name(name: str) -> bool:
    parts = re.split(r"[^a-z]+", re.sub(r"([a-z])([A-Z])", r"\1_\2", name).lower())
    return any(part in DATA_TOKENS for part in parts) or any(
        p.startswith(("data", "train", "sample")) for p in parts
    )


def _target_names(statement: ast.stmt) -> list[str]:
    targets = statement.targets if isinstance(statement, ast.Assign) else [statement.target]
    names = []
    for target in targets:
        for node in ast.walk(target):
            if isinstance(node, ast.Name):
                names.append(node.id)
            elif isinstance(node, ast.Attribute):
                names.append(node.attr)
    return names


def _in_model_code(node: ast.AST, parent_of: dict[ast.AST, ast.AST]) -> bool:
    for a in ancestors(node, parent_of):
        if isinstance(a, ast.ClassDef):
            return any(dotted(base).rsplit(".", 1)[-1].endswith(MODEL_BASES) for base in a.bases)
    return False


def _literal_values(node: ast.AST, *, strings: bool) -> list[object]:
    """The literals that are data: numbers (and, for data sources, names and paths), but not the keys
    and indexes that read it (`row["label"]`, `x[0]`): renaming a field that was read wrong is a fix."""
    found: list[object] = []
    stack = [node]
    while stack:
        current = stack.pop()
        if isinstance(current, ast.Subscript):
            stack.append(current.value)  # the slice is how the data is read, not what it is
            continue
        value = current.value if isinstance(current, ast.Constant) else None
        if (
            isinstance(value, (int, float))
            and not isinstance(value, bool)
            or strings
            and isinstance(value, str)
        ):
            found.append(value)
        stack.extend(ast.iter_child_nodes(current))
    return found


def _data_calls(value: ast.AST) -> list[tuple[ast.Call, tuple[object, ...]]]:
    """The calls in a value that create or read data, with the literals that choose the data: shapes
    and values of data constructors, names and paths of data sources."""
    found = []
    for node in ast.walk(value):
        if isinstance(node, ast.Call) and call_name(node) in DATA_CONSTRUCTORS | DATA_SOURCES:
            strings = call_name(node) in DATA_SOURCES
            literals = [v for arg in node.args for v in _literal_values(arg, strings=strings)]
            literals += [
                v
                for kw in node.keywords
                if kw.arg in DATA_KEYWORDS
                for v in _literal_values(kw.value, strings=strings or kw.arg == "split")
            ]
            found.append((node, (call_name(node), *literals)))
    return found


def _has_call(value: ast.AST | None) -> bool:
    return value is not None and any(isinstance(n, ast.Call) for n in ast.walk(value))


def _is_literal_data(value: ast.AST) -> bool:
    """A value written out by hand: a list of literals, `["x"] * 100`, a constant tensor."""
    if isinstance(value, (ast.List, ast.Tuple, ast.Set)):
        return all(_is_literal_data(e) for e in value.elts)
    if isinstance(value, ast.Dict):
        return all(v is not None and _is_literal_data(v) for v in value.values)
    if isinstance(value, ast.BinOp) and isinstance(value.op, ast.Mult):
        return _is_literal_data(value.left) or _is_literal_data(value.right)
    return constant_like(value)


def _same_text(s: Scripts, before: ast.stmt, after: ast.stmt) -> bool:
    """The statement reads the same in both scripts (indentation aside): nothing to compare."""
    old = [line.strip() for line in s.old_lines[before.lineno - 1 : before.end_lineno]]
    new = [line.strip() for line in s.new_lines[after.lineno - 1 : after.end_lineno]]
    return old == new


def _loop_reads(tree: ast.AST) -> set[str]:
    """Names the training loops read: whatever they are called, they feed the training."""
    return {
        node.id
        for loop in training_loops(tree)
        for node in ast.walk(loop)
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load)
    }


def _data_lineage(tree: ast.AST) -> set[str]:
    """Names that hold input data: data-named targets, and every name whose value, prepared outside
    functions, is used to build one.

    `onehot = one_hot(torch.randint(0, 4, (128,)))` then `X = torch.cat([numeric, onehot], 1)`: onehot
    is part of the data although its name does not say so. Names used only as indexes (`X[idx]`) and
    code inside functions (a batch sampler) say how the data is read, not what it is: a fix may change
    those."""
    assigns = [
        n for n in _module_level(tree) if isinstance(n, (ast.Assign, ast.AnnAssign)) and n.value is not None
    ]
    data = {
        name
        for n in ast.walk(tree)
        if isinstance(n, (ast.Assign, ast.AnnAssign))
        for name in _target_names(n)
        if _data_name(name)
    }
    changed = True
    while changed:
        changed = False
        for a in assigns:
            if not set(_target_names(a)) & data:
                continue
            for name in _value_names(a.value):
                if name not in data:
                    data.add(name)
                    changed = True
    return data


def _module_level(tree: ast.AST) -> list[ast.stmt]:
    """Statements outside functions and classes (loop, if, with and try blocks at module level included)."""
    out: list[ast.stmt] = []
    stack = list(getattr(tree, "body", []))
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            continue
        out.append(node)
        for field in ("body", "orelse", "finalbody"):
            stack.extend(getattr(node, field, []) or [])
        for handler in getattr(node, "handlers", []) or []:
            stack.extend(handler.body)
    return out


def _value_names(value: ast.AST) -> set[str]:
    """Names a value is built from, not counting those only used as subscripts (indexes, slices)."""
    names: set[str] = set()
    stack = [value]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.Subscript):
            stack.append(node.value)
            continue
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load):
            names.add(node.id)
        stack.extend(ast.iter_child_nodes(node))
    return names


def _data_assignments(tree: ast.AST, fed: set[str]) -> dict[str, list[ast.stmt]]:
    """Assignments outside model code to names that hold data (by name, or in `fed`), by target."""
    idx = index(tree)
    result: dict[str, list[ast.stmt]] = {}
    for statement in idx.of_type(ast.Assign, ast.AnnAssign):
        assert isinstance(statement, (ast.Assign, ast.AnnAssign))
        if statement.value is None or _in_model_code(statement, idx.parent_of):
            continue
        names = [name for name in _target_names(statement) if _data_name(name) or name in fed]
        if names:
            result.setdefault(", ".join(names), []).append(statement)
    return result


@rules.rule("data-changed")
def rule_data_kept(s: Scripts) -> list[GuardFinding]:
    """The input data is the user's: a fix changes the code that consumes it, never its shape, its
    values or where it comes from."""
    assert s.old_tree is not None and s.new_tree is not None
    fed = _loop_reads(s.old_tree)
    lineage = _data_lineage(s.old_tree)
    old, new = _data_assignments(s.old_tree, fed | lineage), _data_assignments(s.new_tree, fed | lineage)
    cut_lines = {item.line for item in surplus(data_cuts(s.old_tree), data_cuts(s.new_tree))}
    findings = []
    for key, old_statements in old.items():
        for before, after in zip(old_statements, new.get(key, [])):
            if after.lineno in cut_lines or _same_text(s, before, after):
                continue  # a slice of the data: the gaming rule `data-cut` reports it
            was, now = _data_calls(before.value), _data_calls(after.value)
            changed = [(a, b) for (a, la), (b, lb) in zip(was, now) if la != lb]
            named = any(name in lineage for name in _target_names(before))
            if named and was and now and (changed or len(was) != len(now)):
                a, b = changed[0] if changed else (was[0][0], now[0][0])
                message = (
                    f"changes the input data: `{snippet(a, 45, keep_end=True)}` "
                    f"became `{snippet(b, 45, keep_end=True)}`"
                )
            elif named and was and not now:
                message = (
                    f"replaces the input data: `{snippet(was[0][0], 45, keep_end=True)}` is gone, "
                    f"`{snippet(after, 45)}` stands in its place"
                )
            elif (
                _has_call(before.value)
                and not now
                and not isinstance(
                    after.value, (ast.Constant, ast.UnaryOp)
                )  # a scalar is a setting, not data
                and _is_literal_data(after.value)
            ):
                message = (
                    f"replaces the dataset contents: `{snippet(before, 45)}` became `{snippet(after, 45)}`"
                )
            else:
                continue
            findings.append(rules.finding("data-changed", f"{message} (line {after.lineno})", after.lineno))
    return findings


# ------------------------------------------------------------------------------- the script's work
def _code_lines(lines: list[str]) -> list[str]:
    return [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]


@rules.rule("work-replaced")
def rule_work_kept(s: Scripts) -> list[GuardFinding]:
    """Most of the original gone, or its training moved where it never runs: a different script."""
    assert s.old_tree is not None and s.new_tree is not None
    findings = []
    old_lines = _code_lines(s.old_lines)
    remaining = Counter(_code_lines(s.new_lines))
    removed = 0
    for line in old_lines:
        if remaining[line] > 0:
            remaining[line] -= 1
        else:
            removed += 1
    if removed >= MIN_REMOVED_LINES and removed > MAX_REMOVED_FRACTION * len(old_lines):
        findings.append(
            rules.finding(
                "work-replaced",
                f"replaces the script's work: {removed} of its {len(old_lines)} code lines are gone",
            )
        )
    old_calls, new_calls = _training_call_names(s.old_tree), _training_call_names(s.new_tree)
    gone = sorted(name for name in old_calls if not new_calls[name])
    if gone:
        findings.append(
            rules.finding(
                "work-replaced",
                "replaces the script's work: it no longer calls " + ", ".join(f"{name}()" for name in gone),
            )
        )
    if any(_reachable(s.old_tree, loop) for loop in training_loops(s.old_tree)):
        for loop in training_loops(s.new_tree):
            owner = _unreachable_owner(s.new_tree, loop)
            if owner is not None:
                findings.append(
                    rules.finding(
                        "work-replaced",
                        f"the training loop (line {loop.lineno}) is in `{owner}`, which nothing calls",
                        loop.lineno,
                    )
                )
    return findings


def _training_call_names(tree: ast.AST) -> Counter[str]:
    """How often the script calls each training method (`backward`, `step`, `train`...); reporting
    (`log_metrics`) does not train."""
    return Counter(
        call_name(call)
        for call in index(tree).of_type(ast.Call)
        if is_training_call(call) and call_name(call) != "log_metrics"
    )


def _referenced(tree: ast.AST) -> set[str]:
    idx = index(tree)
    names = {n.id for n in idx.of_type(ast.Name) if isinstance(n.ctx, ast.Load)}
    return names | {n.attr for n in idx.of_type(ast.Attribute)}


def _unreachable_owner(tree: ast.AST, node: ast.AST) -> str | None:
    """The function holding `node` that is never called nor referenced (nor decorated), if any."""
    idx = index(tree)
    used = _referenced(tree)
    for a in ancestors(node, idx.parent_of):
        if (
            isinstance(a, (ast.FunctionDef, ast.AsyncFunctionDef))
            and not a.decorator_list
            and a.name not in used
        ):
            return a.name
    return None


def _reachable(tree: ast.AST, node: ast.AST) -> bool:
    return _unreachable_owner(tree, node) is None
