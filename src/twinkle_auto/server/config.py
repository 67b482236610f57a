"""`server_config.yaml` for `python -m twinkle.server launch`, built from an allocation plan.

The dict follows twinkle-kit's own `ServerConfig` schema (strict: unknown keys are errors there), and
when twinkle-kit is importable we validate against that very model before launching, so a schema
drift shows up as one clear line here rather than as a launcher traceback 30 s later.

Choices that are ours, not upstream's: bind 127.0.0.1 (a dev box is not a public service), the HTTP
proxy only on the head node (several Ray nodes share this machine and would fight over the port),
in-memory persistence (a state file is slow and outlives the server it describes), and `mock` apps on
CPU so the whole flow runs on a laptop.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from twinkle_auto.runtime.format import atomic_write_text
from twinkle_auto.server.plan import AppPlan, Plan

API_PREFIX = "/api/v1"


class ConfigError(ValueError):
    """The config does not validate against twinkle-kit's schema; `str(exc)` is one line."""


def _replicas(name: str, target: int) -> list[dict[str, Any]]:
    return [
        {
            "name": name,
            "autoscaling_config": {"min_replicas": 1, "max_replicas": 1, "target_ongoing_requests": target},
            "ray_actor_options": {"num_cpus": 0.1},
        }
    ]


def model_route(model_id: str) -> str:
    return f"{API_PREFIX}/model/{model_id.split('://', 1)[-1]}"


def sampler_route(model_id: str, name: str, duplicate: bool) -> str:
    base = f"{API_PREFIX}/sampler/{model_id.split('://', 1)[-1]}"
    return f"{API_PREFIX}/sampler/{name}" if duplicate else base


def _hub_id(model_id: str, backend: str) -> str:
    if backend == "mock" or "://" in model_id or model_id.startswith(("/", ".", "~")):
        return model_id
    return f"ms://{model_id}"


def _model_app(app: AppPlan, backend: str) -> dict[str, Any]:
    n = max(1, app.gpu_count)
    device = "cpu" if backend == "mock" else "cuda"
    args: dict[str, Any] = {
        "backend": backend,
        "model_id": _hub_id(app.model_id, backend),
        "nproc_per_node": n,
        "device_group": {"name": "model", "ranks": n, "device_type": device},
        "device_mesh": {"device_type": device, "dp_size": n},
        "queue_config": {"rps_limit": 100, "tps_limit": 100000},
    }
    if backend != "mock":
        args["max_length"] = 32768
        args["queue_config"]["max_input_tokens"] = 32768
        args["adapter_config"] = {"adapter_timeout": 600}
    return {
        "name": app.name,
        "route_prefix": model_route(app.model_id),
        "import_path": "model",
        "args": args,
        "deployments": _replicas("ModelManagement", 16),
    }


def _sampler_app(app: AppPlan, backend: str, route: str) -> dict[str, Any]:
    mock = backend == "mock"
    n = max(1, app.gpu_count)
    device = "cpu" if mock else "cuda"
    mesh: dict[str, Any] = {"device_type": device, "dp_size": 1 if mock else app.dp}
    group: dict[str, Any] = {"name": app.name, "ranks": n, "device_type": device}
    if not mock and app.tp > 1:
        mesh["tp_size"] = app.tp
        group["gpus_per_worker"] = app.tp
    args: dict[str, Any] = {
        "model_id": _hub_id(app.model_id, backend),
        "nproc_per_node": n,
        "sampler_type": "mock" if mock else app.engine,
        "device_group": group,
        "device_mesh": mesh,
        "queue_config": {"rps_limit": 100, "tps_limit": 100000},
    }
    if not mock and app.engine == "vllm":
        engine: dict[str, Any] = {
            "max_model_len": app.max_model_len or 16000,
            "gpu_memory_utilization": 0.85,
            "enable_lora": True,
            "logprobs_mode": "processed_logprobs",
        }
        if app.tp > 1:
            engine["tensor_parallel_size"] = app.tp
        args["engine_args"] = engine
    return {
        "name": app.name,
        "route_prefix": route,
        "import_path": "sampler",
        "args": args,
        "deployments": _replicas("SamplerManagement", 16),
    }


def _processor_app() -> dict[str, Any]:
    return {
        "name": "processor",
        "route_prefix": f"{API_PREFIX}/processor",
        "import_path": "processor",
        "args": {
            "ncpu_proc_per_node": 2,
            "device_group": {"name": "processor", "ranks": 2, "device_type": "CPU"},
            "device_mesh": {"device_type": "CPU", "dp_size": 2},
        },
        "deployments": _replicas("ProcessorManagement", 128),
    }


def app_routes(plan: Plan) -> list[dict[str, str]]:
    """The route and kind of every model/sampler app, for the health check to ask each one."""
    sampler_ids = [s.model_id for s in plan.samplers]
    routes = [{"name": plan.model.name, "kind": "model", "route": model_route(plan.model.model_id)}]
    for s in plan.samplers:
        dup = sampler_ids.count(s.model_id) > 1
        routes.append({"name": s.name, "kind": "sampler", "route": sampler_route(s.model_id, s.name, dup)})
    return routes


def supported_models(plan: Plan) -> list[str]:
    names: list[str] = []
    for app in plan.apps:
        if app.model_id not in names:
            names.append(app.model_id)
    return names


def build_server_config(
    plan: Plan, *, port: int, host: str = "127.0.0.1", processor: bool | None = None
) -> dict[str, Any]:
    """The whole server_config as a dict: gateway first, GPU apps largest first, processor last.

    `processor` (the server-side dataset service) defaults to on for real backends, off for `mock`
    (mock training scripts send their own inputs; one app fewer starts faster).
    """
    if processor is None:
        processor = plan.backend != "mock"
    apps: list[dict[str, Any]] = [
        {
            "name": "server",
            "route_prefix": API_PREFIX,
            "import_path": "server",
            "args": {
                "server_config": {"per_token_model_limit": 3},
                "supported_models": supported_models(plan),
            },
            "deployments": [{**_replicas("GatewayServer", 128)[0], "max_ongoing_requests": 50}],
        }
    ]
    routes = {r["name"]: r["route"] for r in app_routes(plan)}
    # Largest GPU footprint first (see Plan.gpu_apps); CPU-only apps keep their order after them.
    ordered = sorted(plan.apps, key=lambda a: -a.gpu_count)
    for app in ordered:
        if app.role == "model":
            apps.append(_model_app(app, plan.backend))
        else:
            apps.append(_sampler_app(app, plan.backend, routes[app.name]))
    if processor:
        apps.append(_processor_app())
    return {
        "proxy_location": "HeadOnly",
        "http_options": {"host": host, "port": int(port)},
        "telemetry": {"enabled": False},
        "persistence": {"mode": "memory"},
        "applications": apps,
    }


def twinkle_schema() -> Any | None:
    """twinkle-kit's `ServerConfig` model, or None when twinkle-kit is not installed."""
    try:
        from twinkle.server.config import ServerConfig  # type: ignore[import-not-found]
    except Exception:  # not installed, or a broken install: the launcher will say more
        return None
    return ServerConfig


def validate_config(config: dict[str, Any]) -> bool:
    """Validate against twinkle-kit's own model when importable; True if it was checked.

    Raises ConfigError with the first offending field, in one line.
    """
    schema = twinkle_schema()
    if schema is None:
        return False
    try:
        schema.model_validate(config)
    except Exception as exc:  # pydantic.ValidationError, or a cross-field ValueError
        errors = getattr(exc, "errors", None)
        if callable(errors):
            first = errors()[0]
            where = ".".join(str(p) for p in first.get("loc", ()))
            raise ConfigError(
                f"server config rejected by twinkle-kit at {where}: {first.get('msg')}"
            ) from None
        raise ConfigError(f"server config rejected by twinkle-kit: {str(exc).splitlines()[0]}") from None
    return True


def write_server_config(config: dict[str, Any], path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    header = "# Written by twinkle-auto for `python -m twinkle.server launch --config <this file>`.\n"
    atomic_write_text(path, header + yaml.safe_dump(config, sort_keys=False, default_flow_style=False))
    return path
