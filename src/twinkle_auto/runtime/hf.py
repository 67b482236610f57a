"""`TwinkleCallback`: one line makes a Hugging Face `Trainer` (or any TRL trainer) report to twinkle-auto.

Usage, in an existing script::

    from twinkle_auto.runtime.hf import TwinkleCallback, last_checkpoint

    trainer = Trainer(model=model, args=args, train_dataset=ds, callbacks=[TwinkleCallback()])
    # or: trainer.add_callback(TwinkleCallback())
    trainer.train(resume_from_checkpoint=last_checkpoint(args.output_dir))   # resume after a stop

What it does through `TrainingRuntime`: `on_train_begin` starts the run (model id from the model's config,
a compact JSON-safe subset of the `TrainingArguments`, `total_steps` = the Trainer's `max_steps`, the
script copied to the run folder); every `on_log` becomes one metrics.jsonl line at `state.global_step`
with the logs' numbers under their own names (HF's `loss`, `grad_norm`, `learning_rate` (also as `lr`),
`epoch`, `eval_*`; TRL's `reward`, `kl`, ...); `on_train_end` finishes the run.

A stop (SIGTERM from twinkle-auto) is turned into the Trainer's own clean ending: at the next step end
the callback sets `control.should_save` and `control.should_training_stop`, so the Trainer writes a
real `checkpoint-N` (weights, optimizer, scheduler, RNG, trainer state) with its own machinery. Once that
checkpoint is on disk, the runtime's shutdown runs: the checkpoint path goes into meta.json, the run
becomes `stopped` and the process exits with status 0. `trainer.train(resume_from_checkpoint=...)` then
continues from it and step numbers go on.

Why this does not subclass `transformers.TrainerCallback`: this package must import only the standard
library, so that `import twinkle_auto.runtime` costs nothing and works where transformers is absent. The
Trainer's `CallbackHandler` only calls the `on_*` methods by name, so any object that has them is a
callback; methods for events that later transformers versions add are answered as no-ops.

In a multi-process run (torchrun, accelerate) only the world's process zero reports (the runtime on
the other ranks accepts every call and writes nothing). A stop reaches every rank, but the signals do
not land at the same instant, so at each step end the ranks agree on "has any of us been asked to
stop?" (one all-reduce of a flag, through torch.distributed when it is initialised): all of them then
save and leave at the same step, and none is left waiting in a collective for a rank that left. The
stop waits for the end of the current optimizer step plus the checkpoint write: keep that below
twinkle-auto's stop grace period (15 s by default) or the process is killed without a checkpoint.
"""

from __future__ import annotations

import enum
import math
import os
import re
import sys
import threading
from pathlib import Path
from typing import Any

from twinkle_auto.runtime.training import TrainingRuntime

__all__ = ["TwinkleCallback", "last_checkpoint", "training_config"]

CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")
"""The Trainer's checkpoint folders: `{output_dir}/checkpoint-{global_step}`."""

TRAINER_STATE_FILE = "trainer_state.json"
"""Written by the Trainer near the end of a checkpoint save; its presence means the save got that far."""

SUMMARY_KEYS = frozenset(
    {"train_runtime", "train_samples_per_second", "train_steps_per_second", "total_flos", "train_loss"}
)
"""Keys of the Trainer's once-per-`train()` summary log: a whole-run figure, not a step's metric."""

_DROPPED_KEYS = frozenset({"step", "ts"})
"""Keys `log_metrics` writes itself; a framework's own value under these names would clash."""

_ARG_FIELDS: tuple[tuple[str, str], ...] = (
    ("lr", "learning_rate"),
    ("batch_size", "per_device_train_batch_size"),
    ("gradient_accumulation_steps", "gradient_accumulation_steps"),
    ("epochs", "num_train_epochs"),
    ("max_steps", "max_steps"),
    ("seed", "seed"),
    ("output_dir", "output_dir"),
    ("weight_decay", "weight_decay"),
    ("warmup_steps", "warmup_steps"),
    ("warmup_ratio", "warmup_ratio"),
    ("max_grad_norm", "max_grad_norm"),
    ("lr_scheduler_type", "lr_scheduler_type"),
    ("optim", "optim"),
    ("logging_steps", "logging_steps"),
    ("save_strategy", "save_strategy"),
    ("save_steps", "save_steps"),
    ("eval_strategy", "eval_strategy"),
    ("eval_steps", "eval_steps"),
    ("bf16", "bf16"),
    ("fp16", "fp16"),
    ("gradient_checkpointing", "gradient_checkpointing"),
    ("world_size", "world_size"),
)
"""(config key, TrainingArguments attribute): what the monitor and a person need to judge a run, and
nothing that might hold a secret (hub tokens) or fail to serialise."""


def _json_scalar(value: Any) -> Any:
    """A JSON-safe scalar for meta.json, or None when the value is not one (enums give their value)."""
    if isinstance(value, enum.Enum):
        value = value.value
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    return None


def training_config(args: Any, state: Any = None, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The compact, JSON-safe config recorded in meta.json for a Trainer run.

    `total_steps` is the Trainer's computed `state.max_steps` (also when training is epoch-based and
    `args.max_steps` is -1), so twinkle-auto can show progress; `extra` entries win over derived ones.
    """
    config: dict[str, Any] = {}
    total = getattr(state, "max_steps", None)
    if isinstance(total, int) and not isinstance(total, bool) and total > 0:
        config["total_steps"] = total
    for key, attr in _ARG_FIELDS:
        value = _json_scalar(getattr(args, attr, None))
        if value is None or (key == "max_steps" and isinstance(value, int) and value <= 0):
            continue
        if key in ("warmup_steps", "warmup_ratio") and not value:
            continue
        if key == "epochs" and isinstance(getattr(args, "max_steps", None), int) and args.max_steps > 0:
            continue  # max_steps overrides num_train_epochs; recording both would mislead
        config[key] = value
    batch, accum = config.get("batch_size"), config.get("gradient_accumulation_steps")
    if isinstance(batch, int) and isinstance(accum, int):
        world = config.get("world_size")
        config["effective_batch_size"] = batch * accum * (world if isinstance(world, int) else 1)
    # Versions only from modules the script already imported: this module never imports them itself.
    for name in ("transformers", "trl", "peft", "torch"):
        version = getattr(sys.modules.get(name), "__version__", None)
        if isinstance(version, str):
            config[f"{name}_version"] = version
    if extra:
        config.update(extra)
    return config


def last_checkpoint(output_dir: str | os.PathLike[str]) -> str | None:
    """The newest complete `checkpoint-N` folder in `output_dir`, or None (also when it does not exist).

    Pass it to `trainer.train(resume_from_checkpoint=...)`: unlike `resume_from_checkpoint=True`, which
    raises on a fresh run, None simply starts from scratch, so the same script starts and resumes. A
    folder without trainer_state.json (a save cut short by a kill) is skipped, where the Trainer's own
    `get_last_checkpoint` would pick it and fail to load it.
    """
    folder = Path(output_dir)
    best: tuple[int, Path] | None = None
    try:
        entries = list(folder.iterdir())
    except OSError:
        return None
    for entry in entries:
        m = CHECKPOINT_RE.match(entry.name)
        if not m or not (entry / TRAINER_STATE_FILE).is_file():
            continue
        step = int(m.group(1))
        if best is None or step > best[0]:
            best = (step, entry)
    return str(best[1]) if best else None


def _model_id(model: Any) -> str:
    """The model's hub id or local path, as `from_pretrained` recorded it in the config."""
    config = getattr(model, "config", None)
    for attr in ("name_or_path", "_name_or_path"):
        value = getattr(config, attr, None)
        if isinstance(value, str) and value:
            return value
    return type(model).__name__ if model is not None else ""


def _script_path() -> str | None:
    """The running script, when there is one to copy (not `python -c`, a notebook or a console entry).

    Read from `__main__.__file__` rather than `sys.argv[0]`: in a notebook argv[0] is
    ipykernel_launcher.py, which must not become the run's train.py.
    """
    path = getattr(sys.modules.get("__main__"), "__file__", None)
    return path if isinstance(path, str) and path.endswith(".py") and os.path.isfile(path) else None


def _any_rank(flag: bool) -> bool:
    """True on every rank when `flag` is True on any rank of an initialised torch.distributed group.

    torch is taken from sys.modules, never imported here: a job with ranks has it loaded already.
    """
    dist = sys.modules.get("torch.distributed")
    torch = sys.modules.get("torch")
    if dist is None or torch is None:
        return flag
    try:
        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() < 2:
            return flag
        device = "cpu"
        if str(dist.get_backend()) == "nccl":
            device = f"cuda:{torch.cuda.current_device()}"
        value = torch.tensor([1 if flag else 0], dtype=torch.int32, device=device)
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
        return bool(value.item())
    except Exception:  # a group that cannot reduce cannot stop together either: fall back to this rank
        return flag


def _numeric_logs(logs: dict[str, Any]) -> dict[str, Any]:
    """The numbers in a Trainer log, under their own names; strings, lists and the like are left out."""
    out: dict[str, Any] = {}
    for key, value in logs.items():
        if not isinstance(key, str) or key in _DROPPED_KEYS:
            continue
        if isinstance(value, (str, bytes)) or not hasattr(type(value), "__float__"):
            continue
        out[key] = value
    if "learning_rate" in out and "lr" not in out:
        out["lr"] = out["learning_rate"]  # twinkle-auto's detectors and the other examples say `lr`
    return out


class TwinkleCallback:
    """A Trainer callback that reports metrics, progress and graceful stops to twinkle-auto.

    `run_id` and `base_dir` default to TWINKLE_RUN_ID and TWINKLE_HOME (set by twinkle-auto's launcher);
    a missing run id fails here, at the line that added the callback, not deep inside `train()`.
    `model_id` and `config` override what is read from the model and the TrainingArguments.
    `graceful_shutdown=False` leaves SIGTERM alone (the process then dies on a stop, without a
    checkpoint). A `runtime` may be passed to share one TrainingRuntime with the rest of the script.
    """

    def __init__(
        self,
        run_id: str | None = None,
        *,
        base_dir: str | os.PathLike[str] | None = None,
        model_id: str | None = None,
        config: dict[str, Any] | None = None,
        graceful_shutdown: bool = True,
        runtime: TrainingRuntime | None = None,
    ) -> None:
        self.runtime = runtime if runtime is not None else TrainingRuntime(run_id, base_dir)
        self.model_id = model_id
        self.extra_config = dict(config or {})
        self.graceful_shutdown = graceful_shutdown
        self.checkpoint: str | None = None
        """The last checkpoint folder the Trainer saved in this process."""
        self._active = False
        self._stopping = False
        self._stop_agreed = False
        """Set at the step end where any rank had been asked to stop: every rank stops there."""
        self._handler_installed = False

    @property
    def stop_requested(self) -> bool:
        """True from the moment SIGTERM arrived; the Trainer stops at the next step end."""
        return self.runtime.stop_requested

    # ------------------------------------------------------------------------------------ the events used
    def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        """Start (or rejoin, on a relaunch) the run folder and take over SIGTERM."""
        rt = self.runtime  # on ranks other than 0 the runtime accepts every call and writes nothing
        before = rt.get_resume_info()["last_step"]
        config = training_config(args, state, self.extra_config)
        rt.start(model_id=self.model_id or _model_id(model), config=config, script_path=_script_path())
        self._active = True
        step = int(getattr(state, "global_step", 0) or 0)
        if step:
            rt.log(f"Resumed from step {step}")
        if before > step:
            rt.log(
                f"metrics.jsonl already reaches step {before}: steps {step + 1}..{before} will be trained again"
            )
        if self.graceful_shutdown:
            self._install_sigterm()

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
        """After a stop request, have the Trainer log, save a checkpoint and leave the loop, in that order.

        The last step is always logged too, so that the run ends with `last_step == total_steps` and
        its final loss on record, whatever `logging_steps` is.
        """
        if not self._active:
            return None
        max_steps = getattr(state, "max_steps", 0)
        if isinstance(max_steps, int) and 0 < max_steps <= state.global_step:
            control.should_log = True
        if self._stopping:
            return control
        self._stop_agreed = self._stop_agreed or _any_rank(self.runtime.stop_requested)
        if not self._stop_agreed:
            return control
        control.should_log = True  # the checkpoint's step is the last step in metrics.jsonl
        control.should_save = True
        control.should_training_stop = True
        return control

    def on_log(
        self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kwargs: Any
    ) -> None:
        """One metrics.jsonl line per Trainer log; the end-of-training summary goes to output.log."""
        if not self._active or not logs:
            return
        if SUMMARY_KEYS & logs.keys():
            summary = ", ".join(
                f"{k}={v:.6g}" if isinstance(v, float) else f"{k}={v}" for k, v in logs.items()
            )
            self.runtime.log(f"Train summary: {summary}")
            return
        metrics = _numeric_logs(logs)
        if metrics:
            self.runtime.log_metrics(step=int(state.global_step), **metrics)

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        """Note the checkpoint; when a stop is pending, this was its checkpoint, so complete the stop."""
        # Absolute: meta.json is read by twinkle-auto, which does not share the script's working directory.
        folder = os.path.abspath(os.path.join(str(args.output_dir), f"checkpoint-{int(state.global_step)}"))
        if os.path.isdir(folder):
            self.checkpoint = folder
        if self._active and (self.runtime.stop_requested or self._stop_agreed):
            self._complete_stop()

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        """Mark the run finished, or stopped if a stop arrived after the last step end."""
        if not self._active:
            return
        if self.runtime.stop_requested or self._stop_agreed:
            self._complete_stop()
        self._active = False
        self.runtime.finish()

    # ------------------------------------------------------------------------------------ graceful stop
    def _install_sigterm(self) -> None:
        """SIGTERM only raises the runtime's flag; the stop completes in `on_save`, with the checkpoint.

        The Trainer writes its checkpoint after the step's logs, so saving from the signal handler or at
        the next `log_metrics` would record a checkpoint that does not exist yet.
        """
        if self._handler_installed:
            return
        if threading.current_thread() is not threading.main_thread():
            self.runtime.log("train() runs outside the main thread: a stop will not save a checkpoint")
            return
        self.runtime.register_graceful_shutdown(defer=True)
        self._handler_installed = True

    def _complete_stop(self) -> None:
        """The runtime records the checkpoint the Trainer wrote, marks the run `stopped` and exits 0."""
        if self._stopping:
            return
        self._stopping = True
        self._active = False
        self.runtime.complete_shutdown(checkpoint=self.checkpoint)

    # ------------------------------------------------------------------------- events this callback ignores
    def on_init_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        return None

    def on_epoch_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        return None

    def on_epoch_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        return None

    def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        return None

    def on_pre_optimizer_step(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        return None

    def on_optimizer_step(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        return None

    def on_substep_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        return None

    def on_evaluate(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        return None  # evaluation metrics also arrive through on_log, as eval_*

    def on_predict(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        return None

    def on_prediction_step(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        return None

    def on_push_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        return None

    def __getattr__(self, name: str) -> Any:
        # Events added by later transformers versions: the handler calls every callback for each event.
        if name.startswith("on_"):
            return _ignore_event
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")


def _ignore_event(*args: Any, **kwargs: Any) -> None:
    return None
