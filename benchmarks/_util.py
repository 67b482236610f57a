"""Timing helpers: ratios against a baseline measured in the same run (machines here are noisy)."""

from __future__ import annotations

import time
from collections.abc import Callable


def best_of(fn: Callable[[], object], repeats: int = 7, number: int = 1) -> float:
    """Best wall time of `repeats` runs of `number` calls, per call: the least noisy estimate."""
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(number):
            fn()
        best = min(best, (time.perf_counter() - t0) / number)
    return best


def report(name: str, value: float, target: float, unit: str = "x") -> bool:
    ok = value <= target
    print(f"{name:<62} {value:8.3f}{unit}  target <= {target:g}{unit}  {'OK' if ok else 'MISS'}")
    return ok
