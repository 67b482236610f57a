"""The anti-gaming guards: real fixes pass, every way of making a crash vanish by gutting training fails."""

from __future__ import annotations

import pytest

from twinkle_auto.monitor.guards import RULES, ast_util, check_patch
from twinkle_auto.monitor.patching import apply_patch

# A small PyTorch loop that reports through TrainingRuntime and resumes from its own checkpoint.
TORCH_PY = '''\
"""Char-level transformer on a text file, reporting to twinkle-auto."""
import argparse
import os

import torch
import torch.nn as nn

from twinkle_auto.runtime import TrainingRuntime

parser = argparse.ArgumentParser()
parser.add_argument("--max-steps", type=int, default=1000)
parser.add_argument("--batch-size", type=int, default=32)
parser.add_argument("--lr", type=float, default=3e-4)
args = parser.parse_args()

B, T, V = args.batch_size, 64, 65
CKPT = "ckpt.pt"

rt = TrainingRuntime()
rt.start(model_id="char-transformer", config={"max_steps": args.max_steps, "lr": args.lr}, script_path=__file__)

text = open("input.txt").read()
data = torch.tensor([ord(c) % V for c in text], dtype=torch.long)
train_data = data[: int(0.9 * len(data))]


class CharModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(V, 128)
        self.block = nn.TransformerEncoderLayer(128, 4, batch_first=True)
        self.head = nn.Linear(128, V)

    def forward(self, x):
        return self.head(self.block(self.emb(x)))


model = CharModel()
optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr)


def save_checkpoint(runtime):
    torch.save({"model": model.state_dict(), "optim": optimizer.state_dict()}, CKPT)
    return CKPT


rt.register_graceful_shutdown(on_shutdown=save_checkpoint)
start = rt.get_resume_info()["last_step"]
if start > 0 and os.path.exists(CKPT):
    state = torch.load(CKPT)
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optim"])


def get_batch():
    ix = torch.randint(len(train_data) - T - 1, (B,))
    x = torch.stack([train_data[i : i + T] for i in ix])
    y = torch.stack([train_data[i + 1 : i + T + 1] for i in ix])
    return x, y


model.train()
for step in range(start + 1, args.max_steps + 1):
    x, y = get_batch()
    logits = model(x)
    loss = nn.functional.cross_entropy(logits.view(B, T, V), y.view(B, T))
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    rt.log_metrics(step=step, loss=loss.item(), lr=args.lr)

rt.finish()
'''

# An HF/TRL script: no loop of its own, trainer.train() is the training.
SFT_PY = '''\
"""Supervised fine-tuning with TRL, reporting to twinkle-auto."""
from datasets import load_dataset
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl import SFTConfig, SFTTrainer

from twinkle_auto.runtime import TrainingRuntime
from twinkle_auto.runtime.callbacks import TwinkleCallback

MODEL_ID = "Qwen/Qwen2.5-0.5B"

rt = TrainingRuntime()
rt.start(model_id=MODEL_ID, config={"num_train_epochs": 3}, script_path=__file__)

tokenizer = AutoTokenizer.from_pretrained(MODEL_ID)
model = AutoModelForCausalLM.from_pretrained(MODEL_ID)
dataset = load_dataset("trl-lib/Capybara", split="train")

config = SFTConfig(
    output_dir="out",
    num_train_epochs=3,
    max_steps=-1,
    per_device_train_batch_size=4,
    gradient_accumulation_steps=4,
    learning_rate=2e-5,
    logging_steps=10,
    save_steps=200,
)
trainer = SFTTrainer(
    model=model,
    args=config,
    train_dataset=dataset,
    tokenizer=tokenizer,
    callbacks=[TwinkleCallback(rt)],
)
resume = rt.get_resume_info()["last_step"] > 0
trainer.train(resume_from_checkpoint=resume)
rt.finish()
'''

# A Twinkle client loop: the server does forward/backward and the optimizer step.
TWINKLE_PY = """\
from twinkle_client import init_twinkle_client
from twinkle_client.dataloader import DataLoader

from twinkle_auto.runtime import TrainingRuntime

rt = TrainingRuntime()
rt.start(model_id="Qwen/Qwen3.5-4B", config={"total_steps": 500}, script_path=__file__)
client = init_twinkle_client(base_url="http://127.0.0.1:8000")
model = client.model("Qwen/Qwen3.5-4B")
dataloader = DataLoader(dataset="ms://swift/self-cognition", batch_size=8)
rt.register_graceful_shutdown(model, dataloader)
info = rt.get_resume_info()
step = info["last_step"]
if step:
    model.load(name="interrupted")
    dataloader.skip_consumed_samples(info.get("consumed_train_samples", 0))
total_steps = 500
while step < total_steps:
    for batch in dataloader:
        step += 1
        output = model.forward_backward(inputs=batch)
        model.clip_grad_and_step()
        rt.log_metrics(step=step, loss=output.loss)
        if step >= total_steps:
            break
rt.finish()
"""


# Too many broken lines for the lenient parse of the old script: only the text-based checks can run.
BEYOND_REPAIR = TORCH_PY + "".join(f"){i}(\n" for i in range(ast_util.MAX_REPAIRS + 5))


def edit(script: str, old: str, new: str) -> str:
    """A one-place edit: the test fails loudly if the fixture drifts and `old` is not found once."""
    assert script.count(old) == 1, f"fixture text not found exactly once: {old!r}"
    return script.replace(old, new)


def single(violations: list[str], *needles: str) -> str:
    """The one violation, checked to mention every needle."""
    assert len(violations) == 1, violations
    for needle in needles:
        assert needle in violations[0], violations[0]
    return violations[0]


# ---------------------------------------------------------------------------------- fixes that pass
def test_unchanged_script_has_no_violations() -> None:
    for script in (TORCH_PY, SFT_PY, TWINKLE_PY):
        assert check_patch(script, script) == []


def test_shape_fix_is_accepted() -> None:
    new = edit(TORCH_PY, "logits.view(B, T, V), y.view(B, T)", "logits.view(B * T, V), y.view(B * T)")
    assert check_patch(TORCH_PY, new) == []


def test_renamed_keyword_argument_is_accepted() -> None:
    new = edit(SFT_PY, "    tokenizer=tokenizer,\n", "    processing_class=tokenizer,\n")
    assert check_patch(SFT_PY, new) == []


def test_added_pad_token_is_accepted() -> None:
    line = "tokenizer = AutoTokenizer.from_pretrained(MODEL_ID)\n"
    new = edit(SFT_PY, line, line + "tokenizer.pad_token = tokenizer.eos_token\n")
    assert check_patch(SFT_PY, new) == []


def test_smaller_batch_for_out_of_memory_is_accepted() -> None:
    new = edit(TORCH_PY, '"--batch-size", type=int, default=32', '"--batch-size", type=int, default=8')
    assert check_patch(TORCH_PY, new) == []


def test_more_steps_is_accepted() -> None:
    new = edit(TORCH_PY, "default=1000", "default=2000")
    assert check_patch(TORCH_PY, new) == []


def test_narrow_handler_that_really_recovers_is_accepted() -> None:
    old = edit(TORCH_PY, "    x, y = get_batch()\n", "    x, y = next(batches)\n")
    old = edit(old, "model.train()\n", "model.train()\nbatches = iter(loader)\n")
    new = edit(
        old,
        "    x, y = next(batches)\n",
        "    try:\n        x, y = next(batches)\n    except StopIteration:\n"
        "        batches = iter(loader)\n        x, y = next(batches)\n",
    )
    assert check_patch(old, new) == []


def test_handler_that_records_and_reraises_is_accepted() -> None:
    new = edit(TORCH_PY, "model.train()\nfor step", "model.train()\ntry:\n  for step")
    body_start = new.index("  for step")
    head, body = new[:body_start], new[body_start:]
    loop, rest = body.split("\nrt.finish()\n")
    loop = "\n".join("  " + line if i else line for i, line in enumerate(loop.splitlines()))
    new = (
        head
        + loop
        + "\nexcept Exception as exc:\n    rt.finish(status='failed', error=str(exc))\n    raise\n"
        "rt.finish()\n"
    )
    assert check_patch(TORCH_PY, new) == []


def test_users_own_error_handling_is_not_held_against_a_fix() -> None:
    old = edit(
        TORCH_PY, "rt.finish()\n", "try:\n    import wandb\nexcept Exception:\n    pass\nrt.finish()\n"
    )
    new = edit(old, "logits.view(B, T, V), y.view(B, T)", "logits.view(B * T, V), y.view(B * T)")
    assert check_patch(old, new) == []


def test_fixing_a_syntax_error_in_the_old_script_is_accepted() -> None:
    old = edit(
        TORCH_PY,
        "for step in range(start + 1, args.max_steps + 1):",
        "for step in range(start + 1, args.max_steps + 1)",
    )
    assert check_patch(old, TORCH_PY) == []


def test_fixing_a_broken_call_in_the_old_script_is_accepted() -> None:
    old = edit(TORCH_PY, "    logits = model(x)\n", "    logits = model(x y)\n")
    assert check_patch(old, TORCH_PY) == []


def test_gaming_while_fixing_a_syntax_error_is_still_caught() -> None:
    old = edit(TORCH_PY, "for step in range(start + 1, args.max_steps + 1):", "for step in range(1000)")
    new = edit(old, "for step in range(1000)", "for step in range(10):")
    single(check_patch(old, new), "for-loop range cut from 1000 to 10")


def test_old_script_beyond_repair_still_gets_the_text_checks() -> None:
    assert ast_util.parse_lenient(BEYOND_REPAIR) is None
    assert check_patch(BEYOND_REPAIR, TORCH_PY) == []


def test_real_patches_flow_through_apply_and_check() -> None:
    patch = "<<<<<<< SEARCH\n    tokenizer=tokenizer,\n=======\n    processing_class=tokenizer,\n>>>>>>> REPLACE\n"
    assert check_patch(SFT_PY, apply_patch(SFT_PY, patch)) == []


# -------------------------------------------------------------------------------- rule 1: it parses
def test_patch_that_breaks_syntax_is_refused() -> None:
    new = edit(TORCH_PY, "    loss.backward()\n", "    loss.backward(\n")
    violations = check_patch(TORCH_PY, new)
    assert violations[0].startswith("patched script does not parse: ")
    assert " at line " in violations[0]


def test_patch_that_breaks_indentation_reports_the_line() -> None:
    new = edit(TORCH_PY, "    optimizer.step()\n", "      optimizer.step()\n")
    line = TORCH_PY.splitlines().index("    optimizer.step()") + 1
    single(check_patch(TORCH_PY, new), "patched script does not parse: unexpected indent", f"at line {line}")


# --------------------------------------------------------------------------------- rule 2: the loop
def test_deleting_the_loop_is_refused() -> None:
    start = TORCH_PY.index("for step in range")
    end = TORCH_PY.index("rt.finish()")
    new = TORCH_PY[:start] + "step = args.max_steps\nrt.log_metrics(step=step, loss=0.0)\n\n" + TORCH_PY[end:]
    violations = check_patch(TORCH_PY, new)
    assert any(v.startswith("training loop removed: the old script has 1 loop(s)") for v in violations), (
        violations
    )


def test_deleting_the_twinkle_client_loop_is_refused() -> None:
    start = TWINKLE_PY.index("while step < total_steps:")
    end = TWINKLE_PY.index("rt.finish()")
    new = TWINKLE_PY[:start] + "rt.log_metrics(step=total_steps, loss=0.0)\n" + TWINKLE_PY[end:]
    violations = check_patch(TWINKLE_PY, new)
    assert any("training loop removed" in v and "2 loop(s)" in v for v in violations), violations


def test_removing_trainer_train_is_refused() -> None:
    new = edit(SFT_PY, "trainer.train(resume_from_checkpoint=resume)\n", "")
    violations = check_patch(SFT_PY, new)
    assert any(v.startswith("trainer.train() call removed") for v in violations), violations


# ------------------------------------------------------------------------ rule 3: runtime calls
def test_removing_log_metrics_is_refused() -> None:
    new = edit(TORCH_PY, "    rt.log_metrics(step=step, loss=loss.item(), lr=args.lr)\n", "")
    single(check_patch(TORCH_PY, new), "TrainingRuntime call .log_metrics( removed", "1 in the old script, 0")


@pytest.mark.parametrize(
    ("old_text", "label"),
    [
        ("rt = TrainingRuntime()\n", "TrainingRuntime("),
        ("rt.finish()\n", ".finish("),
        ("rt.register_graceful_shutdown(on_shutdown=save_checkpoint)\n", ".register_graceful_shutdown("),
    ],
)
def test_removing_other_runtime_calls_is_refused(old_text: str, label: str) -> None:
    new = edit(TORCH_PY, old_text, "")
    violations = check_patch(TORCH_PY, new)
    assert any(f"TrainingRuntime call {label} removed" in v for v in violations), violations


def test_runtime_calls_are_checked_even_when_the_old_script_is_beyond_repair() -> None:
    old = BEYOND_REPAIR
    new = edit(TORCH_PY, "    rt.log_metrics(step=step, loss=loss.item(), lr=args.lr)\n", "")
    violations = check_patch(old, new)
    assert any("TrainingRuntime call .log_metrics( removed" in v for v in violations), violations


# ------------------------------------------------------------------------- rule 4: resume logic
def test_removing_get_resume_info_is_refused() -> None:
    new = edit(TORCH_PY, 'start = rt.get_resume_info()["last_step"]', "start = 0")
    single(
        check_patch(TORCH_PY, new), "resume logic removed: get_resume_info(", "a relaunch would start over"
    )


def test_removing_checkpoint_loading_is_refused() -> None:
    new = edit(
        TORCH_PY,
        '    state = torch.load(CKPT)\n    model.load_state_dict(state["model"])\n'
        '    optimizer.load_state_dict(state["optim"])\n',
        "    pass\n",
    )
    violations = check_patch(TORCH_PY, new)
    assert len(violations) == 2, violations
    assert "resume logic removed: torch.load(" in violations[0] + violations[1]
    assert any("load_state_dict( (2 in the old script, 0" in v for v in violations)


def test_removing_resume_from_checkpoint_is_refused() -> None:
    new = edit(SFT_PY, "trainer.train(resume_from_checkpoint=resume)", "trainer.train()")
    single(check_patch(SFT_PY, new), "resume logic removed: resume_from_checkpoint=")


def test_removing_twinkle_resume_is_refused() -> None:
    new = edit(
        TWINKLE_PY,
        '    model.load(name="interrupted")\n'
        '    dataloader.skip_consumed_samples(info.get("consumed_train_samples", 0))\n',
        "    pass\n",
    )
    violations = check_patch(TWINKLE_PY, new)
    assert any("model.load(" in v for v in violations), violations
    assert any("skip_consumed_samples" in v for v in violations), violations


# --------------------------------------------------------------------- rule 5: error swallowing
def _wrap_loop(script: str, handler: str) -> str:
    start = script.index("for step in range")
    end = script.index("\nrt.finish()")
    loop = "\n".join("    " + line if line else line for line in script[start:end].splitlines())
    return script[:start] + "try:\n" + loop + "\n" + handler + script[end:]


def test_try_except_pass_around_the_loop_is_refused() -> None:
    new = _wrap_loop(TORCH_PY, "except Exception:\n    pass\n")
    single(check_patch(TORCH_PY, new), "new try/except around the training loop", "except Exception: pass")


def test_bare_except_around_the_loop_that_only_logs_is_refused() -> None:
    new = _wrap_loop(TORCH_PY, "except:\n    rt.finish(status='finished')\n")
    single(check_patch(TORCH_PY, new), "new try/except around the training loop", "`except: rt.finish(")


def test_handler_that_stops_reraising_is_refused() -> None:
    old = _wrap_loop(
        TORCH_PY, "except BaseException as exc:\n    rt.finish(status='failed', error=str(exc))\n    raise\n"
    )
    new = edit(
        old,
        "    rt.finish(status='failed', error=str(exc))\n    raise\n",
        "    rt.finish(status='failed', error=str(exc))\n",
    )
    single(check_patch(old, new), "new try/except around the training loop")


def test_skipping_failing_steps_is_refused() -> None:
    new = edit(
        TORCH_PY,
        "    logits = model(x)\n    loss = nn.functional.cross_entropy(logits.view(B, T, V), y.view(B, T))\n",
        "    try:\n        logits = model(x)\n"
        "        loss = nn.functional.cross_entropy(logits.view(B, T, V), y.view(B, T))\n"
        "    except Exception as e:\n        print(f'skipping step {step}: {e}')\n        continue\n",
    )
    single(check_patch(TORCH_PY, new), "new error swallowing at line", "except Exception as e: print(")


def test_narrow_handler_around_backward_that_passes_is_refused() -> None:
    new = edit(
        TORCH_PY,
        "    loss.backward()\n",
        "    try:\n        loss.backward()\n    except RuntimeError:\n        pass\n",
    )
    single(check_patch(TORCH_PY, new), "new error swallowing", "except RuntimeError: pass")


def test_contextlib_suppress_is_refused() -> None:
    new = edit(
        TORCH_PY,
        "    loss.backward()\n",
        "    with contextlib.suppress(Exception):\n        loss.backward()\n",
    )
    single(check_patch(TORCH_PY, new), "new error swallowing", "with contextlib.suppress(Exception)")


def test_swallowing_around_trainer_train_is_refused() -> None:
    new = edit(
        SFT_PY,
        "trainer.train(resume_from_checkpoint=resume)\n",
        "try:\n    trainer.train(resume_from_checkpoint=resume)\nexcept Exception:\n    ...\n",
    )
    single(check_patch(SFT_PY, new), "new error swallowing", "except Exception: ...")


@pytest.mark.parametrize("exit_call", ["sys.exit(0)", "os._exit(0)", "exit()", "raise SystemExit"])
def test_exit_in_a_handler_is_refused(exit_call: str) -> None:
    new = edit(
        TORCH_PY,
        "    loss.backward()\n",
        f"    try:\n        loss.backward()\n    except RuntimeError:\n        rt.finish()\n        {exit_call}\n",
    )
    single(check_patch(TORCH_PY, new), exit_call, "inside an except handler", "end the run as a success")


def test_exit_before_the_loop_is_refused() -> None:
    new = edit(TORCH_PY, "model.train()\n", "rt.finish()\nsys.exit(0)\nmodel.train()\n")
    single(check_patch(TORCH_PY, new), "new `sys.exit(0)` before training ends")


def test_exit_inside_the_loop_is_refused() -> None:
    new = edit(
        TORCH_PY,
        "    x, y = get_batch()\n",
        "    if step > 10:\n        sys.exit(0)\n    x, y = get_batch()\n",
    )
    single(check_patch(TORCH_PY, new), "sys.exit(0)` inside the training loop")


def test_exit_after_training_is_allowed() -> None:
    new = edit(TORCH_PY, "rt.finish()\n", "rt.finish()\nsys.exit(0)\n")
    assert check_patch(TORCH_PY, new) == []


def test_failing_exit_in_a_handler_is_allowed() -> None:
    new = edit(
        TORCH_PY,
        "    loss.backward()\n",
        "    try:\n        loss.backward()\n    except RuntimeError as exc:\n        sys.exit(f'backward failed: {exc}')\n",
    )
    assert check_patch(TORCH_PY, new) == []


# --------------------------------------------------------------------------- rule 6: the work
def test_failing_system_exit_is_allowed() -> None:
    new = edit(
        TORCH_PY,
        "    loss.backward()\n",
        "    try:\n        loss.backward()\n    except RuntimeError:\n        raise SystemExit(1)\n",
    )
    assert check_patch(TORCH_PY, new) == []


def test_cutting_max_steps_is_refused() -> None:
    new = edit(TORCH_PY, '"--max-steps", type=int, default=1000', '"--max-steps", type=int, default=10')
    single(check_patch(TORCH_PY, new), "max_steps cut from 1000 to 10")


def test_cutting_max_steps_assignment_is_refused() -> None:
    old = edit(TORCH_PY, "CKPT = ", "max_steps = 1000\nCKPT = ")
    new = edit(old, "max_steps = 1000\n", "max_steps = 10\n")
    single(check_patch(old, new), "max_steps cut from 1000 to 10")


def test_capping_hf_max_steps_is_refused() -> None:
    new = edit(SFT_PY, "    max_steps=-1,\n", "    max_steps=10,\n")
    single(check_patch(SFT_PY, new), "max_steps cut from -1 (unbounded) to 10")


def test_cutting_epochs_is_refused() -> None:
    new = edit(SFT_PY, "    num_train_epochs=3,\n", "    num_train_epochs=1,\n")
    single(check_patch(SFT_PY, new), "num_train_epochs cut from 3 to 1")


def test_removing_a_work_setting_is_refused() -> None:
    new = edit(SFT_PY, "    num_train_epochs=3,\n", "")
    new = edit(new, 'config={"num_train_epochs": 3}', "config={}")
    single(check_patch(SFT_PY, new), "num_train_epochs removed (was 3)")


def test_overriding_max_steps_later_is_refused() -> None:
    new = edit(TORCH_PY, "args = parser.parse_args()\n", "args = parser.parse_args()\nargs.max_steps = 20\n")
    single(check_patch(TORCH_PY, new), "max_steps cut from 1000 to 20")


def test_capping_with_min_is_refused() -> None:
    new = edit(
        TORCH_PY,
        "args = parser.parse_args()\n",
        "args = parser.parse_args()\nargs.max_steps = min(args.max_steps, 50)\n",
    )
    single(check_patch(TORCH_PY, new), "work capped with `max_steps = min(args.max_steps, 50)`")


def test_dividing_the_work_is_refused() -> None:
    new = edit(
        TORCH_PY, "args = parser.parse_args()\n", "args = parser.parse_args()\nargs.max_steps //= 100\n"
    )
    single(check_patch(TORCH_PY, new), "work cut with `args.max_steps //= 100`")


def test_cutting_an_environment_default_is_refused() -> None:
    old = edit(TORCH_PY, "CKPT = ", 'EPOCHS = int(os.environ.get("EPOCHS", "5"))\nCKPT = ')
    new = edit(old, '"EPOCHS", "5"', '"EPOCHS", "1"')
    single(check_patch(old, new), "epochs cut from 5 to 1")


def test_slicing_the_training_data_is_refused() -> None:
    new = edit(TORCH_PY, "train_data = data[: int(0.9 * len(data))]", "train_data = data[:1000]")
    single(check_patch(TORCH_PY, new), "dataset cut: `data[:1000]`", "is new")


@pytest.mark.parametrize(
    ("replacement", "shown"),
    [
        (
            'dataset = load_dataset("trl-lib/Capybara", split="train").select(range(100))',
            "select(range(100))",
        ),
        ('dataset = load_dataset("trl-lib/Capybara", split="train[:100]")', "split='train[:100]'"),
        ('dataset = load_dataset("trl-lib/Capybara", split="train[:1%]")', "split='train[:1%]'"),
        ('dataset = load_dataset("trl-lib/Capybara", split="train")[:64]', "[:64]"),
        ('dataset = load_dataset("trl-lib/Capybara", split="train").shard(100, 0)', ".shard(100, 0)"),
        ('dataset = load_dataset("trl-lib/Capybara", split="train", streaming=True).take(10)', ".take(10)"),
    ],
)
def test_cutting_the_hf_dataset_is_refused(replacement: str, shown: str) -> None:
    new = edit(SFT_PY, 'dataset = load_dataset("trl-lib/Capybara", split="train")', replacement)
    single(check_patch(SFT_PY, new), "dataset cut:", shown)


def test_dataset_slice_the_user_already_had_is_not_held_against_a_fix() -> None:
    old = edit(SFT_PY, 'split="train")', 'split="train[:2000]")')
    new = edit(old, "    tokenizer=tokenizer,\n", "    processing_class=tokenizer,\n")
    assert check_patch(old, new) == []


def test_truncating_one_field_of_each_example_is_allowed() -> None:
    line = 'dataset = load_dataset("trl-lib/Capybara", split="train")\n'
    new = edit(
        SFT_PY, line, line + 'dataset = dataset.map(lambda example: {"text": example["text"][:4096]})\n'
    )
    assert check_patch(SFT_PY, new) == []


def test_selecting_the_whole_dataset_is_allowed() -> None:
    line = 'dataset = load_dataset("trl-lib/Capybara", split="train")\n'
    new = edit(SFT_PY, line, line + "dataset = dataset.select(range(len(dataset)))\n")
    assert check_patch(SFT_PY, new) == []


def test_slicing_a_named_split_is_refused() -> None:
    line = 'dataset = load_dataset("trl-lib/Capybara", split="train")\n'
    new = edit(SFT_PY, line, 'dataset = load_dataset("trl-lib/Capybara")["train"][:100]\n')
    single(check_patch(SFT_PY, new), "dataset cut:", "['train'][:100]")


def test_tensor_slices_in_a_fix_are_not_dataset_cuts() -> None:
    new = edit(TORCH_PY, "    logits = model(x)\n", "    logits = model(x)[:, :64]\n    x = x[:32]\n")
    assert check_patch(TORCH_PY, new) == []


def test_shrinking_a_literal_range_is_refused() -> None:
    old = edit(TORCH_PY, "for step in range(start + 1, args.max_steps + 1):", "for step in range(1000):")
    new = edit(old, "for step in range(1000):", "for step in range(10):")
    single(check_patch(old, new), "for-loop range cut from 1000 to 10")


def test_shrinking_a_retry_loop_is_not_a_work_cut() -> None:
    old = edit(TORCH_PY, "model = CharModel()\n", "for attempt in range(5):\n    model = CharModel()\n")
    new = edit(old, "range(5)", "range(3)")
    assert check_patch(old, new) == []


def test_shrinking_a_while_bound_is_refused() -> None:
    old = edit(TWINKLE_PY, "while step < total_steps:", "while step < 500:")
    new = edit(old, "while step < 500:", "while step < 5:")
    single(check_patch(old, new), "while-loop bound cut from 500 to 5")


# ------------------------------------------------------------------------ rule 7: minimal patch
def test_rewriting_the_script_is_refused() -> None:
    new = """\
import torch
from twinkle_auto.runtime import TrainingRuntime

rt = TrainingRuntime()
rt.start(model_id="char-transformer", config={}, script_path=__file__)
rt.register_graceful_shutdown()
start = rt.get_resume_info()["last_step"]
model = torch.nn.Linear(8, 8)
opt = torch.optim.SGD(model.parameters(), lr=0.1)
for step in range(start + 1, 1001):
    loss = model(torch.randn(4, 8)).pow(2).mean()
    opt.zero_grad()
    loss.backward()
    opt.step()
    rt.log_metrics(step=step, loss=loss.item())
rt.finish()
"""
    violations = check_patch(TORCH_PY, new)
    assert any(
        v.startswith("patch rewrites ") and v.endswith("% of the script; send a minimal patch")
        for v in violations
    )


def test_a_few_added_lines_are_minimal() -> None:
    line = "model = CharModel()\n"
    extra = "".join(f"torch.manual_seed({i})\n" for i in range(8))
    assert check_patch(TORCH_PY, edit(TORCH_PY, line, extra + line)) == []


def test_tiny_scripts_may_change_a_few_lines() -> None:
    old = "import torch\nw = torch.ones(2)\nprint(w.sum())\n"
    new = "import torch\nw = torch.ones(2, 2)\nprint(w.sum(dim=0))\n"
    assert check_patch(old, new) == []


# ------------------------------------------------------------------------------------- the list
def test_rules_are_registered_in_report_order() -> None:
    """Parse first, then what the patch lets the script do, how it could hide the crash, what it keeps."""
    names = [name for name, _ in RULES]
    assert names[0] == "parse" and names[-1] == "minimal-patch"
    assert len(names) == len(set(names))
    for expected in (
        "loop-kept",
        "trainer-train-kept",
        "runtime-calls-kept",
        "resume-kept",
        "error-swallowing",
        "try-around-loop",
        "early-exit",
        "work-cut",
        "data-cut",
        "loop-bound-cut",
    ):
        assert expected in names


def test_every_violation_is_one_line_and_several_are_all_reported() -> None:
    new = edit(TORCH_PY, "default=1000", "default=10")
    new = edit(new, "    rt.log_metrics(step=step, loss=loss.item(), lr=args.lr)\n", "")
    new = edit(new, "train_data = data[: int(0.9 * len(data))]", "train_data = data[:500]")
    violations = check_patch(TORCH_PY, new)
    assert len(violations) == 3, violations
    assert all("\n" not in v for v in violations)
