"""The recipe contract: what a recipe is, what rendering one returns, and the one error type.

Why recipes at all: a small chat model cannot write a whole GRPO script in one JSON argument, but it can
pick a name and fill a handful of typed fields. Each recipe is a pydantic model of its parameters (with
units in the descriptions, so the model reads them in the tool schema) plus a template of a complete,
tested train.py that reports through `TrainingRuntime`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


class RecipeError(ValueError):
    """A recipe cannot be rendered: unknown name, a bad parameter, a model or dataset that does not exist.

    The message is one line that says what to change, because the chat model reads it and retries.
    """


@dataclass(frozen=True)
class RecipeInfo:
    """What `list_recipes` tells the model about one recipe."""

    name: str
    description: str
    """One line, written for an LLM choosing between recipes."""
    params_schema: dict[str, Any]
    """JSON schema of the parameters (pydantic's), with a description per field."""
    needs_server: bool = False
    """True when the script talks to a running Twinkle server (start it first)."""
    needs_sampler: bool = False
    """True when that server must also run a sampler for the model (GRPO samples there)."""


@dataclass
class RenderedRecipe:
    """A complete train.py and the parameters it was rendered with."""

    name: str
    script: str
    params: dict[str, Any]
    """Validated, defaults filled, ids resolved (local paths made absolute)."""
    notes: list[str] = field(default_factory=list)
    """What the person should know: unverified ids, the server that must be running, and the like."""

    @property
    def model_id(self) -> str:
        """The model the run trains, for meta.json."""
        return str(self.params.get("model", ""))
