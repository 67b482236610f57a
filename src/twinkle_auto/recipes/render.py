"""Turning a template and validated parameters into a train.py.

The templates are real Python with three kinds of marker lines: `# {{PARAMS}}` becomes one constant
per parameter (written with `repr`, so no value can break out of its literal, and with the field's
description as a comment so the person approving the script sees what each one means),
`# {{INCLUDE name}}` pastes a shared snippet (data loading, model loading), and `{{HEADER}}` in the
docstring names the recipe. The result stands alone: the run folder gets only train.py, and a relaunch
runs exactly that file with the same values.
"""

from __future__ import annotations

import ast
import re
import textwrap
from functools import cache
from importlib import resources
from typing import Any

from pydantic import BaseModel

_INCLUDE_RE = re.compile(r"^# \{\{INCLUDE (\w+)\}\}$", re.MULTILINE)
_PARAMS_MARK = "# {{PARAMS}}"
_HEADER_MARK = "{{HEADER}}"


@cache
def template_text(name: str) -> str:
    """A template shipped in twinkle_auto/recipes/templates (package data)."""
    return resources.files("twinkle_auto.recipes").joinpath("templates", f"{name}.py.tmpl").read_text("utf-8")


def _constant(name: str) -> str:
    return name.upper()


def params_block(recipe: str, params: BaseModel) -> str:
    """The script's parameter section: `NAME = value  # meaning`, then PARAMS for meta.json's config."""
    fields = type(params).model_fields
    lines = [
        "# " + "-" * 90 + " parameters",
        f"# Rendered by twinkle-auto from recipe {recipe!r}. Change a value here or render the recipe again.",
    ]
    values = params.model_dump(mode="json")
    for key, value in values.items():
        description = " ".join((fields[key].description or "").split())
        lines.append(
            f"{_constant(key)} = {value!r}  # {description}"
            if description
            else f"{_constant(key)} = {value!r}"
        )
    lines.append("PARAMS = {  # recorded as the run's config in meta.json")
    lines.extend(f"    {key!r}: {_constant(key)}," for key in values)
    lines.append("}")
    return "\n".join(lines)


def render_template(template: str, recipe: str, params: BaseModel, header: str) -> str:
    """The complete script; raises RuntimeError if the result is not valid Python (a template bug)."""
    text = template_text(template)
    text = _INCLUDE_RE.sub(lambda m: template_text(m.group(1)).rstrip("\n"), text)
    if _PARAMS_MARK not in text:
        raise RuntimeError(f"template {template} has no {_PARAMS_MARK} line")
    text = text.replace(_PARAMS_MARK, params_block(recipe, params), 1)
    header = textwrap.fill(_docstring_safe(header), width=104, break_on_hyphens=False)
    text = text.replace(_HEADER_MARK, header, 1)
    try:
        ast.parse(text, filename=f"<recipe {recipe}>")
    except SyntaxError as exc:  # pragma: no cover - guarded by the tests of every recipe
        raise RuntimeError(f"recipe {recipe} rendered invalid Python: {exc}") from exc
    return text


def _docstring_safe(text: str) -> str:
    return text.replace("\\", "/").replace('"""', "'''")


def json_safe(params: BaseModel) -> dict[str, Any]:
    return params.model_dump(mode="json")
