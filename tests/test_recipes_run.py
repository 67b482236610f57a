"""Local recipes run for real (marker hf): render → RunController.start → a real training process on CPU.

The model is a random 2-layer Llama built from a config with a tokenizer trained here (see
recipe_data/helpers.py), the data a JSONL file the test writes; each test checks what the run left on
disk: metrics rows with steps and loss/reward, meta.json finished, checkpoints; one stops a run mid-way
(SIGTERM) and relaunches it, which must continue after the step it stopped at.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
from conftest import metric_steps, read_meta, wait_for
from recipe_data.helpers import CHAT_ROWS, GRPO_ROWS, SFT_ROWS, tiny_causal_lm, write_jsonl

from twinkle_auto.recipes import render_recipe
from twinkle_auto.runtime import format as fmt

pytestmark = [
    pytest.mark.hf,
    pytest.mark.slow,
    pytest.mark.skipif(
        any(importlib.util.find_spec(m) is None for m in ("torch", "transformers", "trl", "peft")),
        reason="needs the hf extra: torch, transformers, trl, peft",
    ),
]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(tiny_causal_lm(tmp_path_factory.mktemp("tiny-llama")))


def metrics(home: Path, run_id: str) -> list[dict]:
    path = home / run_id / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def run_to_end(controller, home: Path, run_id: str, script: str, timeout: float = 240) -> dict:
    controller.start(run_id, script)
    wait_for(lambda: read_meta(home, run_id).get("exit_code") is not None, timeout=timeout)
    meta = read_meta(home, run_id)
    log = (home / run_id / "output.log").read_text()
    assert meta["exit_code"] == 0 and meta["status"] in fmt.FINISHED_STATUSES, log[-3000:]
    return meta


def test_torch_sft_trains_then_stop_and_relaunch_continue(
    controller, home: Path, tmp_path: Path, tiny_model: str
) -> None:
    data = write_jsonl(tmp_path / "sft.jsonl", SFT_ROWS + CHAT_ROWS)
    rendered = render_recipe(
        "torch-sft",
        {
            "model": tiny_model,
            "dataset": str(data),
            "max_steps": 60,
            "lr": 3e-3,
            "save_every": 1000,
            "step_sleep": 0.1,
            "batch_size": 8,
        },
    )
    assert rendered.notes == []
    controller.start("tsft", rendered.script, model_id=rendered.model_id)
    wait_for(lambda: len(metric_steps(home, "tsft")) >= 5, timeout=120)
    stopped = controller.stop("tsft")
    assert stopped.status == "stopped" and not stopped.killed
    meta = read_meta(home, "tsft")
    stop_step = meta["shutdown"]["step"]
    assert meta["shutdown"]["checkpoint"].endswith("checkpoint.pt") and 5 <= stop_step < 60
    assert max(metric_steps(home, "tsft")) == stop_step

    controller.resume("tsft")
    wait_for(
        lambda: (
            read_meta(home, "tsft").get("exit_code") is not None
            and read_meta(home, "tsft")["launch_count"] == 2
        ),
        timeout=180,
    )
    meta = read_meta(home, "tsft")
    log = (home / "tsft" / "output.log").read_text()
    assert meta["status"] in fmt.FINISHED_STATUSES and meta["exit_code"] == 0, log[-3000:]
    assert f"Resumed from step {stop_step}" in log
    steps = metric_steps(home, "tsft")
    assert steps == list(range(1, 61))  # continued after the stop, nothing trained twice
    rows = metrics(home, "tsft")
    assert all(r["loss"] > 0 for r in rows)
    first, last = sum(r["loss"] for r in rows[:5]) / 5, sum(r["loss"] for r in rows[-5:]) / 5
    assert last < first  # it learns
    assert meta["progress"]["last_step"] == 60 and meta["config"]["model"] == tiny_model
    assert (home / "tsft" / "final" / "config.json").is_file()


def test_trl_sft_trains_to_the_end_with_lora(controller, home: Path, tmp_path: Path, tiny_model: str) -> None:
    data = write_jsonl(tmp_path / "sft.jsonl", SFT_ROWS + CHAT_ROWS)
    rendered = render_recipe(
        "trl-sft",
        {
            "model": tiny_model,
            "dataset": str(data),
            "max_steps": 8,
            "save_every": 4,
            "lr": 1e-3,
            "lora_rank": 4,
        },
    )
    meta = run_to_end(controller, home, "trl-sft", rendered.script)
    lines = metrics(home, "trl-sft")
    assert [r["step"] for r in lines] == list(range(1, 9))
    assert all(r["loss"] > 0 and "grad_norm" in r for r in lines)
    assert meta["progress"]["last_step"] == 8
    assert meta["config"]["lora_rank"] == 4 and meta["config"]["trl_version"]
    assert (home / "trl-sft" / "checkpoints" / "checkpoint-8").is_dir()
    assert (home / "trl-sft" / "final" / "adapter_config.json").is_file()  # a LoRA adapter, not the model


def test_trl_grpo_records_rewards(controller, home: Path, tmp_path: Path, tiny_model: str) -> None:
    data = write_jsonl(tmp_path / "math.jsonl", GRPO_ROWS)
    rendered = render_recipe(
        "trl-grpo",
        {
            "model": tiny_model,
            "dataset": str(data),
            "max_steps": 4,
            "save_every": 2,
            "batch_size": 2,
            "num_generations": 2,
            "max_new_tokens": 6,
            "lr": 1e-3,
        },
    )
    meta = run_to_end(controller, home, "trl-grpo", rendered.script)
    lines = metrics(home, "trl-grpo")
    assert [r["step"] for r in lines] == [1, 2, 3, 4]
    for row in lines:
        assert {"reward", "reward_std", "rewards/accuracy/mean", "rewards/format/mean", "loss"} <= row.keys()
        assert 0.0 <= row["reward"] <= 2.0 and row["completions/mean_length"] <= 6
    assert meta["config"]["num_generations"] == 2 and meta["progress"]["last_step"] == 4
    assert (home / "trl-grpo" / "checkpoints" / "checkpoint-4").is_dir()
