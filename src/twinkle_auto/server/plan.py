"""GPU allocation: which GPUs the training model and each sampler (or teacher) get.

Pure functions over a GPU list, so every refusal can be tested without hardware. A refusal is a
`PlanError` whose message says what was asked, what is free, and what to change — the model reads it
and asks again with numbers that fit.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from twinkle_auto.server.gpus import GPU

BACKENDS = ("transformers", "megatron", "mock")
ENGINES = ("vllm", "torch", "mock")
MOCK_MODEL_ID = "mock-model"


class PlanError(ValueError):
    """The request cannot be placed on the GPUs we have; `str(exc)` is one line for the model."""


@dataclass(frozen=True)
class SamplerRequest:
    """A sampler (or teacher) model as asked for: `gpus` = tp × dp; either may be left out."""

    model_id: str
    gpus: int | None = None
    tp: int = 1
    dp: int | None = None
    engine: str = "vllm"
    max_model_len: int = 16000


@dataclass(frozen=True)
class AppPlan:
    """One GPU application of the server and the physical GPU indices it gets (empty on CPU)."""

    role: str  # "model" or "sampler"
    name: str
    model_id: str
    gpus: tuple[int, ...] = ()
    tp: int = 1
    dp: int = 1
    engine: str = ""
    max_model_len: int | None = None

    @property
    def gpu_count(self) -> int:
        return len(self.gpus)

    def as_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"role": self.role, "name": self.name, "model_id": self.model_id}
        data["gpus"] = list(self.gpus)
        if self.role == "sampler":
            data.update(engine=self.engine, tp=self.tp, dp=self.dp, max_model_len=self.max_model_len)
        return data


@dataclass(frozen=True)
class Plan:
    backend: str
    model: AppPlan
    samplers: tuple[AppPlan, ...] = ()
    free_after: tuple[int, ...] = ()
    notes: tuple[str, ...] = field(default=())

    @property
    def apps(self) -> tuple[AppPlan, ...]:
        return (self.model, *self.samplers)

    @property
    def gpu_apps(self) -> list[AppPlan]:
        """Apps that hold GPUs, largest first: the biggest placement group has the fewest places to go,
        so it must be scheduled before smaller ones can fragment the nodes."""
        return sorted((a for a in self.apps if a.gpus), key=lambda a: -a.gpu_count)

    @property
    def gpus_used(self) -> int:
        return sum(a.gpu_count for a in self.apps)

    def as_dict(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "model": self.model.as_dict(),
            "samplers": [s.as_dict() for s in self.samplers],
            "gpus_used": self.gpus_used,
            "free_after": list(self.free_after),
            "notes": list(self.notes),
        }


def short_name(model_id: str) -> str:
    """`Qwen/Qwen3.5-4B` → `Qwen3.5-4B`: app names in the config are per model, without the owner."""
    tail = model_id.split("://", 1)[-1].rstrip("/").split("/")[-1]
    return tail or "model"


def check_backend(backend: str) -> str:
    if backend not in BACKENDS:
        raise PlanError(f"unknown backend {backend!r}; use one of: {', '.join(BACKENDS)}")
    return backend


def resolve_sampler(req: SamplerRequest) -> tuple[int, int, int]:
    """(tp, dp, gpus) of a sampler, with tp × dp = gpus enforced rather than silently rounded."""
    label = f"sampler {req.model_id!r}"
    if req.engine not in ENGINES:
        raise PlanError(f"{label}: unknown engine {req.engine!r}; use one of: {', '.join(ENGINES)}")
    tp = req.tp
    if tp < 1:
        raise PlanError(f"{label}: tp must be at least 1 (got {tp})")
    if req.dp is not None and req.dp < 1:
        raise PlanError(f"{label}: dp must be at least 1 (got {req.dp})")
    if req.gpus is not None and req.gpus < 1:
        raise PlanError(f"{label}: gpus must be at least 1 (got {req.gpus})")
    if req.gpus is None:
        dp = req.dp or 1
        return tp, dp, tp * dp
    if req.dp is None:
        if req.gpus % tp:
            raise PlanError(
                f"{label}: gpus ({req.gpus}) must be a multiple of tp ({tp}), since gpus = tp × dp"
            )
        return tp, req.gpus // tp, req.gpus
    if tp * req.dp != req.gpus:
        raise PlanError(
            f"{label}: tp ({tp}) × dp ({req.dp}) = {tp * req.dp}, but gpus is {req.gpus}; they must match"
        )
    return tp, req.dp, req.gpus


def _describe_free(gpus: Sequence[GPU]) -> str:
    free = [g for g in gpus if not g.busy]
    busy = [g for g in gpus if g.busy]
    text = f"free: {', '.join(str(g.index) for g in free) or 'none'}"
    if busy:
        parts = [
            f"{g.index} ({g.memory_used_mb or 0} MiB used, {g.utilization_pct or 0}% util)" for g in busy
        ]
        text += f"; busy: {', '.join(parts)}"
    return text


def _unique_names(prefix: str, model_ids: Sequence[str]) -> list[str]:
    seen: dict[str, int] = {}
    names = []
    for model_id in model_ids:
        base = f"{prefix}-{short_name(model_id)}"
        seen[base] = seen.get(base, 0) + 1
        names.append(base if seen[base] == 1 else f"{base}-{seen[base]}")
    return names


def plan_allocation(
    gpus: Sequence[GPU],
    *,
    model_id: str | None,
    backend: str = "transformers",
    train_gpus: int | None = None,
    samplers: Sequence[SamplerRequest] = (),
    no_gpu_reason: str | None = None,
) -> Plan:
    """Partition the free GPUs: the training model first, then each sampler, in contiguous blocks.

    `mock` runs everything on CPU and takes no GPU (so it works on any machine). Busy GPUs are never
    handed out. `train_gpus` defaults to every free GPU the samplers leave (at least one).
    """
    check_backend(backend)
    sampler_ids = [s.model_id for s in samplers]
    if any(not m or not m.strip() for m in sampler_ids):
        raise PlanError("every sampler needs a model_id")
    names = _unique_names("sampler", sampler_ids)

    if backend == "mock":
        notes = []
        if train_gpus:
            notes.append("mock backend runs on CPU: train_gpus ignored")
        if any(s.gpus or s.tp > 1 or (s.dp or 1) > 1 for s in samplers):
            notes.append("mock backend runs on CPU: sampler gpus/tp/dp ignored")
        model = AppPlan("model", f"models-{short_name(model_id or MOCK_MODEL_ID)}", model_id or MOCK_MODEL_ID)
        apps = tuple(
            AppPlan("sampler", name, s.model_id, (), 1, 1, "mock", s.max_model_len)
            for name, s in zip(names, samplers)
        )
        return Plan(backend, model, apps, tuple(g.index for g in gpus if not g.busy), tuple(notes))

    if not model_id or not model_id.strip():
        raise PlanError(f"backend {backend!r} needs a model_id (e.g. 'Qwen/Qwen3.5-4B')")
    resolved = [resolve_sampler(s) for s in samplers]
    sampler_need = sum(r[2] for r in resolved)
    free = [g for g in gpus if not g.busy]
    if not gpus:
        why = f" ({no_gpu_reason})" if no_gpu_reason else ""
        raise PlanError(
            f"no GPUs detected{why}; backend {backend!r} needs GPUs — use backend 'mock' to try on CPU"
        )
    if train_gpus is not None and train_gpus < 1:
        raise PlanError(f"train_gpus must be at least 1 for backend {backend!r} (got {train_gpus})")
    model_need = train_gpus if train_gpus is not None else max(1, len(free) - sampler_need)
    needed = model_need + sampler_need
    if needed > len(free):
        parts = [f"model {model_need}"] + [f"{s.model_id} {r[2]}" for s, r in zip(samplers, resolved)]
        raise PlanError(
            f"need {needed} GPUs ({' + '.join(parts)}) but only {len(free)} of {len(gpus)} are free "
            f"({_describe_free(gpus)}); ask for fewer GPUs or free some"
        )
    cursor = 0

    def take(n: int) -> tuple[int, ...]:
        nonlocal cursor
        block = tuple(g.index for g in free[cursor : cursor + n])
        cursor += n
        return block

    model = AppPlan(
        "model", f"models-{short_name(model_id)}", model_id, take(model_need), 1, model_need, backend
    )
    apps = tuple(
        AppPlan("sampler", name, s.model_id, take(r[2]), r[0], r[1], s.engine, s.max_model_len)
        for name, s, r in zip(names, samplers, resolved)
    )
    return Plan(backend, model, apps, tuple(g.index for g in free[cursor:]))
