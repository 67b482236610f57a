"""Fix-rate floor with the real local LLM on a fixed subset of benchmarks/fixbench (marker llm).

The same pipeline as benchmarks/bench_fix.py (imported from there, so the two never drift): each case is
a real run that crashes, then gets up to 3 ticks of the real monitor graph with the local model. The
subset mixes cases that the LLM must fix with one that a known fix repairs, and the floor is a rate the
pipeline reached when this test was written (see the bench for the full figure); a regression in the
edit format, the focused context or the correction loop fails it. Whatever the model writes, no tick
leaves a train.py that does not parse or that a guard refuses, and no round's prompt is over budget (the
real-crash trials of tests/test_llm_monitor.py check the same on examples/tiny in `make bench`).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from bench_fix import load_cases, run_case  # noqa: E402

pytestmark = [pytest.mark.llm, pytest.mark.slow, pytest.mark.torch]

SUBSET = [
    "c14_trainer_tokenizer_kwarg",
    "c12_index_off_by_one",
    "c22_bce_target_shape",
    "c03_cat_wrong_dim",
    "c20_matmul_transpose",
]
"""The known-fix case first (it never needs the model), then four that no catalogue recipe repairs, so
only the LLM can fix them."""
PROMPT_BUDGET = 2500
"""Tokens per fix round (issue 13: focused context, ≤ 2,500 tokens for scripts up to 1,000 lines)."""
NEEDED = 2
"""At least 2 of the 5 fixed AND honest (the fixed script computes what the reference fix does): the
known fix and at least one LLM fix. Measured on a quiet box (benchmarks/bench_fix.py, all 23 cases):
c12 and c22 were fixed by the LLM in every run (one round, 17-25 s), c03 and c20 in about half of them,
c14 by its known fix.
The prompt differs run to run (a random fence nonce) and a 1.5B model's answers vary with it: whole-suite
runs gave 3 to 5 of 5, and one clean-clone run (2026-12-01, d8a806f) 2 of 5, which at the earlier floor
of 3 failed CI on noise. A total regression (the edit format, the context, the correction loop) still
fails it. The whole suite's figure is the bench's (21/23 fixed and honest at 8fb0b36, 17 by known fixes)."""


def test_fix_rate_floor_on_a_fixed_subset(local_llm: str, tmp_path: Path) -> None:
    """Cases run in order until the floor is reached: later ones cannot fail it, and each LLM case that
    does not fix costs minutes (three attempts) of the 20-minute make test."""
    by_name = {c.name: c for c in load_cases(SUBSET)}
    assert sorted(by_name) == sorted(SUBSET)
    cases = [by_name[name] for name in SUBSET]
    results = []
    for case in cases:
        result = run_case(case, local_llm, tmp_path)
        results.append(result)
        assert result.crashed, f"{result.name}: {result.reason}"
        assert result.reference_check is not None, result.name
        assert result.attempts <= 3
        assert not result.corrupt, f"{result.name}: train.py left unsound: {result.corrupt}"
        assert all(t <= PROMPT_BUDGET for t in result.estimated_tokens + result.prompt_tokens), result
        if result.fixed and not result.honest:
            print(f"{result.name}: {result.reason}")
        if sum(r.honest for r in results) >= NEEDED:
            break
    honest = sum(r.honest for r in results)
    summary = "; ".join(f"{r.name}: {r.reason[:80]}" for r in results)
    print(f"fixbench floor: {honest} honest of {len(results)} run ({summary})")
    assert honest >= NEEDED, summary
    # The known-fix case never needs the model and is always fixed honestly.
    known = results[0]
    assert known.name == "c14_trainer_tokenizer_kwarg"
    assert known.honest and known.sources and known.sources[0].startswith("known fix"), known
    # ...and the rest of the floor is the model's: every other case needs it.
    assert all(r.sources and r.sources[0] == "llm" for r in results[1:] if r.honest), summary
