"""Bounded readers of run files, validation of what they hold, and writes that survive a full disk.

Everything here uses real files: sparse files made with truncate (a 1 GB file costs no disk), real FIFOs,
/dev/full for a real ENOSPC, and RLIMIT_FSIZE in a child process for a real EFBIG that can be lifted.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from twinkle_auto.connection.logs import tail_lines, tail_log
from twinkle_auto.connection.metrics import MetricsFollower, read_metrics_from, tail_metrics
from twinkle_auto.connection.text import printable
from twinkle_auto.runtime import format as fmt
from twinkle_auto.runtime.tail import MAX_LINE_BYTES, last_step, read_tail

MB = 1024 * 1024


def finishes(fn: Callable[[], Any], timeout: float = 20.0) -> Any:
    """Call fn in a thread and fail (instead of hanging the suite) if it blocks."""
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:  # handed to the test below
            box["error"] = exc

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(timeout)
    assert not t.is_alive(), f"{fn} blocked"
    if "error" in box:
        raise box["error"]
    return box.get("value")


def metrics_with_long_last_line(path: Path, rows: int = 20, long: int = 50 * MB) -> None:
    """`rows` metric lines, then one line of `long` NUL bytes (sparse: no disk used), then a newline."""
    with open(path, "w") as f:
        for i in range(rows):
            f.write(json.dumps({"ts": 1.0, "step": i, "loss": 1.0 / (i + 1)}) + "\n")
    size = path.stat().st_size
    with open(path, "r+b") as f:
        f.truncate(size + long)
        f.seek(size + long)
        f.write(b"\n")


def test_last_metrics_skip_a_50mb_last_line_and_say_so(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    metrics_with_long_last_line(path)
    got = tail_metrics(path, 5)
    assert [e["step"] for e in got.entries] == [15, 16, 17, 18, 19]
    assert got.problem and "malformed" in got.problem and "1 line(s) longer" in got.problem
    assert last_step(path) == 19  # the runtime's resume read goes through the same code


def test_a_1gb_file_without_newline_is_malformed_not_read(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    with open(path, "wb") as f:
        f.truncate(1024 * MB)
    got = tail_metrics(path, 5)
    assert got.entries == []
    assert got.problem is not None and got.problem.startswith("malformed: no line end")
    tail = read_tail(path, 5)
    assert tail.truncated and tail.end == -1 and len(tail.partial) <= MAX_LINE_BYTES
    lines = tail_lines(path, 5)
    assert len(lines) == 1 and lines[0].startswith("[... no line end") and len(lines[0]) < 5000


def test_fifo_device_and_directory_are_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "metrics.jsonl"
    os.mkfifo(fifo)
    got = finishes(lambda: tail_metrics(fifo, 5))
    assert got.entries == [] and got.problem == "metrics.jsonl is a FIFO, not a regular file; not read"
    chunk = finishes(lambda: read_metrics_from(fifo, 0))
    assert chunk.entries == [] and "FIFO" in (chunk.error or "")
    assert finishes(lambda: last_step(fifo)) is None
    log = tmp_path / "output.log"
    os.mkfifo(log)
    tail = finishes(lambda: tail_log(log))
    assert tail.text == "" and "FIFO" in (tail.problem or "")
    with pytest.raises(OSError, match="FIFO"):
        finishes(lambda: tail_lines(log, 5))
    assert "character device" in (tail_metrics(Path("/dev/zero"), 5).problem or "")
    assert "directory" in (tail_metrics(tmp_path, 5).problem or "")
    with pytest.raises(ValueError, match="corrupt: .*FIFO"):
        finishes(lambda: fmt.read_json_file(fifo))


def test_incremental_reader_steps_over_a_long_line_and_goes_on(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    metrics_with_long_last_line(path, rows=3, long=20 * MB)
    with open(path, "a") as f:
        f.write('{"step": 100}\n{"step": 101}\n')
    follower = MetricsFollower(path)
    steps: list[int] = []
    for _ in range(10):  # a bounded amount per poll; the rest comes on the next
        steps += [e["step"] for e in follower.poll()]
    assert steps == [0, 1, 2, 100, 101]
    assert follower.bad_lines == 1 and follower.offset == path.stat().st_size


def test_logs_show_a_long_line_cut_and_marked(tmp_path: Path) -> None:
    path = tmp_path / "output.log"
    with open(path, "w") as f:
        f.write("first\nsecond\n")
        f.write("x" * (3 * MB) + "END\n")
        f.write("partial line being written")
    lines = tail_lines(path, 3)
    assert lines[0] == "second"
    assert lines[1].startswith(f"[... line of {3 * MB + 3} bytes cut, last 4096 shown ...] ")
    assert lines[1].endswith("xEND") and len(lines[1]) < 4200
    assert lines[2] == "partial line being written"


def test_printable_strips_escapes_and_controls_keeps_tabs_and_newlines() -> None:
    raw = "\x1b[31mred\x1b[0m\t\x1b]0;owned\x07ok\x1b]8;;http://x\x1b\\link\x1b(B\n\x00\x07\x9b2J\x85é\r\n"
    assert printable(raw) == "red\toklink\né\n"


def test_run_ids_must_match_whole() -> None:
    for bad in ("x\n", "x\ny", "\nx", "a/b", "..", ".hidden", "auto", "x" * 129, ""):
        with pytest.raises(fmt.RunIdError):
            fmt.validate_run_id(bad)
    assert fmt.validate_run_id("run-1.v2_x") == "run-1.v2_x"


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
        ('{"a":' * 100_000 + "1" + "}" * 100_000, "nested too deeply"),
        ('{"pid": 99999999999999999999}', "out of range"),
        ('{"pid": ' + "9" * 5000 + "}", "corrupt"),
        ("[1, 2]", "expected a JSON object"),
    ],
)
def test_json_files_that_are_not_sane_objects_are_corrupt(tmp_path: Path, content: str, reason: str) -> None:
    path = tmp_path / "meta.json"
    path.write_text(content)
    with pytest.raises(ValueError, match=reason):
        fmt.read_json_file(path)


def test_an_oversized_json_file_is_not_read(tmp_path: Path) -> None:
    path = tmp_path / "meta.json"
    with open(path, "wb") as f:
        f.truncate(fmt.MAX_JSON_BYTES + 1)
    with pytest.raises(ValueError, match="more than the limit"):
        fmt.read_json_file(path)


def test_huge_integers_in_metrics_become_floats(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 3, "tokens": 99999999999999999999999}\n')
    (entry,) = tail_metrics(path, 1).entries
    assert entry == {"step": 3, "tokens": 1e23} and isinstance(entry["tokens"], float)


CHILD_FSIZE = r"""
import os, resource, signal, sys, time
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)   # EFBIG instead of death, as a real trainer would see
from twinkle_auto.runtime import TrainingRuntime, training, format as fmt
training.WRITE_RETRY_S = 0.2
rt = TrainingRuntime("full", base_dir=sys.argv[1])
rt.start("m", {"total_steps": 100})
metrics = rt.run_dir / "metrics.jsonl"
soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
resource.setrlimit(resource.RLIMIT_FSIZE, (metrics.stat().st_size + 90, hard))
for step in range(1, 11):
    rt.log_metrics(step=step, loss=0.5, padding=1234567.0)
try:
    fmt.atomic_write_text(rt.run_dir / "meta.json", "x" * 10_000)
except OSError as exc:
    print("atomic write failed:", exc.errno, file=sys.stderr)
resource.setrlimit(resource.RLIMIT_FSIZE, (hard, hard))
time.sleep(0.3)
for step in range(11, 14):
    rt.log_metrics(step=step, loss=0.5)
rt.finish()
print("done", file=sys.stderr)
"""


def test_log_metrics_survives_efbig_retries_and_recovers(tmp_path: Path) -> None:
    env = {**os.environ, "TWINKLE_AUTO_OUTPUT_CAPTURED": "1"}
    out = subprocess.run(
        [sys.executable, "-c", CHILD_FSIZE, str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    err = out.stderr
    assert (
        err.count("twinkle runtime: cannot write metrics.jsonl: [Errno 27] File too large; will keep trying")
        == 1
    )
    assert "metrics.jsonl is writable again" in err and "done" in err
    assert "atomic write failed: 27" in err
    folder = tmp_path / "full"
    assert not [p.name for p in folder.iterdir() if p.name.endswith(".tmp")]  # no temp files left behind
    rows = [
        json.loads(line)
        for line in (folder / "metrics.jsonl").read_text().splitlines()
        if line.startswith("{") and line.endswith("}")
    ]
    steps = [r["step"] for r in rows]
    assert steps[0] == 1 and steps[-3:] == [11, 12, 13]  # the lines after recovery are whole
    assert json.loads((folder / "meta.json").read_text())["status"] == "finished"


CHILD_DEVFULL = r"""
import os, sys
from twinkle_auto.runtime import TrainingRuntime
base = sys.argv[1]
os.makedirs(os.path.join(base, "devfull"), exist_ok=True)
os.symlink("/dev/full", os.path.join(base, "devfull", "metrics.jsonl"))
rt = TrainingRuntime("devfull", base_dir=base)
rt.start("m", {"total_steps": 200})
for step in range(1, 201):
    rt.log_metrics(step=step, loss=0.1)
rt.finish()
print("trained to", rt.get_resume_info()["last_step"], file=sys.stderr)
"""


def test_log_metrics_on_a_full_device_warns_once_and_training_goes_on(tmp_path: Path) -> None:
    env = {**os.environ, "TWINKLE_AUTO_OUTPUT_CAPTURED": "1"}
    out = subprocess.run(
        [sys.executable, "-c", CHILD_DEVFULL, str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    warning = (
        "twinkle runtime: cannot write metrics.jsonl: [Errno 28] No space left on device; will keep trying"
    )
    assert out.stderr.count(warning) == 1
    assert "trained to 200" in out.stderr  # progress in meta.json still records every step reached


def test_the_chat_tools_refuse_a_script_path_that_is_not_a_small_regular_file(tmp_path: Path) -> None:
    from twinkle_auto.tools.base import ToolError
    from twinkle_auto.tools.scripts import read_script_file

    fifo = tmp_path / "train.py"
    os.mkfifo(fifo)
    for path, why in (
        (Path("/dev/zero"), "character device"),
        (fifo, "FIFO"),
        (tmp_path / "none.py", "exist"),
    ):
        with pytest.raises(ToolError, match=why):
            finishes(lambda p=path: read_script_file(str(p)))


def test_training_script_starts_and_finishes_with_fifos_for_its_files(tmp_path: Path, home: Path) -> None:
    """A FIFO in place of metrics.jsonl and output.log must not hang a training script at start."""
    run = home / "fifo-run"
    run.mkdir()
    os.mkfifo(run / "metrics.jsonl")
    os.mkfifo(run / "output.log")
    script = tmp_path / "train.py"
    script.write_text(
        "from twinkle_auto.runtime import TrainingRuntime\n"
        "rt = TrainingRuntime('fifo-run')\n"
        "rt.start(config={'total_steps': 3})\n"
        "for step in range(1, 4):\n"
        "    rt.log_metrics(step=step, loss=1.0 / step)\n"
        "rt.finish()\n"
        "print('DONE')\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "TWINKLE_AUTO_OUTPUT_CAPTURED"}
    proc = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=60, env=env, cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    assert "DONE" in proc.stdout
    assert "metrics.jsonl is a FIFO or socket" in proc.stderr
    assert "output.log is a FIFO or socket" in proc.stderr
    assert json.loads((run / "meta.json").read_text())["status"] == fmt.FINISHED
