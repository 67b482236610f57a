"""Shared AST helpers for the guards: lenient parsing, names of calls, training loops, literal values.

Every rule family reads scripts through these, so "what is a training loop" or "what is the value of
`10 * 100`" has one answer across the package.
"""

from __future__ import annotations

import ast
import math
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from typing import NamedTuple, TypeVar

T = TypeVar("T")

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
"""A loop that calls one of these (`x.name(...)`) anywhere inside is a training loop."""
TRAINING_FUNCTIONS = frozenset({"forward_backward", "optim_step", "train", "train_step", "training_step"})
"""...or calls one of these as a plain function (`name(...)`)."""
RESUME_KEYWORDS = ("resume_from_checkpoint",)

BLOCK_KEYWORDS = frozenset(
    {"for", "while", "if", "elif", "else", "def", "class", "with", "try", "except", "finally", "async"}
)
MAX_REPAIRS = 20
"""An old script that does not parse (the crash may be a SyntaxError) is parsed after blanking at most
this many offending lines, so its structure can still be compared."""
MAX_SALVAGE_LINES = 400
"""For the capability comparison an old script beyond repair is salvaged line by line (each line that
parses on its own counts), up to this many lines; a capability the old script had is never lost."""


# -------------------------------------------------------------------------------------------- parsing
def parse(source: str) -> tuple[ast.Module | None, str | None]:
    """The tree of a patched script, or None and the one-line reason it does not parse."""
    try:
        return ast.parse(source), None
    except SyntaxError as exc:
        return None, f"patched script does not parse: {exc.msg} at line {exc.lineno}"
    except ValueError as exc:  # e.g. null bytes
        return None, f"patched script does not parse: {exc}"


def parse_lenient(source: str, max_repairs: int = MAX_REPAIRS) -> ast.Module | None:
    """Parse the old script, blanking lines that do not parse (the crash being fixed may be one)."""
    lines = source.splitlines()
    seen: set[tuple[int, str, str]] = set()
    for _ in range(max_repairs):
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


def salvage(source: str) -> ast.Module:
    """Every line of a script beyond repair that parses on its own, as one module (line numbers kept).

    Used only to learn what an unparseable old script could do, so nothing it had counts as new.
    """
    body: list[ast.stmt] = []
    for number, line in enumerate(source.splitlines()[:MAX_SALVAGE_LINES], start=1):
        code = line.strip()
        if not code or code.startswith("#"):
            continue
        try:
            tree = ast.parse(code.rstrip(":") if code.endswith(":") else code)
        except (SyntaxError, ValueError):
            continue
        for statement in tree.body:
            ast.increment_lineno(statement, number - 1)
            body.append(statement)
    return ast.Module(body=body, type_ignores=[])


def _repair_line(lines: list[str], i: int, message: str) -> None:
    """Make line `i` parse while keeping as much structure as possible (a loop header stays a loop)."""
    indent, code = leading_ws(lines[i]), lines[i].strip()
    if code.split(" ", 1)[0].rstrip(":") in BLOCK_KEYWORDS and not code.endswith(":"):
        lines[i] = lines[i].rstrip() + ":"  # the commonest typo: a missing colon
    elif "expected an indented block" in message:
        previous = next((line for line in reversed(lines[:i]) if line.strip()), "")
        lines.insert(i, leading_ws(previous) + "    pass")
    elif "unexpected indent" in message or "unindent" in message:
        lines[i] = ""
    else:
        following = next((line for line in lines[i + 1 :] if line.strip()), "")
        opens_block = len(leading_ws(following)) > len(indent)
        lines[i] = indent + ("if True:" if opens_block else "pass")


def leading_ws(line: str) -> str:
    return line[: len(line) - len(line.lstrip())]


# ------------------------------------------------------------------------------------ names and calls
def dotted(node: ast.AST) -> str:
    """`a.b.c` for a Name/Attribute chain, "" for anything else (a call result, a subscript)."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = dotted(node.value)
        return f"{base}.{node.attr}" if base else ""
    return ""


def call_name(call: ast.Call) -> str:
    if isinstance(call.func, ast.Name):
        return call.func.id
    if isinstance(call.func, ast.Attribute):
        return call.func.attr
    return ""


def receiver(call: ast.Call) -> str:
    return dotted(call.func.value) if isinstance(call.func, ast.Attribute) else ""


def calls(node: ast.AST) -> Iterator[ast.Call]:
    return (child for child in ast.walk(node) if isinstance(child, ast.Call))


def const(node: ast.AST | None) -> object:
    return node.value if isinstance(node, ast.Constant) else None


def keyword(call: ast.Call, name: str) -> ast.expr | None:
    return next((kw.value for kw in call.keywords if kw.arg == name), None)


def is_training_call(call: ast.Call) -> bool:
    if isinstance(call.func, ast.Attribute):
        return call.func.attr in TRAINING_METHODS
    return isinstance(call.func, ast.Name) and call.func.id in TRAINING_FUNCTIONS


LOOP_TYPES = (ast.For, ast.AsyncFor, ast.While)
FUNCTION_TYPES = (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)
TRY_TYPES: tuple[type, ...] = (ast.Try, getattr(ast, "TryStar", ast.Try))
INDEX_CACHE_SIZE = 16
"""Trees whose index is kept: a review parses two scripts, a benchmark a few more."""


class TreeIndex:
    """One walk over a tree, shared by every rule: its nodes (in `ast.walk` order), each node's parent,
    and what trains. Rules ask the index instead of walking the tree again, so a review stays a few
    times the cost of parsing however many rules there are."""

    def __init__(self, tree: ast.AST) -> None:
        self.tree = tree
        self.nodes: list[ast.AST] = [tree]
        self.parent_of: dict[ast.AST, ast.AST] = {}
        self.by_type: dict[type, list[ast.AST]] = {}
        self.cache: dict[object, object] = {}
        """Results of per-tree helpers (`cached`), so two rules asking the same question pay once."""
        nodes, parent_of, by_type, AST = self.nodes, self.parent_of, self.by_type, ast.AST
        i = 0
        while i < len(nodes):  # ast.walk's order, without its generators (this is the hot loop)
            node = nodes[i]
            i += 1
            by_type.setdefault(type(node), []).append(node)
            for name in node._fields:
                value = getattr(node, name, None)
                if isinstance(value, AST):
                    parent_of[value] = node
                    nodes.append(value)
                elif isinstance(value, list):
                    for item in value:
                        if isinstance(item, AST):
                            parent_of[item] = node
                            nodes.append(item)
        self.trains: set[ast.AST] = set()
        """Every node that is, or contains, a training call."""
        for call in self.of_type(ast.Call):
            if is_training_call(call):
                self.trains.add(call)
                self.trains.update(ancestors(call, self.parent_of))
        self.training_loops = [n for n in self.of_type(*LOOP_TYPES) if n in self.trains]

    def of_type(self, *types: type) -> list[ast.AST]:
        if len(types) == 1:
            return self.by_type.get(types[0], [])
        wanted = set(types)
        return [node for node in self.nodes if type(node) in wanted]

    def contains(self, outer: ast.AST, inner: ast.AST) -> bool:
        return inner is outer or any(a is outer for a in ancestors(inner, self.parent_of))

    def trains_in(self, statements: Iterable[ast.AST]) -> bool:
        return any(statement in self.trains for statement in statements)


_INDEXES: dict[int, TreeIndex] = {}
_INDEXES_LOCK = threading.Lock()
"""The monitor and the chat may review patches from two threads at once."""


def index(tree: ast.AST) -> TreeIndex:
    """The index of `tree`, built once (the cache holds the tree, so an id is never reused)."""
    with _INDEXES_LOCK:
        cached = _INDEXES.get(id(tree))
        if cached is not None and cached.tree is tree:
            return cached
    built = TreeIndex(tree)
    with _INDEXES_LOCK:
        while len(_INDEXES) >= INDEX_CACHE_SIZE:
            _INDEXES.pop(next(iter(_INDEXES)))
        _INDEXES[id(tree)] = built
    return built


def cached(tree: ast.AST, key: object, compute: Callable[[], T]) -> T:
    """`compute()` once per tree and key."""
    store = index(tree).cache
    if key not in store:
        store[key] = compute()
    return store[key]


def has_training_call(nodes: Iterable[ast.AST]) -> bool:
    return any(is_training_call(call) for node in nodes for call in calls(node))


def training_loops(tree: ast.AST) -> list[ast.For | ast.AsyncFor | ast.While]:
    return index(tree).training_loops


def trainer_train_calls(tree: ast.AST) -> list[ast.Call]:
    """HF-style `trainer.train(...)`: the training loop lives in a library, so the call is the loop."""
    return [
        call
        for call in index(tree).of_type(ast.Call)
        if call_name(call) == "train"
        and isinstance(call.func, ast.Attribute)
        and (
            "trainer" in receiver(call).rsplit(".", 1)[-1].lower()
            or any(kw.arg in RESUME_KEYWORDS for kw in call.keywords)
        )
    ]


def parents(tree: ast.AST) -> dict[ast.AST, ast.AST]:
    return index(tree).parent_of


def ancestors(node: ast.AST, parent_of: dict[ast.AST, ast.AST]) -> Iterator[ast.AST]:
    while node in parent_of:
        node = parent_of[node]
        yield node


def enclosing_loop(node: ast.AST, parent_of: dict[ast.AST, ast.AST]) -> ast.AST | None:
    """The loop a `break`/`continue` belongs to (never crossing a function boundary)."""
    for ancestor in ancestors(node, parent_of):
        if isinstance(ancestor, (*FUNCTION_TYPES, ast.ClassDef)):
            return None
        if isinstance(ancestor, LOOP_TYPES):
            return ancestor
    return None


def enclosing_test(node: ast.AST, parent_of: dict[ast.AST, ast.AST]) -> str:
    """The condition a statement sits under (innermost `if`), as source; "" when unconditional."""
    for ancestor in ancestors(node, parent_of):
        if isinstance(ancestor, ast.If):
            return ast.unparse(ancestor.test)
        if isinstance(ancestor, (*LOOP_TYPES, *FUNCTION_TYPES, ast.ClassDef)):
            return ""
    return ""


# ----------------------------------------------------------------------------------- literal values
def number(node: ast.AST | None, *, allow_str: bool = False) -> float | None:
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
        value = number(node.operand)
        if value is None:
            return None
        return -value if isinstance(node.op, ast.USub) else value
    if isinstance(node, ast.BinOp):
        left, right = number(node.left), number(node.right)
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
        return number(node.args[0], allow_str=True)
    return None


def single_assignments(tree: ast.AST) -> dict[str, ast.expr]:
    """Names assigned exactly once in the whole script (in any scope), with the value they get."""
    idx = index(tree)
    counts = Counter(node.id for node in idx.of_type(ast.Name) if not isinstance(node.ctx, ast.Load))
    values: dict[str, ast.expr] = {}
    for statement in idx.of_type(ast.Assign, ast.AnnAssign):
        targets = statement.targets if isinstance(statement, ast.Assign) else [statement.target]
        value = statement.value
        if len(targets) == 1 and isinstance(targets[0], ast.Name) and value is not None:
            values[targets[0].id] = value
    return {name: value for name, value in values.items() if counts[name] == 1}


# ------------------------------------------------------------------------------------------ display
def fmt(value: float) -> str:
    if value < 0:
        return f"{value:g} (unbounded)"
    return str(int(value)) if value.is_integer() else f"{value:g}"


def effective(value: float) -> float:
    """-1 means "no limit" for max_steps-like settings (HF's default), so it is the largest value."""
    return math.inf if value < 0 else value


def snippet(node: ast.AST, limit: int = 60, *, keep_end: bool = False) -> str:
    """The node's source on one line, shortened; `keep_end` keeps the tail (`....select(range(9))`)."""
    text = " ".join(ast.unparse(node).split())
    if len(text) <= limit:
        return text
    return "..." + text[3 - limit :] if keep_end else text[: limit - 3] + "..."


class Found(NamedTuple):
    """A construct a rule counts: compared by `signature` (source without line numbers), shown as `text`."""

    signature: str
    line: int
    text: str


def found(node: ast.AST, line: int | None = None, text: str | None = None) -> Found:
    return Found(ast.unparse(node), line if line is not None else node.lineno, text or snippet(node))


def surplus(old: Iterable[Found], new: Iterable[Found]) -> list[Found]:
    """What `new` has beyond what `old` already had, compared by signature; so old habits never count."""
    remaining = Counter(item.signature for item in old)
    extra = []
    for item in new:
        if remaining[item.signature] > 0:
            remaining[item.signature] -= 1
        else:
            extra.append(item)
    return extra
