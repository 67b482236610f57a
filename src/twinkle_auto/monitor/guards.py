"""Guards that refuse a patched training script which "fixes" a crash by gutting the training.

An LLM asked to make a crash go away has cheap ways to succeed that are not fixes: delete the loop,
wrap it in ``try/except: pass``, cut ``max_steps`` from 1000 to 10, train on ``dataset[:8]``, drop the
``rt.log_metrics`` call that feeds the monitor, or drop the resume logic so a relaunch starts over.
Each of these leaves a script that parses and exits 0. `check_patch` compares the old and the patched
script with `ast` (never by running them) and names every such change; the caller rejects the patch
and leaves train.py untouched when the list is not empty.

The rules are small functions registered in `RULES` in the order they are reported; their constants
are right below. The checks are deliberately structural and conservative: they count constructs in
the old and the new script and complain only about what the patch added or removed, so whatever the
user already wrote (their own ``try/except``, their own ``data[:n]``) is never held against a fix.
"""

from __future__ import annotations

import ast
import difflib
import math
import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import NamedTuple

__all__ = ["RULES", "check_patch"]

# ------------------------------------------------------------------------------------------ constants
TRAINING_METHODS = frozenset(
    {
        "log_metrics",
        "backward",
        "step",
        "forward_backward",
        "optim_step",
        "train",
        "train_step",
        "training_step",
    }
)
"""A loop that calls one of these (`x.name(...)`) anywhere inside is a training loop (rule 2)."""
TRAINING_FUNCTIONS = frozenset({"forward_backward", "optim_step", "train", "train_step", "training_step"})
"""...or calls one of these as a plain function (`name(...)`)."""

RUNTIME_CONSTRUCTOR = "TrainingRuntime"
RUNTIME_METHODS = ("start", "log_metrics", "finish", "register_graceful_shutdown")
"""Rule 3: what twinkle-auto needs from the script to watch it (get_resume_info is under rule 4)."""

RESUME_CALLS = ("get_resume_info", "load_state_dict", "load_checkpoint")
RESUME_KEYWORDS = ("resume_from_checkpoint",)
RESUME_NAMES = ("skip_consumed_samples",)
"""Rule 4, with `torch.load(` and `.load(` on a receiver named like a model."""

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
"""Rule 5: a handler whose body is only these calls, pass, `...`, continue/break, a constant or a
constant assignment, and never raises, swallows the error."""
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
"""Rule 6: settings (assignments, keyword arguments, dict keys, argparse defaults, env defaults) that
say how much work the user asked for, compared case-insensitively with dashes read as underscores."""
DATA_NAME_HINTS = ("data", "train", "sample", "example")
DATA_NAME_TOKENS = frozenset({"ds"})
"""A name is dataset-like if it contains a hint or has a token (split on non-letters) like `ds`."""
DATA_SPLIT_HINTS = ("train", "valid", "test", "eval", "split")
"""`dataset["train"][:100]` cuts a split; `example["text"][:512]` only truncates one field (allowed)."""
DATA_CUT_METHODS = frozenset({"take", "shard", "head"})
"""Methods that keep part of a dataset-like receiver; plus `.select(range(...))` and `Subset(...)`."""

MAX_CHANGED_FRACTION = 0.5
"""Rule 7: a patch may change at most this share of the old script's non-blank lines..."""
MIN_REWRITE_LINES = 6
"""...unless it changes fewer lines than this (tiny scripts would otherwise refuse any fix)."""

BLOCK_KEYWORDS = frozenset(
    {"for", "while", "if", "elif", "else", "def", "class", "with", "try", "except", "finally", "async"}
)
MAX_REPAIRS = 20
"""An old script that does not parse (the crash may be a SyntaxError) is parsed after blanking at most
this many offending lines, so its structure can still be compared."""


@dataclass(frozen=True)
class Scripts:
    """The two versions a rule compares; a tree is None when that version cannot be parsed."""

    old: str
    new: str
    old_tree: ast.Module | None
    new_tree: ast.Module | None
    new_error: str | None


Rule = Callable[[Scripts], list[str]]
RULES: list[tuple[str, Rule]] = []
"""(name, rule) in report order, filled by `@_rule` below."""


def _rule(name: str, *, needs_old: bool = True, needs_new: bool = True) -> Callable[[Rule], Rule]:
    """Register a rule; it runs only when the trees it needs exist, so a rule never sees a None tree."""

    def register(fn: Rule) -> Rule:
        def guarded(scripts: Scripts) -> list[str]:
            if (needs_new and scripts.new_tree is None) or (needs_old and scripts.old_tree is None):
                return []
            return fn(scripts)

        guarded.__name__ = fn.__name__
        guarded.__doc__ = fn.__doc__
        RULES.append((name, guarded))
        return fn

    return register


# ----------------------------------------------------------------------------------------- entry point
def check_patch(old: str, new: str) -> list[str]:
    """Every reason to refuse replacing `old` by `new`, one line each; empty means the patch is fine."""
    new_tree, new_error = _parse(new)
    scripts = Scripts(old=old, new=new, old_tree=_parse_lenient(old), new_tree=new_tree, new_error=new_error)
    violations: list[str] = []
    for _, rule in RULES:
        violations.extend(rule(scripts))
    return violations


def _parse(source: str) -> tuple[ast.Module | None, str | None]:
    try:
        return ast.parse(source), None
    except SyntaxError as exc:
        return None, f"patched script does not parse: {exc.msg} at line {exc.lineno}"
    except ValueError as exc:  # e.g. null bytes
        return None, f"patched script does not parse: {exc}"


def _parse_lenient(source: str) -> ast.Module | None:
    """Parse the old script, blanking lines that do not parse (the crash being fixed may be one)."""
    lines = source.splitlines()
    seen: set[tuple[int, str, str]] = set()
    for _ in range(MAX_REPAIRS):
        try:
            return ast.parse("\n".join(lines))
        except SyntaxError as exc:
            number, message = exc.lineno or 0, exc.msg or ""
            if not 1 <= number <= len(lines) or (number, message, lines[number - 1]) in seen:
                return None  # no progress: give up, the rules that need the old tree are skipped
            seen.add((number, message, lines[number - 1]))
            _repair_line(lines, number - 1, message)
        except ValueError:
            return None
    return None


def _repair_line(lines: list[str], i: int, message: str) -> None:
    """Make line `i` parse while keeping as much structure as possible (a loop header stays a loop)."""
    indent, code = _leading_ws(lines[i]), lines[i].strip()
    if code.split(" ", 1)[0].rstrip(":") in BLOCK_KEYWORDS and not code.endswith(":"):
        lines[i] = lines[i].rstrip() + ":"  # the commonest typo: a missing colon
    elif "expected an indented block" in message:
        previous = next((line for line in reversed(lines[:i]) if line.strip()), "")
        lines.insert(i, _leading_ws(previous) + "    pass")
    elif "unexpected indent" in message or "unindent" in message:
        lines[i] = ""
    else:
        following = next((line for line in lines[i + 1 :] if line.strip()), "")
        opens_block = len(_leading_ws(following)) > len(indent)
        lines[i] = indent + ("if True:" if opens_block else "pass")


def _leading_ws(line: str) -> str:
    return line[: len(line) - len(line.lstrip())]


# --------------------------------------------------------------------------------------- ast helpers
def _dotted(node: ast.AST) -> str:
    """`a.b.c` for a Name/Attribute chain, "" for anything else (a call result, a subscript)."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = _dotted(node.value)
        return f"{base}.{node.attr}" if base else ""
    return ""


def _call_name(call: ast.Call) -> str:
    if isinstance(call.func, ast.Name):
        return call.func.id
    if isinstance(call.func, ast.Attribute):
        return call.func.attr
    return ""


def _receiver(call: ast.Call) -> str:
    return _dotted(call.func.value) if isinstance(call.func, ast.Attribute) else ""


def _calls(node: ast.AST) -> Iterator[ast.Call]:
    return (child for child in ast.walk(node) if isinstance(child, ast.Call))


def _is_training_call(call: ast.Call) -> bool:
    if isinstance(call.func, ast.Attribute):
        return call.func.attr in TRAINING_METHODS
    return isinstance(call.func, ast.Name) and call.func.id in TRAINING_FUNCTIONS


def _has_training_call(nodes: Iterable[ast.AST]) -> bool:
    return any(_is_training_call(call) for node in nodes for call in _calls(node))


def _training_loops(tree: ast.AST) -> list[ast.For | ast.AsyncFor | ast.While]:
    return [
        node
        for node in ast.walk(tree)
        if isinstance(node, (ast.For, ast.AsyncFor, ast.While)) and _has_training_call([node])
    ]


def _trainer_train_calls(tree: ast.AST) -> list[ast.Call]:
    """HF-style `trainer.train(...)`: the training loop lives in a library, so the call is the loop."""
    return [
        call
        for call in _calls(tree)
        if _call_name(call) == "train"
        and isinstance(call.func, ast.Attribute)
        and (
            "trainer" in _receiver(call).rsplit(".", 1)[-1].lower()
            or any(kw.arg in RESUME_KEYWORDS for kw in call.keywords)
        )
    ]


def _parents(tree: ast.AST) -> dict[ast.AST, ast.AST]:
    return {child: parent for parent in ast.walk(tree) for child in ast.iter_child_nodes(parent)}


def _ancestors(node: ast.AST, parents: dict[ast.AST, ast.AST]) -> Iterator[ast.AST]:
    while node in parents:
        node = parents[node]
        yield node


def _number(node: ast.AST | None, *, allow_str: bool = False) -> float | None:
    """The value of a small numeric expression (`1000`, `-1`, `10 * 100`, `int(1e4)`), else None."""
    value = _evaluate(node, allow_str=allow_str)
    return value if value is not None and math.isfinite(value) else None


def _evaluate(node: ast.AST | None, *, allow_str: bool) -> float | None:
    if isinstance(node, ast.Constant):
        value = node.value
        if isinstance(value, bool):
            return None
        if isinstance(value, (int, float)):
            return float(value)
        if allow_str and isinstance(value, str):
            try:
                return float(value.strip().replace("_", ""))
            except ValueError:
                return None
        return None
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        value = _number(node.operand)
        if value is None:
            return None
        return -value if isinstance(node.op, ast.USub) else value
    if isinstance(node, ast.BinOp):
        left, right = _number(node.left), _number(node.right)
        if left is None or right is None:
            return None
        try:
            if isinstance(node.op, ast.Add):
                return left + right
            if isinstance(node.op, ast.Sub):
                return left - right
            if isinstance(node.op, ast.Mult):
                return left * right
            if isinstance(node.op, ast.Div):
                return left / right
            if isinstance(node.op, ast.FloorDiv):
                return float(left // right)
            if isinstance(node.op, ast.Pow) and abs(right) <= 64:
                return float(left**right)
        except (ZeroDivisionError, OverflowError, TypeError):  # TypeError: float() of a complex power
            return None
        return None
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id in ("int", "float", "round")
        and len(node.args) == 1
    ):
        return _number(node.args[0], allow_str=True)
    return None


def _fmt(value: float) -> str:
    if value < 0:
        return f"{value:g} (unbounded)"
    return str(int(value)) if value.is_integer() else f"{value:g}"


def _effective(value: float) -> float:
    """-1 means "no limit" for max_steps-like settings (HF's default), so it is the largest value."""
    return math.inf if value < 0 else value


def _snippet(node: ast.AST, limit: int = 60, *, keep_end: bool = False) -> str:
    """The node's source on one line, shortened; `keep_end` keeps the tail (`....select(range(9))`)."""
    text = " ".join(ast.unparse(node).split())
    if len(text) <= limit:
        return text
    return "..." + text[3 - limit :] if keep_end else text[: limit - 3] + "..."


class _Found(NamedTuple):
    """A construct a rule counts: compared by `signature` (source without line numbers), shown as `text`."""

    signature: str
    line: int
    text: str


def _found(node: ast.AST, line: int | None = None, text: str | None = None) -> _Found:
    return _Found(ast.unparse(node), line if line is not None else node.lineno, text or _snippet(node))


def _surplus(old: Iterable[_Found], new: Iterable[_Found]) -> list[_Found]:
    """What `new` has beyond what `old` already had, compared by signature; so old habits never count."""
    remaining = Counter(item.signature for item in old)
    extra = []
    for item in new:
        if remaining[item.signature] > 0:
            remaining[item.signature] -= 1
        else:
            extra.append(item)
    return extra


# ------------------------------------------------------------------------------- rule 1: it parses
@_rule("new script parses", needs_old=False, needs_new=False)
def rule_new_script_parses(s: Scripts) -> list[str]:
    """A script that does not parse would crash at once; the other rules need its tree anyway."""
    return [s.new_error] if s.new_error is not None else []


# ------------------------------------------------------------------------------- rule 2: the loop stays
@_rule("training loop kept")
def rule_training_loop_kept(s: Scripts) -> list[str]:
    """Every loop that trains in the old script still has a counterpart in the new one."""
    assert s.old_tree is not None and s.new_tree is not None
    old_loops, new_loops = _training_loops(s.old_tree), _training_loops(s.new_tree)
    if len(new_loops) >= len(old_loops):
        return []
    lines = ", ".join(str(loop.lineno) for loop in old_loops)
    return [
        f"training loop removed: the old script has {len(old_loops)} loop(s) that train (line {lines}), "
        f"the patched one {len(new_loops)}"
    ]


@_rule("trainer.train kept")
def rule_trainer_train_kept(s: Scripts) -> list[str]:
    """HF/TRL scripts have no loop of their own: the `trainer.train()` call is the training."""
    assert s.old_tree is not None and s.new_tree is not None
    old_calls, new_calls = _trainer_train_calls(s.old_tree), _trainer_train_calls(s.new_tree)
    if len(new_calls) >= len(old_calls):
        return []
    return [
        f"trainer.train() call removed (old line {old_calls[0].lineno}); the patch must not skip training"
    ]


# ---------------------------------------------------------------- rules 3 and 4: runtime and resume calls
def _runtime_counts(tree: ast.AST) -> Counter[str]:
    counts: Counter[str] = Counter()
    for call in _calls(tree):
        name = _call_name(call)
        if name == RUNTIME_CONSTRUCTOR:
            counts[f"{RUNTIME_CONSTRUCTOR}("] += 1
        elif isinstance(call.func, ast.Attribute) and name in RUNTIME_METHODS:
            counts[f".{name}("] += 1
    return counts


def _resume_counts(tree: ast.AST) -> Counter[str]:
    counts: Counter[str] = Counter()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            name, receiver = _call_name(node), _receiver(node)
            if name in RESUME_CALLS:
                counts[f"{name}("] += 1
            elif name == "load" and receiver == "torch":
                counts["torch.load("] += 1
            elif name == "load" and "model" in receiver.rsplit(".", 1)[-1].lower():
                counts[f"{receiver}.load("] += 1
        elif isinstance(node, ast.keyword) and node.arg in RESUME_KEYWORDS:
            counts[f"{node.arg}="] += 1
        elif (identifier := _identifier(node)) in RESUME_NAMES:
            counts[identifier] += 1
    return counts


def _identifier(node: ast.AST) -> str | None:
    """The name a Name, Attribute or keyword node carries."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    if isinstance(node, ast.keyword):
        return node.arg
    return None


def _strip_comments(source: str) -> str:
    return "\n".join(re.sub(r"#.*", "", line) for line in source.splitlines())


def _text_counts(source: str, labels: Iterable[str]) -> Counter[str]:
    """Fallback for an old script that cannot be parsed even leniently: count the labels as text."""
    text = _strip_comments(source)
    counts: Counter[str] = Counter()
    for label in labels:
        bare = label.rstrip("(=")
        pattern = re.escape(bare.lstrip(".")) + (r"\s*\(" if label.endswith("(") else "")
        pattern = (r"\." if label.startswith(".") else r"\b") + pattern
        if label.endswith("="):
            pattern += r"\s*=(?!=)"
        counts[label] = len(re.findall(pattern, text))
    return counts


def _dropped(old: Counter[str], new: Counter[str]) -> list[tuple[str, int, int]]:
    return [(label, count, new.get(label, 0)) for label, count in old.items() if new.get(label, 0) < count]


@_rule("runtime calls kept", needs_old=False)
def rule_runtime_calls_kept(s: Scripts) -> list[str]:
    """Without TrainingRuntime's calls twinkle-auto goes blind: no metrics, no status, no stop."""
    assert s.new_tree is not None
    if s.old_tree is not None:
        old, new = _runtime_counts(s.old_tree), _runtime_counts(s.new_tree)
    else:
        labels = [f"{RUNTIME_CONSTRUCTOR}(", *(f".{m}(" for m in RUNTIME_METHODS)]
        old, new = _text_counts(s.old, labels), _text_counts(s.new, labels)
    return [
        f"TrainingRuntime call {label} removed ({before} in the old script, {after} in the patched one); "
        "twinkle-auto needs it to watch the run"
        for label, before, after in _dropped(old, new)
    ]


@_rule("resume logic kept", needs_old=False)
def rule_resume_logic_kept(s: Scripts) -> list[str]:
    """Without its resume logic a relaunched fix would silently start training over from step 0."""
    assert s.new_tree is not None
    if s.old_tree is not None:
        old, new = _resume_counts(s.old_tree), _resume_counts(s.new_tree)
    else:
        labels = [
            *(f"{c}(" for c in RESUME_CALLS),
            "torch.load(",
            *(f"{k}=" for k in RESUME_KEYWORDS),
            *RESUME_NAMES,
        ]
        old, new = _text_counts(s.old, labels), _text_counts(s.new, labels)
    return [
        f"resume logic removed: {label} ({before} in the old script, {after} in the patched one); "
        "a relaunch would start over"
        for label, before, after in _dropped(old, new)
    ]


# ------------------------------------------------------------------------ rule 5: no error swallowing
def _is_broad(handler: ast.ExceptHandler) -> bool:
    if handler.type is None:
        return True
    types = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
    return any(_dotted(t).rsplit(".", 1)[-1] in BROAD_EXCEPTIONS for t in types)


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
            isinstance(value, ast.Call) and _call_name(value) in QUIET_CALLS
        )
    return False


def _raises(body: list[ast.stmt]) -> bool:
    return any(isinstance(node, ast.Raise) for statement in body for node in ast.walk(statement))


def _trys(tree: ast.AST) -> Iterator[ast.Try]:
    try_types: tuple[type, ...] = (ast.Try, getattr(ast, "TryStar", ast.Try))
    return (node for node in ast.walk(tree) if isinstance(node, try_types))


def _wraps_training_loop(node: ast.Try) -> bool:
    return any(_training_loops(statement) for statement in node.body)


def _handler_text(handler: ast.ExceptHandler) -> str:
    head = "except" if handler.type is None else f"except {_snippet(handler.type, 30)}"
    if handler.name:
        head += f" as {handler.name}"
    return f"{head}: {_snippet(handler.body[0], 30)}"


def _swallowing_handlers(tree: ast.AST) -> list[_Found]:
    """Handlers that hide a crash: broad (or around training calls), only quiet statements, no raise.

    A broad handler on a `try` around a whole training loop is left to `rule_no_try_around_loop`,
    so one construct gets one message.
    """
    found: list[_Found] = []
    for node in _trys(tree):
        trains = _has_training_call(node.body)
        for handler in node.handlers:
            broad = _is_broad(handler)
            quiet = all(_is_quiet(statement) for statement in handler.body)
            if quiet and (broad or trains) and not (broad and _wraps_training_loop(node)):
                found.append(_found(handler, text=_handler_text(handler)))
    for node in ast.walk(tree):
        if isinstance(node, (ast.With, ast.AsyncWith)):
            trains = _has_training_call(node.body)
            for item in node.items:
                expr = item.context_expr
                if isinstance(expr, ast.Call) and _call_name(expr) == "suppress":
                    broad = any(_dotted(arg).rsplit(".", 1)[-1] in BROAD_EXCEPTIONS for arg in expr.args)
                    if broad or trains:
                        found.append(_found(expr, line=node.lineno, text=f"with {_snippet(expr)}"))
    return found


@_rule("no new error swallowing")
def rule_no_error_swallowing(s: Scripts) -> list[str]:
    """`except Exception: pass` makes the crash disappear and the training with it."""
    assert s.old_tree is not None and s.new_tree is not None
    return [
        f"new error swallowing at line {item.line}: `{item.text}` hides the crash instead of fixing it"
        for item in _surplus(_swallowing_handlers(s.old_tree), _swallowing_handlers(s.new_tree))
    ]


def _loop_wrapping_trys(tree: ast.AST) -> list[_Found]:
    return [
        _found(handler, line=node.lineno, text=_handler_text(handler))
        for node in _trys(tree)
        if _wraps_training_loop(node)
        for handler in node.handlers
        if _is_broad(handler) and not _raises(handler.body)
    ]


@_rule("no try around the loop")
def rule_no_try_around_loop(s: Scripts) -> list[str]:
    """A broad handler around the whole loop that does not re-raise ends a failed run as a success."""
    assert s.old_tree is not None and s.new_tree is not None
    return [
        f"new try/except around the training loop at line {item.line} catches everything without "
        f"re-raising (`{item.text}`); the crash would be hidden"
        for item in _surplus(_loop_wrapping_trys(s.old_tree), _loop_wrapping_trys(s.new_tree))
    ]


def _exits_with_zero(args: list[ast.expr]) -> bool:
    return not args or (len(args) == 1 and isinstance(args[0], ast.Constant) and args[0].value in (0, None))


def _is_success_exit(node: ast.AST) -> bool:
    """`sys.exit()`, `sys.exit(0)`, `os._exit(0)`, `exit()`, `raise SystemExit`: status 0, looks done."""
    if isinstance(node, ast.Call):
        return _dotted(node.func) in EXIT_FUNCTIONS and _exits_with_zero(node.args)
    if isinstance(node, ast.Raise) and node.exc is not None:
        if isinstance(node.exc, ast.Call):
            return _dotted(node.exc.func) == "SystemExit" and _exits_with_zero(node.exc.args)
        return _dotted(node.exc) == "SystemExit"
    return False


def _success_exits(tree: ast.AST) -> list[_Found]:
    """Exits with status 0 where they cut training short: in a handler, in or before the loop."""
    parents = _parents(tree)
    loops = _training_loops(tree)
    ends = [node.end_lineno or node.lineno for node in [*loops, *_trainer_train_calls(tree)]]
    last_training_line = max(ends, default=0)
    found = []
    for node in ast.walk(tree):
        if not _is_success_exit(node):
            continue
        ancestors = list(_ancestors(node, parents))
        if any(isinstance(a, ast.ExceptHandler) for a in ancestors):
            where = "inside an except handler"
        elif any(a in loops for a in ancestors):
            where = "inside the training loop"
        elif node.lineno <= last_training_line:
            where = "before training ends"
        else:
            continue
        found.append(_Found(f"{where}:{ast.unparse(node)}", node.lineno, f"`{_snippet(node)}` {where}"))
    return found


@_rule("no early exit")
def rule_no_early_exit(s: Scripts) -> list[str]:
    """`sys.exit(0)` before or inside the loop, or in a handler, reports success for unfinished work."""
    assert s.old_tree is not None and s.new_tree is not None
    return [
        f"new {item.text} (line {item.line}); it would end the run as a success without training"
        for item in _surplus(_success_exits(s.old_tree), _success_exits(s.new_tree))
    ]


# ------------------------------------------------------------------------- rule 6: no cut of the work
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
    if isinstance(target, ast.Subscript) and isinstance(_const(target.slice), str):
        return str(_const(target.slice))
    return None


def _const(node: ast.AST | None) -> object:
    return node.value if isinstance(node, ast.Constant) else None


def _settings(tree: ast.AST) -> list[_Setting]:
    """Every place the script sets a work-size key, with its numeric value when it is a literal."""
    found: list[_Setting] = []

    def add(name: object, value: ast.AST | None, line: int, *, allow_str: bool = False) -> None:
        key = _work_key(name) if isinstance(name, str) else None
        if key is not None and value is not None:
            found.append(_Setting(key, _number(value, allow_str=allow_str), value, line))

    for node in ast.walk(tree):
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
                add(_const(k), v, v.lineno)
        elif isinstance(node, ast.Call):
            for kw in node.keywords:
                add(kw.arg, kw.value, kw.value.lineno)
            name = _call_name(node)
            options = [str(_const(a)) for a in node.args if isinstance(_const(a), str)]
            if name == "add_argument" and options:
                dest = next((kw.value for kw in node.keywords if kw.arg == "dest"), None)
                option = _const(dest) if isinstance(_const(dest), str) else max(options, key=len)
                default = next((kw.value for kw in node.keywords if kw.arg == "default"), None)
                add(option, default, node.lineno, allow_str=True)
            elif name in ("getenv", "get") and len(node.args) == 2:
                add(_const(node.args[0]), node.args[1], node.lineno, allow_str=True)
    return found


def _cut(old: list[float], new: list[float]) -> tuple[float, float] | None:
    """(was, now) when `new` brings in a value smaller than the one it replaced (or than any old one)."""
    old_left, new_left = Counter(old), Counter(new)
    removed, added = list((old_left - new_left).elements()), list((new_left - old_left).elements())
    for value in added:
        reference = max(removed, key=_effective) if removed else min(old, key=_effective)
        if _effective(value) < _effective(reference):
            return reference, value
    return None


def _is_cap(node: ast.AST) -> bool:
    return isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "min"


def _shrinking_updates(tree: ast.AST) -> list[_Found]:
    """`max_steps //= 100` and friends."""
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.AugAssign):
            continue
        name = _target_name(node.target)
        if not name or _work_key(name) is None:
            continue
        factor = _number(node.value)
        shrinks = isinstance(node.op, (ast.Sub, ast.Div, ast.FloorDiv, ast.RShift, ast.Mod)) or (
            isinstance(node.op, ast.Mult) and factor is not None and factor < 1
        )
        if shrinks:
            found.append(_found(node))
    return found


@_rule("work not cut")
def rule_work_not_cut(s: Scripts) -> list[str]:
    """Fewer steps, epochs or samples make any crash vanish; the user's numbers are not the LLM's."""
    assert s.old_tree is not None and s.new_tree is not None
    old, new = _settings(s.old_tree), _settings(s.new_tree)
    violations = []
    for key in sorted({setting.key for setting in old if setting.value is not None}):
        old_values = [st.value for st in old if st.key == key and st.value is not None]
        new_settings = [st for st in new if st.key == key]
        if not new_settings:
            violations.append(
                f"{key} removed (was {_fmt(old_values[0])}); keep the amount of work the user set"
            )
            continue
        new_values = [st.value for st in new_settings if st.value is not None]
        cut = _cut(old_values, new_values) if new_values else None
        if cut is not None:
            line = next(st.line for st in new_settings if st.value == cut[1])
            violations.append(f"{key} cut from {_fmt(cut[0])} to {_fmt(cut[1])} (line {line})")
    caps_old = [_found(st.node, st.line, f"{st.key} = {_snippet(st.node)}") for st in old if _is_cap(st.node)]
    caps_new = [_found(st.node, st.line, f"{st.key} = {_snippet(st.node)}") for st in new if _is_cap(st.node)]
    violations.extend(
        f"work capped with `{item.text}` at line {item.line}" for item in _surplus(caps_old, caps_new)
    )
    violations.extend(
        f"work cut with `{item.text}` at line {item.line}"
        for item in _surplus(_shrinking_updates(s.old_tree), _shrinking_updates(s.new_tree))
    )
    return violations


def _data_name(node: ast.AST) -> str:
    """A name for what is sliced: `train_ds`, `self.data`, `dataset["train"]`, `load_dataset(...)`."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    if isinstance(node, ast.Subscript):
        key = _const(node.slice)
        if isinstance(key, str) and any(hint in key.lower() for hint in DATA_SPLIT_HINTS):
            return f"{_data_name(node.value)}_{key}"
        return ""  # a field of one record, or a computed index: not a dataset
    if isinstance(node, ast.Call):
        return _call_name(node)
    return ""


def _data_like(node: ast.AST) -> bool:
    name = _data_name(node).lower()
    tokens = set(re.split(r"[^a-z]+", name))
    return any(hint in name for hint in DATA_NAME_HINTS) or bool(tokens & DATA_NAME_TOKENS)


def _is_data_cut_call(call: ast.Call) -> bool:
    name = _call_name(call)
    if name == "Subset":
        return True
    if not isinstance(call.func, ast.Attribute):
        return False
    if name == "select":
        return bool(call.args) and _is_partial_range(call.args[0])
    return name in DATA_CUT_METHODS and _data_like(call.func.value)


def _is_partial_range(node: ast.AST) -> bool:
    """`range(100)`, `range(0, n, 2)`: yes; `range(len(ds))`, the whole dataset in order: no."""
    if not (isinstance(node, ast.Call) and _call_name(node) == "range"):
        return False
    whole = len(node.args) == 1 and isinstance(node.args[0], ast.Call) and _call_name(node.args[0]) == "len"
    return not whole


def _data_cuts(tree: ast.AST) -> list[_Found]:
    """Places that train on a fixed part of the data: `ds[:100]`, `.select(range(100))`, `.take(8)`..."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Slice):
            upper = _number(node.slice.upper) if node.slice.upper is not None else None
            lower_ok = node.slice.lower is None or _number(node.slice.lower) is not None
            if upper is not None and upper >= 0 and lower_ok and _data_like(node.value):
                found.append(_found(node, text=_snippet(node, keep_end=True)))
        elif isinstance(node, ast.Call):
            if _is_data_cut_call(node):
                found.append(_found(node, text=_snippet(node, keep_end=True)))
            for kw in node.keywords:
                split = _const(kw.value)
                if kw.arg == "split" and isinstance(split, str) and re.search(r"\[[^\]]*:[^\]]*\]|%", split):
                    found.append(_found(kw.value, text=f"split={split!r}"))
    return found


@_rule("data not cut")
def rule_data_not_cut(s: Scripts) -> list[str]:
    """Training on a slice of the dataset hides data-dependent crashes and is not the user's run."""
    assert s.old_tree is not None and s.new_tree is not None
    return [
        f"dataset cut: `{item.text}` at line {item.line} is new; train on all the data the user set"
        for item in _surplus(_data_cuts(s.old_tree), _data_cuts(s.new_tree))
    ]


def _loop_bounds(tree: ast.AST) -> list[tuple[str, float, int]]:
    """(kind, bound, line) for training loops `for … in range(N)` and `while step < N`, N a literal.

    Only loops that train count: a retry loop `for attempt in range(3)` is the fix's business.
    """
    found = []
    for node in _training_loops(tree):
        if isinstance(node, (ast.For, ast.AsyncFor)):
            for call in _calls(node.iter):
                if _call_name(call) == "range" and call.args:
                    stop = call.args[0] if len(call.args) == 1 else call.args[1]
                    value = _number(stop)
                    if value is not None:
                        found.append(("for-loop range", value, node.lineno))
        elif isinstance(node, ast.While) and isinstance(node.test, ast.Compare):
            for op, right in zip(node.test.ops, node.test.comparators):
                value = _number(right)
                if isinstance(op, (ast.Lt, ast.LtE)) and value is not None:
                    found.append(("while-loop bound", value, node.lineno))
    return found


@_rule("loop bounds not cut")
def rule_loop_bounds_not_cut(s: Scripts) -> list[str]:
    """`range(1000)` → `range(10)` is `max_steps` cut by another name."""
    assert s.old_tree is not None and s.new_tree is not None
    old, new = _loop_bounds(s.old_tree), _loop_bounds(s.new_tree)
    violations = []
    for kind in sorted({k for k, _, _ in old}):
        cut = _cut([v for k, v, _ in old if k == kind], [v for k, v, _ in new if k == kind])
        if cut is not None:
            line = next(ln for k, v, ln in new if k == kind and v == cut[1])
            violations.append(f"{kind} cut from {_fmt(cut[0])} to {_fmt(cut[1])} (line {line})")
    return violations


# --------------------------------------------------------------------------- rule 7: a minimal patch
@_rule("patch is minimal", needs_old=False, needs_new=False)
def rule_patch_is_minimal(s: Scripts) -> list[str]:
    """A rewrite cannot be reviewed and loses what the LLM did not copy; ask for a patch instead."""
    old = [line.rstrip() for line in s.old.splitlines() if line.strip()]
    new = [line.rstrip() for line in s.new.splitlines() if line.strip()]
    if not old:
        return []
    matcher = difflib.SequenceMatcher(None, old, new, autojunk=False)
    kept = sum(block.size for block in matcher.get_matching_blocks())
    changed = max(len(old) - kept, len(new) - kept)
    if changed < MIN_REWRITE_LINES or changed <= MAX_CHANGED_FRACTION * len(old):
        return []
    percent = min(100, round(100 * changed / len(old)))
    return [f"patch rewrites {percent}% of the script; send a minimal patch"]
