"""Starting a training run: `start_training` (from a recipe or a script) and `list_recipes`.

Why recipes: a small chat model cannot write a whole GRPO script in one JSON argument, but it can pick
a recipe by name and fill a few typed fields (model, dataset, steps). `twinkle_auto.recipes` renders a
complete, tested train.py from them; the model may still pass its own script (source or path).

Before the run starts the person sees the whole script and what the guards find in it; they may
approve, reject or edit it. The run goes through the RunController, with the launch options (env,
launcher, argv, cwd) the controller accepts, and becomes the selected run (graph state).
"""

from __future__ import annotations

import inspect
import json
import re
import shlex
import time
from collections.abc import Mapping
from typing import Any, get_args

from langchain_core.tools import BaseTool
from langgraph.prebuilt import ToolRuntime
from pydantic import AliasChoices, BaseModel, Field, create_model, field_validator

from twinkle_auto.tools.base import Approval, Scope, ToolArgs, ToolContext, ToolError, compact, make_tool
from twinkle_auto.tools.hub_kinds import as_model, dataset_not_model, is_hub_id, on_hub, sized_like_a_model
from twinkle_auto.tools.scripts import check_source, read_script_file, script_findings
from twinkle_auto.tools.verbs import START_WORDS, STARTS_AND_RUN_ACTIONS

LAUNCH_OPTIONS = ("launcher", "nproc_per_node", "argv", "cwd", "ray_address")
"""Launch settings passed to `RunController.start` when its signature has them (env always is)."""
RENDER_CACHE = 8
"""Rendered recipes kept per tool set: the describer and the tool render the same call once."""


def _recipes() -> Any:
    try:
        import twinkle_auto.recipes as recipes
    except ImportError as exc:
        raise ToolError(f"recipes are not available here ({exc}); pass script or script_path") from None
    if not hasattr(recipes, "render_recipe"):
        raise ToolError("recipes are not available here; pass script or script_path")
    return recipes


def recipe_catalogue() -> list[dict[str, Any]]:
    """Name, description, whether it needs the server, and its parameters (name: description)."""
    out = []
    for info in _recipes().list_recipes():
        props = (info.params_schema or {}).get("properties", {})
        required = set((info.params_schema or {}).get("required", []))
        params = {
            name: ("required: " if name in required else "") + str(p.get("description", ""))[:90]
            for name, p in props.items()
        }
        out.append(
            {
                "name": info.name,
                "description": info.description,
                "needs_server": bool(getattr(info, "needs_server", False)),
                "params": params,
            }
        )
    return out


def _recipe_names() -> list[str]:
    try:
        return [r["name"] for r in recipe_catalogue()]
    except Exception:  # no recipes here: the description says to pass a script
        return []


def _recipe_gists() -> list[str]:
    """'name: what it trains and where', one clause each: enough to pick one without list_recipes."""
    try:
        catalogue = recipe_catalogue()
    except Exception:
        return []
    gists = []
    for recipe in catalogue:
        first = re.split(r"[;.]", str(recipe.get("description") or ""), maxsplit=1)[0].strip()
        first = re.sub(r"\s*\((?:rewards|LoRA)[^)]*\)", "", first)  # details belong in list_recipes
        gists.append(f"{recipe['name']} = {first}" if first else str(recipe["name"]))
    return gists


def _split_argv(value: list[str]) -> list[str]:
    """'--lr 1e-4 --steps 5' sent as one string is what the person meant: shell words."""
    if len(value) == 1 and " " in value[0].strip():
        return shlex.split(value[0])
    return value


TOP_LEVEL = ("model", "dataset", "max_steps")
"""Recipe parameters that are fields of start_training itself."""


def _overrides_model() -> type[BaseModel]:
    """Every parameter some recipe takes (besides TOP_LEVEL), typed and optional, and nothing else.

    A closed object instead of a free `dict`: a small model asked for "other parameters" of a free
    dict wrote invented keys until its output limit (`eval_metric_min_steps_per_token_per_batch…`) and
    the server refused the cut-off JSON (HTTP 500); with the names and types given, a server that
    constrains tool calls to their schema cannot do that, and one that does not gets a clear error.
    Which recipe takes which is checked when the recipe renders.
    """
    fields: dict[str, Any] = {}
    try:
        from twinkle_auto.recipes.catalog import RECIPES
    except ImportError:
        RECIPES = ()  # noqa: N806 - no recipes here: start_training takes scripts only
    for recipe in RECIPES:
        for name, info in recipe.params.model_fields.items():
            if name in TOP_LEVEL or name in fields:
                continue
            # names only: the recipes' own descriptions differ per recipe, and list_recipes gives them
            kind = info.annotation if type(None) in get_args(info.annotation) else info.annotation | None
            fields[name] = (kind, Field(default=None, validation_alias=info.validation_alias))
    model = create_model("RecipeOverrides", __base__=ToolArgs, **fields)
    model.model_config["extra"] = "forbid"
    model.model_rebuild(force=True)
    return model


RecipeOverrides = _overrides_model()


def _swapped(model: Any, dataset: Any) -> bool:
    """A small model often puts the dataset id in `model` and the model id in `dataset` (4 of 6
    requests naming both, with the 1.5B model). Both may be owner/name, so the evidence is the hub's
    word, or the name's parameter count (sized_like_a_model) where the hub does not know an id or is
    offline. Swapped when the hub says the model is no model but a dataset, and the dataset is a model
    on the hub (or by its size), or a bare name it has no dataset of (a name a Twinkle server serves,
    e.g. mock-model); or, when the hub does not call the model a dataset, when the dataset is a model by
    the hub or by its size and nothing says the model is one."""
    if not (isinstance(dataset, str) and dataset.strip() and isinstance(model, str)) or model == dataset:
        return False
    if dataset_not_model(model):
        if is_hub_id(dataset):
            return on_hub("model", dataset) is True or sized_like_a_model(dataset)
        return on_hub("dataset", dataset) is False  # a bare name: a served model, or nothing the hub has
    if sized_like_a_model(model) or on_hub("model", model) is True:
        return False
    return sized_like_a_model(dataset) or (is_hub_id(dataset) and on_hub("model", dataset) is True)


_PATH_LIKE = re.compile(r"^[\w.~/\\-]*[\w.-]+\.py$")


def _script_named(args: Mapping[str, Any], request: str) -> Mapping[str, Any]:
    """A call that runs a script file the person named: the path in script_path (the 1.5B model put it
    in `script`, which takes source code) and no recipe beside it, nor the recipe's model, dataset and
    parameters the person did not give (they would make the call "exactly one of recipe, script or
    script_path" wrong, or be refused as values nobody named)."""
    script, path = str(args.get("script") or "").strip(), str(args.get("script_path") or "").strip()
    if script and not path and "\n" not in script and _PATH_LIKE.match(script):
        args, path = {**args, "script_path": script, "script": None}, script
    if not path or path.lower() not in request.lower():
        return args
    low = request.lower()
    out = {k: v for k, v in args.items() if k not in ("recipe", "params", "max_steps")}
    for name in ("model", "dataset"):
        if isinstance(out.get(name), str) and out[name].lower() not in low:
            out.pop(name)
    return out


_ID_WORD = re.compile(r"(?<![\w./-])([A-Za-z0-9][\w.-]*(?:/[\w.-]+)?)(?![\w/-])")
_SERVED_NAME = re.compile(r"^[A-Za-z][\w.]*-[\w.-]*[A-Za-z0-9]$")
"""A bare model name: a letter first and a '-' in it (mock-model, Qwen3.5-4B); not 50, 0.5B or 1e-5."""


def _other_model(dataset: str, request: str) -> str | None:
    """The one id in `request`, besides `dataset` and the recipe names, that can be a model: a model on
    the hub, or a bare name (_SERVED_NAME) the hub has no dataset of (a served name, mock-model).
    None when there is none or more than one, or the hub cannot tell."""
    skip = {dataset.lower(), *(n.lower() for n in _recipe_names()), *START_WORDS}
    found: list[str] = []
    for word in _ID_WORD.findall(request or ""):
        word = word.rstrip(".")
        if word.lower() in skip or word in found or not (is_hub_id(word) or _SERVED_NAME.match(word)):
            continue
        fits = on_hub("model", word) is True if is_hub_id(word) else on_hub("dataset", word) is False
        if fits:
            found.append(word)
    return found[0] if len(found) == 1 else None


def given_params(value: Any) -> dict[str, Any]:
    """The recipe parameters a call set (a RecipeOverrides, or a dict from callers outside a graph)."""
    if isinstance(value, BaseModel):
        return value.model_dump(exclude_none=True)
    return {k: v for k, v in dict(value or {}).items() if v is not None}


class StartArgs(ToolArgs):
    GROUNDED = ("model", "dataset", "script_path", "run_id", "ray_address")
    # a new run's id nobody gave: made from recipe and model; a Ray address nobody gave: the local launch
    GUESS_IS_DEFAULT = ("run_id", "ray_address")
    MAKES_A_RUN = True
    ASKED_BY = STARTS_AND_RUN_ACTIONS
    NEVER_FOR = ("pause_training", "resume_training", "stop_training", "start_server")  # a run is none

    @classmethod
    def _fitting(cls, args: Mapping[str, Any], request: str) -> tuple[str, set[str], list[str]]:
        recipe = str(args.get("recipe") or "").strip().lower().replace("_", "-")
        try:
            terms, fitting = _recipes().recipes_for(request)
        except (ToolError, AttributeError):
            return recipe, set(), []
        return recipe, terms, fitting

    @classmethod
    def amend(cls, args: Mapping[str, Any], request: str) -> Mapping[str, Any]:
        """The one recipe of the framework and method the person named ("a plain PyTorch fine-tune" is
        torch-sft), when the model chose another; model and dataset swapped back when the hub says the
        "model" is a dataset and the "dataset" a model. The approval shows what will run."""
        args = _script_named(args, request)
        recipe, terms, fitting = cls._fitting(args, request)
        if recipe and terms and len(fitting) == 1 and recipe != fitting[0]:
            args = {**args, "recipe": fitting[0]}
        if args.get("recipe") and _swapped(args.get("model"), args.get("dataset")):
            args = {**args, "model": args["dataset"], "dataset": args["model"]}
        elif (
            args.get("recipe")
            and args.get("dataset") in (None, "", args.get("model"))
            and dataset_not_model(args.get("model"))
        ):
            # the dataset given as the model (alone, or in both fields): it is the dataset, and the model
            # is the one other id the person wrote, when there is exactly one
            named = _other_model(str(args["model"]), request)
            args = {**args, "dataset": args["model"], "model": named}
        return args

    @classmethod
    def mismatches(cls, args: Mapping[str, Any], request: str, conversation: str = "") -> list[str]:
        """A dataset given as the model (when the hub can tell), and a recipe of another framework or
        method than the one the person named, when several fit."""
        out = []
        if args.get("recipe"):
            out = as_model("model", args.get("model"), "give it as dataset and the model to train as model")
        recipe, terms, fitting = cls._fitting(args, request)
        if not recipe or not terms or not fitting or recipe in fitting:
            return out  # nothing named, or named what no recipe has: the tool's own answer says what does
        return [
            *out,
            f"the person asked for {' and '.join(sorted(terms))}: recipe {' or '.join(fitting)}, not {recipe!r}",
        ]

    recipe: str | None = Field(
        default=None,
        description="Recipe to render the training script from (list_recipes shows them and their "
        "parameters); leave out only when passing script or script_path",
    )
    model: str | None = Field(
        default=None,
        validation_alias=AliasChoices("model", "model_id", "base_model"),
        description="The base model to fine-tune (its hub id owner/name, or a local folder); not the "
        "data; for a recipe",
    )
    dataset: str | None = Field(
        default=None,
        validation_alias=AliasChoices("dataset", "dataset_id", "data"),
        description="The data to train on (a dataset id owner/name, or a local .jsonl file); not the "
        "model; for a recipe",
    )
    max_steps: int | None = Field(
        default=None,
        ge=1,
        validation_alias=AliasChoices("max_steps", "steps", "total_steps"),
        description="Optimizer steps to train; for a recipe (default: the recipe's)",
    )
    params: RecipeOverrides = Field(  # type: ignore[valid-type]
        default_factory=lambda: RecipeOverrides(),
        description="Other recipe parameters, only those the person asked for (list_recipes shows which "
        "recipe takes which)",
    )
    run_id: str | None = Field(
        default=None,
        validation_alias=AliasChoices("run_id", "run", "name"),
        description="Id for the new run (letters, digits, '.', '_', '-'); default: made from recipe and model",
    )
    script: str | None = Field(default=None, description="A complete training script (Python source)")
    script_path: str | None = Field(default=None, description="Path of an existing training script")
    env: dict[str, str] = Field(
        default_factory=dict, description="Environment variables for the training process"
    )
    launcher: str | None = Field(
        default=None, description="How to launch: python (default), torchrun, accelerate, deepspeed or ray"
    )
    nproc_per_node: int | None = Field(
        default=None, ge=1, description="Processes (GPUs) per node for torchrun/accelerate/deepspeed"
    )
    argv: list[str] = Field(default_factory=list, description="Command-line arguments for the script")
    cwd: str | None = Field(
        default=None, description="Working directory of the process; default the run folder"
    )
    ray_address: str | None = Field(default=None, description="host:port of the Ray cluster for launcher ray")

    _argv = field_validator("argv")(_split_argv)


def _short(model: str) -> str:
    tail = model.rstrip("/").split("/")[-1] if model else ""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", tail).strip("-.")[:40]


def make_training_tools(ctx: ToolContext | None = None) -> list[BaseTool]:
    """start_training and list_recipes; `ctx` is the fallback context outside a graph."""
    cache: dict[str, Any] = {}

    def _render(recipe: str, params: dict[str, Any]) -> Any:
        key = json.dumps([recipe, params], sort_keys=True, default=str)
        if key in cache:
            return cache[key]
        recipes = _recipes()
        try:
            rendered = recipes.render_recipe(recipe, params)
        except recipes.RecipeError as exc:
            raise ToolError(" ".join(str(exc).split())) from None
        while len(cache) >= RENDER_CACHE:
            cache.pop(next(iter(cache)))
        cache[key] = rendered
        return rendered

    def _recipe_params(args: dict[str, Any], s: Scope) -> dict[str, Any]:
        params = given_params(args.get("params"))
        for name in TOP_LEVEL:
            if args.get(name) not in (None, ""):
                params.setdefault(name, args[name])
        info = next((r for r in _recipes().list_recipes() if r.name == args.get("recipe")), None)
        props = (info.params_schema or {}).get("properties", {}) if info else {}
        if "server_url" in props and not any(k in params for k in ("server_url", "server", "url")):
            state = s.context.server_manager().load_state() or {}
            if state.get("url"):
                params["server_url"] = state["url"]  # the server start_server reported
        return params

    def _prepare(args: dict[str, Any], s: Scope) -> tuple[str, str, str | None, dict[str, Any], list[str]]:
        """(run_id, script, model_id, config, notes) of a call, without side effects."""
        recipe, script, path = args.get("recipe"), args.get("script"), args.get("script_path")
        given = [n for n, v in (("recipe", recipe), ("script", script), ("script_path", path)) if v]
        if len(given) != 1:
            names = ", ".join(_recipe_names()) or "none installed"
            raise ToolError(
                "give exactly one of recipe (available: "
                + names
                + "), script or script_path"
                + (f"; got {' and '.join(given)}" if given else "")
            )
        notes: list[str] = []
        model_id = args.get("model")
        config: dict[str, Any] = {}
        if recipe:
            rendered = _render(str(recipe), _recipe_params(args, s))
            text, model_id = rendered.script, rendered.model_id or model_id
            config = {"recipe": rendered.name, "params": rendered.params}
            notes = list(rendered.notes)
        else:
            text = script if script else read_script_file(str(path))
        text = check_source(str(text))
        run_id = args.get("run_id") or _new_run_id(s, str(recipe or "run"), str(model_id or ""))
        return str(run_id), text, model_id, config, notes

    def _new_run_id(s: Scope, prefix: str, model: str) -> str:
        base = "-".join(p for p in (prefix, _short(model), time.strftime("%m%d-%H%M")) if p)
        run_id, n = base, 1
        while s.connection.store.exists(run_id):
            n += 1
            run_id = f"{base}-{n}"
        return run_id

    def _launch_kwargs(args: dict[str, Any], s: Scope) -> dict[str, Any]:
        params = inspect.signature(s.connection.controller.start).parameters
        kwargs: dict[str, Any] = {}
        if args.get("env"):
            kwargs["env"] = {str(k): str(v) for k, v in args["env"].items()}
        for name in LAUNCH_OPTIONS:
            value = args.get(name)
            if value in (None, "", []) or (name == "launcher" and value == "python"):
                continue
            if name not in params:
                raise ToolError(f"{name} is not supported by this version's run controller; leave it out")
            kwargs[name] = value
        return kwargs

    def start_training(runtime: ToolRuntime[Any, Any] = None, **args: Any) -> Any:  # type: ignore[assignment]
        s = Scope.of(runtime, ctx, "start_training")
        run_id, text, model_id, config, notes = _prepare(args, s)
        result = s.connection.controller.start(
            run_id, text, model_id=model_id, config=config or None, **_launch_kwargs(args, s)
        )
        answer = {"started": run_id, "pid": result.pid, "script_version": result.script_version}
        if notes:
            answer["notes"] = notes
        return s.reply(compact(answer), selected_run=run_id, chart={"keys": [], "step_range": None})

    def _describe_start(args: dict[str, Any], s: Scope) -> Approval:
        run_id, text, model_id, config, notes = _prepare(args, s)
        source = f"recipe {config['recipe']}" if config else (args.get("script_path") or "the script below")
        lines = len(text.splitlines())
        head = f"Start training run {run_id!r} from {source} ({lines} lines)"
        head += f", model {model_id}" if model_id else ""
        if args.get("env"):
            head += f", env {', '.join(sorted(args['env']))}"
        if args.get("launcher") and args["launcher"] != "python":
            head += f", launched with {args['launcher']}"
        if notes:
            head += ". " + " ".join(notes)
        return {
            "text": head + "?",
            "script": text,
            "findings": script_findings(text, s.connection.store.path(run_id)),
            "editable": "script",
        }

    def list_recipes(runtime: ToolRuntime[Any, Any] = None) -> Any:  # type: ignore[assignment]
        # shared parameters listed once: the per-recipe listing (~7.5k chars) was cut mid-JSON
        recipes = _recipes()
        if hasattr(recipes, "catalogue"):
            return compact(recipes.catalogue(), budget=4000)
        return compact({"recipes": recipe_catalogue()}, budget=4000)

    gists = _recipe_gists()
    listed = f" Recipes: {'; '.join(gists)}." if gists else ""
    return [
        make_tool(
            func=start_training,
            name="start_training",
            description=(
                "Create and launch a NEW training run (an existing run is continued with "
                "resume_training), from a recipe with model and dataset (preferred) or from a complete "
                f"script.{listed} The new run becomes the selected run."
            ),
            args_schema=StartArgs,
            approval=_describe_start,
        ),
        make_tool(
            func=list_recipes,
            name="list_recipes",
            description="The training recipes start_training can use, with what each trains and its "
            "parameters.",
            reads_only=True,
        ),
    ]
