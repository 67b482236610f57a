"""Recipes for tensors of the wrong shape: per-token logits to cross_entropy, a Linear sized for other
features, view() of a non-contiguous tensor."""

from __future__ import annotations

import ast
import re

from twinkle_auto.monitor.known_fixes.base import (
    Catalogue,
    Crash,
    KnownFix,
    SourceText,
    callee_name,
    collector,
    failing_statement,
)

RECIPES: Catalogue = []
"""This module's recipes, in the order they are tried."""
recipe = collector(RECIPES)

# ------------------------------------------------------------ per-token logits to cross_entropy
# cross_entropy reads dim 1 as the classes, so (B, T, V) logits with (B, T) targets fail with "Expected
# target size [B, V], got [B, T]"; language-model losses flatten both to (B*T, V) and (B*T,).
# https://github.com/karpathy/ng-video-lecture/issues/53 (logits.view(B*T, C), targets.view(B*T))
_TARGET_SIZE_RE = re.compile(r"Expected target size \[(\d+), (\d+)\], got \[(\d+), (\d+)\]")
_CE_FUNCTIONS = frozenset({"cross_entropy", "nll_loss"})


@recipe("per-token logits to cross_entropy")
def recipe_token_cross_entropy(crash: Crash) -> KnownFix | None:
    """Flatten logits to (-1, V) and targets to (-1) in the one cross_entropy call on the failing line."""
    match = _TARGET_SIZE_RE.search(crash.error)
    if not match or match.group(1) != match.group(3):
        return None  # not the (B, V) vs (B, T) signature of unflattened per-token logits
    stmt = failing_statement(crash)
    if stmt is None:
        return None
    calls = [
        node
        for node in ast.walk(stmt)
        if isinstance(node, ast.Call) and callee_name(node) in _CE_FUNCTIONS and len(node.args) >= 2
    ]
    if len(calls) != 1:
        return None
    call = calls[0]
    logits, target = call.args[0], call.args[1]
    text = SourceText(crash.script)
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
            f"Flattened {flat[0]} to (tokens, classes) and {flat[1]} to (tokens,) in {callee_name(call)}() on line "
            f"{call.lineno}, because it reads dimension 1 as the classes."
        ),
        new_script=text.result(),
    )


# ---------------------------------------------------- a Linear layer sized for other features
# "mat1 and mat2 shapes cannot be multiplied (64x400 and 256x120)": the input has 400 features and the
# layer Linear(256, 120) expects 256 (a flatten size computed for another image size, a feature column
# added to the data). The fix sizes the layer to its input.
# https://github.com/mrdbourke/pytorch-deep-learning/issues/763
_MAT_SHAPES_RE = re.compile(r"mat1 and mat2 shapes cannot be multiplied \((\d+)x(\d+) and (\d+)x(\d+)\)")


@recipe("Linear layer sized for other features")
def recipe_linear_in_features(crash: Crash) -> KnownFix | None:
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
        if not (isinstance(node, ast.Call) and callee_name(node) == "Linear"):
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
    text = SourceText(crash.script)
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


# ------------------------------------------------------------ view() of a non-contiguous tensor
# "view size is not compatible with input tensor's size and stride ... Use .reshape(...) instead." --
# the message names the cure: reshape returns the same values, copying only when a view is impossible.
# https://github.com/pytorch/examples/issues/836, https://github.com/open-mmlab/mmpretrain/pull/104
_VIEW_STRIDE_RE = re.compile(r"view size is not compatible with input tensor's size and stride")


@recipe("view() of a non-contiguous tensor")
def recipe_view_to_reshape(crash: Crash) -> KnownFix | None:
    """Replace .view(shape) by .reshape(shape) on the failing line (a dtype view is left alone)."""
    if not _VIEW_STRIDE_RE.search(crash.error):
        return None
    stmt = failing_statement(crash)
    if stmt is None:
        return None
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
    text = SourceText(crash.script)
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
