"""Allocation and config as pure functions: partitions, refusals that list what is free, the schema."""

from __future__ import annotations

import pytest
from stubs.server_helpers import use_stub_smi

from twinkle_auto.server import config as cfg
from twinkle_auto.server.gpus import GPU, detect_gpus
from twinkle_auto.server.plan import PlanError, SamplerRequest, plan_allocation, resolve_sampler


def gpus(n: int, busy: tuple[int, ...] = ()) -> list[GPU]:
    return [GPU(i, "H100", 81559, 60000 if i in busy else 0, 90 if i in busy else 0) for i in range(n)]


def test_model_and_sampler_on_two_gpus() -> None:
    plan = plan_allocation(
        gpus(2), model_id="Qwen/Qwen3.5-4B", samplers=[SamplerRequest("Qwen/Qwen3.5-72B", gpus=1)]
    )
    assert plan.model.gpus == (0,) and plan.samplers[0].gpus == (1,)
    assert plan.samplers[0].name == "sampler-Qwen3.5-72B" and plan.free_after == ()


def test_eight_gpus_default_train_gpus_take_the_rest() -> None:
    plan = plan_allocation(
        gpus(8), model_id="Qwen/Qwen3.5-4B", samplers=[SamplerRequest("Qwen/Qwen3.5-72B", tp=2, dp=2)]
    )
    assert plan.model.gpus == (0, 1, 2, 3)  # every GPU the samplers leave
    assert plan.samplers[0].gpus == (4, 5, 6, 7)
    used = [i for a in plan.apps for i in a.gpus]
    assert len(used) == len(set(used)) == 8  # no overlap


def test_sampler_blocks_are_contiguous_and_disjoint() -> None:
    plan = plan_allocation(
        gpus(8),
        model_id="m",
        train_gpus=2,
        samplers=[SamplerRequest("a", tp=2, dp=2), SamplerRequest("a", gpus=2, tp=2)],
    )
    assert plan.model.gpus == (0, 1)
    assert plan.samplers[0].gpus == (2, 3, 4, 5) and (plan.samplers[0].tp, plan.samplers[0].dp) == (2, 2)
    assert plan.samplers[1].gpus == (6, 7) and plan.samplers[1].dp == 1
    assert [s.name for s in plan.samplers] == ["sampler-a", "sampler-a-2"]
    assert [a.gpu_count for a in plan.gpu_apps] == [4, 2, 2]  # largest first


def test_busy_gpus_are_skipped() -> None:
    plan = plan_allocation(gpus(4, busy=(0, 2)), model_id="m", samplers=[SamplerRequest("s")])
    assert plan.model.gpus == (1,) and plan.samplers[0].gpus == (3,)


def test_refusal_lists_free_and_busy() -> None:
    with pytest.raises(PlanError) as err:
        plan_allocation(
            gpus(4, busy=(1,)), model_id="m", train_gpus=3, samplers=[SamplerRequest("s", gpus=2)]
        )
    text = str(err.value)
    assert "need 5 GPUs (model 3 + s 2) but only 3 of 4 are free" in text
    assert "free: 0, 2, 3" in text and "busy: 1 (60000 MiB used, 90% util)" in text
    assert "\n" not in text


def test_no_gpus_points_at_mock() -> None:
    with pytest.raises(PlanError, match=r"no GPUs detected \(nvidia-smi not found\).*use backend 'mock'"):
        plan_allocation([], model_id="m", no_gpu_reason="nvidia-smi not found")


@pytest.mark.parametrize(
    ("req", "message"),
    [
        (SamplerRequest("s", gpus=3, tp=2), r"gpus \(3\) must be a multiple of tp \(2\)"),
        (SamplerRequest("s", gpus=3, tp=2, dp=2), r"tp \(2\) × dp \(2\) = 4, but gpus is 3"),
        (SamplerRequest("s", tp=0), "tp must be at least 1"),
        (SamplerRequest("s", engine="sglang"), "unknown engine 'sglang'"),
    ],
)
def test_sampler_refusals(req: SamplerRequest, message: str) -> None:
    with pytest.raises(PlanError, match=message):
        resolve_sampler(req)


def test_unknown_backend_and_bad_train_gpus() -> None:
    with pytest.raises(PlanError, match="unknown backend 'vllm'; use one of: transformers, megatron, mock"):
        plan_allocation(gpus(2), model_id="m", backend="vllm")
    with pytest.raises(PlanError, match="train_gpus must be at least 1"):
        plan_allocation(gpus(2), model_id="m", train_gpus=0)


def test_mock_needs_no_gpu() -> None:
    plan = plan_allocation(
        [], model_id=None, backend="mock", train_gpus=2, samplers=[SamplerRequest("mock-model", gpus=4)]
    )
    assert plan.model.model_id == "mock-model" and plan.gpus_used == 0 and plan.samplers[0].engine == "mock"
    assert any("train_gpus ignored" in n for n in plan.notes)


def test_plan_from_stubbed_detection(monkeypatch: pytest.MonkeyPatch) -> None:
    use_stub_smi(monkeypatch, gpus=8, busy="0", visible="0,1,2,3")
    report = detect_gpus()
    plan = plan_allocation(report.gpus, model_id="m", samplers=[SamplerRequest("s", gpus=2, tp=2)])
    assert plan.model.gpus == (1,) and plan.samplers[0].gpus == (2, 3)


# ------------------------------------------------------------------------------------------------ config
def test_config_shape_gpu_apps_largest_first() -> None:
    plan = plan_allocation(
        gpus(4),
        model_id="Qwen/Qwen3.5-4B",
        train_gpus=1,
        samplers=[SamplerRequest("Qwen/Qwen3.5-72B", gpus=3, tp=3)],
    )
    config = cfg.build_server_config(plan, port=8123)
    names = [a["name"] for a in config["applications"]]
    assert names == ["server", "sampler-Qwen3.5-72B", "models-Qwen3.5-4B", "processor"]
    assert config["http_options"] == {"host": "127.0.0.1", "port": 8123}
    assert config["persistence"] == {"mode": "memory"}
    sampler = config["applications"][1]
    assert sampler["route_prefix"] == "/api/v1/sampler/Qwen/Qwen3.5-72B"
    assert sampler["args"]["engine_args"]["tensor_parallel_size"] == 3
    assert sampler["args"]["device_mesh"] == {"device_type": "cuda", "dp_size": 1, "tp_size": 3}
    model = config["applications"][2]
    assert model["args"]["model_id"] == "ms://Qwen/Qwen3.5-4B" and model["args"]["nproc_per_node"] == 1
    assert config["applications"][0]["args"]["supported_models"] == ["Qwen/Qwen3.5-4B", "Qwen/Qwen3.5-72B"]


def test_mock_config_runs_on_cpu() -> None:
    plan = plan_allocation([], model_id=None, backend="mock", samplers=[SamplerRequest("mock-model")])
    config = cfg.build_server_config(plan, port=8000)
    model, sampler = config["applications"][1:]
    assert model["args"]["backend"] == "mock" and model["args"]["device_group"]["device_type"] == "cpu"
    assert sampler["args"]["sampler_type"] == "mock" and "engine_args" not in sampler["args"]
    assert [a["import_path"] for a in config["applications"]] == ["server", "model", "sampler"]
    assert cfg.app_routes(plan) == [
        {"name": "models-mock-model", "kind": "model", "route": "/api/v1/model/mock-model"},
        {"name": "sampler-mock-model", "kind": "sampler", "route": "/api/v1/sampler/mock-model"},
    ]


@pytest.mark.parametrize("backend", ["mock", "transformers", "megatron"])
def test_config_validates_against_twinkle_schema(backend: str) -> None:
    pytest.importorskip("twinkle.server.config", reason="twinkle-kit not installed")
    plan = plan_allocation(
        gpus(4),
        model_id="Qwen/Qwen3.5-4B",
        backend=backend,
        samplers=[SamplerRequest("Qwen/Qwen3.5-72B", gpus=2, tp=2)],
    )
    assert cfg.validate_config(cfg.build_server_config(plan, port=8000)) is True


def test_schema_violation_is_one_line() -> None:
    pytest.importorskip("twinkle.server.config", reason="twinkle-kit not installed")
    plan = plan_allocation([], model_id=None, backend="mock")
    config = cfg.build_server_config(plan, port=8000)
    config["applications"][1]["args"]["backend"] = "jax"
    with pytest.raises(
        cfg.ConfigError, match=r"rejected by twinkle-kit at applications\.1\..*backend: Input should be"
    ) as err:
        cfg.validate_config(config)
    assert "\n" not in str(err.value)


def test_written_config_round_trips(tmp_path) -> None:
    import yaml

    plan = plan_allocation([], model_id=None, backend="mock")
    config = cfg.build_server_config(plan, port=8000)
    path = cfg.write_server_config(config, tmp_path / "auto" / "server_config.yaml")
    assert yaml.safe_load(path.read_text()) == config
