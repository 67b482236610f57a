"""Recipes: complete, tested train.py scripts rendered from a name and typed parameters.

`list_recipes()` says what exists (one line each, for the chat model choosing, plus a JSON schema of the
parameters); `render_recipe(name, params)` validates the parameters, resolves the model and dataset
(local path, ModelScope id, or a model the Twinkle server serves) and returns the script, ready for
`RunController.start`. Every script reports through `TrainingRuntime`: metrics, log, resume from its
last checkpoint, and a graceful stop on SIGTERM.

Layer: imports the standard library, pydantic, and `skills.hub` (the bounded-time ModelScope client)
lazily, only when an id has to be checked.
"""

from twinkle_auto.recipes.base import RecipeError, RecipeInfo, RenderedRecipe
from twinkle_auto.recipes.catalog import (
    RECIPES,
    catalogue,
    list_recipes,
    recipes_for,
    render_recipe,
    validate_params,
)
from twinkle_auto.recipes.resolve import Resolved, resolve_dataset, resolve_model, resolve_served_model

__all__ = [
    "RECIPES",
    "RecipeError",
    "RecipeInfo",
    "catalogue",
    "RenderedRecipe",
    "Resolved",
    "list_recipes",
    "recipes_for",
    "render_recipe",
    "resolve_dataset",
    "resolve_model",
    "resolve_served_model",
    "validate_params",
]
