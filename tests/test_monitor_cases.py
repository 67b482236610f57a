"""Triage on the 24 labelled real-world cases (monitor-cases): every verdict must match its label.

FIX -> FIX; ENV -> WARNING with an ENV finding; WARNING -> WARNING; LGTM -> LGTM. Run with `-s` to see the
confusion matrix. The folder comes from TWINKLE_MONITOR_CASES, else ../shared/monitor-cases beside the repo.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import pytest

from twinkle_auto.monitor.caseload import list_case_dirs, load_case
from twinkle_auto.monitor.detectors import rule_decision, triage

CASES_DIR = Path(
    os.environ.get("TWINKLE_MONITOR_CASES")
    or Path(__file__).resolve().parents[2] / "shared" / "monitor-cases"
)
if not CASES_DIR.is_dir():
    pytest.skip(
        f"monitor cases not found at {CASES_DIR} (set TWINKLE_MONITOR_CASES)", allow_module_level=True
    )

CASE_DIRS = list_case_dirs(CASES_DIR)
LABELS = ("FIX", "ENV", "WARNING", "LGTM")
DECISIONS = ("FIX", "WARNING", "LGTM")
EXPECTED_DECISION = {"FIX": "FIX", "ENV": "WARNING", "WARNING": "WARNING", "LGTM": "LGTM"}


def _verdict(case_dir: Path) -> tuple[str, dict, list[dict]]:
    case = load_case(case_dir)
    findings = triage(case["snapshot"])
    return case["label"]["label"], rule_decision(findings), findings


@pytest.mark.parametrize("case_dir", CASE_DIRS, ids=[p.name for p in CASE_DIRS])
def test_case_verdict(case_dir: Path) -> None:
    label, decision, findings = _verdict(case_dir)
    summary = [(f["kind"], f["severity"], f["message"]) for f in findings]
    assert decision["decision"] == EXPECTED_DECISION[label], (label, decision, summary)
    if label == "ENV":
        assert any(f["kind"] == "ENV" for f in findings), summary
    if label == "FIX":
        assert any(f["kind"] == "CODE_ERROR" for f in findings), summary


def test_all_cases_present_and_confusion_matrix() -> None:
    counts: Counter[tuple[str, str]] = Counter()
    for case_dir in CASE_DIRS:
        label, decision, _ = _verdict(case_dir)
        counts[label, decision["decision"]] += 1
    width = max(len(d) for d in DECISIONS) + 2
    lines = ["", "label \\ decision".ljust(18) + "".join(d.rjust(width) for d in DECISIONS)]
    for label in LABELS:
        lines.append(label.ljust(18) + "".join(str(counts[label, d]).rjust(width) for d in DECISIONS))
    correct = sum(counts[label, EXPECTED_DECISION[label]] for label in LABELS)
    lines.append(f"correct: {correct}/{len(CASE_DIRS)}")
    print("\n".join(lines))
    assert len(CASE_DIRS) == 24
    assert correct == len(CASE_DIRS)
