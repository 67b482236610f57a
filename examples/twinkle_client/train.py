"""LoRA training through the Twinkle client, reporting to twinkle-auto: the server holds the model.

The model, its adapter and optimizer live in the Twinkle server; this script only sends batches, so a
pause (SIGKILL) loses nothing the server has, and a relaunch continues from `get_resume_info()`, loading
the last checkpoint the server saved (its path is kept in the run folder as checkpoint.txt). A stop
(SIGTERM) saves one at the end of the current step first (`register_graceful_shutdown(on_shutdown=…)`).

Works against the mock server (`start_server(backend="mock")`, CPU only): the mock model answers with
deterministic synthetic losses, which is enough to exercise the whole control flow.

Run by the assistant (`start_training`), or by hand:
    TWINKLE_RUN_ID=tw1 TWINKLE_SERVER_URL=http://127.0.0.1:8000 python examples/twinkle_client/train.py

Settings (environment only):
  TWINKLE_SERVER_URL  server base URL (default http://127.0.0.1:8000)
  MODEL_ID            base model the server serves (default mock-model)
  TOTAL_STEPS         last step (default 200)
  STEP_SLEEP          seconds between steps, so a person (or a test) can watch (default 0.05)
  SAVE_EVERY          save a server-side checkpoint every N steps (default 25)
  LR                  learning rate sent to the server's optimizer (default 1e-4)
"""

from __future__ import annotations

import math
import os
import random
import time

from peft import LoraConfig
from twinkle_client import init_twinkle_client
from twinkle_client.model import MultiLoraTransformersModel

from twinkle_auto.runtime import TrainingRuntime

SERVER_URL = os.environ.get("TWINKLE_SERVER_URL", "http://127.0.0.1:8000")
MODEL_ID = os.environ.get("MODEL_ID", "mock-model")
TOTAL_STEPS = int(os.environ.get("TOTAL_STEPS", "200"))
STEP_SLEEP = float(os.environ.get("STEP_SLEEP", "0.05"))
SAVE_EVERY = max(1, int(os.environ.get("SAVE_EVERY", "25")))
LR = float(os.environ.get("LR", "1e-4"))
BATCH, SEQ_LEN, VOCAB = 4, 32, 1000


def make_batch(rng: random.Random) -> list[dict[str, list[int]]]:
    """Token ids of a synthetic next-token task (labels = inputs shifted by one)."""
    batch = []
    for _ in range(BATCH):
        ids = [rng.randrange(VOCAB) for _ in range(SEQ_LEN + 1)]
        batch.append({"input_ids": ids[:-1], "labels": ids[1:]})
    return batch


def loss_of(result: object) -> float:
    """The server returns `[per-sample outputs, loss]` for forward_backward."""
    if isinstance(result, list) and len(result) == 2 and isinstance(result[1], (int, float)):
        return float(result[1])
    return float("nan")


def main() -> None:
    rt = TrainingRuntime()
    adapter = f"lora-{rt.run_id}"
    config = {"model_id": MODEL_ID, "lora_rank": 8, "lr": LR, "batch_size": BATCH, "total_steps": TOTAL_STEPS}
    rt.start(model_id=MODEL_ID, config=config, script_path=__file__)

    client = init_twinkle_client(base_url=SERVER_URL)
    model = MultiLoraTransformersModel(model_id=MODEL_ID)
    model.add_adapter_to_model(adapter, LoraConfig(r=8, lora_alpha=32, target_modules="all-linear"))
    model.set_loss("CrossEntropyLoss")
    model.set_optimizer("Adam", lr=LR)

    ckpt_file = rt.run_dir / "checkpoint.txt"  # the server-side path of the last saved adapter

    def save_checkpoint(_rt: TrainingRuntime | None = None) -> str:
        saved = model.save(name=f"step-{step}", save_optimizer=True)
        tmp = ckpt_file.with_name(f".{ckpt_file.name}.{os.getpid()}.tmp")
        tmp.write_text(f"{step} {saved.twinkle_path}\n")
        os.replace(tmp, ckpt_file)
        return saved.twinkle_path

    step = rt.get_resume_info()["last_step"]
    if step and ckpt_file.exists():
        saved_step, path = ckpt_file.read_text().split()
        model.load(name=path)  # weights and optimizer as of that checkpoint
        rt.log(f"Resumed from step {step} (checkpoint of step {saved_step}: {path})")
    elif step:
        rt.log(f"Resumed from step {step} (no checkpoint saved yet: the adapter starts fresh)")
    # SIGTERM (twinkle-auto's stop): the runtime calls this at the end of the current step, then exits.
    rt.register_graceful_shutdown(on_shutdown=save_checkpoint)

    rng = random.Random(step)  # a different stream after a resume, the same one on a re-run
    while step < TOTAL_STEPS:
        step += 1
        out = model.forward_backward(inputs=make_batch(rng))
        model.clip_grad_and_step(max_grad_norm=1.0)
        loss = loss_of(out.result)
        lr = LR * 0.5 * (1 + math.cos(math.pi * step / TOTAL_STEPS))
        rt.log_metrics(step=step, loss=loss, lr=lr)
        if step % SAVE_EVERY == 0:
            rt.log(f"step {step}/{TOTAL_STEPS} loss {loss:.4f}; checkpoint {save_checkpoint()}")
        if STEP_SLEEP > 0:
            time.sleep(STEP_SLEEP)

    save_checkpoint()
    client.close()
    rt.log(f"Training complete at step {step}")
    rt.finish()


if __name__ == "__main__":
    main()
