"""Recipe for a tensor left on another device than the computation."""

from __future__ import annotations

import ast
import re

from twinkle_auto.monitor.known_fixes.base import (
    Catalogue,
    Crash,
    KnownFix,
    SourceText,
    collector,
    frame_statements,
)

RECIPES: Catalogue = []
"""This module's recipes, in the order they are tried."""
recipe = collector(RECIPES)

# ------------------------------------------------------------------------- device mismatch
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


@recipe("device mismatch")
def recipe_device_mismatch(crash: Crash) -> KnownFix | None:
    """Move the failing line's tensor arguments `.to(device)` when the script defines `device`."""
    if not _DEVICE_ERROR_RE.search(crash.error):
        return None
    callables = _callable_names(crash.tree)
    # Innermost first: a helper in the script that fails on its arguments is fixed at its call site.
    for stmt in frame_statements(crash):
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
    crash: Crash, stmt: ast.stmt, device: str, moved: list[str], candidates: dict[str, list[ast.Name]]
) -> KnownFix:
    text = SourceText(crash.script)
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
