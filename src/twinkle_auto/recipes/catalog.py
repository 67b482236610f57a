"""The recipes that exist, and `render_recipe`: validate, resolve ids, render.

One entry per recipe: its name, the line the chat model reads when choosing, its parameter model and
its template. Adding a recipe is one entry here, a params model and a template with a test that runs it.
"""

from __future__ import annotations

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
        "GRPO reinforcement learning through the running Twinkle server (it samples and trains a LoRA "
        "adapter; this script scores completions with math accuracy/format rewards). Start the server "
        "first, with a sampler for the model.",
        p.TwinkleGRPOParams,
        "twinkle_grpo",
        needs_server=True,
        needs_sampler=True,
    ),
    Recipe(
        "twinkle-sft",
        "Supervised fine-tuning (LoRA) through the running Twinkle server, which holds the model and "
        "optimizer; this script sends the batches. Start the server first.",
        p.TwinkleSFTParams,
        "twinkle_sft",
        needs_server=True,
    ),
    Recipe(
        "trl-sft",
        "Supervised fine-tuning on this machine with TRL's SFTTrainer (full or LoRA), Hugging Face model "
        "and chat/prompt-completion data; no server needed.",
        p.TrlSFTParams,
        "trl_sft",
    ),
    Recipe(
        "trl-grpo",
        "GRPO reinforcement learning on this machine with TRL's GRPOTrainer (model generates locally; "
        "math accuracy/format rewards); no server needed.",
        p.TrlGRPOParams,
        "trl_grpo",
    ),
    Recipe(
        "torch-sft",
        "Supervised fine-tuning on this machine in a plain PyTorch loop (transformers causal LM, full or "
        "LoRA), simplest to read and edit; no server needed.",
        p.TorchSFTParams,
        "torch_sft",
    ),
)
_BY_NAME = {r.name: r for r in RECIPES}


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
