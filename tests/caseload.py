"""Load a labelled monitor case (a run folder plus label.json) as a triage snapshot (test scaffolding).

Why one loader: the unit tests and the LLM benchmark must build snapshots the same way, or their numbers
would not be comparable; it lives beside the tests, not in the package, because only they need it. A
case folder holds meta.json, metrics.jsonl, output.log, train.py and label.json (see
monitor-cases/README.md); the real pid is never known, so the process state comes from the label, and a
run the label marks completed is presented as finished. Metrics are windowed as the live snapshot does
(`snapshot.window_rows`: the last METRIC_ROWS rows plus the run's first HEAD_ROWS), so a 6,000-row case is
judged on what the monitor would really see.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from twinkle_auto.monitor.snapshot import window_rows

LOG_TAIL_CHARS = 6000
"""What the live monitor reads of output.log per check (snapshot.LOG_READ)."""


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    data = json.loads(path.read_text(encoding="utf-8"))
    return data if isinstance(data, dict) else {}


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """metrics.jsonl rows in order; blank, malformed and non-object lines are skipped (NaN is accepted)."""
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows


def list_case_dirs(root: str | Path) -> list[Path]:
    """The case folders under `root` (those holding a label.json), sorted by name."""
    root = Path(root)
    return sorted(p for p in root.iterdir() if p.is_dir() and (p / "label.json").is_file())


def load_case(path: str | Path, log_chars: int = LOG_TAIL_CHARS) -> dict[str, Any]:
    """{"case_id", "snapshot", "label", "meta"} for one case folder.

    snapshot = {process_state (from the label), status ("finished" when the label says run_completed,
    else meta's status), metrics / head_metrics (windowed as live), log_tail (last `log_chars`
    characters), stall_seconds (None: no source records wall-clock times), script (train.py or None)}.
    """
    path = Path(path)
    label = _read_json(path / "label.json")
    meta = _read_json(path / "meta.json")
    log_path = path / "output.log"
    log = log_path.read_text(encoding="utf-8", errors="replace") if log_path.is_file() else ""
    status = "finished" if label.get("run_completed") else (meta.get("status") or "unknown")
    head, tail = window_rows(read_metrics(path / "metrics.jsonl"))
    script = path / "train.py"
    progress = meta.get("progress") if isinstance(meta.get("progress"), dict) else {}
    snapshot = {
        "process_state": label.get("process_state", "unknown"),
        "status": status,
        "metrics": tail,
        "head_metrics": head,
        "log_tail": log[-log_chars:] if log_chars > 0 else "",
        "stall_seconds": None,
        "script": script.read_text(encoding="utf-8", errors="replace") if script.is_file() else None,
        "last_step": progress.get("last_step"),
        "total_steps": progress.get("total_steps"),
    }
    return {"case_id": path.name, "snapshot": snapshot, "label": label, "meta": meta}
