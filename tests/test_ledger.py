"""The fix ledger: stable error signatures, append-only lines shared by processes, latest outcome wins."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from twinkle_auto.monitor.ledger import FixLedger, error_signature

TB = """Traceback (most recent call last):
  File "/home/a/runs/r1/train.py", line {line}, in <module>
    main()
  File "/home/a/runs/r1/train.py", line {inner}, in loss_and_grad
    err = pred - rec["targets"]
          ~~~^^^^^^^^^^^
KeyError: 'targets'
"""


def test_signature_ignores_line_numbers_and_paths_but_not_the_error() -> None:
    a = error_signature(TB.format(line=90, inner=57))
    b = error_signature(TB.format(line=93, inner=60).replace("/home/a/runs/r1", "/srv/x/other"))
    assert a == b == "KeyError: 'targets' @ err = pred - rec[\"targets\"]"
    other = error_signature(TB.format(line=90, inner=57).replace("KeyError: 'targets'", "KeyError: 'label'"))
    assert other != a
    shape = (
        'Traceback (most recent call last):\n  File "train.py", line 4, in <module>\n    y = x @ w\n'
        "RuntimeError: mat1 and mat2 shapes cannot be multiplied (400x2 and 3x1) at 0x7f00aa\n"
    )
    sig = error_signature(shape)
    assert (
        sig == "RuntimeError: mat1 and mat2 shapes cannot be multiplied (NxN and NxN) at <addr> @ y = x @ w"
    )
    assert error_signature("no error here\njust a log line\n") == ""


def test_signature_prefers_the_scripts_own_frame() -> None:
    tb = (
        "Traceback (most recent call last):\n"
        '  File "/w/train.py", line 12, in <module>\n    out = model(batch)\n'
        '  File "/usr/lib/python3/site-packages/torch/nn/modules/module.py", line 1501, in _call_impl\n'
        "    return forward_call(*args, **kwargs)\n"
        "TypeError: forward() got an unexpected keyword argument 'labels'\n"
    )
    assert error_signature(tb).endswith("@ out = model(batch)")


def test_latest_outcome_wins_and_worked_fixes_come_from_other_runs(tmp_path: Path) -> None:
    ledger = FixLedger(tmp_path / "auto")
    sig = "KeyError: 'targets' @ err = x"
    ledger.record(run_id="a", attempt=1, signature=sig, summary="s1", diff="D1", outcome="relaunched")
    ledger.record(run_id="a", attempt=1, signature=sig, summary="s1", diff="D1", outcome="worked")
    ledger.record(run_id="b", attempt=1, signature=sig, summary="s2", diff="D2", outcome="failed")
    ledger.record(run_id="c", attempt=2, signature="other", summary="s3", diff="D3", outcome="worked")
    with open(ledger.path, "a") as f:
        f.write('{"torn": \n')  # a torn line from a killed writer is skipped
    entries = ledger.entries()
    assert [(e.run_id, e.outcome) for e in entries] == [("a", "worked"), ("b", "failed"), ("c", "worked")]
    assert [e.diff for e in ledger.worked_for(sig, exclude_run="b")] == ["D1"]
    assert ledger.worked_for(sig, exclude_run="a") == []
    assert ledger.worked_for("") == []
    lines = ledger.path.read_text().splitlines()
    assert set(json.loads(lines[0])) == {"ts", "run_id", "attempt", "signature", "summary", "diff", "outcome"}


def test_two_processes_appending_never_interleave(tmp_path: Path) -> None:
    auto = tmp_path / "auto"
    code = (
        "import sys; from twinkle_auto.monitor.ledger import FixLedger\n"
        "l = FixLedger(sys.argv[1])\n"
        "for i in range(200):\n"
        "    l.record(run_id=sys.argv[2], attempt=i, signature='s', summary='x', diff='y' * 5000,"
        " outcome='failed')\n"
    )
    procs = [subprocess.Popen([sys.executable, "-c", code, str(auto), name]) for name in ("p", "q")]
    assert [p.wait(timeout=60) for p in procs] == [0, 0]
    lines = (auto / "fixes.jsonl").read_text().splitlines()
    assert len(lines) == 400 and all(json.loads(line)["diff"] == "y" * 5000 for line in lines)
    assert len(FixLedger(auto).entries()) == 400
