"""The server tools: start and stop the Twinkle training server, and look at GPUs, Ray and models.

Each tool is a thin shell over `twinkle_auto.server.manager.ServerManager`: argument schema, one call,
a compact result. Refusals (unknown backend, more GPUs than exist, port in use, a start already in
progress) and failures (the server died while starting) arrive as one-line ToolErrors the model can
act on. `shutdown_server` asks the person first: it destroys the model state the server holds.
"""

from __future__ import annotations

from typing import Any

from langchain_core.tools import BaseTool, StructuredTool
from pydantic import BaseModel, Field

from twinkle_auto.server.config import ConfigError
from twinkle_auto.server.manager import ServerError, ServerManager, StartRequest
from twinkle_auto.server.plan import BACKENDS, ENGINES, PlanError, SamplerRequest
from twinkle_auto.tools.base import ToolContext, ToolError, compact


class SamplerArg(BaseModel):
    """One sampler (rollout) or teacher model served beside the training model."""

    model_id: str = Field(description="Model id on ModelScope, e.g. 'Qwen/Qwen3.5-72B'")
    gpus: int | None = Field(default=None, description="GPUs in total for this sampler; must equal tp × dp")
    tp: int = Field(
        default=1, description="Tensor parallel size (GPUs per engine); >1 for models too big for one GPU"
    )
    dp: int | None = Field(default=None, description="Data parallel replicas; default gpus // tp")
    engine: str = Field(default="vllm", description=f"Sampler engine: {', '.join(ENGINES)}")
    max_model_len: int = Field(default=16000, description="Context length of the engine")


class StartServerArgs(BaseModel):
    model_id: str | None = Field(
        default=None,
        description="Model to train, e.g. 'Qwen/Qwen3.5-4B'; may be left out with backend 'mock' (mock-model)",
    )
    train_gpus: int | None = Field(
        default=None, description="GPUs for the training model; default: every free GPU the samplers leave"
    )
    backend: str = Field(
        default="transformers",
        description=f"One of {', '.join(BACKENDS)}; 'mock' runs on CPU without GPUs (to try the flow)",
    )
    samplers: list[SamplerArg] = Field(
        default_factory=list, description="Sampler/teacher models, each on its own GPUs"
    )
    port: int = Field(default=8000, description="HTTP port of the server on 127.0.0.1")
    ray_address: str | None = Field(
        default=None,
        description="host:port of a Ray cluster the user already runs (multi-node); default: start our own",
    )


class NoArgs(BaseModel):
    pass


class ListModelsArgs(BaseModel):
    url: str | None = Field(default=None, description="Server URL; default: the server we started")


def _fail(exc: Exception, manager: ServerManager) -> ToolError:
    message = " ".join(str(exc).split())  # one line, whatever the cause printed
    if getattr(exc, "log_tail", ""):
        message += f" (server log: {manager.log_path})"
    return ToolError(message)


def _shutdown_approval(manager: ServerManager) -> Any:
    def describe(args: dict[str, Any], ctx: ToolContext) -> str:
        state = manager.load_state() or {}
        where = state.get("url") or "the Twinkle server"
        model = f" (model {state['model_id']})" if state.get("model_id") else ""
        return (
            f"Shut down {where}{model} and the Ray nodes twinkle-auto started. All model state held in the "
            "server — weights, LoRA adapters, optimizer state not saved to a checkpoint — is destroyed, "
            "and training runs using the server will fail."
        )

    return describe


def make_server_tools(ctx: ToolContext, manager: ServerManager | None = None) -> list[BaseTool]:
    """The four server tools over one ServerManager for the context's TWINKLE_HOME."""
    mgr = manager or ServerManager(ctx.connection.store.home)

    def start_server(
        model_id: str | None = None,
        train_gpus: int | None = None,
        backend: str = "transformers",
        samplers: list[SamplerArg] | None = None,
        port: int = 8000,
        ray_address: str | None = None,
    ) -> str:
        requests = [
            SamplerRequest(s.model_id, s.gpus, s.tp, s.dp, s.engine, s.max_model_len)
            for s in (SamplerArg.model_validate(x) if isinstance(x, dict) else x for x in samplers or [])
        ]
        request = StartRequest(model_id, backend, train_gpus, requests, port, "127.0.0.1", ray_address)
        try:
            result = mgr.start(request)
        except (ServerError, PlanError, ConfigError) as exc:
            raise _fail(exc, mgr) from None
        return compact(result)

    def shutdown_server() -> str:
        try:
            return compact(mgr.shutdown())
        except ServerError as exc:
            raise _fail(exc, mgr) from None

    def get_cluster_info() -> str:
        return compact(mgr.cluster_info())

    def list_supported_models(url: str | None = None) -> str:
        try:
            return compact(mgr.list_models(url))
        except ServerError as exc:
            raise _fail(exc, mgr) from None

    return [
        StructuredTool.from_function(
            start_server,
            name="start_server",
            description=(
                "Start the Twinkle training server (Ray + Twinkle) with a training model and optional "
                "sampler/teacher models, each on its own GPUs. Idempotent: a healthy server we started "
                "with the same settings is reused. Takes ~1 min on CPU (mock), longer with real weights. "
                "Without GPUs use backend='mock'."
            ),
            args_schema=StartServerArgs,
        ),
        StructuredTool.from_function(
            shutdown_server,
            name="shutdown_server",
            description=(
                "Stop the Twinkle server and the Ray nodes twinkle-auto started (never other Ray "
                "processes). Destroys all model state held in the server."
            ),
            args_schema=NoArgs,
            metadata={"approval": _shutdown_approval(mgr)},
        ),
        StructuredTool.from_function(
            get_cluster_info,
            name="get_cluster_info",
            description="GPUs on this machine (free/busy), the Ray cluster in use and the server's state.",
            args_schema=NoArgs,
        ),
        StructuredTool.from_function(
            list_supported_models,
            name="list_supported_models",
            description="Models the running Twinkle server serves; check before writing a training script.",
            args_schema=ListModelsArgs,
        ),
    ]
