"""Issue 11's first list, reader/validation/output items, as an unlucky user meets them: the real CLI.

Big files are sparse (truncate), so a 1 GB metrics file costs no disk and the tests stay fast.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from conftest import run_cli, wait_for

MB = 1024 * 1024

TRAIN = """
import sys, time
from twinkle_auto.runtime import TrainingRuntime
rt = TrainingRuntime()
rt.start(model_id="m", config={"total_steps": STEPS}, script_path=__file__)
for step in range(rt.get_resume_info()["last_step"] + 1, STEPS + 1):
    rt.log_metrics(step=step, loss=1.0 / step)
    time.sleep(SLEEP)
rt.finish()
"""


def make_run(home: Path, run_id: str, meta: dict | None = None, metrics: list[dict] | None = None) -> Path:
    folder = home / run_id
    folder.mkdir()
    (folder / "meta.json").write_text(
        json.dumps({"run_id": run_id, "status": "finished", "model_id": "m", **(meta or {})})
    )
    if metrics is not None:
        (folder / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in metrics))
    return folder


def append_long_line(path: Path, length: int, newline: bool = True) -> None:
    size = path.stat().st_size if path.exists() else 0
    with open(path, "ab") as f:
        f.truncate(size + length)
    if newline:
        with open(path, "ab") as f:
            f.write(b"\n")


def script(tmp_path: Path, steps: int, sleep: float) -> Path:
    path = tmp_path / "train_src.py"
    path.write_text(TRAIN.replace("STEPS", str(steps)).replace("SLEEP", str(sleep)))
    return path


def test_metrics_and_status_with_a_50mb_last_line(home: Path) -> None:
    folder = make_run(home, "long", metrics=[{"ts": 1.0, "step": i, "loss": 0.5} for i in range(10)])
    append_long_line(folder / "metrics.jsonl", 50 * MB)
    out = run_cli("metrics", "long", "--last", "5", "--json", timeout=30)
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert [e["step"] for e in data["entries"]] == [5, 6, 7, 8, 9] and "malformed" in data["problem"]
    out = run_cli("metrics", "long", "--last", "5", timeout=30)
    assert out.returncode == 0 and "malformed" in out.stdout
    status = json.loads(run_cli("status", "long", "--json", timeout=30).stdout)
    assert status["last_step"] == 9 and "malformed" in status["problems"][0]


def test_a_1gb_metrics_file_without_newline_answers_malformed(home: Path) -> None:
    folder = make_run(home, "giant", meta={"status": "running", "pid": 1})
    with open(folder / "metrics.jsonl", "wb") as f:
        f.truncate(1024 * MB)
    make_run(home, "fine", metrics=[{"step": 1}])
    out = run_cli("metrics", "giant", "--last", "5", timeout=30)
    assert out.returncode == 1 and out.stderr.count("\n") == 1
    assert "malformed: no line end in the last 64 MiB of 1024 MiB" in out.stderr
    status = run_cli("status", "giant", "--json", timeout=30)
    assert status.returncode == 0 and "malformed" in json.loads(status.stdout)["problems"][0]
    runs = json.loads(run_cli("runs", "--json", timeout=30).stdout)["runs"]
    assert {r["run_id"] for r in runs} == {"giant", "fine"}
    check = run_cli("check", "giant", "--no-llm", "--json", timeout=60)  # one monitor tick
    assert check.returncode in (0, 1, 2) and json.loads(check.stdout)["run_id"] == "giant"


def test_fifos_as_output_log_and_metrics_block_nothing(home: Path) -> None:
    folder = make_run(home, "fifo", meta={"status": "running"})
    os.mkfifo(folder / "metrics.jsonl")
    os.mkfifo(folder / "output.log")
    make_run(home, "other", metrics=[{"step": 2}])
    status = run_cli("status", "fifo", "--json", timeout=30)
    assert status.returncode == 0
    assert json.loads(status.stdout)["problems"] == [
        "metrics.jsonl is a FIFO, not a regular file; not read",
        "output.log is a FIFO, not a regular file; not read",
    ]
    logs = run_cli("logs", "fifo", "-n", "5", timeout=30)
    assert (
        logs.returncode == 1 and logs.stderr == "error: output.log is a FIFO, not a regular file; not read\n"
    )
    metrics = run_cli("metrics", "fifo", timeout=30)
    assert metrics.returncode == 1 and "metrics.jsonl is a FIFO" in metrics.stderr
    runs = run_cli("runs", timeout=30)
    assert runs.returncode == 0 and "fifo" in runs.stdout and "other" in runs.stdout
    check = run_cli("check", "fifo", "--no-llm", "--json", timeout=60)
    assert check.returncode in (0, 1, 2), check.stderr


def test_logs_on_a_50mb_line_prints_a_bounded_marked_line(home: Path) -> None:
    folder = make_run(home, "biglog")
    log = folder / "output.log"
    log.write_text("step 1\nstep 2\n")
    append_long_line(log, 50 * MB)
    with open(log, "a") as f:
        f.write("\x1b[2J\x1b]0;pwned\x07after the long line\n")
    out = run_cli("logs", "biglog", "-n", "5", timeout=30)
    assert out.returncode == 0
    assert len(out.stdout) < 10_000
    lines = out.stdout.splitlines()
    assert lines[:2] == ["step 1", "step 2"]
    assert lines[2].startswith(f"[... line of {50 * MB} bytes cut, last 4096 shown ...]")
    assert lines[3] == "after the long line"  # escape sequences and NULs filtered
    assert "\x1b" not in out.stdout and "\x00" not in out.stdout


def test_markup_in_data_is_printed_literally(home: Path) -> None:
    make_run(
        home,
        "markup",
        meta={"model_id": "org/[/x]model", "error": "ValueError: [/x] and [bold]", "status": "failed"},
        metrics=[{"step": 1, "[/x]loss": 0.5, "note[/]": 2}],
    )
    for args in (("status", "markup"), ("runs",), ("metrics", "markup")):
        out = run_cli(*args, env={"COLUMNS": "200"}, timeout=30)
        assert out.returncode == 0, (args, out.stderr)
        assert "MarkupError" not in out.stderr
    assert "org/[/x]model" in run_cli("status", "markup", env={"COLUMNS": "200"}).stdout
    assert "[/x]loss" in run_cli("metrics", "markup", env={"COLUMNS": "200"}).stdout
    (home / "markup" / "output.log").write_text(
        "Traceback (most recent call last):\n"
        '  File "train.py", line 3, in <module>\n'
        "    cfg['[/x]']\n"
        "KeyError: '[/x] [bold]'\n"
    )
    check = run_cli("check", "markup", "--no-llm", env={"COLUMNS": "200"}, timeout=60)
    assert check.returncode in (0, 1, 2) and "MarkupError" not in check.stderr, check.stderr
    assert "[/x] [bold]" in check.stdout  # the diagnosis quotes the error literally


@pytest.mark.parametrize("verb", ["status", "logs", "metrics", "pause", "start"])
def test_a_run_id_with_a_trailing_newline_is_refused(home: Path, verb: str, tmp_path: Path) -> None:
    extra = ["--script", str(script(tmp_path, 1, 0))] if verb == "start" else []
    out = run_cli(verb, "x\n", *extra)
    assert out.returncode == 1 and out.stderr.startswith("error: invalid run id 'x\\n'")
    assert not (home / "x\n").exists()


def test_a_meta_json_nested_100000_levels_breaks_only_its_own_run(home: Path) -> None:
    folder = home / "nested"
    folder.mkdir()
    (folder / "meta.json").write_text("[" * 100_000 + "]" * 100_000)
    make_run(home, "sane", metrics=[{"step": 4}])
    runs = json.loads(run_cli("runs", "--json").stdout)["runs"]
    by_id = {r["run_id"]: r for r in runs}
    assert by_id["nested"]["effective_status"] == "corrupt" and by_id["sane"]["last_step"] == 4
    status = run_cli("status", "nested")
    assert status.returncode == 0 and "nested too deeply" in status.stdout


def test_a_huge_pid_is_corrupt_never_a_type_error(home: Path) -> None:
    folder = home / "hugepid"
    folder.mkdir()
    (folder / "meta.json").write_text(
        '{"run_id": "hugepid", "status": "running", "pid": 99999999999999999999}'
    )
    (folder / "metrics.jsonl").write_text('{"step": 99999999999999999999, "loss": 1e400}\n')
    status = json.loads(run_cli("status", "hugepid", "--json").stdout)
    assert status["effective_status"] == "corrupt" and "out of range" in status["error"]
    for args in (("check", "hugepid", "--no-llm"), ("pause", "hugepid"), ("stop", "hugepid")):
        out = run_cli(*args, timeout=60)
        assert "TypeError" not in out.stderr and "Traceback" not in out.stderr, (args, out.stderr)


@pytest.mark.parametrize("kind", ["/dev/zero", "fifo", "directory", "too big"])
def test_start_refuses_a_script_that_is_not_a_small_regular_file(
    home: Path, tmp_path: Path, kind: str
) -> None:
    if kind == "/dev/zero":
        path = Path("/dev/zero")
    elif kind == "fifo":
        path = tmp_path / "script.py"
        os.mkfifo(path)
    elif kind == "directory":
        path = tmp_path
    else:
        path = tmp_path / "big.py"
        with open(path, "wb") as f:
            f.truncate(4 * 200_000 + 1)
    out = run_cli("start", "refused", "--script", str(path), timeout=30)
    assert out.returncode == 1 and out.stderr.count("\n") == 1, out.stderr
    assert "not a regular file" in out.stderr or "larger than the limit" in out.stderr
    assert not (home / "refused").exists()


def test_stop_grace_must_be_finite_and_not_negative(home: Path, tmp_path: Path) -> None:
    out = run_cli("start", "graced", "--script", str(script(tmp_path, 100000, 0.05)))
    assert out.returncode == 0, out.stderr
    wait_for(lambda: (home / "graced" / "metrics.jsonl").exists())
    try:
        for bad in ("nan", "inf", "-1"):
            out = run_cli("stop", "graced", "--grace", bad, timeout=30)
            assert out.returncode == 1 and out.stderr.count("\n") == 1
            assert "--grace must be a finite number of seconds >= 0" in out.stderr
        assert json.loads(run_cli("status", "graced", "--json").stdout)["process"] == "alive"
    finally:
        out = run_cli("stop", "graced", "--grace", "5", timeout=60)
    assert out.returncode == 0, out.stderr


def test_disk_full_in_log_metrics_keeps_training(home: Path, tmp_path: Path) -> None:
    folder = home / "diskfull"
    folder.mkdir()
    os.symlink("/dev/full", folder / "metrics.jsonl")  # every metrics write is a real ENOSPC
    out = run_cli("start", "diskfull", "--script", str(script(tmp_path, 30, 0)))
    assert out.returncode == 0, out.stderr

    def ended() -> dict:
        s = json.loads(run_cli("status", "diskfull", "--json").stdout)
        return s if s["effective_status"] not in ("running", "created") else {}

    status = wait_for(ended, timeout=60)
    assert status["effective_status"] == "finished" and status["last_step"] == 30
    log = (folder / "output.log").read_text()
    warning = (
        "twinkle runtime: cannot write metrics.jsonl: [Errno 28] No space left on device; will keep trying"
    )
    assert log.count(warning) == 1 and "Traceback" not in log
    assert not [p.name for p in folder.iterdir() if p.name.endswith(".tmp")]
