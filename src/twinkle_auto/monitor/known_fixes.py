"""Deterministic repairs for frequent, well-understood training crashes, tried before any LLM.

Some crashes have one right fix that does not need judgement: a keyword a library renamed, a tokenizer
without a pad token, an integer tensor averaged, a batch left on the CPU while the model is elsewhere,
and the autograd errors whose message names the cure (`.detach()` before `.numpy()`, a loss left per
sample, an in-place update of a tensor backward needs, a recurrent state never detached).
A 1.5B model gets these wrong surprisingly often (it renames the wrong argument, or casts the labels
instead of the logits); a recipe gets them right every time and costs no tokens. Each recipe fires only
on evidence from both sides: the error names the pattern AND the script has the exact construct the
error is about at a traceback frame (or, for keywords, a unique call site). Each recipe is right for the
pattern in general, never for one script, and cites the public report it comes from. A recipe returns
the whole new script; the caller still runs the guards on it.
"""

from __future__ import annotations

import ast
import difflib
import re
from collections.abc import Callable
from dataclasses import dataclass

from twinkle_auto.connection.tracebacks import traceback_text
from twinkle_auto.monitor.fix_context import ScriptFrame, error_text, script_frames

__all__ = ["KnownFix", "RECIPES", "find_known_fix"]


@dataclass
class KnownFix:
    """A repair from the catalogue: which recipe, its public source, what it changed, the new script."""

    name: str
    source: str
    summary: str
    new_script: str


@dataclass(frozen=True)
class _Crash:
    script: str
    tree: ast.Module
    error: str
    frames: list[ScriptFrame]


Recipe = Callable[[_Crash], KnownFix | None]
RECIPES: list[tuple[str, Recipe]] = []
"""(name, recipe) in the order they are tried."""


def _recipe(name: str) -> Callable[[Recipe], Recipe]:
    def register(fn: Recipe) -> Recipe:
        RECIPES.append((name, fn))
        return fn

    return register


def find_known_fix(script: str, traceback: str, *, script_path: str = "train.py") -> KnownFix | None:
    """The first catalogue repair that applies to this crash, or None (then the LLM is asked)."""
    try:
        tree = ast.parse(script)
    except (SyntaxError, ValueError):
        return None
    block = traceback_text(traceback) or traceback
    crash = _Crash(
        script, tree, error_text(block), script_frames(block, script_path, len(script.splitlines()))
    )
    for _, recipe in RECIPES:
        fix = recipe(crash)
        if fix is None or fix.new_script == script:
            continue
        try:
            ast.parse(fix.new_script)
        except SyntaxError:
            continue
        return fix
    return None


# ---------------------------------------------------------------------------------- source editing
class _Text:
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


def _callee(call: ast.Call) -> str:
    if isinstance(call.func, ast.Name):
        return call.func.id
    if isinstance(call.func, ast.Attribute):
        return call.func.attr
    return ""


def _statement_at(tree: ast.Module, line: int) -> ast.stmt | None:
    """The innermost simple statement (or compound header) spanning `line`."""
    best: ast.stmt | None = None
    for node in ast.walk(tree):
        spans = isinstance(node, ast.stmt) and node.lineno <= line <= (node.end_lineno or node.lineno)
        if spans and (best is None or node.lineno >= best.lineno):
            best = node
    return best


def _frame_statements(crash: _Crash) -> list[ast.stmt]:
    """Statements at the script's traceback frames, innermost first."""
    out = []
    for frame in reversed(crash.frames):
        stmt = _statement_at(crash.tree, frame.line)
        if stmt is not None and stmt not in out:
            out.append(stmt)
    return out


def _line_of(node: ast.AST) -> int:
    return node.lineno  # type: ignore[attr-defined]


# ------------------------------------------------------------------------- recipe 1: renamed keywords
@dataclass(frozen=True)
class KeywordRename:
    """`old=` became `new=` in calls whose callee name matches `callee` (a regex)."""

    old: str
    new: str
    callee: str
    source: str


KEYWORD_RENAMES: tuple[KeywordRename, ...] = (
    # transformers 4.46 deprecated Trainer(tokenizer=) for processing_class=, v5 and TRL removed it.
    KeywordRename(
        "tokenizer", "processing_class", r"Trainer$", "https://github.com/huggingface/trl/issues/6168"
    ),
    # transformers 4.41 renamed TrainingArguments(evaluation_strategy=) to eval_strategy=, v4.46 removed it.
    KeywordRename(
        "evaluation_strategy",
        "eval_strategy",
        r"(?:TrainingArguments|Config)$",
        "https://github.com/huggingface/transformers/issues/7974",
    ),
    # TRL renamed SFTConfig(max_seq_length=) to max_length= (the second error in the same report).
    KeywordRename(
        "max_seq_length", "max_length", r"^SFTConfig$", "https://github.com/huggingface/trl/issues/6168"
    ),
)


@dataclass(frozen=True)
class KeywordMove:
    """Keywords that moved from a trainer's constructor into its config object (the `args=` value)."""

    keywords: frozenset[str]
    callee: str
    config_callee: str
    source: str


KEYWORD_MOVES: tuple[KeywordMove, ...] = (
    # TRL moved dataset_text_field, max_seq_length, packing, dataset_num_proc... from SFTTrainer to SFTConfig.
    KeywordMove(
        frozenset(
            {
                "dataset_text_field",
                "max_seq_length",
                "packing",
                "dataset_num_proc",
                "dataset_kwargs",
                "dataset_batch_size",
            }
        ),
        r"^SFTTrainer$",
        r"^SFTConfig$",
        "https://github.com/NVIDIA/workbench-example-llama3-finetune/issues/1 "
        "(also https://github.com/unslothai/unsloth/issues/2010)",
    ),
)

_UNEXPECTED_KW_RE = re.compile(r"(?:(?P<qual>[\w.]+)\(\) )?got an unexpected keyword argument '(?P<kw>\w+)'")


def _calls_with_keyword(crash: _Crash, keyword: str) -> list[tuple[ast.Call, ast.keyword]]:
    """Calls passing `keyword=`: those at a traceback frame if any frame has one, else all in the script."""
    found = [
        (node, kw)
        for node in ast.walk(crash.tree)
        if isinstance(node, ast.Call)
        for kw in node.keywords
        if kw.arg == keyword
    ]
    at_frames = []
    for stmt in _frame_statements(crash):
        span = range(stmt.lineno, (stmt.end_lineno or stmt.lineno) + 1)
        at_frames.extend(pair for pair in found if pair[1].lineno in span and pair not in at_frames)
        if at_frames:
            return at_frames
    return found if not crash.frames else []


@_recipe("renamed keyword")
def recipe_renamed_keyword(crash: _Crash) -> KnownFix | None:
    """`X() got an unexpected keyword argument 'k'` where k is a known rename and the call is in the script."""
    match = _UNEXPECTED_KW_RE.search(crash.error)
    if not match:
        return None
    keyword = match.group("kw")
    for rename in KEYWORD_RENAMES:
        if rename.old != keyword:
            continue
        calls = [
            (c, k) for c, k in _calls_with_keyword(crash, keyword) if re.search(rename.callee, _callee(c))
        ]
        if len(calls) != 1:
            continue  # none: not this library's call; several: which one failed is not known
        call, kw = calls[0]
        if any(other.arg == rename.new for other in call.keywords):
            continue  # both spellings given: a person must choose
        text = _Text(crash.script)
        start = text.offset(kw.lineno, kw.col_offset)
        if crash.script[start : start + len(keyword)] != keyword:
            continue
        text.replace(start, start + len(keyword), rename.new)
        return KnownFix(
            name="renamed keyword",
            source=rename.source,
            summary=(
                f"Renamed the keyword {keyword}= to {rename.new}= in the {_callee(call)}(...) call on line "
                f"{kw.lineno}, because the library renamed it and no longer accepts the old name."
            ),
            new_script=text.result(),
        )
    for move in KEYWORD_MOVES:
        if keyword not in move.keywords:
            continue
        fix = _move_keyword(crash, keyword, move)
        if fix is not None:
            return fix
    return None


def _move_keyword(crash: _Crash, keyword: str, move: KeywordMove) -> KnownFix | None:
    calls = [(c, k) for c, k in _calls_with_keyword(crash, keyword) if re.search(move.callee, _callee(c))]
    if len(calls) != 1:
        return None
    call, kw = calls[0]
    args = next((k.value for k in call.keywords if k.arg == "args"), None)
    config = _config_call(crash.tree, args, move.config_callee, before=call.lineno)
    if config is None or any(k.arg == keyword for k in config.keywords):
        return None
    text = _Text(crash.script)
    value = ast.get_source_segment(crash.script, kw.value)
    if value is None:
        return None
    _delete_keyword(text, kw)
    last = ([*config.args, *config.keywords] or [None])[-1]
    if last is None:
        close = text.end(config) - 1
        text.replace(close, close, f"{keyword}={value}")
    else:
        at = text.end(last.value if isinstance(last, ast.keyword) else last)
        text.replace(at, at, f", {keyword}={value}")
    return KnownFix(
        name="keyword moved to config",
        source=move.source,
        summary=(
            f"Moved {keyword}= from the {_callee(call)}(...) call on line {kw.lineno} into the "
            f"{_callee(config)}(...) on line {config.lineno}, where the library now expects it."
        ),
        new_script=text.result(),
    )


def _config_call(tree: ast.Module, args: ast.AST | None, callee: str, *, before: int) -> ast.Call | None:
    """The config constructor call behind a trainer's `args=`: inline, or the latest assignment of the name."""
    if isinstance(args, ast.Call):
        return args if re.search(callee, _callee(args)) else None
    if not isinstance(args, ast.Name):
        return None
    assigned = [
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Assign)
        and node.lineno < before
        and any(isinstance(t, ast.Name) and t.id == args.id for t in node.targets)
    ]
    if not assigned:
        return None
    latest = max(assigned, key=_line_of)
    return latest if isinstance(latest, ast.Call) and re.search(callee, _callee(latest)) else None


def _delete_keyword(text: _Text, kw: ast.keyword) -> None:
    """Remove `kw=value` and one adjoining comma; a keyword alone on its line takes the line with it."""
    start, end = text.start(kw), text.end(kw.value)
    script = text.script
    after = end
    while after < len(script) and script[after] in " \t":
        after += 1
    if after < len(script) and script[after] == ",":
        end = after + 1
        while end < len(script) and script[end] in " \t":
            end += 1
    else:
        before = start
        while before > 0 and script[before - 1] in " \t\n":
            before -= 1
        if before > 0 and script[before - 1] == ",":
            start = before - 1
    line_start = script.rfind("\n", 0, start) + 1
    if not script[line_start:start].strip() and end < len(script) and script[end] == "\n":
        start, end = line_start, end + 1
    text.replace(start, end, "")


# ------------------------------------------------------------------------------- recipe 2: pad token
# transformers collators and torch's pad_sequence need a pad token; causal LM tokenizers (Llama, GPT-2)
# ship without one. https://github.com/jianzhnie/LLamaTuner/issues/96, https://github.com/huggingface/trl/issues/1152
_PAD_ERROR_RE = re.compile(
    r"padding_value'? \(position \d+\) must be \w+, not NoneType"
    r"|Asking to pad but the tokenizer does not have a padding token"
    r"|tokenizer does not have a pad(?:ding)? token"
    r"|pad_token(?:_id)? is None"
)
_TOKENIZER_NAME_RE = re.compile(r"tok", re.IGNORECASE)


@_recipe("missing pad token")
def recipe_pad_token(crash: _Crash) -> KnownFix | None:
    """Set pad_token = eos_token right after the tokenizer is created, when the script never sets it."""
    if not _PAD_ERROR_RE.search(crash.error) or "pad_token" in _assigned_attributes(crash.tree):
        return None
    creations = [
        node
        for node in ast.walk(crash.tree)
        if isinstance(node, ast.Assign)
        and len(node.targets) == 1
        and isinstance(node.targets[0], (ast.Name, ast.Attribute))
        and isinstance(node.value, ast.Call)
        and (
            "Tokenizer" in _callee(node.value)
            or (
                _callee(node.value) == "from_pretrained"
                and _TOKENIZER_NAME_RE.search(ast.unparse(node.targets[0]).rsplit(".", 1)[-1])
            )
        )
    ]
    names = {ast.unparse(node.targets[0]) for node in creations}
    if len(names) != 1:
        return None  # no tokenizer made here, or several: which one pads is not known
    name = names.pop()
    text = _Text(crash.script)
    for node in creations:
        lines = crash.script.splitlines(keepends=True)
        line = lines[node.lineno - 1]
        indent = line[: len(line) - len(line.lstrip())]
        at = text.starts[node.end_lineno or node.lineno]
        newline = "" if at == 0 or crash.script[at - 1] == "\n" else "\n"
        text.replace(
            at,
            at,
            f"{newline}{indent}if {name}.pad_token is None:\n{indent}    {name}.pad_token = {name}.eos_token\n",
        )
    where = ", ".join(str(node.end_lineno) for node in creations)
    return KnownFix(
        name="missing pad token",
        source="https://github.com/jianzhnie/LLamaTuner/issues/96",
        summary=(
            f"Set {name}.pad_token to its eos_token after the tokenizer is created (line {where}), because "
            "the tokenizer has no pad token and padding needs one."
        ),
        new_script=text.result(),
    )


def _assigned_attributes(tree: ast.Module) -> set[str]:
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            out.update(t.attr for t in targets if isinstance(t, ast.Attribute))
        if isinstance(node, ast.Call) and _callee(node) == "add_special_tokens":
            out.add("pad_token")  # tokenizer.add_special_tokens({"pad_token": ...})
    return out


# --------------------------------------------------------------------- recipe 3: integer tensor mean
# torch.mean/std/var/softmax refuse integer tensors (numpy silently promotes); the fix is a float cast
# of the input. https://github.com/pytorch/pytorch/issues/94909, https://github.com/pyg-team/pytorch_geometric/pull/7735
_INT_OP_ERRORS: tuple[tuple[re.Pattern[str], frozenset[str]], ...] = (
    (re.compile(r"\bnanmean\(\): expected input to have floating point dtype"), frozenset({"nanmean"})),
    (re.compile(r"\bmean\(\): could not infer output dtype"), frozenset({"mean"})),
    (re.compile(r"Can only calculate the mean of floating types"), frozenset({"mean"})),
    (
        re.compile(r"std and var only support floating point"),
        frozenset({"std", "var", "std_mean", "var_mean"}),
    ),
    (
        re.compile(r"\"(?:log_)?softmax\w*\" not implemented for '(?:Long|Int|Short|Byte|Char|Bool)'"),
        frozenset(),
    ),
)
_INT_KERNEL_RE = re.compile(
    r"\"(?P<op>[a-z_]+?)(?:_lastdim)?(?:_kernel_impl|_cpu|_cuda)?\" not implemented for '(?:Long|Int|Short|Byte|Char|Bool)'"
)
_FLOAT_OPS = frozenset({"mean", "nanmean", "std", "var", "std_mean", "var_mean", "softmax", "log_softmax"})


@_recipe("integer tensor in a float op")
def recipe_integer_mean(crash: _Crash) -> KnownFix | None:
    """Cast the input of the one mean/std/var/softmax call on the failing line to float."""
    ops: frozenset[str] | None = None
    for pattern, names in _INT_OP_ERRORS:
        if pattern.search(crash.error):
            ops = names
            break
    kernel = _INT_KERNEL_RE.search(crash.error)
    if kernel and kernel.group("op") in _FLOAT_OPS:
        ops = frozenset({kernel.group("op")})
    if not ops:
        return None
    statements = _frame_statements(crash)
    if not statements:
        return None
    stmt = statements[0]  # the failing line itself: an outer frame's op did not fail
    calls = [node for node in ast.walk(stmt) if isinstance(node, ast.Call) and _callee(node) in ops]
    if len(calls) != 1:
        return None
    call = calls[0]
    text = _Text(crash.script)
    func = call.func
    is_function_form = isinstance(func, ast.Name) or (
        isinstance(func, ast.Attribute)
        and ast.unparse(func.value) in ("torch", "F", "nn.functional", "torch.nn.functional")
    )
    if is_function_form:
        if not call.args:
            return None
        arg = call.args[0]
        segment = ast.get_source_segment(crash.script, arg) or ""
        simple = isinstance(arg, (ast.Name, ast.Attribute, ast.Call, ast.Subscript))
        text.replace(
            text.start(arg), text.end(arg), f"{segment}.float()" if simple else f"({segment}).float()"
        )
        cast = segment
    elif isinstance(func, ast.Attribute):
        end = text.end(func)
        dot = crash.script.rfind(".", text.start(func), end - len(func.attr) + 1)
        if dot < 0:
            return None
        text.replace(dot, dot, ".float()")
        cast = ast.get_source_segment(crash.script, func.value) or "the tensor"
    else:
        return None
    return KnownFix(
        name="integer tensor in a float op",
        source="https://github.com/pytorch/pytorch/issues/94909",
        summary=(
            f"Cast {cast} to float before {_callee(call)}() on line {call.lineno}, because {_callee(call)} "
            "does not accept integer tensors."
        ),
        new_script=text.result(),
    )


# -------------------------------------------------------- recipe 3b: float64 data into a float32 model
# numpy arrays are float64 and torch.from_numpy / torch.tensor keep that dtype, while modules are
# float32: "mat1 and mat2 must have the same dtype, but got Double and Float". The fix casts the tensor
# where it is made from the array, so the model and every later use see float32.
# https://github.com/xianglin226/scMDC/issues/8
_DOUBLE_INTO_FLOAT = re.compile(
    r"got Double and Float|expected scalar type Float but found Double|"
    r"Input type \(double\) and bias type \(float\)|found dtype Double but expected Float",
    re.IGNORECASE,
)
_FROM_ARRAY = frozenset({"from_numpy", "tensor", "as_tensor"})


def _last_assignment(tree: ast.Module, name: str, before: int) -> ast.Assign | None:
    found: ast.Assign | None = None
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Assign) and node.lineno < before and len(node.targets) == 1):
            continue
        target = node.targets[0]
        named = isinstance(target, ast.Name) and target.id == name
        if named and (found is None or node.lineno > found.lineno):
            found = node
    return found


@_recipe("float64 data into a float32 model")
def recipe_double_input(crash: _Crash) -> KnownFix | None:
    """Append .float() to the one torch.from_numpy/tensor/as_tensor call (no dtype given) that made a
    tensor the failing statement uses."""
    if not _DOUBLE_INTO_FLOAT.search(crash.error):
        return None
    statements = _frame_statements(crash)
    if not statements:
        return None
    stmt = statements[0]
    used = {n.id for n in ast.walk(stmt) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}
    made: list[tuple[str, ast.Call]] = []
    for name in sorted(used):
        assign = _last_assignment(crash.tree, name, _line_of(stmt))
        value = assign.value if assign is not None else None
        if (
            isinstance(value, ast.Call)
            and _callee(value) in _FROM_ARRAY
            and not any(k.arg == "dtype" for k in value.keywords)
        ):
            made.append((name, value))
    if len(made) != 1:
        return None
    name, call = made[0]
    text = _Text(crash.script)
    text.replace(text.end(call), text.end(call), ".float()")
    return KnownFix(
        name="float64 data into a float32 model",
        source="https://github.com/xianglin226/scMDC/issues/8",
        summary=(
            f"Cast {name} to float32 where it is made from the array on line {call.lineno}, because the "
            "model's weights are float32 and the array is float64."
        ),
        new_script=text.result(),
    )


# ------------------------------------------------------------ recipe 4: per-token logits to cross_entropy
# cross_entropy reads dim 1 as the classes, so (B, T, V) logits with (B, T) targets fail with "Expected
# target size [B, V], got [B, T]"; language-model losses flatten both to (B*T, V) and (B*T,).
# https://github.com/karpathy/ng-video-lecture/issues/53 (logits.view(B*T, C), targets.view(B*T))
_TARGET_SIZE_RE = re.compile(r"Expected target size \[(\d+), (\d+)\], got \[(\d+), (\d+)\]")
_CE_FUNCTIONS = frozenset({"cross_entropy", "nll_loss"})


@_recipe("per-token logits to cross_entropy")
def recipe_token_cross_entropy(crash: _Crash) -> KnownFix | None:
    """Flatten logits to (-1, V) and targets to (-1) in the one cross_entropy call on the failing line."""
    match = _TARGET_SIZE_RE.search(crash.error)
    if not match or match.group(1) != match.group(3):
        return None  # not the (B, V) vs (B, T) signature of unflattened per-token logits
    statements = _frame_statements(crash)
    if not statements:
        return None
    calls = [
        node
        for node in ast.walk(statements[0])
        if isinstance(node, ast.Call) and _callee(node) in _CE_FUNCTIONS and len(node.args) >= 2
    ]
    if len(calls) != 1:
        return None
    call = calls[0]
    logits, target = call.args[0], call.args[1]
    text = _Text(crash.script)
    flat = []
    for arg, shape in ((logits, "-1, {x}.size(-1)"), (target, "-1")):
        segment = ast.get_source_segment(crash.script, arg)
        if segment is None:
            return None
        simple = isinstance(arg, (ast.Name, ast.Attribute, ast.Call, ast.Subscript))
        base = segment if simple else f"({segment})"
        text.replace(text.start(arg), text.end(arg), f"{base}.reshape({shape.format(x=base)})")
        flat.append(segment)
    return KnownFix(
        name="per-token logits to cross_entropy",
        source="https://github.com/karpathy/ng-video-lecture/issues/53",
        summary=(
            f"Flattened {flat[0]} to (tokens, classes) and {flat[1]} to (tokens,) in {_callee(call)}() on line "
            f"{call.lineno}, because it reads dimension 1 as the classes."
        ),
        new_script=text.result(),
    )


# ------------------------------------------------------------------------- recipe 5: device mismatch
# A batch built on the CPU meets a model on the GPU; the script already has `device`, the failing
# line's tensors were never moved. https://github.com/SamLynnEvans/Transformer/issues/27 (the fix moved
# src/trg to the GPU before create_masks), same in https://github.com/SamLynnEvans/Transformer/issues/30
_DEVICE_ERROR_RE = re.compile(
    r"Expected all tensors to be on the same device"
    r"|Input type \(.*\) and weight type \(.*\) should be the same"
    r"|Tensor on device \S+ is not on the expected device"
    r"|Expected object of device type \w+ but got device type \w+"
)
_DEVICE_NAME_RE = re.compile(r"^(?:device|dev|\w+_device)$")
_TENSOR_HINT_RE = re.compile(
    r"\btorch\.|\.(?:transpose|view|reshape|permute|unsqueeze|squeeze|long|float|int|flatten|contiguous|T)\b|\[|@"
)
_LOADER_HINT_RE = re.compile(r"load|data|batch|sample", re.IGNORECASE)
_MOVE_RE = re.compile(r"\.to\(|\.cuda\(|device\s*=")


@_recipe("device mismatch")
def recipe_device_mismatch(crash: _Crash) -> KnownFix | None:
    """Move the failing line's tensor arguments `.to(device)` when the script defines `device`."""
    if not _DEVICE_ERROR_RE.search(crash.error):
        return None
    callables = _callable_names(crash.tree)
    # Innermost first: a helper in the script that fails on its arguments is fixed at its call site.
    for stmt in _frame_statements(crash):
        device = _device_name(crash.tree, stmt.lineno)
        if device is None:
            continue
        candidates: dict[str, list[ast.Name]] = {}
        for call in (node for node in ast.walk(stmt) if isinstance(node, ast.Call)):
            for arg in [*call.args, *(k.value for k in call.keywords)]:
                if isinstance(arg, ast.Name) and arg.id != device and arg.id not in callables:
                    candidates.setdefault(arg.id, []).append(arg)
        moved = [name for name in candidates if _looks_like_unmoved_tensor(crash.tree, name, stmt.lineno)]
        if moved:
            return _move_to_device(crash, stmt, device, moved, candidates)
    return None


def _move_to_device(
    crash: _Crash, stmt: ast.stmt, device: str, moved: list[str], candidates: dict[str, list[ast.Name]]
) -> KnownFix:
    text = _Text(crash.script)
    for name in moved:
        for node in candidates[name]:
            text.replace(text.end(node), text.end(node), f".to({device})")
    names = ", ".join(moved)
    return KnownFix(
        name="device mismatch",
        source="https://github.com/SamLynnEvans/Transformer/issues/27",
        summary=(
            f"Moved {names} to {device} on line {stmt.lineno}, because they were created on another "
            "device than the rest of the computation."
        ),
        new_script=text.result(),
    )


def _device_name(tree: ast.Module, before: int) -> str | None:
    names = {
        target.id
        for node in ast.walk(tree)
        if isinstance(node, ast.Assign) and node.lineno < before
        for target in node.targets
        if isinstance(target, ast.Name) and _DEVICE_NAME_RE.match(target.id)
    }
    return names.pop() if len(names) == 1 else None


def _callable_names(tree: ast.Module) -> set[str]:
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            out.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            out.update((alias.asname or alias.name.split(".")[0]) for alias in node.names)
    return out


def _looks_like_unmoved_tensor(tree: ast.Module, name: str, before: int) -> bool:
    """The latest binding of `name` before the failing line builds a tensor and does not move it.

    A tensor is recognised by how it is made (torch calls, indexing, reshaping, matmul) or by being a
    loop variable over a loader/batches; a name with no such evidence (an options object) is left alone.
    """
    bindings: list[tuple[int, str, bool]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == name for tg in node.targets for t in ast.walk(tg)
        ):
            bindings.append((node.lineno, ast.unparse(node.value), False))
        elif isinstance(node, (ast.For, ast.AsyncFor)) and any(
            isinstance(t, ast.Name) and t.id == name for t in ast.walk(node.target)
        ):
            iterable = ast.unparse(node.iter)
            bindings.append((node.lineno, iterable, bool(_LOADER_HINT_RE.search(iterable))))
    earlier = [b for b in bindings if b[0] <= before]
    if not earlier:
        return False
    _, value, from_loader = max(earlier)
    if _MOVE_RE.search(value):
        return False
    return from_loader or bool(_TENSOR_HINT_RE.search(value))


# ------------------------------------------------------------------ shared helpers of the torch recipes
def _parents(tree: ast.Module) -> dict[ast.AST, ast.AST]:
    return {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}


def _scope_of(node: ast.AST, parents: dict[ast.AST, ast.AST]) -> ast.AST:
    """The function (or the module) a node runs in: names are bound per scope."""
    while node in parents:
        node = parents[node]
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            return node
    return node


def _in_scope(scope: ast.AST) -> list[ast.AST]:
    """Every node of `scope` outside nested functions and classes (their names are their own)."""
    out: list[ast.AST] = []
    todo = list(ast.iter_child_nodes(scope))
    while todo:
        node = todo.pop()
        out.append(node)
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)):
            todo.extend(ast.iter_child_nodes(node))
    return out


def _bindings(scope: ast.AST, name: str) -> list[ast.stmt]:
    """Statements of `scope` that bind `name` (assignments, augmented ones, for targets), by line."""
    found = []
    for node in _in_scope(scope):
        if isinstance(node, ast.Assign):
            targets = [t for target in node.targets for t in ast.walk(target)]
        elif isinstance(node, (ast.AugAssign, ast.AnnAssign, ast.For, ast.AsyncFor)):
            targets = list(ast.walk(node.target))
        else:
            continue
        if any(isinstance(t, ast.Name) and t.id == name for t in targets):
            found.append(node)
    return sorted(found, key=_line_of)


def _append(text: _Text, node: ast.AST, suffix: str) -> bool:
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


# ------------------------------------------------------------- recipe 6: .numpy() on a tensor with grad
# "Can't call numpy() on Tensor that requires grad. Use tensor.detach().numpy() instead." -- the message
# names the fix. Detaching changes no value: a metric computed in numpy never needed the graph.
# https://github.com/zhuangdizhu/FedGen/issues/1
_NUMPY_GRAD_RE = re.compile(r"Can't call numpy\(\) on Tensor that requires grad")


def _detached(node: ast.AST) -> bool:
    """The receiver chain already leaves the graph (`.detach()`, `.data`)."""
    while isinstance(node, (ast.Attribute, ast.Call, ast.Subscript)):
        if isinstance(node, ast.Attribute) and node.attr in ("detach", "data"):
            return True
        node = node.func if isinstance(node, ast.Call) else node.value
    return False


@_recipe("numpy() on a tensor that requires grad")
def recipe_numpy_requires_grad(crash: _Crash) -> KnownFix | None:
    """Insert .detach() before each .numpy() of the failing line whose tensor is not detached yet."""
    if not _NUMPY_GRAD_RE.search(crash.error):
        return None
    statements = _frame_statements(crash)
    if not statements:
        return None
    stmt = statements[0]
    calls = [
        node
        for node in ast.walk(stmt)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "numpy"
        and not node.args
        and not _detached(node.func.value)
    ]
    if not calls:
        return None
    text = _Text(crash.script)
    names = []
    for call in calls:
        func = call.func
        assert isinstance(func, ast.Attribute)
        end = text.end(func)
        dot = crash.script.rfind(".", text.start(func), end)
        if dot < 0:
            return None
        text.replace(dot, dot, ".detach()")
        names.append(ast.get_source_segment(crash.script, func.value) or "the tensor")
    return KnownFix(
        name="numpy() on a tensor that requires grad",
        source="https://github.com/zhuangdizhu/FedGen/issues/1",
        summary=(
            f"Detached {', '.join(names)} before .numpy() on line {stmt.lineno}, because numpy cannot hold "
            "a tensor that is still part of the autograd graph (the values are unchanged)."
        ),
        new_script=text.result(),
    )


# -------------------------------------------------------------- recipe 7: backward() of a non-scalar
# A loss left per sample (reduction="none", a squeeze instead of a mean, or DataParallel gathering one
# loss per device) cannot start backward(). Every torch loss reduces by the mean by default, and the
# reports fix it with .mean(). https://github.com/WisconsinAIVision/MaskPoint/issues/7 (DataParallel),
# https://github.com/mindee/doctr/pull/379 (a per-sample loss returned unreduced)
_NON_SCALAR_RE = re.compile(r"grad can be implicitly created only for scalar outputs")


@_recipe("backward() of a non-scalar loss")
def recipe_backward_non_scalar(crash: _Crash) -> KnownFix | None:
    """Reduce the loss by its mean where it is assigned (or, if it is not a name, at the backward call)."""
    if not _NON_SCALAR_RE.search(crash.error):
        return None
    statements = _frame_statements(crash)
    if not statements:
        return None
    stmt = statements[0]
    calls = [node for node in ast.walk(stmt) if isinstance(node, ast.Call) and _callee(node) == "backward"]
    if len(calls) != 1 or any(k.arg in ("gradient", "grad_tensors") for k in calls[0].keywords):
        return None
    call = calls[0]
    if not call.args and isinstance(call.func, ast.Attribute):
        loss: ast.AST = call.func.value  # loss.backward()
    elif len(call.args) == 1:
        loss = call.args[0]  # accelerator.backward(loss), torch.autograd.backward(loss)
    else:
        return None
    text = _Text(crash.script)
    segment = ast.get_source_segment(crash.script, loss)
    assign = _loss_assignment(crash, stmt, loss)
    if assign is not None:
        where = f"where it is computed on line {assign.lineno}"
        appended = _append(text, assign.value, ".mean()")
    else:
        where = f"before backward() on line {stmt.lineno}"
        appended = _append(text, loss, ".mean()")
    if segment is None or not appended:
        return None
    return KnownFix(
        name="backward() of a non-scalar loss",
        source="https://github.com/WisconsinAIVision/MaskPoint/issues/7",
        summary=(
            f"Averaged {segment} to one number {where}, because backward() needs a scalar loss and the "
            "mean is the reduction torch losses use by default."
        ),
        new_script=text.result(),
    )


def _loss_assignment(crash: _Crash, stmt: ast.stmt, loss: ast.AST) -> ast.Assign | None:
    """The one plain assignment `loss = ...` that the failing backward reads, if it is unambiguous."""
    if not isinstance(loss, ast.Name):
        return None
    scope = _scope_of(stmt, _parents(crash.tree))
    earlier = [b for b in _bindings(scope, loss.id) if _line_of(b) < stmt.lineno]
    if not earlier:
        return None
    last = earlier[-1]
    plain = (
        isinstance(last, ast.Assign)
        and len(last.targets) == 1
        and isinstance(last.targets[0], ast.Name)
        and not isinstance(last.value, (ast.Constant, ast.Tuple, ast.List))
    )
    return last if plain else None  # type: ignore[return-value]


# --------------------------------------------------------- recipe 8: in-place change of a saved tensor
# "one of the variables needed for gradient computation has been modified by an inplace operation:
# [...], which is output 0 of SigmoidBackward0": a tensor that backward still needs was changed in place
# (`x += 1`, `x.mul_(2)`, `ReLU(inplace=True)`). The reports' fix is the out-of-place form, which gives
# the same values: https://github.com/Jee-King/TSAN/issues/3, https://github.com/lyongo/NWPU-MOC/issues/4
# ("change += into ="), https://github.com/osmr/imgclsmob/issues/13 (remove inplace=True),
# https://github.com/charlesCXK/RGBD_Semantic_Segmentation_PyTorch/issues/9 (both).
_INPLACE_RE = re.compile(
    r"modified by an inplace operation(?:.*?which is output \d+ of (?P<op>\w+?)(?:Backward\d*)?,)?"
)
_BINOP_NAMES: dict[type, str] = {
    ast.Add: "add",
    ast.Sub: "sub",
    ast.Mult: "mul",
    ast.Div: "div",
    ast.Pow: "pow",
}
_INPLACE_METHODS = frozenset(
    {
        "add_", "sub_", "mul_", "div_", "pow_", "clamp_", "clamp_min_", "clamp_max_", "relu_", "sigmoid_",
        "tanh_", "exp_", "log_", "sqrt_", "abs_", "neg_", "masked_fill_", "addcmul_", "addcdiv_", "t_",
        "transpose_", "unsqueeze_", "squeeze_",
    }
)  # fmt: skip
"""In-place tensor methods whose name without the trailing _ is the out-of-place twin (fill_, zero_,
copy_ and the random fills have none)."""


def _produced_by(value: ast.AST, op: str) -> bool:
    """`value` is, at its top, the operation the error names (a call of that name, or that operator)."""
    if isinstance(value, ast.Call):
        return _callee(value).lower().replace("_", "") == op
    if isinstance(value, ast.BinOp):
        return _BINOP_NAMES.get(type(value.op)) == op
    return False


@_recipe("in-place change of a tensor autograd needs")
def recipe_inplace_autograd(crash: _Crash) -> KnownFix | None:
    """Rewrite the in-place update of the tensor the error names out of place; failing a named tensor,
    turn every `inplace=True` off (a memory saving only: the values are the same)."""
    match = _INPLACE_RE.search(crash.error)
    if not match:
        return None
    text = _Text(crash.script)
    op = (match.group("op") or "").lower()
    changed = _out_of_place_updates(crash, text, op) if op else []
    if changed:
        lines = ", ".join(str(n) for n in changed)
        return KnownFix(
            name="in-place change of a tensor autograd needs",
            source="https://github.com/Jee-King/TSAN/issues/3",
            summary=(
                f"Rewrote the in-place update on line {lines} out of place (the same values in a new "
                f"tensor), because backward still needs the {match.group('op')} output it overwrote."
            ),
            new_script=text.result(),
        )
    flags = [
        kw
        for node in ast.walk(crash.tree)
        if isinstance(node, ast.Call)
        for kw in node.keywords
        if kw.arg == "inplace" and isinstance(kw.value, ast.Constant) and kw.value.value is True
    ]
    if not flags:
        return None
    for kw in flags:
        text.replace(text.start(kw.value), text.end(kw.value), "False")
    lines = ", ".join(sorted({str(kw.value.lineno) for kw in flags}, key=int))
    return KnownFix(
        name="in-place change of a tensor autograd needs",
        source="https://github.com/osmr/imgclsmob/issues/13",
        summary=(
            f"Turned inplace=True off on line {lines}, because an in-place activation overwrote a tensor "
            "backward still needs (the values computed are the same)."
        ),
        new_script=text.result(),
    )


def _out_of_place_updates(crash: _Crash, text: _Text, op: str) -> list[int]:
    """Rewrite in place updates (`x op= y`, `x.m_(...)`) of names last made by `op`; their lines."""
    parents = _parents(crash.tree)
    changed: list[int] = []
    for node in ast.walk(crash.tree):
        if isinstance(node, ast.AugAssign) and isinstance(node.target, ast.Name):
            name, rewrite = node.target.id, _rewrite_augassign
        elif (
            isinstance(node, ast.Expr)
            and isinstance(node.value, ast.Call)
            and isinstance(node.value.func, ast.Attribute)
            and node.value.func.attr in _INPLACE_METHODS
            and isinstance(node.value.func.value, ast.Name)
        ):
            name, rewrite = node.value.func.value.id, _rewrite_method
        else:
            continue
        made = [
            b
            for b in _bindings(_scope_of(node, parents), name)
            if _line_of(b) < _line_of(node) and isinstance(b, ast.Assign)
        ]
        if made and _produced_by(made[-1].value, op) and rewrite(crash.script, text, node, name):
            changed.append(_line_of(node))
    return changed


def _rewrite_augassign(script: str, text: _Text, node: ast.stmt, name: str) -> bool:
    assert isinstance(node, ast.AugAssign)
    symbol = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.Pow: "**"}.get(type(node.op))
    value = ast.get_source_segment(script, node.value)
    if symbol is None or value is None:
        return False
    simple = isinstance(node.value, (ast.Name, ast.Attribute, ast.Call, ast.Subscript, ast.Constant))
    text.replace(
        text.start(node), text.end(node), f"{name} = {name} {symbol} {value if simple else f'({value})'}"
    )
    return True


def _rewrite_method(script: str, text: _Text, node: ast.stmt, name: str) -> bool:
    assert isinstance(node, ast.Expr) and isinstance(node.value, ast.Call)
    func = node.value.func
    assert isinstance(func, ast.Attribute)
    call = ast.get_source_segment(script, node.value)
    if call is None:
        return False
    head = f"{name}.{func.attr}"
    if not call.startswith(head):
        return False
    text.replace(text.start(node), text.end(node), f"{name} = {name}.{func.attr[:-1]}{call[len(head) :]}")
    return True


# ------------------------------------------------------ recipe 9: recurrent state carried across steps
# "Trying to backward through the graph a second time": a hidden state made in one step is fed to the
# next (`h = cell(x, h)`) and the previous step's graph was freed by its backward. Truncated
# backpropagation through time detaches the carried state at each step; the values are unchanged.
# https://github.com/MorvanZhou/PyTorch-Tutorial/issues/57 (h_state = h_state.data),
# https://github.com/quark0/darts/issues/56 (repackage_hidden)
_BACKWARD_TWICE_RE = re.compile(r"Trying to backward through the graph a second time")
_TENSOR_MAKERS_RE = re.compile(
    r"^(?:zeros|ones|randn|rand|empty|full|zeros_like|ones_like|randn_like|tensor)$"
)


@_recipe("recurrent state carried across steps")
def recipe_recurrent_state(crash: _Crash) -> KnownFix | None:
    """Detach, at the top of the loop that calls backward, each state made before that loop and fed back
    into the call that remakes it (`h = cell(x, h)`, `h, c = cell(x, (h, c))`), as word_language_model's
    `repackage_hidden` does: an inner loop over time steps keeps its full backpropagation."""
    if not _BACKWARD_TWICE_RE.search(crash.error):
        return None
    statements = _frame_statements(crash)
    if not statements:
        return None
    parents = _parents(crash.tree)
    loop: ast.AST = statements[0]
    while loop in parents and not isinstance(loop, (ast.For, ast.While, ast.AsyncFor)):
        loop = parents[loop]
    if not isinstance(loop, (ast.For, ast.While, ast.AsyncFor)) or loop.body[0].lineno == loop.lineno:
        return None
    scope = _scope_of(loop, parents)
    names: list[str] = []
    for node in ast.walk(loop):
        if not (isinstance(node, ast.Assign) and isinstance(node.value, ast.Call)):
            continue
        targets = {t.id for target in node.targets for t in ast.walk(target) if isinstance(t, ast.Name)}
        for arg in node.value.args:
            for n in [arg] if isinstance(arg, ast.Name) else arg.elts if isinstance(arg, ast.Tuple) else []:
                fed_back = isinstance(n, ast.Name) and n.id in targets and n.id not in names
                if fed_back and _made_as_tensor_before(scope, n.id, loop):
                    names.append(n.id)
    if not names:
        return None
    first = loop.body[0]
    line = crash.script.splitlines(keepends=True)[first.lineno - 1]
    indent = line[: len(line) - len(line.lstrip())]
    text = _Text(crash.script)
    at = text.starts[first.lineno - 1]
    text.replace(at, at, "".join(f"{indent}{name} = {name}.detach()\n" for name in names))
    return KnownFix(
        name="recurrent state carried across steps",
        source="https://github.com/MorvanZhou/PyTorch-Tutorial/issues/57",
        summary=(
            f"Detached {', '.join(names)} at the start of each pass of the loop on line {loop.lineno}, "
            "because each backward frees the graph the carried state still points into (truncated "
            "backpropagation through time; the values are unchanged)."
        ),
        new_script=text.result(),
    )


def _made_as_tensor_before(scope: ast.AST, name: str, loop: ast.stmt) -> bool:
    """`name` is first made before the loop, by a tensor constructor (torch.zeros(...) and the like)."""
    before = [b for b in _bindings(scope, name) if _line_of(b) < loop.lineno]
    if not before or not isinstance(before[-1], ast.Assign):
        return False
    value = before[-1].value
    if isinstance(value, ast.Tuple):  # h, c = torch.zeros(...), torch.zeros(...)
        return all(isinstance(v, ast.Call) and _TENSOR_MAKERS_RE.match(_callee(v)) for v in value.elts)
    return isinstance(value, ast.Call) and bool(_TENSOR_MAKERS_RE.match(_callee(value)))


# -------------------------------------------------------- recipe 10: integer mask to attention
# scaled_dot_product_attention takes a bool mask (True = attend) or an additive float one; a 0/1 integer
# padding mask (1 = a real token) is refused. Cast as bool it means the same.
# https://github.com/seal-rg/recurrent-pretraining/issues/23
_ATTN_MASK_RE = re.compile(r"Expected attn_mask dtype to be bool or float or to match query dtype")


@_recipe("integer attention mask")
def recipe_integer_attention_mask(crash: _Crash) -> KnownFix | None:
    """Cast the attn_mask of the one attention call on the failing line (innermost first) to bool."""
    if not _ATTN_MASK_RE.search(crash.error):
        return None
    for stmt in _frame_statements(crash):
        masks = []
        for call in (n for n in ast.walk(stmt) if isinstance(n, ast.Call)):
            mask = next((k.value for k in call.keywords if k.arg == "attn_mask"), None)
            if mask is None and _callee(call) == "scaled_dot_product_attention" and len(call.args) >= 4:
                mask = call.args[3]
            if mask is not None and not (isinstance(mask, ast.Constant) and mask.value is None):
                masks.append(mask)
        if len(masks) > 1:
            return None
        if masks:
            mask = masks[0]
            segment = ast.get_source_segment(crash.script, mask)
            text = _Text(crash.script)
            if segment is None or not _append(text, mask, ".bool()"):
                return None
            return KnownFix(
                name="integer attention mask",
                source="https://github.com/seal-rg/recurrent-pretraining/issues/23",
                summary=(
                    f"Cast the attention mask {segment} to bool on line {stmt.lineno}, because attention "
                    "takes a bool mask (True = attend) and the integer 0/1 mask means the same."
                ),
                new_script=text.result(),
            )
    return None


# ---------------------------------------------------- recipe 11: a Linear layer sized for other features
# "mat1 and mat2 shapes cannot be multiplied (64x400 and 256x120)": the input has 400 features and the
# layer Linear(256, 120) expects 256 (a flatten size computed for another image size, a feature column
# added to the data). The fix sizes the layer to its input.
# https://github.com/mrdbourke/pytorch-deep-learning/issues/763
_MAT_SHAPES_RE = re.compile(r"mat1 and mat2 shapes cannot be multiplied \((\d+)x(\d+) and (\d+)x(\d+)\)")


@_recipe("Linear layer sized for other features")
def recipe_linear_in_features(crash: _Crash) -> KnownFix | None:
    """Set in_features of the one nn.Linear(in, out) that matches the error's weight to the input's width.

    Left alone when the input looks unflattened (its width divides the layer's in_features and the rows
    are a multiple of the quotient: (B*C*H)xW into Linear(C*H*W, ...)), where the fix is a flatten.
    """
    match = _MAT_SHAPES_RE.search(crash.error)
    if not match:
        return None
    rows, width, expected, out = (int(g) for g in match.groups())
    if width == expected:
        return None
    if expected % width == 0 and rows % (expected // width) == 0:
        return None  # the input probably kept dimensions a flatten would have folded into its width
    constants = _int_constants(crash.tree)
    layers = []
    for node in ast.walk(crash.tree):
        if not (isinstance(node, ast.Call) and _callee(node) == "Linear"):
            continue
        given = {k.arg: k.value for k in node.keywords}
        first = node.args[0] if node.args else given.get("in_features")
        second = node.args[1] if len(node.args) > 1 else given.get("out_features")
        if first is None or second is None:
            continue
        if _int_value(first, constants) == expected and _int_value(second, constants) == out:
            layers.append((node, first))
    if len(layers) != 1:
        return None  # no layer of this size written here, or several: which one failed is not known
    node, first = layers[0]
    text = _Text(crash.script)
    old = ast.get_source_segment(crash.script, first) or str(expected)
    text.replace(text.start(first), text.end(first), str(width))
    return KnownFix(
        name="Linear layer sized for other features",
        source="https://github.com/mrdbourke/pytorch-deep-learning/issues/763",
        summary=(
            f"Set the in_features of the Linear layer on line {node.lineno} from {old} to {width}, because "
            f"its input has {width} features per row."
        ),
        new_script=text.result(),
    )


def _int_constants(tree: ast.Module) -> dict[str, int]:
    """Module-level names bound once to an integer expression (N_FEATURES = 12, HIDDEN = 4 * 64)."""
    counts: dict[str, int] = {}
    values: dict[str, ast.AST] = {}
    for node in ast.walk(tree):
        if isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                for t in ast.walk(target):
                    if isinstance(t, ast.Name):
                        counts[t.id] = counts.get(t.id, 0) + 1
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            values[node.targets[0].id] = node.value
    out: dict[str, int] = {}
    for name, value in values.items():
        if counts.get(name) == 1:
            number = _int_value(value, out)
            if number is not None:
                out[name] = number
    return out


def _int_value(node: ast.AST, constants: dict[str, int]) -> int | None:
    if isinstance(node, ast.Constant) and type(node.value) is int:
        return node.value
    if isinstance(node, ast.Name):
        return constants.get(node.id)
    if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Sub, ast.Mult, ast.FloorDiv)):
        left, right = _int_value(node.left, constants), _int_value(node.right, constants)
        if left is None or right is None or (isinstance(node.op, ast.FloorDiv) and right == 0):
            return None
        ops = {ast.Add: left + right, ast.Sub: left - right, ast.Mult: left * right}
        return ops.get(type(node.op), left // right if right else 0)
    return None


# ------------------------------------------------------------ recipe 12: view() of a non-contiguous tensor
# "view size is not compatible with input tensor's size and stride ... Use .reshape(...) instead." --
# the message names the cure: reshape returns the same values, copying only when a view is impossible.
# https://github.com/pytorch/examples/issues/836, https://github.com/open-mmlab/mmpretrain/pull/104
_VIEW_STRIDE_RE = re.compile(r"view size is not compatible with input tensor's size and stride")


@_recipe("view() of a non-contiguous tensor")
def recipe_view_to_reshape(crash: _Crash) -> KnownFix | None:
    """Replace .view(shape) by .reshape(shape) on the failing line (a dtype view is left alone)."""
    if not _VIEW_STRIDE_RE.search(crash.error):
        return None
    statements = _frame_statements(crash)
    if not statements:
        return None
    stmt = statements[0]
    views = [
        node.func
        for node in ast.walk(stmt)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "view"
        and (node.args or node.keywords)
        and not (
            len(node.args) == 1
            and isinstance(node.args[0], ast.Attribute)
            and ast.unparse(node.args[0].value) == "torch"  # x.view(torch.int32): a dtype, not a shape
        )
    ]
    if not views:
        return None
    text = _Text(crash.script)
    for func in views:
        end = text.end(func)
        text.replace(end - len("view"), end, "reshape")
    return KnownFix(
        name="view() of a non-contiguous tensor",
        source="https://github.com/pytorch/examples/issues/836",
        summary=(
            f"Replaced .view(...) by .reshape(...) on line {stmt.lineno}, because the tensor is not "
            "contiguous in memory; reshape gives the same values and copies only when it must."
        ),
        new_script=text.result(),
    )


# -------------------------------------------------------- recipe 13: float class labels to cross_entropy
# cross_entropy/nll_loss read a (N,) target as class indices, which must be int64; labels loaded as
# floats (a float array, a CSV column) are refused. Casting whole-number labels to long keeps them.
# https://github.com/burlachenkok/flpytorch/pull/14, https://github.com/hunkim/PyTorchZeroToAll/issues/38
_TARGET_DTYPE_RE = re.compile(
    r"expected target dtype to be Long or Byte, but got (?:Float|Double|Half|Int|Short)"
    r"|expected scalar type Long but found (?:Float|Double|Half|Int|Short)"
    r"|Expected object of scalar type Long but got scalar type \w+ for argument #2 'target'"
)
_CLASS_LOSSES = frozenset({"cross_entropy", "nll_loss"})
_CLASS_LOSS_MODULES = frozenset({"CrossEntropyLoss", "NLLLoss"})


@_recipe("float class labels to cross_entropy")
def recipe_class_labels_long(crash: _Crash) -> KnownFix | None:
    """Cast the target of the one cross_entropy / nll_loss (function or module) call at the innermost
    frame that has one to long."""
    if not _TARGET_DTYPE_RE.search(crash.error):
        return None
    modules = {
        ast.unparse(target)
        for node in ast.walk(crash.tree)
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Call)
        and _callee(node.value) in _CLASS_LOSS_MODULES
        for target in node.targets
    }  # fmt: skip
    for stmt in _frame_statements(crash):
        calls = [
            node
            for node in ast.walk(stmt)
            if isinstance(node, ast.Call)
            and (_callee(node) in _CLASS_LOSSES or ast.unparse(node.func) in modules)
        ]
        if len(calls) > 1:
            return None
        if not calls:
            continue
        call = calls[0]
        target = next((k.value for k in call.keywords if k.arg == "target"), None)
        if target is None and len(call.args) >= 2:
            target = call.args[1]
        if target is None:
            return None
        segment = ast.get_source_segment(crash.script, target)
        text = _Text(crash.script)
        if segment is None or not _append(text, target, ".long()"):
            return None
        return KnownFix(
            name="float class labels to cross_entropy",
            source="https://github.com/burlachenkok/flpytorch/pull/14",
            summary=(
                f"Cast {segment} to long on line {stmt.lineno}, because the loss reads its target as class "
                "indices, which must be integers."
            ),
            new_script=text.result(),
        )
    return None


# ------------------------------------------------------------ recipe 14: a key read under a near-miss name
# KeyError: 'labels' while the rows have "label" (or a datasets column error that lists the columns):
# the read is a misspelling of a name that exists. Fired only when exactly one existing name is close
# (difflib ratio >= 0.75) and the failing line spells the missing one as a literal.
# https://github.com/simplescaling/s1/issues/39 (a column the data does not have)
_MISSING_KEY_RES = (
    re.compile(r"^KeyError: ['\"](?P<key>[^'\"]+)['\"]$", re.MULTILINE),
    re.compile(r"Column '(?P<key>[^']+)' doesn't exist"),
    re.compile(r"Column name \['(?P<key>[^']+)'\] not in the dataset"),
)
_LISTED_COLUMNS_RE = re.compile(r"Current columns in the dataset: \[(?P<names>[^\]]*)\]")
_KEY_CUTOFF = 0.75


@_recipe("key read under a near-miss name")
def recipe_near_miss_key(crash: _Crash) -> KnownFix | None:
    """Respell the missing key as the one existing name close to it, on the failing line."""
    key = next((m.group("key") for r in _MISSING_KEY_RES if (m := r.search(crash.error))), None)
    if key is None:
        return None
    listed = _LISTED_COLUMNS_RE.search(crash.error)
    known = set(re.findall(r"'([^']+)'", listed.group("names"))) if listed else _literal_keys(crash.tree)
    if key in known:
        return None  # the name exists: the row that lacks it is a data question
    close = difflib.get_close_matches(key, sorted(known), n=2, cutoff=_KEY_CUTOFF)
    if len(close) != 1:
        return None
    for stmt in _frame_statements(crash):
        spelled = [n for n in ast.walk(stmt) if isinstance(n, ast.Constant) and n.value == key]
        if not spelled:
            continue
        text = _Text(crash.script)
        for node in spelled:
            quote = crash.script[text.start(node)]
            text.replace(text.start(node), text.end(node), f"{quote}{close[0]}{quote}")
        return KnownFix(
            name="key read under a near-miss name",
            source="https://github.com/simplescaling/s1/issues/39",
            summary=(
                f"Read {close[0]!r} instead of {key!r} on line {stmt.lineno}, because the data has no "
                f"{key!r} and {close[0]!r} is the one existing name that close to it."
            ),
            new_script=text.result(),
        )
    return None


def _literal_keys(tree: ast.Module) -> set[str]:
    """String keys the script itself writes: dict literals, dict(name=...) calls, row["key"] = ..."""
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Assign, ast.AugAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            out.update(
                t.slice.value
                for t in targets
                if isinstance(t, ast.Subscript)
                and isinstance(t.slice, ast.Constant)
                and isinstance(t.slice.value, str)
            )
        if isinstance(node, ast.Dict):
            out.update(k.value for k in node.keys if isinstance(k, ast.Constant) and isinstance(k.value, str))
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "dict":
            out.update(k.arg for k in node.keywords if k.arg)
    return out
