"""The patch corpus (tests/patch_corpus): every unsafe and gaming patch refused, every honest fix accepted.

Each case is a real edit of a real training script (copies of examples/ and of public scripts from
the monitor cases). The summary test prints the tallies the issue asks for: unsafe refused n/n, gaming
refused n/n, honest accepted n/n.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest
import tomllib

from twinkle_auto.monitor.guards import FAMILIES, PatchReview, check_patch, review_patch

CORPUS = Path(__file__).parent / "patch_corpus"


@dataclass(frozen=True)
class Case:
    name: str
    expect: str
    rule: str | None
    old: str
    new: str
    failing: tuple[int, ...]


def _apply(text: str, edits: list[dict], where: str) -> str:
    for edit in edits:
        count = text.count(edit["find"])
        if count != 1:
            raise ValueError(f"{where}: find text occurs {count} times, not once: {edit['find'][:60]!r}")
        text = text.replace(edit["find"], edit["replace"])
    return text


def _line_numbers(source: str, entries: list[str | dict], where: str) -> tuple[int, ...]:
    """Line numbers of the failing lines, given by their text (unique) or {text, nth} (1-based)."""
    lines = [line.strip() for line in source.splitlines()]
    numbers = []
    for entry in entries:
        text, nth = (entry, None) if isinstance(entry, str) else (entry["text"], int(entry["nth"]))
        found = [i + 1 for i, line in enumerate(lines) if line == text.strip()]
        if nth is None and len(found) != 1:
            raise ValueError(f"{where}: failing line found {len(found)} times, not once: {text!r}")
        if nth is not None and not 1 <= nth <= len(found):
            raise ValueError(f"{where}: failing line {text!r} has no occurrence {nth}")
        numbers.append(found[(nth or 1) - 1])
    return tuple(numbers)


def load_corpus() -> list[Case]:
    """Every case of cases.toml, with its original and patched script built from the base script."""
    data = tomllib.loads((CORPUS / "cases.toml").read_text(encoding="utf-8"))
    cases = []
    for raw in data["case"]:
        name = raw["name"]
        if raw["expect"] not in ("ok", *FAMILIES):
            raise ValueError(f"{name}: expect must be ok or one of {FAMILIES}")
        base = (CORPUS / "scripts" / raw["script"]).read_text(encoding="utf-8")
        old = _apply(base, raw.get("bug", []), f"{name} (bug)")
        new = _apply(old, raw["edit"], f"{name} (edit)")
        failing = _line_numbers(old, raw.get("failing", []), name)
        cases.append(Case(name, raw["expect"], raw.get("rule"), old, new, failing))
    return cases


CASES = load_corpus()
_REVIEWS: dict[str, PatchReview] = {}


def review(case: Case) -> PatchReview:
    """The guards' review of a case, computed once per session (the tally reuses the case tests')."""
    if case.name not in _REVIEWS:
        _REVIEWS[case.name] = review_patch(case.old, case.new, failing_lines=case.failing)
    return _REVIEWS[case.name]


def judged_right(case: Case, review: PatchReview) -> bool:
    if case.expect == "ok":
        return review.ok
    hits = review.family(case.expect)
    return bool(hits) and (case.rule is None or any(f.rule == case.rule for f in hits))


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_corpus_case(case: Case) -> None:
    result = review(case)
    assert judged_right(case, result), (
        f"{case.name}: expected {case.expect}/{case.rule}, got {result.findings}"
    )
    assert all("\n" not in message for message in result.messages())
    for finding in result.findings:
        assert finding.family in FAMILIES and finding.rule and finding.message


def tally(cases: list[Case]) -> dict[str, tuple[int, int]]:
    """(judged right, total) per kind: unsafe refused, gaming refused, honesty refused, honest accepted."""
    right: Counter[str] = Counter()
    total: Counter[str] = Counter()
    for case in cases:
        kind = "honest" if case.expect == "ok" else case.expect
        total[kind] += 1
        right[kind] += judged_right(case, review(case))
    return {kind: (right[kind], total[kind]) for kind in total}


def test_corpus_tally_is_complete() -> None:
    figures = tally(CASES)
    verbs = {"unsafe": "refused", "gaming": "refused", "honesty": "refused", "structure": "refused"}
    print(
        "; ".join(f"{kind} {verbs.get(kind, 'accepted')} {n}/{m}" for kind, (n, m) in sorted(figures.items()))
    )
    assert figures["unsafe"][1] >= 20 and figures["gaming"][1] >= 20 and figures["honest"][1] >= 12
    assert sum(m for _, m in figures.values()) >= 40
    assert all(n == m for n, m in figures.values()), figures


def test_check_patch_refuses_what_review_patch_calls_unsafe() -> None:
    """check_patch (what the monitor graph calls today, without failing lines) refuses unsafe patches."""
    for case in [case for case in CASES if case.expect == "unsafe"][::6]:
        assert check_patch(case.old, case.new), case.name


def _run(script: str, folder: Path, run_id: str, crash_at: int) -> subprocess.CompletedProcess[str]:
    """Run a corpus script as a real training process (tiny.py needs no torch: a second or so)."""
    path = folder / f"{run_id}.py"
    path.write_text(script, encoding="utf-8")
    env = {
        **os.environ,
        "TWINKLE_RUN_ID": run_id,
        "TOTAL_STEPS": "30",
        "STEP_SLEEP": "0",
        "CRASH_AT_STEP": str(crash_at),
        "CKPT_EVERY": "1000",
    }
    return subprocess.run(
        [sys.executable, str(path)], env=env, cwd=folder, capture_output=True, text=True, timeout=120
    )


REAL_RUNS = {
    "ok-missing-key-default": ("fixed", 5),
    "ok-off-by-one-index": ("fixed", 0),
    "gaming-except-keyerror-continue": ("hidden", 5),
    "honesty-failing-line-deleted": ("hidden", 5),
}
"""Cases on tiny.py run for real: the honest fixes really fix the crash, and the refused patches really
would have made it vanish (exit 0) — the guards refuse them for how, not for whether, they end the crash."""


@pytest.mark.parametrize("name", sorted(REAL_RUNS))
def test_corpus_patches_on_tiny_do_what_they_claim(name: str, tmp_path: Path) -> None:
    case = next(case for case in CASES if case.name == name)
    outcome, crash_at = REAL_RUNS[name]
    crashed = _run(case.old, tmp_path, "before", crash_at)
    assert crashed.returncode != 0, crashed.stdout[-500:]
    assert any(word in crashed.stderr for word in ("KeyError", "IndexError")), crashed.stderr[-500:]
    patched = _run(case.new, tmp_path, "after", crash_at)
    assert patched.returncode == 0, patched.stderr[-800:]
    assert review(case).ok is (outcome == "fixed")


FIXBENCH = Path(__file__).parents[1] / "benchmarks" / "fixbench"


def test_the_fix_benchmark_reference_fixes_pass_the_guards() -> None:
    """benchmarks/fixbench holds honest reference fixes of real crash patterns, written separately from
    this corpus: every one must pass, with the edited lines given as the failing lines."""
    entries = json.loads((FIXBENCH / "cases.json").read_text(encoding="utf-8"))
    assert len(entries) >= 20
    refused = {}
    for entry in entries:
        script = (FIXBENCH / f"{entry['name']}.py").read_text(encoding="utf-8")
        fixed = _apply(
            script, [{"find": c["old"], "replace": c["new"]} for c in entry["reference_fix"]], entry["name"]
        )
        failing = [script[: script.index(c["old"])].count("\n") + 1 for c in entry["reference_fix"]]
        result = review_patch(script, fixed, failing_lines=failing)
        if not result.ok:
            refused[entry["name"]] = result.messages()
    assert refused == {}
