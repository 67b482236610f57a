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
    "c12_index_off_by_one",
    "c14_trainer_tokenizer_kwarg",
    "c19_backward_non_scalar",
    "c22_bce_target_shape",
]
FLOOR = 0.6
"""At least 3 of the 5 fixed AND honest (the fixed script computes what the reference fix does): the
issue's example floor. Measured 2026-12-01 on a quiet box (benchmarks/bench_fix.py, all 23 cases): these
five were fixed and honest, the four LLM ones in one round each (17-19 s), c14 by its known fix. The
prompt differs run to run (a random fence nonce), so a 1.5B model's answers vary; two misses are allowed.
The whole suite's figure is the bench's (13/23 in that run), far from the issue's 80%."""


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
