"""Linear regression fitted by minibatch SGD in pure Python, reporting to twinkle-auto (no torch needed).

The data are synthetic (y = w*.x + b* + noise, from random.Random(0)); the loss is the real mean squared
error of the current weights and the gradient is the real one, so loss falls to the noise floor (~0.01).
Run by hand:   TWINKLE_RUN_ID=tiny TWINKLE_HOME=/tmp/h python examples/tiny/train.py
Or:            twinkle-auto start tiny --script examples/tiny/train.py

Settings (environment only):
  TOTAL_STEPS    last step to train to (default 500)
  STEP_SLEEP     seconds to sleep after each step, so a test can watch it run (default 0.02)
  CKPT_EVERY     write checkpoint.json every N steps (default 20); also on SIGTERM and at the end
  EVAL_EVERY     eval_loss on held-out samples and a log line every N steps (default 20)
  LR             peak learning rate (default 0.05, linear warmup over 20 steps)
  CRASH_AT_STEP  from this step on, each batch also holds a record from an older export ("label", not
                 "target"); loss_and_grad does not handle it and fails with KeyError (for monitor tests)

checkpoint.json (weights, step, RNG state) lives in the run folder; a relaunch resumes from it and its
step numbers go on from the checkpoint's step + 1.
"""

from __future__ import annotations

import json
import math
import os
import random
import time
from pathlib import Path

from twinkle_auto.runtime import TrainingRuntime

TOTAL_STEPS = int(os.environ.get("TOTAL_STEPS", "500"))
STEP_SLEEP = float(os.environ.get("STEP_SLEEP", "0.02"))
CKPT_EVERY = max(1, int(os.environ.get("CKPT_EVERY", "20")))
EVAL_EVERY = max(1, int(os.environ.get("EVAL_EVERY", "20")))
LR = float(os.environ.get("LR", "0.05"))
CRASH_AT_STEP = int(os.environ.get("CRASH_AT_STEP", "0") or 0)
N_FEATURES, N_TRAIN, N_EVAL, BATCH, WARMUP_STEPS, NOISE = 8, 2048, 256, 32, 20, 0.1


def make_records(rng: random.Random, n: int, w: list[float], b: float, label_key: str) -> list[dict]:
    records = []
    for _ in range(n):
        x = [rng.gauss(0.0, 1.0) for _ in range(N_FEATURES)]
        y = sum(wi * xi for wi, xi in zip(w, x, strict=True)) + b + rng.gauss(0.0, NOISE)
        records.append({"features": x, label_key: y})
    return records


def loss_and_grad(w: list[float], b: float, batch: list[dict]) -> tuple[float, list[float], float]:
    """Mean squared error of the batch and its gradient with respect to w and b."""
    gw = [0.0] * len(w)
    gb = 0.0
    total = 0.0
    for rec in batch:
        x = rec["features"]
        err = sum(wi * xi for wi, xi in zip(w, x, strict=True)) + b - rec["target"]
        total += err * err
        for i, xi in enumerate(x):
            gw[i] += 2.0 * err * xi / len(batch)
        gb += 2.0 * err / len(batch)
    return total / len(batch), gw, gb


def lr_at(step: int) -> float:
    return LR * min(1.0, step / WARMUP_STEPS)


def main() -> None:
    config = {
        "n_features": N_FEATURES,
        "n_train": N_TRAIN,
        "batch_size": BATCH,
        "lr": LR,
        "warmup_steps": WARMUP_STEPS,
        "optimizer": "SGD",
        "total_steps": TOTAL_STEPS,
        "ckpt_every": CKPT_EVERY,
    }
    rt = TrainingRuntime()
    rt.start(model_id="linreg", config=config, script_path=__file__)
    ckpt_path = Path(rt.run_dir) / "checkpoint.json"

    data_rng = random.Random(0)  # the same data on every launch
    true_w = [data_rng.uniform(-2.0, 2.0) for _ in range(N_FEATURES)]
    true_b = data_rng.uniform(-1.0, 1.0)
    train = make_records(data_rng, N_TRAIN, true_w, true_b, "target")
    held_out = make_records(data_rng, N_EVAL, true_w, true_b, "target")
    legacy_shard = make_records(data_rng, 64, true_w, true_b, "label")  # older export: "label", not "target"

    w = [0.0] * N_FEATURES
    b = 0.0
    batch_rng = random.Random(1)
    step = 0
    if ckpt_path.exists():
        ckpt = json.loads(ckpt_path.read_text())
        w, b, step = ckpt["w"], ckpt["b"], int(ckpt["step"])
        version, internal, gauss_next = ckpt["rng"]
        batch_rng.setstate((version, tuple(internal), gauss_next))
        rt.log(f"Resumed from step {step}")

    def save_checkpoint(at_step: int) -> Path:
        state = {"step": at_step, "w": w, "b": b, "rng": batch_rng.getstate()}
        tmp = ckpt_path.with_name(f".{ckpt_path.name}.{os.getpid()}.tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, ckpt_path)
        return ckpt_path

    # SIGTERM: the runtime calls this at the end of the current step (inside log_metrics), then exits.
    rt.register_graceful_shutdown(on_shutdown=lambda _rt: save_checkpoint(step))

    while step < TOTAL_STEPS:
        step += 1
        batch = batch_rng.sample(train, BATCH)
        if CRASH_AT_STEP and step >= CRASH_AT_STEP:
            batch[-1] = legacy_shard[step % len(legacy_shard)]  # the older export joins the data mix
        loss, gw, gb = loss_and_grad(w, b, batch)
        grad_norm = math.sqrt(sum(g * g for g in gw) + gb * gb)
        lr = lr_at(step)
        w = [wi - lr * gi for wi, gi in zip(w, gw, strict=True)]
        b -= lr * gb

        metrics = {"loss": loss, "grad_norm": grad_norm, "lr": lr}
        if step % EVAL_EVERY == 0:
            metrics["eval_loss"] = loss_and_grad(w, b, held_out)[0]
            rt.log(
                f"step {step}/{TOTAL_STEPS} loss {loss:.5f} eval_loss {metrics['eval_loss']:.5f} lr {lr:.3f}"
            )
        if step % CKPT_EVERY == 0:
            save_checkpoint(step)
        rt.log_metrics(step=step, **metrics)
        if STEP_SLEEP > 0:
            time.sleep(STEP_SLEEP)

    save_checkpoint(step)
    rt.log(f"Training complete at step {step}; weight error {math.dist(w, true_w):.4f}")
    rt.finish()


if __name__ == "__main__":
    main()
