"""The real `twinkle-auto` command: JSON with stable keys, one-line errors, exit codes, the log file."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from conftest import EXAMPLES, metric_steps, run_cli, wait_for

STATUS_KEYS = {
    "run_id",
    "status",
    "effective_status",
    "process",
    "pid",
    "model_id",
    "last_step",
    "total_steps",
    "start_time",
    "end_time",
    "script_version",
    "archived_versions",
    "error",
    "last_metrics",
    "host",
    "remote",
    "launcher",
    "last_metric_age",
}


def _seed(home: Path) -> None:
    folder = home / "seeded"
    folder.mkdir()
    (folder / "meta.json").write_text(
        json.dumps(
            {
                "run_id": "seeded",
                "status": "finished",
                "model_id": "m",
                "progress": {"last_step": 3, "total_steps": 3},
            }
        )
    )
    (folder / "metrics.jsonl").write_text(
        '{"ts": 1.0, "step": 1, "loss": 1.0, "reward": 0.1}\n'
        '{"ts": 2.0, "step": 2, "loss": NaN, "reward": 0.2}\n'
        '{"ts": 3.0, "step": 3, "loss": 0.5, "reward": Infinity}\n'
    )
    (folder / "output.log").write_text("line 1\nline 2\nline 3\n")


def test_version_and_help() -> None:
    out = run_cli("--version")
    assert out.returncode == 0 and out.stdout.startswith("twinkle-auto ")
    out = run_cli("-V")
    assert out.returncode == 0
    out = run_cli("--help")
    for option in ("--run-id", "--llm-base-url", "--llm-model", "--llm-api-key", "--verbose", "--version"):
        assert option in out.stdout


def test_json_outputs_have_stable_keys_and_are_strict_json(home: Path) -> None:
    _seed(home)
    runs = json.loads(run_cli("runs", "--json").stdout, parse_constant=pytest.fail)
    assert [set(r) for r in runs["runs"]] == [STATUS_KEYS]
    status = json.loads(run_cli("status", "seeded", "--json").stdout)
    assert set(status) == STATUS_KEYS | {"problems"} and status["effective_status"] == "finished"
    metrics = json.loads(
        run_cli("metrics", "seeded", "--keys", "loss,reward", "--last", "2", "--json").stdout
    )
    assert metrics["keys"] == ["loss", "reward"]
    assert [e["step"] for e in metrics["entries"]] == [2, 3]
    assert metrics["entries"][0]["loss"] == "NaN" and metrics["entries"][1]["reward"] == "Infinity"
    logs = json.loads(run_cli("logs", "seeded", "-n", "2", "--json").stdout)
    assert logs == {"run_id": "seeded", "lines": ["line 2", "line 3"]}


def test_tables_for_people(home: Path) -> None:
    _seed(home)
    out = run_cli("runs")
    assert out.returncode == 0 and "seeded" in out.stdout and "finished" in out.stdout
    out = run_cli("metrics", "seeded", "--keys", "loss")
    assert "nan" in out.stdout and "0.5" in out.stdout
    assert run_cli("logs", "seeded", "-n", "1").stdout == "line 3\n"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["status", "../x"], "invalid run id"),
        (["status", "ghost"], "unknown run 'ghost'"),
        (["pause", "seeded"], "not running"),
        (["start", "new", "--script", "/nonexistent.py"], "not found"),
        (["metrics", "seeded", "--keys", "nope"], "none of nope"),
        (["logs", "auto"], "reserved"),
    ],
)
def test_errors_are_one_line_with_nonzero_exit(home: Path, args: list[str], message: str) -> None:
    _seed(home)
    out = run_cli(*args)
    assert out.returncode != 0
    assert out.stderr.count("\n") == 1 and out.stderr.startswith("error: ") and message in out.stderr


def test_a_script_that_does_not_parse_is_refused_before_launch(home: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("for i in range(3)\n    print(i)\n")
    out = run_cli("start", "r", "--script", str(bad))
    assert out.returncode == 1 and "does not parse" in out.stderr
    assert not (home / "r").exists()


def test_corrupt_meta_is_reported_by_status(home: Path) -> None:
    _seed(home)
    (home / "seeded" / "meta.json").write_text("{not json")
    out = run_cli("status", "seeded", "--json")
    assert out.returncode == 0
    assert json.loads(out.stdout)["effective_status"] == "corrupt"


def test_the_log_goes_to_auto_log_without_the_api_key(home: Path) -> None:
    secret = "sk-test-0123456789abcdef"
    out = run_cli("--verbose", "--llm-api-key", secret, "runs", "--json")
    assert out.returncode == 0
    log = Path("auto.log").read_text()
    assert "argv=" in log and "DEBUG" in log
    assert secret not in log and secret not in out.stdout + out.stderr


def test_env_defaults_for_options(home: Path) -> None:
    from twinkle_auto.app.cli import build_parser

    args = build_parser().parse_args([])
    assert args.llm_base_url == "http://localhost:11434/v1"
    assert args.llm_model == "qwen3.5" and args.llm_api_key == "not-needed"


@pytest.mark.slow
def test_start_status_pause_resume_stop_through_the_cli(home: Path) -> None:
    env = {"STEP_SLEEP": "0.01", "TOTAL_STEPS": "100000"}
    out = run_cli(
        "start",
        "cli-run",
        "--script",
        str(EXAMPLES / "tiny" / "train.py"),
        "--model-id",
        "lr",
        "--json",
        env=env,
    )
    assert out.returncode == 0, out.stderr
    started = json.loads(out.stdout)
    assert started["status"] == "running" and started["pid"] > 0
    wait_for(lambda: len(metric_steps(home, "cli-run")) > 5)
    assert json.loads(run_cli("status", "cli-run", "--json").stdout)["effective_status"] == "running"
    assert json.loads(run_cli("pause", "cli-run", "--json").stdout)["status"] == "paused"
    before = max(metric_steps(home, "cli-run"))
    assert json.loads(run_cli("resume", "cli-run", "--json", env=env).stdout)["launch_count"] == 2
    wait_for(lambda: max(metric_steps(home, "cli-run")) > before + 5)
    stopped = json.loads(run_cli("stop", "cli-run", "--json").stdout)
    assert stopped["status"] == "stopped" and stopped["killed"] is False and stopped["checkpoint"]
    assert not math.isnan(before)
