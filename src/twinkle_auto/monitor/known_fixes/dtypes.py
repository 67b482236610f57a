"""Recipes for tensors of the wrong dtype: integers into float ops, float64 or integer data into a
float32 model, an integer attention mask, float class labels."""

from __future__ import annotations

import ast
import re

from twinkle_auto.monitor.known_fixes.base import (
    Catalogue,
    Crash,
    KnownFix,
    SourceText,
    append_suffix,
    callee_name,
    collector,
    failing_statement,
    frame_statements,
    last_assignment,
    line_of,
)

RECIPES: Catalogue = []
"""This module's recipes, in the order they are tried."""
recipe = collector(RECIPES)

# --------------------------------------------------------------------- integer tensor mean
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


@recipe("integer tensor in a float op")
def recipe_integer_mean(crash: Crash) -> KnownFix | None:
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
    stmt = failing_statement(crash)  # the failing line itself: an outer frame's op did not fail
    if stmt is None:
        return None
    calls = [node for node in ast.walk(stmt) if isinstance(node, ast.Call) and callee_name(node) in ops]
    if len(calls) != 1:
        return None
    call = calls[0]
    text = SourceText(crash.script)
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
            f"Cast {cast} to float before {callee_name(call)}() on line {call.lineno}, because {callee_name(call)} "
            "does not accept integer tensors."
        ),
        new_script=text.result(),
    )


# ---------------------------------------------- float64 or integer data into a float32 model
# numpy arrays are float64 and torch.from_numpy / torch.tensor keep that dtype (a list of ints becomes
# int64), while modules are float32: "mat1 and mat2 must have the same dtype, but got Double and Float".
# The fix casts the tensor where it is made from the data, so the model and every later use see float32.
# https://github.com/xianglin226/scMDC/issues/8 (float64),
# https://github.com/pytorch/pytorch/issues/60250 (integer input into a float model)
_DATA_INTO_FLOAT = re.compile(
    r"got (?P<a>Double|Long|Int) and Float|expected scalar type Float but found (?P<b>Double|Long|Int)|"
    r"Input type \((?P<c>double|long|int)\) and bias type \(float\)|found dtype (?P<d>Double|Long|Int) but expected Float",
    re.IGNORECASE,
)
_FROM_ARRAY = frozenset({"from_numpy", "tensor", "as_tensor"})


@recipe("float64 or integer data into a float32 model")
def recipe_data_dtype(crash: Crash) -> KnownFix | None:
    """Append .float() to the one torch.from_numpy/tensor/as_tensor call (no dtype given) that made a
    tensor a failing statement uses (the innermost frame that has exactly one such tensor)."""
    match = _DATA_INTO_FLOAT.search(crash.error)
    if not match:
        return None
    dtype = next(g for g in match.groups() if g).lower()
    for stmt in frame_statements(crash):
        used = {n.id for n in ast.walk(stmt) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}
        made: list[tuple[str, ast.Call]] = []
        for name in sorted(used):
            assign = last_assignment(crash.tree, name, line_of(stmt))
            value = assign.value if assign is not None else None
            if (
                isinstance(value, ast.Call)
                and callee_name(value) in _FROM_ARRAY
                and not any(k.arg == "dtype" for k in value.keywords)
            ):
                made.append((name, value))
        if len(made) > 1:
            return None  # two data tensors: which one is wrong is not known
        if not made:
            continue
        name, call = made[0]
        text = SourceText(crash.script)
        text.replace(text.end(call), text.end(call), ".float()")
        kind = {"double": "float64", "long": "int64", "int": "int32"}[dtype]
        return KnownFix(
            name="float64 or integer data into a float32 model",
            source="https://github.com/xianglin226/scMDC/issues/8",
            summary=(
                f"Cast {name} to float32 where it is made from the data on line {call.lineno}, because the "
                f"model's weights are float32 and the data is {kind}."
            ),
            new_script=text.result(),
        )
    return None


# -------------------------------------------------------- integer mask to attention
# scaled_dot_product_attention takes a bool mask (True = attend) or an additive float one; a 0/1 integer
# padding mask (1 = a real token) is refused. Cast as bool it means the same.
# https://github.com/seal-rg/recurrent-pretraining/issues/23
_ATTN_MASK_RE = re.compile(r"Expected attn_mask dtype to be bool or float or to match query dtype")


@recipe("integer attention mask")
def recipe_integer_attention_mask(crash: Crash) -> KnownFix | None:
    """Cast the attn_mask of the one attention call on the failing line (innermost first) to bool."""
    if not _ATTN_MASK_RE.search(crash.error):
        return None
    for stmt in frame_statements(crash):
        masks = []
        for call in (n for n in ast.walk(stmt) if isinstance(n, ast.Call)):
            mask = next((k.value for k in call.keywords if k.arg == "attn_mask"), None)
            if mask is None and callee_name(call) == "scaled_dot_product_attention" and len(call.args) >= 4:
                mask = call.args[3]
            if mask is not None and not (isinstance(mask, ast.Constant) and mask.value is None):
                masks.append(mask)
        if len(masks) > 1:
            return None
        if masks:
            mask = masks[0]
            segment = ast.get_source_segment(crash.script, mask)
            text = SourceText(crash.script)
            if segment is None or not append_suffix(text, mask, ".bool()"):
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


# -------------------------------------------------------- float class labels to cross_entropy
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


@recipe("float class labels to cross_entropy")
def recipe_class_labels_long(crash: Crash) -> KnownFix | None:
    """Cast the target of the one cross_entropy / nll_loss (function or module) call at the innermost
    frame that has one to long."""
    if not _TARGET_DTYPE_RE.search(crash.error):
        return None
    modules = {
        ast.unparse(target)
        for node in ast.walk(crash.tree)
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Call)
        and callee_name(node.value) in _CLASS_LOSS_MODULES
        for target in node.targets
    }  # fmt: skip
    for stmt in frame_statements(crash):
        calls = [
            node
            for node in ast.walk(stmt)
            if isinstance(node, ast.Call)
            and (callee_name(node) in _CLASS_LOSSES or ast.unparse(node.func) in modules)
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
        text = SourceText(crash.script)
        if segment is None or not append_suffix(text, target, ".long()"):
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
