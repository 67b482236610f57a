"""The recipes that exist, and `render_recipe`: validate, resolve ids, render.

One entry per recipe: its name, the line the chat model reads when choosing, its parameter model and
its template. Adding a recipe is one entry here, a params model and a template with a test that runs it.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError

from twinkle_auto.recipes import params as p
from twinkle_auto.recipes.base import RecipeError, RecipeInfo, RenderedRecipe
from twinkle_auto.recipes.render import render_template
from twinkle_auto.recipes.resolve import has_sampler, resolve_dataset, resolve_model, resolve_served_model


@dataclass(frozen=True)
class Recipe:
    name: str
    description: str
    params: type[p.RecipeParams]
    template: str
    needs_server: bool = False
    needs_sampler: bool = False
    """The server must also run a sampler for the model (GRPO samples there)."""


RECIPES: tuple[Recipe, ...] = (
    Recipe(
        "twinkle-grpo",
        "GRPO (rewards: math accuracy, answer format) on the running Twinkle server; it needs a sampler "
        "for the model.",
        p.TwinkleGRPOParams,
        "twinkle_grpo",
        needs_server=True,
        needs_sampler=True,
    ),
    Recipe(
        "twinkle-sft",
        "Supervised fine-tuning (LoRA) on the running Twinkle server.",
        p.TwinkleSFTParams,
        "twinkle_sft",
        needs_server=True,
    ),
    Recipe(
        "trl-sft",
        "Supervised fine-tuning on this machine with TRL's SFTTrainer (full or LoRA); no server.",
        p.TrlSFTParams,
        "trl_sft",
    ),
    Recipe(
        "trl-grpo",
        "GRPO (rewards: math accuracy, answer format) on this machine with TRL's GRPOTrainer; no server.",
        p.TrlGRPOParams,
        "trl_grpo",
    ),
    Recipe(
        "torch-sft",
        "Supervised fine-tuning on this machine in a plain PyTorch loop (full or LoRA), the simplest to "
        "read and edit; no server.",
        p.TorchSFTParams,
        "torch_sft",
    ),
)
_BY_NAME = {r.name: r for r in RECIPES}

TERMS: dict[str, tuple[str, ...]] = {
    "twinkle": ("twinkle",),
    "trl": ("trl",),
    "torch": ("pytorch", "torch"),
    "sft": ("sft", "supervised"),
    "grpo": ("grpo",),
}
"""Words a person uses to say which framework or method they want, by the part of a recipe's name
(`<framework>-<method>`) each one means."""


def named_terms(text: str) -> set[str]:
    """The recipe-name parts (framework, method) the words of `text` ask for."""
    low = str(text or "").lower()
    return {
        part
        for part, words in TERMS.items()
        if any(re.search(rf"(?<![a-z]){w}(?![a-z])", low) for w in words)
    }


def recipes_for(text: str) -> tuple[set[str], list[str]]:
    """(terms the person named, the recipes whose name has every one of them), in catalogue order."""
    terms = named_terms(text)
    return terms, [r.name for r in RECIPES if terms <= set(r.name.split("-"))]


def _recipe(name: Any) -> Recipe:
    key = str(name or "").strip().lower().replace("_", "-")
    recipe = _BY_NAME.get(key)
    if recipe is None:
        known = ", ".join(_BY_NAME)
        raise RecipeError(f"unknown recipe {name!r}; the recipes are: {known}")
    return recipe


def _schema(model: type[BaseModel]) -> dict[str, Any]:
    return model.model_json_schema(by_alias=False)


def list_recipes() -> list[RecipeInfo]:
    """Every recipe with its one-line description and parameter schema, in the order to prefer them."""
    return [
        RecipeInfo(r.name, r.description, _schema(r.params), r.needs_server, r.needs_sampler) for r in RECIPES
    ]


def _validation_message(recipe: Recipe, exc: ValidationError) -> str:
    """pydantic's errors as one line the model can act on: which field, what is wrong, what is allowed."""
    fields = recipe.params.model_fields
    parts = []
    for err in exc.errors()[:4]:
        loc = ".".join(str(x) for x in err.get("loc", ())) or "parameters"
        kind = err.get("type", "")
        if kind == "missing":
            description = fields[loc].description if loc in fields else ""
            parts.append(f"missing {loc!r} ({description})" if description else f"missing {loc!r}")
        elif kind == "extra_forbidden":
            parts.append(f"unknown parameter {loc!r} (known: {', '.join(fields)})")
        else:
            message = str(err.get("msg", "invalid")).removeprefix("Value error, ")
            parts.append(f"{loc}: {message} (got {err.get('input')!r})" if loc in fields else message)
    more = len(exc.errors()) - 4
    tail = f"; and {more} more" if more > 0 else ""
    return f"recipe {recipe.name}: " + "; ".join(parts) + tail


def validate_params(name: str, params: dict[str, Any] | None) -> p.RecipeParams:
    """The recipe's parameters, validated and with defaults filled (no id resolution)."""
    recipe = _recipe(name)
    if params is None:
        params = {}
    if not isinstance(params, dict):
        raise RecipeError(f"recipe {recipe.name}: params must be an object, got {type(params).__name__}")
    try:
        return recipe.params.model_validate(params)
    except ValidationError as exc:
        raise RecipeError(_validation_message(recipe, exc)) from None


def _require_sampler(server_url: str, model: str) -> None:
    if has_sampler(server_url, model) is False:
        raise RecipeError(
            f"the Twinkle server at {server_url} serves {model} but runs no sampler for it, which GRPO "
            f"needs; restart it with a sampler (start_server with samplers=[{{model_id: {model}}}])"
        )


def render_recipe(name: str, params: dict[str, Any] | None) -> RenderedRecipe:
    """A complete train.py for recipe `name`, with model and dataset resolved.

    Local paths become absolute (the script runs in its run folder); hub ids are checked on ModelScope
    when it answers in time; a Twinkle recipe's model is checked against the server's list when the
    server is up. What could not be checked is said in `notes`. Raises RecipeError on any bad input.
    """
    recipe = _recipe(name)
    values = validate_params(recipe.name, params)
    notes: list[str] = []
    if isinstance(values, p.TwinkleParams):
        values.server_url = values.server_url.rstrip("/")
        model = resolve_served_model(values.model, values.server_url)
        if recipe.needs_sampler and model.source == "server":
            _require_sampler(values.server_url, model.value)
    else:
        model = resolve_model(values.model)
    data = resolve_dataset(values.dataset)
    for resolved in (model, data):
        if resolved.note and resolved.source != "local":
            notes.append(resolved.note)
    values.model = model.value
    values.dataset = data.value
    header = f"Recipe {recipe.name}, rendered by twinkle-auto: {recipe.description}"
    script = render_template(recipe.template, recipe.name, values, header)
    return RenderedRecipe(recipe.name, script, values.model_dump(mode="json"), notes)


def _param_line(name: str, prop: dict[str, Any], required: set[str]) -> str:
    text = " ".join(str(prop.get("description", "")).split())
    if name in required:
        return f"required. {text}"
    default = prop.get("default")
    return f"{text} [default {json.dumps(default)}]" if default is not None else text


def catalogue() -> dict[str, Any]:
    """The recipes as the chat model reads them: parameters shared by every recipe listed once.

    Each recipe then names only what differs (its own parameters, or a shared one with another meaning
    or default, which overrides the shared line), so the whole answer fits in one small tool result.
    """
    infos = list_recipes()
    lines: list[dict[str, str]] = []
    for info in infos:
        props = info.params_schema.get("properties", {})
        required = set(info.params_schema.get("required", []))
        lines.append(
            {
                name: _param_line(name, prop, required)
                for name, prop in props.items()
                if prop.get("x-catalogue", True)  # knobs for demos and tests stay out of the model's way
            }
        )
    # shared: a parameter every recipe has, with the wording most of them use; others override it
    common = {}
    for name in lines[0]:
        if all(name in line for line in lines):
            wordings = Counter(line[name] for line in lines)
            common[name] = wordings.most_common(1)[0][0]
    recipes = []
    for info, params in zip(infos, lines):
        entry: dict[str, Any] = {"name": info.name, "description": info.description}
        if info.needs_server:
            entry["needs_server"] = True
        if info.needs_sampler:
            entry["needs_sampler"] = True
        entry["params"] = {k: v for k, v in params.items() if common.get(k) != v}
        recipes.append(entry)
    return {"params_of_every_recipe": common, "recipes": recipes}
