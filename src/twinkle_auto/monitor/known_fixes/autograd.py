"""Recipes for autograd errors whose message names the cure: .numpy() of a tensor with grad, backward()
of an unreduced loss, an in-place update of a tensor backward needs, a recurrent state never detached."""

from __future__ import annotations

import ast
import re

from twinkle_auto.monitor.known_fixes.base import (
    Catalogue,
    Crash,
    KnownFix,
    SourceText,
    append_suffix,
    bindings_of,
    callee_name,
    collector,
    failing_statement,
    frame_statements,
    line_of,
    parents_of,
    scope_of,
)

RECIPES: Catalogue = []
"""This module's recipes, in the order they are tried."""
recipe = collector(RECIPES)

# ------------------------------------------------------------- .numpy() on a tensor with grad
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


@recipe("numpy() on a tensor that requires grad")
def recipe_numpy_requires_grad(crash: Crash) -> KnownFix | None:
    """Insert .detach() before each .numpy() of the failing line whose tensor is not detached yet."""
    if not _NUMPY_GRAD_RE.search(crash.error):
        return None
    stmt = failing_statement(crash)
    if stmt is None:
        return None
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
    text = SourceText(crash.script)
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


# -------------------------------------------------------------- backward() of a non-scalar
# A loss left per sample (reduction="none", a squeeze instead of a mean, or DataParallel gathering one
# loss per device) cannot start backward(). Every torch loss reduces by the mean by default, and the
# reports fix it with .mean(). https://github.com/WisconsinAIVision/MaskPoint/issues/7 (DataParallel),
# https://github.com/mindee/doctr/pull/379 (a per-sample loss returned unreduced)
_NON_SCALAR_RE = re.compile(r"grad can be implicitly created only for scalar outputs")


@recipe("backward() of a non-scalar loss")
def recipe_backward_non_scalar(crash: Crash) -> KnownFix | None:
    """Reduce the loss by its mean where it is assigned (or, if it is not a name, at the backward call)."""
    if not _NON_SCALAR_RE.search(crash.error):
        return None
    stmt = failing_statement(crash)
    if stmt is None:
        return None
    calls = [
        node for node in ast.walk(stmt) if isinstance(node, ast.Call) and callee_name(node) == "backward"
    ]
    if len(calls) != 1 or any(k.arg in ("gradient", "grad_tensors") for k in calls[0].keywords):
        return None
    call = calls[0]
    if not call.args and isinstance(call.func, ast.Attribute):
        loss: ast.AST = call.func.value  # loss.backward()
    elif len(call.args) == 1:
        loss = call.args[0]  # accelerator.backward(loss), torch.autograd.backward(loss)
    else:
        return None
    text = SourceText(crash.script)
    segment = ast.get_source_segment(crash.script, loss)
    assign = _loss_assignment(crash, stmt, loss)
    if assign is not None:
        where = f"where it is computed on line {assign.lineno}"
        appended = append_suffix(text, assign.value, ".mean()")
    else:
        where = f"before backward() on line {stmt.lineno}"
        appended = append_suffix(text, loss, ".mean()")
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


def _loss_assignment(crash: Crash, stmt: ast.stmt, loss: ast.AST) -> ast.Assign | None:
    """The one plain assignment `loss = ...` that the failing backward reads, if it is unambiguous."""
    if not isinstance(loss, ast.Name):
        return None
    scope = scope_of(stmt, parents_of(crash.tree))
    earlier = [b for b in bindings_of(scope, loss.id) if line_of(b) < stmt.lineno]
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


# --------------------------------------------------------- in-place change of a saved tensor
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
        return callee_name(value).lower().replace("_", "") == op
    if isinstance(value, ast.BinOp):
        return _BINOP_NAMES.get(type(value.op)) == op
    return False


@recipe("in-place change of a tensor autograd needs")
def recipe_inplace_autograd(crash: Crash) -> KnownFix | None:
    """Rewrite the in-place update of the tensor the error names out of place; failing a named tensor,
    turn every `inplace=True` off (a memory saving only: the values are the same)."""
    match = _INPLACE_RE.search(crash.error)
    if not match:
        return None
    text = SourceText(crash.script)
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


def _out_of_place_updates(crash: Crash, text: SourceText, op: str) -> list[int]:
    """Rewrite in place updates (`x op= y`, `x.m_(...)`) of names last made by `op`; their lines."""
    parents = parents_of(crash.tree)
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
            for b in bindings_of(scope_of(node, parents), name)
            if line_of(b) < line_of(node) and isinstance(b, ast.Assign)
        ]
        if made and _produced_by(made[-1].value, op) and rewrite(crash.script, text, node, name):
            changed.append(line_of(node))
    return changed


def _rewrite_augassign(script: str, text: SourceText, node: ast.stmt, name: str) -> bool:
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


def _rewrite_method(script: str, text: SourceText, node: ast.stmt, name: str) -> bool:
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


# ------------------------------------------------------ recurrent state carried across steps
# "Trying to backward through the graph a second time": a hidden state made in one step is fed to the
# next (`h = cell(x, h)`) and the previous step's graph was freed by its backward. Truncated
# backpropagation through time detaches the carried state at each step; the values are unchanged.
# https://github.com/MorvanZhou/PyTorch-Tutorial/issues/57 (h_state = h_state.data),
# https://github.com/quark0/darts/issues/56 (repackage_hidden)
_BACKWARD_TWICE_RE = re.compile(r"Trying to backward through the graph a second time")
_TENSOR_MAKERS_RE = re.compile(
    r"^(?:zeros|ones|randn|rand|empty|full|zeros_like|ones_like|randn_like|tensor)$"
)


@recipe("recurrent state carried across steps")
def recipe_recurrent_state(crash: Crash) -> KnownFix | None:
    """Detach, at the top of the loop that calls backward, each state made before that loop and fed back
    into the call that remakes it (`h = cell(x, h)`, `h, c = cell(x, (h, c))`), as word_language_model's
    `repackage_hidden` does: an inner loop over time steps keeps its full backpropagation."""
    if not _BACKWARD_TWICE_RE.search(crash.error):
        return None
    statements = frame_statements(crash)
    if not statements:
        return None
    parents = parents_of(crash.tree)
    loop: ast.AST = statements[0]
    while loop in parents and not isinstance(loop, (ast.For, ast.While, ast.AsyncFor)):
        loop = parents[loop]
    if not isinstance(loop, (ast.For, ast.While, ast.AsyncFor)) or loop.body[0].lineno == loop.lineno:
        return None
    scope = scope_of(loop, parents)
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
    text = SourceText(crash.script)
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
    before = [b for b in bindings_of(scope, name) if line_of(b) < loop.lineno]
    if not before or not isinstance(before[-1], ast.Assign):
        return False
    value = before[-1].value
    if isinstance(value, ast.Tuple):  # h, c = torch.zeros(...), torch.zeros(...)
        return all(isinstance(v, ast.Call) and _TENSOR_MAKERS_RE.match(callee_name(v)) for v in value.elts)
    return isinstance(value, ast.Call) and bool(_TENSOR_MAKERS_RE.match(callee_name(value)))
