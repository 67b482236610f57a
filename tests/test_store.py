"""The run store on real folders: listing, corrupt files, metrics reading, log tails, process state."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from twinkle_auto.connection import process as proc
from twinkle_auto.connection.errors import UnknownRunError
from twinkle_auto.connection.logs import tail_text, traceback_span
from twinkle_auto.connection.metrics import MetricsFollower, last_metrics, read_metrics_from
from twinkle_auto.connection.store import CorruptMetaError, RunStore, effective_status
from twinkle_auto.runtime.format import RunIdError

TRACEBACK = """Traceback (most recent call last):
  File "/runs/r/train.py", line 88, in <module>
    loss = F.cross_entropy(logits.view(B * T, C), targets.view(B, T))
  File "/venv/torch/nn/functional.py", line 3104, in cross_entropy
    return torch._C._nn.cross_entropy_loss(input, target)
RuntimeError: Expected input batch_size (1024) to match target batch_size (16).
"""


def make_run(home: Path, run_id: str, meta: dict | None = None, metrics: list[dict] | None = None) -> Path:
    folder = home / run_id
    folder.mkdir()
    (folder / "meta.json").write_text(json.dumps(meta if meta is not None else {"run_id": run_id}))
    if metrics is not None:
        (folder / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in metrics))
    return folder


def test_list_runs_skips_the_assistant_folder_strays_and_bad_names(home: Path) -> None:
    make_run(home, "a", {"run_id": "a", "status": "finished"})
    make_run(home, "b", {"run_id": "b", "status": "paused"})
    (home / "auto").mkdir()
    (home / "auto" / "meta.json").write_text("{}")
    (home / "empty-folder").mkdir()
    (home / "a-file").write_text("x")
    (home / "bad name").mkdir()
    (home / "bad name" / "meta.json").write_text("{}")
    ids = RunStore(home).run_ids()
    assert sorted(ids) == ["a", "b"]


def test_corrupt_meta_is_reported_never_a_crash(home: Path) -> None:
    folder = make_run(home, "c")
    (folder / "meta.json").write_text('{"status": "runn')
    store = RunStore(home)
    with pytest.raises(CorruptMetaError, match="meta.json is corrupt"):
        store.read_meta("c")
    status = store.status("c")
    assert status.effective_status == "corrupt"
    assert "corrupt" in (status.error or "")
    assert [r.run_id for r in store.list_runs()] == ["c"]


def test_unknown_and_invalid_runs_are_refused(home: Path) -> None:
    store = RunStore(home)
    with pytest.raises(UnknownRunError, match="unknown run 'nope'"):
        store.status("nope")
    with pytest.raises(RunIdError):
        store.status("../x")
    with pytest.raises(RunIdError):
        store.status("auto")


def test_last_metrics_skips_torn_and_malformed_lines(home: Path) -> None:
    folder = make_run(home, "m", metrics=[{"step": i, "loss": 1 / i} for i in range(1, 101)])
    with open(folder / "metrics.jsonl", "a") as f:
        f.write("not json\n[1,2]\n")
        f.write('{"step": 101, "loss": 0.0099}\n')
        f.write('{"step": 102, "lo')  # being written
    entries = last_metrics(folder / "metrics.jsonl", 5)
    assert [e["step"] for e in entries] == [97, 98, 99, 100, 101]
    assert last_metrics(folder / "missing.jsonl", 5) == []


def test_incremental_reading_from_a_saved_offset(home: Path) -> None:
    folder = make_run(home, "i", metrics=[{"step": 1}, {"step": 2}])
    path = folder / "metrics.jsonl"
    chunk = read_metrics_from(path, 0)
    assert [e["step"] for e in chunk.entries] == [1, 2]
    with open(path, "a") as f:
        f.write('{"step": 3}\n{"step": 4, "x"')  # torn: waits
    chunk2 = read_metrics_from(path, chunk.offset)
    assert [e["step"] for e in chunk2.entries] == [3]
    with open(path, "a") as f:
        f.write(": 1}\nbroken\n")
    chunk3 = read_metrics_from(path, chunk2.offset)
    assert [e["step"] for e in chunk3.entries] == [4] and chunk3.bad_lines == 1
    assert chunk3.offset == path.stat().st_size
    path.write_text('{"step": 1}\n')  # replaced by a shorter file: start again
    chunk4 = read_metrics_from(path, chunk3.offset)
    assert chunk4.reset and [e["step"] for e in chunk4.entries] == [1]


def test_follower_reads_only_what_was_appended_in_pieces(home: Path) -> None:
    folder = make_run(home, "f", metrics=[{"step": i} for i in range(1000)])
    follower = MetricsFollower(folder / "metrics.jsonl")
    assert [e["step"] for e in follower.poll()] == list(range(1000))
    assert follower.poll() == []
    with open(folder / "metrics.jsonl", "a") as f:
        f.write('{"step": 1000}\n')
    assert follower.poll() == [{"step": 1000}]


def test_chunked_read_hands_out_the_rest_on_the_next_call(home: Path) -> None:
    folder = make_run(home, "k", metrics=[{"step": i} for i in range(200)])
    path = folder / "metrics.jsonl"
    got, offset = [], 0
    while True:
        chunk = read_metrics_from(path, offset, max_bytes=300)
        got += [e["step"] for e in chunk.entries]
        offset = chunk.offset
        if not chunk.more:
            break
    assert got == list(range(200))


def test_log_tail_keeps_the_last_traceback_whole_when_noise_follows(home: Path) -> None:
    noise_before = "".join(f"step {i} loss 0.5\n" for i in range(500))
    noise_after = "".join(
        f"[rank0] worker {i} exiting cleanly after a long shutdown message\n" for i in range(30)
    )
    text = noise_before + TRACEBACK + noise_after
    tail = tail_text(text, 1500)
    assert len(tail) <= 1500
    assert tail.startswith("Traceback (most recent call last):")
    assert "RuntimeError: Expected input batch_size (1024)" in tail
    assert tail.rstrip().endswith("exiting cleanly after a long shutdown message")
    assert tail_text("short", 1500) == "short"


def test_traceback_span_keeps_a_chain_together() -> None:
    chained = (
        "Traceback (most recent call last):\n  File \"a.py\", line 1, in <module>\nKeyError: 'x'\n\n"
        "During handling of the above exception, another exception occurred:\n\n" + TRACEBACK + "\nmore\n"
    )
    start, end = traceback_span(chained)
    assert start == 0
    assert chained[start:end].rstrip().endswith("target batch_size (16).")


def test_tail_log_reads_only_the_end_of_a_big_log(home: Path) -> None:
    folder = make_run(home, "big")
    with open(folder / "output.log", "w") as f:
        for i in range(200_000):
            f.write(f"step {i}\n")
        f.write(TRACEBACK)
    tail = RunStore(home).log_tail("big", 1500)
    assert tail.traceback and tail.traceback.startswith("Traceback")
    assert tail.text.endswith("target batch_size (16).\n")
    assert tail.size == (folder / "output.log").stat().st_size
    lines = RunStore(home).log_lines("big", 3)
    assert lines[-1].startswith("RuntimeError")


def test_process_state_alive_dead_unknown_and_a_reused_pid(home: Path) -> None:
    me = {"pid": os.getpid(), "pid_create_time": __import__("psutil").Process().create_time()}
    assert proc.process_info(me).state == proc.ALIVE
    assert proc.process_info({}).state == proc.UNKNOWN
    reused = {"pid": os.getpid(), "pid_create_time": me["pid_create_time"] - 3600}
    info = proc.process_info(reused)
    assert info.state == proc.DEAD and "another process" in info.reason
    with pytest.raises(proc.NotOurProcessError, match="refusing to signal"):
        proc.send(reused, 0)
    # twinkle-kit's runtime records no create time: a process younger than the run's start is a stranger
    assert proc.process_info({"pid": os.getpid(), "start_time": time.time() - 10**6}).state == proc.DEAD
    # ... and an older one is ours only if it runs this run's script (this test process does not)
    info = proc.process_info({"pid": os.getpid(), "start_time": time.time()})
    assert info.state == proc.DEAD and "not provably" in info.reason


def test_zombie_and_exited_processes(home: Path) -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    import psutil

    ctime = psutil.Process(child.pid).create_time()
    meta = {"pid": child.pid, "pid_create_time": ctime}
    deadline = time.time() + 10
    while proc.process_info(meta).state != proc.ZOMBIE and time.time() < deadline:
        time.sleep(0.02)
    assert proc.process_info(meta).state == proc.ZOMBIE
    child.wait()
    assert proc.process_info(meta).state == proc.DEAD


def test_effective_status() -> None:
    assert effective_status("running", "dead") == "crashed"
    assert effective_status("running", "zombie") == "crashed"
    assert effective_status("running", "alive") == "running"
    assert effective_status("stopping", "dead") == "stopped"
    assert effective_status("completed", "dead") == "finished"


def test_a_run_folder_written_by_twinkle_kit_is_read(home: Path) -> None:
    """Built by hand from twinkle-kit 0.5.1's runtime: indent=2 meta without pid create time, float
    values in metrics (it converts everything with float()), 'completed' on finish, `[twinkle]` lines."""
    folder = home / "grpo-run"
    folder.mkdir()
    meta = {
        "run_id": "grpo-run",
        "model_id": "Qwen/Qwen3.5-4B",
        "config": {"lr": 1e-05, "batch_size": 8},
        "start_time": 1780000000.5,
        "status": "completed",
        "pid": 999999,
        "script_path": str(folder / "train.py"),
        "script_version": 2,
        "progress": {"last_step": 30, "total_steps": 30},
        "end_time": 1780000900.25,
    }
    (folder / "meta.json").write_text(json.dumps(meta, indent=2))
    with open(folder / "metrics.jsonl", "w") as f:
        for step in range(1, 31):
            f.write(
                json.dumps(
                    {
                        "ts": 1780000000.0 + step,
                        "step": float(step),
                        "loss": 1.0 / step,
                        "reward": 0.1 * step,
                        "grad_norm": 0.8,
                        "lr": 1e-05,
                    }
                )
                + "\n"
            )
    (folder / "output.log").write_text(
        "[twinkle] Training started\n[twinkle] Training finished with status: completed\n"
    )
    (folder / "train.py").write_text("print('v2')\n")
    (folder / "train_v1.py").write_text("print('v1')\n")
    store = RunStore(home)
    status = store.status("grpo-run")
    assert status.effective_status == "finished"
    assert status.process == proc.DEAD
    assert status.last_step == 30 and status.total_steps == 30
    assert status.model_id == "Qwen/Qwen3.5-4B"
    assert status.archived_versions == (1,)
    assert store.last_metrics("grpo-run", 2)[-1]["step"] == 30.0
    assert store.log_lines("grpo-run", 1) == ["[twinkle] Training finished with status: completed"]
    from twinkle_auto.runtime import TrainingRuntime

    assert TrainingRuntime("grpo-run").get_resume_info() == {"last_step": 30, "total_steps": 30}
