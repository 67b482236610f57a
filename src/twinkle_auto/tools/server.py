"""The server tools: start and stop the Twinkle training server, and look at GPUs, Ray and models.

Each tool is a thin shell over `twinkle_auto.server.manager.ServerManager`: argument schema, one call,
a compact result. Refusals (unknown backend, more GPUs than exist, port in use, a start already in
progress) and failures (the server died while starting) arrive as one-line ToolErrors the model can
act on. `shutdown_server` asks the person first: it destroys the model state the server holds.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from langchain_core.tools import BaseTool
from langgraph.prebuilt import ToolRuntime
from pydantic import AliasChoices, Field, model_validator

from twinkle_auto.connection import Connection
from twinkle_auto.server.config import ConfigError
from twinkle_auto.server.manager import ServerError, ServerManager, StartRequest
from twinkle_auto.server.plan import BACKENDS, ENGINES, MOCK_MODEL_ID, PlanError, SamplerRequest
from twinkle_auto.tools.base import Approval, Scope, ToolArgs, ToolContext, ToolError, compact, make_tool
from twinkle_auto.tools.hub_kinds import as_model

_PAIR = re.compile(r"([A-Za-z_]+)\s*[=:]\s*(\"[^\"]*\"|'[^']*'|[^\s,;]+)")


SERVER_WORDS = ("server", "cluster", "ray", "backend", "twinkle", "gpu", "serve", "serving")
"""Words that say the person is talking about the server, not about one training run."""


def not_about_the_server(request: str, conversation: str, instead: str) -> list[str]:
    """The mismatch of a server-wide call in a conversation that names no server, cluster or GPUs
    (empty when it does, or when there is no request to judge)."""
    low = f"{request} {conversation}".lower()
    if not request.strip() or any(w in low for w in SERVER_WORDS):
        return []
    return [f"the person's words are about no server, cluster or GPUs: {instead}"]


class SamplerArg(ToolArgs):
    """One sampler (rollout) or teacher model served beside the training model, on its own GPUs."""

    model_id: str = Field(
        validation_alias=AliasChoices("model_id", "model", "id", "name"),
        description="Model id on ModelScope (owner/name)",
    )
    gpus: int | None = Field(
        default=None, ge=1, description="GPUs for this sampler in total (= tp × dp); default tp × dp"
    )
    tp: int = Field(
        default=1,
        ge=1,
        description="Tensor parallel size: GPUs per engine, >1 for models too big for one GPU",
    )
    dp: int | None = Field(default=None, ge=1, description="Data parallel replicas; default gpus // tp")
    engine: str = Field(default="vllm", description=f"Sampler engine: {', '.join(ENGINES)}")
    max_model_len: int = Field(default=16000, ge=256, description="Context length of the engine, in tokens")

    @model_validator(mode="before")
    @classmethod
    def _from_text(cls, data: Any) -> Any:
        """A sampler written as text ("model_id='Qwen/X' gpus=2 tp=1", or just the id) is read as fields."""
        if not isinstance(data, str):
            return data
        pairs = {k.lower(): v.strip("'\"") for k, v in _PAIR.findall(data)}
        if pairs:
            return pairs
        return {"model_id": data.strip().strip("'\"")}


class StartServerArgs(ToolArgs):
    # a model nobody named is dropped: the mock backend then serves mock-model, a real one asks for it;
    # a Ray address nobody gave is dropped: we start our own cluster (the 1.5B model wrote localhost:10001)
    GROUNDED = GUESS_IS_DEFAULT = ("model_id", "ray_address")

    @classmethod
    def mismatches(cls, args: Mapping[str, Any], request: str, conversation: str = "") -> list[str]:
        """A server started in a conversation about something else: for "I want to work with sft-chat
        now" the 1.5B model, refused start_training twice, chose start_server. A dataset given as a
        model (the hub can tell): the server trains and samples models; data goes to start_training."""
        out = not_about_the_server(request, conversation, "the server is not what they asked about")
        given = [("model_id", args.get("model_id") or args.get("model"))]
        samplers = args.get("samplers")
        for sampler in samplers if isinstance(samplers, list) else []:
            if isinstance(sampler, Mapping):
                given.append(("a sampler's model_id", sampler.get("model_id")))
        seen = set()
        for field, value in given:
            if isinstance(value, str) and value not in seen:
                seen.add(value)
                out += as_model(field, value, "a dataset is what start_training trains on")
        return out

    model_id: str | None = Field(
        default=None,
        validation_alias=AliasChoices("model_id", "model", "train_model"),
        description="Model to train, ModelScope id (owner/name) as the person wrote it; may be left out with "
        "backend 'mock' (mock-model)",
    )
    total_gpus: int | None = Field(
        default=None,
        ge=1,
        validation_alias=AliasChoices("total_gpus", "gpus", "num_gpus", "gpu_count"),
        description="GPUs for the whole server (training model plus samplers) when the person gives one "
        "number, e.g. 'on 2 GPUs' = 2; the samplers' share is taken out of it",
    )
    train_gpus: int | None = Field(
        default=None,
        ge=1,
        description="GPUs for the training model alone, only when the person says so; default: what the "
        "samplers leave",
    )
    backend: str = Field(
        default="transformers",
        description=f"One of {', '.join(BACKENDS)}; 'mock' runs on CPU without GPUs or weights (to try the flow)",
    )
    samplers: list[SamplerArg] = Field(
        default_factory=list,
        description="Sampler/teacher models, each an object with model_id and optionally gpus and tp",
    )
    port: int = Field(default=8000, ge=1, le=65535, description="HTTP port of the server on 127.0.0.1")
    ray_address: str | None = Field(
        default=None,
        description="host:port of a Ray cluster the user already runs (multi-node); default: start our own",
    )


class ShutdownArgs(ToolArgs):
    """No arguments; what it checks is whether the person asked about the server at all."""

    @classmethod
    def mismatches(cls, args: Mapping[str, Any], request: str, conversation: str = "") -> list[str]:
        """The most destructive call runs only when the conversation is about the server: "shut <run>
        down completely" said first thing is about a run (the 1.5B model chose shutdown_server for it);
        "shut it down" after starting the server is about the server."""
        return not_about_the_server(request, conversation, "a run is ended by stop_training")


HUB_WORDS = ("hub", "modelscope", "huggingface", "hugging face")
"""Words that name the model hub, where search_models looks (list_supported_models asks our server)."""


class ListModelsArgs(ToolArgs):
    GROUNDED = ("url",)
    GUESS_IS_DEFAULT = ("url",)

    @classmethod
    def mismatches(cls, args: Mapping[str, Any], request: str, conversation: str = "") -> list[str]:
        """Asked what the hub has, not what our server trains: the two tools differ in where they look."""
        low = request.lower()
        if any(w in low for w in HUB_WORDS) and not any(w in low for w in SERVER_WORDS):
            return [
                "the person asked about the model hub, which search_models searches, not about our server"
            ]
        return []

    url: str | None = Field(default=None, description="Server URL; default: the server we started")


def split_gpus(
    total: int | None, train: int | None, samplers: list[SamplerArg], backend: str
) -> tuple[int | None, list[SamplerArg]]:
    """Place a total GPU count: samplers keep what they ask (tp × dp, at least one each), training gets
    the rest. "On 2 GPUs" is the whole server, not the training model alone."""
    if total is None or backend == "mock":
        return train, samplers
    placed = []
    for s in samplers:
        need = s.gpus or s.tp * (s.dp or 1)
        placed.append(s.model_copy(update={"gpus": need}))
    used = sum(p.gpus or 0 for p in placed)
    rest = total - used
    if train is not None and train + used != total:
        raise ToolError(
            f"total_gpus={total} but train_gpus={train} plus samplers' {used} is {train + used}; "
            "give either total_gpus or train_gpus"
        )
    if rest < 1:
        raise ToolError(
            f"the samplers take {used} of total_gpus={total}, leaving none for the training model; leave "
            "the samplers' gpus out to split the total (tp GPUs each), or raise total_gpus"
        )
    return rest, placed


def _fail(exc: Exception, manager: ServerManager) -> ToolError:
    message = " ".join(str(exc).split())  # one line, whatever the cause printed
    if getattr(exc, "log_tail", ""):
        message += f" (server log: {manager.log_path})"
    return ToolError(message)


def _describe_shutdown(args: dict[str, Any], scope: Scope) -> Approval:
    state = scope.context.server_manager().load_state() or {}
    where = state.get("url") or "the Twinkle server"
    model = f" (model {state['model_id']})" if state.get("model_id") else ""
    return {
        "text": (
            f"Shut down {where}{model} and the Ray nodes twinkle-auto started? All model state held in the "
            "server — weights, LoRA adapters, optimizer state not saved to a checkpoint — is destroyed, "
            "and training runs using the server will fail."
        )
    }


def make_server_tools(ctx: ToolContext | None = None, manager: ServerManager | None = None) -> list[BaseTool]:
    """The four server tools; the manager comes from the graph's context (`ToolContext.server`).

    `manager`, when given, is put into the fallback context (tests and direct use outside a graph).
    """
    if manager is not None:
        connection = ctx.connection if ctx is not None else Connection.open(manager.home)
        ctx = ToolContext(connection, server=manager, skills=ctx.skills if ctx is not None else None)

    def mgr_of(runtime: Any) -> ServerManager:
        return Scope.of(runtime, ctx).context.server_manager()

    def start_server(runtime: ToolRuntime[Any, Any] = None, **args: Any) -> str:  # type: ignore[assignment]
        mgr = mgr_of(runtime)
        samplers = [
            a if isinstance(a, SamplerArg) else SamplerArg.model_validate(a)
            for a in args.get("samplers") or []
        ]
        backend = args.get("backend") or "transformers"
        added = False
        if backend == "mock" and not samplers:
            # the mock backend is for trying the whole flow on CPU: with a sampler for its model every
            # recipe (GRPO samples on the server) runs against it
            samplers = [SamplerArg(model_id=args.get("model_id") or MOCK_MODEL_ID)]
            added = True
        train, samplers = split_gpus(args.get("total_gpus"), args.get("train_gpus"), samplers, backend)
        requests = [
            SamplerRequest(s.model_id, s.gpus, s.tp, s.dp, s.engine, s.max_model_len) for s in samplers
        ]
        request = StartRequest(
            args.get("model_id"),
            backend,
            train,
            requests,
            int(args.get("port") or 8000),
            "127.0.0.1",
            args.get("ray_address"),
        )
        try:
            result = mgr.start(request)
        except (ServerError, PlanError, ConfigError) as exc:
            raise _fail(exc, mgr) from None
        if added:
            result = {**result, "note": "mock backend: a mock sampler was added, so GRPO recipes can run"}
        return compact(result)

    def shutdown_server(runtime: ToolRuntime[Any, Any] = None) -> str:  # type: ignore[assignment]
        mgr = mgr_of(runtime)
        try:
            return compact(mgr.shutdown())
        except ServerError as exc:
            raise _fail(exc, mgr) from None

    def get_cluster_info(runtime: ToolRuntime[Any, Any] = None) -> str:  # type: ignore[assignment]
        return compact(mgr_of(runtime).cluster_info())

    def list_supported_models(url: str | None = None, runtime: ToolRuntime[Any, Any] = None) -> str:  # type: ignore[assignment]
        mgr = mgr_of(runtime)
        try:
            return compact(mgr.list_models(url))
        except ServerError as exc:
            raise _fail(exc, mgr) from None

    return [
        make_tool(
            start_server,
            name="start_server",
            description=(
                "Start the Twinkle training server (Ray + Twinkle) with a model to train and optional "
                "sampler/teacher models, each on its own GPUs. Reuses a healthy server we started with the "
                "same settings. Takes about a minute; without GPUs use backend 'mock'."
            ),
            args_schema=StartServerArgs,
        ),
        make_tool(
            shutdown_server,
            name="shutdown_server",
            description=(
                "Shut down the Twinkle training server and the Ray nodes twinkle-auto started (never other "
                "Ray processes); destroys all model state held in the server. Not for a training run: "
                "that is stop_training."
            ),
            args_schema=ShutdownArgs,
            approval=_describe_shutdown,
        ),
        make_tool(
            get_cluster_info,
            name="get_cluster_info",
            description="Hardware and cluster facts: how many GPUs this machine has, which are free or "
            "busy and their memory, the Ray cluster in use, and whether the Twinkle server is up. Call it "
            "for every question about GPUs, hardware or the server's state.",
            reads_only=True,
        ),
        make_tool(
            list_supported_models,
            name="list_supported_models",
            description="Models the Twinkle server we started can train; check before starting a Twinkle "
            "training run.",
            args_schema=ListModelsArgs,
            reads_only=True,
        ),
    ]
