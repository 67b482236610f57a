"""Literal folding: the string an expression always evaluates to, however it is spelled.

Obfuscation builds names out of pieces (`"sys" + "tem"`, `"".join([...])`, `"metsys"[::-1]`, `chr(111)`,
base64/rot13/hex decoding); folding them lets the capability guard see the real name, and lets the
path check see a literal path. Only literals are folded; nothing is ever evaluated.
"""

from __future__ import annotations

import ast
import base64
import binascii
import codecs
from collections.abc import Callable

from twinkle_auto.monitor.guards.ast_util import dotted

MAX_FOLD_LENGTH = 10_000
"""Folded string constants longer than this are not built (a patch must not make the guard slow)."""


def fold_str(node: ast.AST | None, names: dict[str, ast.expr] | None = None, depth: int = 0) -> str | None:
    """The string an expression always evaluates to, when it is built only from literals.

    Obfuscation builds names out of pieces (`"sys" + "tem"`, `"".join([...])`, `"metsys"[::-1]`,
    `chr(111)`, base64/rot13/hex decoding); folding them lets the capability guard see the real name.
    `names` maps module-level names assigned once to their value, so `N = "os"; __import__(N)` folds too.
    """
    if node is None or depth > 20:
        return None
    value = _fold(node, names or {}, depth)
    if isinstance(value, bytes):
        try:
            return value.decode()
        except UnicodeDecodeError:
            return None
    return value if isinstance(value, str) else None


def _fold(node: ast.AST, names: dict[str, ast.expr], depth: int) -> str | bytes | int | None:
    def sub(child: ast.AST | None) -> str | bytes | int | None:
        return None if child is None or depth > 20 else _fold(child, names, depth + 1)

    if isinstance(node, ast.Constant) and isinstance(node.value, (str, bytes, int)):
        if isinstance(node.value, bool):
            return None
        return node.value
    if isinstance(node, ast.Name) and node.id in names:
        return sub(names[node.id])
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        operand = sub(node.operand)
        return -operand if isinstance(operand, int) else None
    if isinstance(node, ast.JoinedStr):
        parts = []
        for part in node.values:
            piece = sub(part.value if isinstance(part, ast.FormattedValue) else part)
            if piece is None or isinstance(piece, bytes):
                return None
            parts.append(str(piece))
        return _limited("".join(parts))
    if isinstance(node, ast.BinOp):
        left, right = sub(node.left), sub(node.right)
        if isinstance(node.op, ast.Add) and type(left) is type(right) and left is not None:
            return _limited(left + right)
        if isinstance(node.op, ast.Mult) and isinstance(left, (str, bytes)) and isinstance(right, int):
            return _limited(left * right) if len(left) * right <= MAX_FOLD_LENGTH else None
        if isinstance(node.op, ast.Add) and isinstance(left, int) and isinstance(right, int):
            return left + right
        return None
    if isinstance(node, ast.Subscript):
        base = sub(node.value)
        if not isinstance(base, (str, bytes)):
            return None
        if isinstance(node.slice, ast.Slice):
            given = (node.slice.lower, node.slice.upper, node.slice.step)
            bounds = [None if b is None else sub(b) for b in given]
            if any(g is not None and not isinstance(b, int) for g, b in zip(given, bounds)):
                return None  # a bound that does not fold: the result is unknown, never the whole string
            try:
                return base[slice(*bounds)]
            except ValueError:
                return None
        index = sub(node.slice)
        if isinstance(index, int) and -len(base) <= index < len(base):
            item = base[index]
            return item if isinstance(item, str) else None
        return None
    if isinstance(node, ast.Call):
        return _fold_call(node, sub)
    return None


def _fold_call(
    node: ast.Call, sub: Callable[[ast.AST | None], str | bytes | int | None]
) -> str | bytes | int | None:
    func = node.func
    args = [sub(a) for a in node.args]
    name = dotted(func)
    if name == "chr" and len(args) == 1 and isinstance(args[0], int) and 0 <= args[0] < 0x110000:
        return chr(args[0])
    if name == "str" and len(args) == 1 and isinstance(args[0], str):
        return args[0]
    if name in ("bytes.fromhex", "bytearray.fromhex") and len(args) == 1 and isinstance(args[0], str):
        try:
            return bytes.fromhex(args[0])
        except ValueError:
            return None
    b64 = ("b64decode", "decodebytes", "standard_b64decode", "urlsafe_b64decode")
    if name.rsplit(".", 1)[-1] in b64 and len(args) == 1 and isinstance(args[0], (str, bytes)):
        try:
            return base64.b64decode(args[0])
        except (binascii.Error, ValueError):
            return None
    if (
        name.rsplit(".", 1)[-1] in ("unhexlify", "a2b_hex")
        and len(args) == 1
        and isinstance(args[0], (str, bytes))
    ):
        try:
            return binascii.unhexlify(args[0])
        except (binascii.Error, ValueError):
            return None
    if name in ("codecs.decode", "codecs.encode") and len(args) == 2 and isinstance(args[1], str):
        if isinstance(args[0], str) and args[1].replace("_", "").lower() in ("rot13", "rot-13"):
            return codecs.decode(args[0], "rot13")
        if isinstance(args[0], (str, bytes)):
            try:
                return codecs.decode(args[0], args[1]) if name == "codecs.decode" else None
            except (LookupError, ValueError, TypeError):
                return None
        return None
    if isinstance(func, ast.Attribute):
        base = sub(func.value)
        method = func.attr
        if isinstance(base, (str, bytes)):
            if method == "join" and len(node.args) == 1 and isinstance(node.args[0], (ast.List, ast.Tuple)):
                pieces = [sub(e) for e in node.args[0].elts]
                if all(type(p) is type(base) for p in pieces):
                    return _limited(base.join(pieces))
                return None
            if method == "decode" and isinstance(base, bytes):
                try:
                    return base.decode(*[a for a in args if isinstance(a, str)][:1])
                except (UnicodeDecodeError, LookupError):
                    return None
            if method == "encode" and isinstance(base, str):
                return base.encode()
            if method in ("lower", "upper", "strip", "lstrip", "rstrip", "title", "swapcase") and not args:
                return getattr(base, method)()
            if method == "replace" and len(args) == 2 and all(type(a) is type(base) for a in args):
                return _limited(base.replace(args[0], args[1]))
    return None


def _limited(value: str | bytes) -> str | bytes | None:
    return value if len(value) <= MAX_FOLD_LENGTH else None
