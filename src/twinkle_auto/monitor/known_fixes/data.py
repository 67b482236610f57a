"""Recipe for data read under a near-miss name."""

from __future__ import annotations

import ast
import difflib
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

# ------------------------------------------------------------ a key read under a near-miss name
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


@recipe("key read under a near-miss name")
def recipe_near_miss_key(crash: Crash) -> KnownFix | None:
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
    for stmt in frame_statements(crash):
        spelled = [n for n in ast.walk(stmt) if isinstance(n, ast.Constant) and n.value == key]
        if not spelled:
            continue
        text = SourceText(crash.script)
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
