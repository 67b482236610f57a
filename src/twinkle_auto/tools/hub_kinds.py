"""What the model hub says an id is: a model, a dataset, or something it cannot tell.

Why the tools ask: both kinds are written owner/name, and a small chat model puts a dataset the person
named where a model goes (start_training(model="modelscope/gsm8k"), start_server(model_id=...)). Only
the hub knows which is which, so a check here answers None (cannot tell: offline, slow, no recipes)
rather than guess, and callers act only on a definite answer.
"""

from __future__ import annotations

import os
import re
import threading
import time
from typing import Any, Literal

CHECK_TIMEOUT = 3.0
"""Seconds per hub question (the chat waits for it; an unreachable hub is remembered by resolve)."""
KNOWN_FOR_S = 300.0
"""Seconds a definite answer is reused: one start_training call asks about the same ids in `amend` and
again in `mismatches`, and each question may take seconds; an entry does not change kind meanwhile."""
_HUB_ID = re.compile(r"[\w.-]+/[\w.-]+")
_known: dict[tuple[str, str, str], tuple[float, bool]] = {}
_known_lock = threading.Lock()


def is_hub_id(value: Any) -> bool:
    """Whether `value` is written as a hub id, owner/name."""
    return isinstance(value, str) and _HUB_ID.fullmatch(value.strip()) is not None


def on_hub(kind: Literal["model", "dataset"], ref: str) -> bool | None:
    """Whether the hub has `ref` as a model / dataset; None when that cannot be told (never kept)."""
    key = (os.environ.get("MODELSCOPE_ENDPOINT", ""), kind, ref)
    with _known_lock:
        until, known = _known.get(key, (0.0, False))
    if until > time.monotonic():
        return known
    answer = _ask(kind, ref)
    if answer is not None:
        with _known_lock:
            _known[key] = (time.monotonic() + KNOWN_FOR_S, answer)
    return answer


def _ask(kind: Literal["model", "dataset"], ref: str) -> bool | None:
    try:
        from twinkle_auto.recipes import resolve
    except ImportError:
        return None
    try:
        check = resolve.resolve_model if kind == "model" else resolve.resolve_dataset
        return check(ref, timeout=CHECK_TIMEOUT).source == "modelscope" or None
    except resolve.RecipeError as exc:  # "has no": the hub answered that it has no such entry
        return False if "has no" in str(exc) else None
    except Exception:  # a check is advice: an unexpected failure tells nothing
        return None


def dataset_not_model(value: Any) -> bool:
    """Whether the hub says `value` is a dataset and has no model of that id."""
    return is_hub_id(value) and on_hub("model", value) is False and on_hub("dataset", value) is True


_DATA_FILES = (".jsonl", ".json", ".parquet", ".csv", ".tsv", ".txt", ".arrow")
_PARAMETER_COUNT = re.compile(r"(?<![A-Za-z0-9.])\d+(?:\.\d+)?[Bb](?![A-Za-z0-9])")


def sized_like_a_model(value: Any) -> bool:
    """Whether the id's name gives a parameter count in billions (Qwen2.5-0.5B-Instruct, Llama-3.2-1B,
    Qwen3.5-72B): hub models are named so by convention, datasets are not (gsm8k, alpaca-gpt4-data-en;
    their sizes are rows, 220k or 1M). Evidence that needs no hub; files and paths are never models here."""
    if not isinstance(value, str) or "\\" in value or value.count("/") > 1:
        return False
    if value.lower().endswith(_DATA_FILES):
        return False
    return _PARAMETER_COUNT.search(value.strip().split("/")[-1]) is not None


def as_model(field: str, value: Any, instead: str) -> list[str]:
    """The mismatch of a dataset given in a field that takes a model (empty when it is none);
    `instead` says where the dataset goes."""
    if not dataset_not_model(value):
        return []
    return [f"{field}={value!r} is a dataset on ModelScope, not a model: {instead}"]


__all__ = ["CHECK_TIMEOUT", "as_model", "dataset_not_model", "is_hub_id", "on_hub", "sized_like_a_model"]
