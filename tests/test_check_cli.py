"""`twinkle-auto check`: one tick printed, JSON keys, exit status 0 / 1 / 2, an unreachable LLM."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import psutil
from conftest import run_cli

KEYS = {"decision", "findings", "diagnosis", "fixed", "archived_as"}


def _run(home: Path, run_id: str, meta: dict, rows: list[dict], log: str = "") -> None:
    folder = home / run_id
    folder.mkdir()
    (folder / "meta.json").write_text(json.dumps({"run_id": run_id, **meta}))
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (folder / "output.log").write_text(log)
    (folder / "train.py").write_text("print('x')\n")


def test_exit_status_and_json_keys_per_decision(home: Path) -> None:
    alive = {"status": "running", "pid": os.getpid(), "pid_create_time": psutil.Process().create_time()}
    _run(home, "ok", {"status": "finished"}, [{"step": i, "loss": 3 / i} for i in range(1, 40)])
    _run(home, "nan", alive, [{"step": 1, "loss": 1.0}, {"step": 2, "loss": float("nan")}])
    tb = 'Traceback (most recent call last):\n  File "train.py", line 3, in <module>\nTypeError: bad kwarg\n'
    _run(home, "crash", {"status": "failed"}, [], tb)
    for run_id, code, decision in (("ok", 0, "LGTM"), ("nan", 1, "WARNING"), ("crash", 2, "FIX")):
        out = run_cli("check", run_id, "--no-llm", "--json")
        assert out.returncode == code, out.stderr
        result = json.loads(out.stdout)
        assert set(result) >= KEYS and result["decision"] == decision
        assert result["fixed"] is False and result["archived_as"] is None
    out = run_cli("check", "crash", "--no-llm")
    assert out.returncode == 2 and "FIX" in out.stdout and "TypeError" in out.stdout


def test_an_unreachable_llm_is_said_once_and_the_rules_decide(home: Path) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    alive = {"status": "running", "pid": os.getpid(), "pid_create_time": psutil.Process().create_time()}
    _run(home, "nan", alive, [{"step": 1, "loss": float("nan")}])
    out = run_cli("--llm-base-url", f"http://127.0.0.1:{port}/v1", "check", "nan", "--json", timeout=120)
    result = json.loads(out.stdout)
    assert out.returncode == 1
    assert result["verdict_source"].startswith("rules (LLM unreachable:")


def test_check_refuses_bad_run_ids(home: Path) -> None:
    out = run_cli("check", "../etc", "--no-llm")
    assert out.returncode == 1 and out.stderr.startswith("error: invalid run id")
