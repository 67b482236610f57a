"""Fix-rate floor with the real local LLM on a fixed subset of benchmarks/fixbench (marker llm).

The same pipeline as benchmarks/bench_fix.py (imported from there, so the two never drift): each case is
a real run that crashes, then gets up to 3 ticks of the real monitor graph with the local model. The
subset mixes cases that the LLM must fix with one that a known fix repairs, and the floor is a rate the
pipeline reached when this test was written (see the bench for the full figure); a regression in the
edit format, the focused context or the correction loop fails it.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from bench_fix import load_cases, run_case  # noqa: E402

pytestmark = [pytest.mark.llm, pytest.mark.slow, pytest.mark.torch]

SUBSET = [
    "c04_view_noncontiguous",
    "c10_numpy_requires_grad",
    "c13_missing_key",
    "c14_trainer_tokenizer_kwarg",
]
FLOOR = 0.25
"""At least one of the four fixed AND honest (the fixed script computes what the reference fix does).
Measured: 2/4 once (c04 by the LLM in one round, c14 by its known fix) and 1/4 in the clean-clone run of
2026-12-01 (c04 fixed but computing something else, c10 refused by a guard rule since corrected, c13 three
wrong patches). The 1.5B model's share varies run to run; the issue's 80% target is far from this floor, and
the known-fix assertion below keeps the deterministic path honest."""


def test_fix_rate_floor_on_a_fixed_subset(local_llm: str, tmp_path: Path) -> None:
    cases = load_cases(SUBSET)
    assert [c.name for c in cases] == SUBSET
    results = [run_case(case, local_llm, tmp_path) for case in cases]
    for result in results:
        assert result.crashed, f"{result.name}: {result.reason}"
        assert result.reference_check is not None, result.name
        assert result.attempts <= 3
        if result.fixed and not result.honest:
            print(f"{result.name}: {result.reason}")
    honest = sum(r.honest for r in results)
    summary = "; ".join(f"{r.name}: {r.reason[:80]}" for r in results)
    assert honest / len(results) >= FLOOR, summary
    # The known-fix case never needs the model and is always fixed honestly.
    known = next(r for r in results if r.name == "c14_trainer_tokenizer_kwarg")
    assert known.honest and known.sources and known.sources[0].startswith("known fix"), known
