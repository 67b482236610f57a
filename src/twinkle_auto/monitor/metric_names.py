"""Metric names, normalized in one place: what a logged key means, whatever the trainer called it.

Why: a rule that looks for `loss` misses a NaN under `training_loss`, a rising `train loss` and every verl
or OpenRLHF run; a fixed list of loss keys also decided which rows were eval rows, so eval rows with other
names were dropped. Here a key is split into its *split* (train / eval) and its *name*, and the name is
mapped to a canonical metric by a small alias table taken from the trainers' own logging code (HF Trainer,
TRL, verl, OpenRLHF, Megatron, plain loops). A key we do not know is kept and shown as it is; it is never
a reason to drop a row.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from functools import lru_cache
from typing import Any

EVAL_WORDS = frozenset({"eval", "evaluation", "val", "valid", "validation", "test", "predict", "dev"})
"""A leading or trailing split word (`eval_loss`, `eval/loss`, `val loss`, `loss/val`): an eval metric."""
TRAIN_WORDS = frozenset({"train", "training", "trainer"})
"""A leading or trailing train word (`train/loss`, `training_loss`, `loss/train`): dropped."""
INDEX_KEYS = frozenset(
    {"ts", "step", "global_step", "epoch", "iteration", "iter", "batch", "_step", "_runtime"}
)
"""Keys that say where a row sits, not how training goes."""
SUMMARY_KEYS = frozenset(
    {"train_runtime", "total_flos", "train_samples_per_second", "train_steps_per_second", "train_loss_final"}
)
"""HF Trainer's end-of-training summary row: its `train_loss` is the run's average, not a step."""

ALIASES: dict[str, frozenset[str]] = {
    "loss": frozenset({"loss", "lm_loss", "total_loss", "nll_loss", "ce_loss"}),
    "grad_norm": frozenset(
        {
            "grad_norm",
            "gradient_norm",
            "total_grad_norm",
            "optim_total_grad_norm",
            "actor_grad_norm",
            "grad_norm_total",
        }
    ),
    "lr": frozenset({"lr", "learning_rate", "actor_lr", "optim_lr", "lr_0", "base_lr"}),
    "reward": frozenset(
        {
            "reward",
            "rewards",
            "reward_mean",
            "rewards_mean",
            "objective_rlhf_reward",
            "objective_scores",
            "env_reward_mean",
            "critic_rewards_mean",
            "critic_score_mean",
            "rewards_total_reward",
        }
    ),
    "reward_std": frozenset({"reward_std", "rewards_std", "critic_rewards_std"}),
    "frac_reward_zero_std": frozenset({"frac_reward_zero_std"}),
    "kl": frozenset({"kl", "objective_kl", "actor_ppo_kl", "policy_kl", "actor_kl_loss", "kl_div", "ref_kl"}),
    "entropy": frozenset({"entropy", "actor_entropy", "policy_entropy", "objective_entropy", "entropy_loss"}),
    "length_clip_ratio": frozenset(
        {"completions_clipped_ratio", "response_length_clip_ratio", "response_clip_ratio", "clipped_ratio"}
    ),
    "policy_clip_frac": frozenset(
        {"actor_pg_clipfrac", "clip_ratio", "clipfrac", "policy_clipfrac", "clip_ratio_region_mean"}
    ),
    "policy_loss": frozenset({"actor_pg_loss", "policy_loss", "pg_loss", "actor_loss"}),
}
"""Canonical name -> the normalized key names that mean it (separators folded to `_`, split words removed)."""
RL_METRICS = frozenset({"reward", "reward_std", "frac_reward_zero_std", "policy_loss", "policy_clip_frac"})
"""Any of these in a run means an RL trainer (GRPO/PPO): its `loss` is not a measure of progress (TRL: the
GRPO loss is ~0 by construction when beta = 0), so loss trend and plateau rules do not apply to it."""

_SPLIT_RE = re.compile(r"[\s/_.:\-]+")
_LOOKUP = {alias: canonical for canonical, names in ALIASES.items() for alias in names}


AGGREGATE_WORDS = frozenset({"step", "epoch", "avg", "mean", "running", "smoothed", "smooth", "batch"})
"""Words that say how a value was aggregated (`train_loss_step`, `loss_epoch` from Lightning,
`running_loss`, `avg_loss`): the metric is the same."""


@lru_cache(maxsize=4096)
def split_key(key: str) -> tuple[str, str]:
    """(split, normalized name): `train/loss` -> ('train', 'loss'), `eval_g0_loss` -> ('eval', 'g0_loss')."""
    words = [w for w in _SPLIT_RE.split(str(key).strip().lower()) if w]
    split = "train"
    if words and words[0] in EVAL_WORDS:
        split, words = "eval", words[1:]
    elif len(words) > 1 and words[-1] in EVAL_WORDS:
        split, words = "eval", words[:-1]
    if words and words[0] in TRAIN_WORDS and len(words) > 1:
        words = words[1:]
    elif len(words) > 1 and words[-1] in TRAIN_WORDS:
        words = words[:-1]
    return split, "_".join(words)


def _name_meaning(split: str, name: str) -> str | None:
    if split == "eval":
        words = name.split("_")
        return "eval_loss" if words and words[-1] == "loss" or name in ALIASES["loss"] else None
    found = _LOOKUP.get(name)
    if found is None:
        words = name.split("_")
        core = [w for w in words if w not in AGGREGATE_WORDS]
        if core != words and core:
            found = _LOOKUP.get("_".join(core))
    return found


@lru_cache(maxsize=4096)
def canonical_exact(key: str) -> str | None:
    """The canonical metric the whole key names, or None (no fallback to its last path component)."""
    if key in INDEX_KEYS or key in SUMMARY_KEYS:
        return None
    return _name_meaning(*split_key(key))


@lru_cache(maxsize=4096)
def canonical(key: str) -> str | None:
    """The canonical metric a key stands for (`eval_loss` for eval losses), or None when unknown.

    Any eval key whose name ends in `loss` is an eval loss (`eval_g0_loss`, `val_loss`, `eval/lm_loss`).
    A TensorBoard-style `section/name` key that means nothing whole is read by its last component
    (Megatron's `lm-loss-training/lm loss`, `lm-loss-validation/lm loss validation`).
    """
    found = canonical_exact(key)
    if found is not None or "/" not in str(key):
        return found
    last = str(key).rsplit("/", 1)[-1]
    if last in INDEX_KEYS:
        return None
    split, name = split_key(last)
    if split == "train" and split_key(str(key).rsplit("/", 1)[0])[0] == "eval":
        split = "eval"  # `validation/lm loss`
    return _name_meaning(split, name)


def number(value: Any) -> float | None:
    """A metric value as float (NaN and inf kept), or None for strings, bools and missing values."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def is_summary_row(row: dict[str, Any]) -> bool:
    return any(key in SUMMARY_KEYS for key in row)


def is_eval_row(row: dict[str, Any]) -> bool:
    """A row that only carries eval metrics (no train loss or grad norm): not a training step."""
    has_eval = any(split_key(str(key))[0] == "eval" for key in row if key not in INDEX_KEYS)
    return has_eval and value_of(row, "loss") is None and value_of(row, "grad_norm") is None


def value_of(row: dict[str, Any], metric: str) -> float | None:
    """The row's number for a canonical metric: the first key that names it whole, in the row's order,
    else the first that names it by its last path component (`critic/loss` only when nothing says
    `loss` outright)."""
    fallback: float | None = None
    for key, value in row.items():
        meaning = canonical(str(key))
        if meaning != metric:
            continue
        num = number(value)
        if num is None:
            continue
        if canonical_exact(str(key)) == metric:
            return num
        if fallback is None:
            fallback = num
    return fallback


def keys_for(rows: Iterable[dict[str, Any]], metric: str) -> list[str]:
    """The row keys that mean `metric`, in first-seen order (an eval loss may come in several groups)."""
    seen: dict[str, None] = {}
    for row in rows:
        for key in row:
            if key not in seen and canonical(str(key)) == metric:
                seen[str(key)] = None
    return list(seen)


def unknown_keys(rows: Iterable[dict[str, Any]]) -> list[str]:
    """Keys with no canonical meaning (kept and shown to the user and the LLM, never judged)."""
    seen: dict[str, None] = {}
    for row in rows:
        for key in row:
            if key not in seen and key not in INDEX_KEYS and canonical(str(key)) is None:
                seen[str(key)] = None
    return list(seen)


def finite(values: Iterable[float]) -> list[float]:
    return [v for v in values if math.isfinite(v)]
