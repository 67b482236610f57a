"""TrainingRuntime in real processes: merge-not-replace, resume info, progress saving, SIGTERM, tee."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import read_meta, wait_for

from twinkle_auto.runtime import TrainingRuntime
from twinkle_auto.runtime import training as training_mod


def test_start_merges_meta_and_keeps_progress_and_script_path(home: Path) -> None:
    folder = home / "r1"
    folder.mkdir()
    (folder / "train.py").write_text("print('hi')\n")
    previous = {
        "run_id": "r1",
        "script_path": str(folder / "train.py"),
        "progress": {"last_step": 40, "total_steps": 100},
        "launch_count": 2,
        "start_time": 123.0,
    }
    (folder / "meta.json").write_text(json.dumps(previous))
    rt = TrainingRuntime("r1")
    before = rt.get_resume_info()
    rt.start(model_id="m", config={"lr": 0.1})
    after = rt.get_resume_info()
    rt.finish()
    meta = read_meta(home, "r1")
    assert before == after == {"last_step": 40, "total_steps": 100}
    assert meta["script_path"] == str(folder / "train.py")
    assert meta["progress"]["last_step"] == 40
    assert meta["launch_count"] == 2
    assert meta["start_time"] == 123.0
    assert meta["status"] == "finished"
    assert meta["model_id"] == "m"
    assert meta["pid"] == os.getpid()


def test_resume_info_prefers_the_metrics_file_when_progress_lags(home: Path) -> None:
    rt = TrainingRuntime("r2")
    rt.start("m", {})
    for step in range(1, 6):
        rt.log_metrics(step=step, loss=1.0)
    # progress was saved at step 1 only (5 s throttle); a SIGKILL now would leave meta at 1
    assert read_meta(home, "r2")["progress"]["last_step"] == 1
    assert rt.get_resume_info()["last_step"] == 5
    rt.finish()
    assert read_meta(home, "r2")["progress"]["last_step"] == 5


def test_fresh_run_resumes_from_zero(home: Path) -> None:
    assert TrainingRuntime("fresh").get_resume_info() == {"last_step": 0}


def test_progress_is_saved_at_most_every_interval(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    writes: list[dict] = []
    real = training_mod.fmt.update_meta

    def counting(folder, fields=None, **kw):
        if fields and "progress" in fields:
            writes.append(fields["progress"])
        return real(folder, fields, **kw)

    monkeypatch.setattr(training_mod.fmt, "update_meta", counting)
    clock = [1000.0]
    monkeypatch.setattr(training_mod.time, "monotonic", lambda: clock[0])
    rt = TrainingRuntime("r3")
    rt.start("m", {"total_steps": 50})
    writes.clear()
    for step in range(1, 21):
        rt.log_metrics(step=step, loss=0.5)
        clock[0] += 1.0  # one second per step: at most one save per 5 steps
    assert 3 <= len(writes) <= 4
    rt.finish()
    assert writes[-1]["last_step"] == 20


def test_log_metrics_keeps_numbers_and_nan_and_drops_strings(home: Path) -> None:
    rt = TrainingRuntime("r4")
    rt.start()

    class Scalar:  # a 0-d tensor / numpy scalar stands in: anything float() accepts
        def __float__(self) -> float:
            return 2.5

    rt.log_metrics(step=3, loss=float("nan"), grad_norm=float("inf"), acc=Scalar(), note="text", flag=True)
    rt.finish()
    line = (home / "r4" / "metrics.jsonl").read_text().splitlines()[0]
    assert "NaN" in line and "Infinity" in line
    entry = json.loads(line)
    assert entry["step"] == 3 and isinstance(entry["step"], int)
    assert entry["acc"] == 2.5 and entry["flag"] == 1 and "note" not in entry and "ts" in entry


def test_a_torn_last_metrics_line_is_sealed_on_restart(home: Path) -> None:
    folder = home / "r5"
    folder.mkdir()
    (folder / "metrics.jsonl").write_text('{"step": 1, "loss": 1.0}\n{"step": 2, "lo')
    rt = TrainingRuntime("r5")
    rt.start()
    rt.log_metrics(step=3, loss=0.5)
    rt.finish()
    lines = (folder / "metrics.jsonl").read_text().splitlines()
    assert json.loads(lines[-1])["step"] == 3
    assert lines[1] == '{"step": 2, "lo'


def _run_script(home: Path, body: str, run_id: str = "hand", **popen) -> subprocess.Popen:
    script = home.parent / f"{run_id}_script.py"
    script.write_text(textwrap.dedent(body))
    env = dict(os.environ, TWINKLE_RUN_ID=run_id)
    return subprocess.Popen([sys.executable, str(script)], env=env, **popen)


def test_a_script_run_by_hand_gets_its_output_and_traceback_into_output_log(home: Path) -> None:
    child = _run_script(
        home,
        """
        from twinkle_auto.runtime import TrainingRuntime
        rt = TrainingRuntime()
        rt.start("m", {}, script_path=__file__)
        print("hello from the loop")
        rt.log_metrics(step=1, loss=1.0)
        {}["missing_key"]
        """,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    out, err = child.communicate(timeout=30)
    assert child.returncode == 1
    assert b"hello from the loop" in out  # still on the terminal too
    log = (home / "hand" / "output.log").read_text()
    assert "started by hand" in log
    assert "hello from the loop" in log
    assert "Traceback (most recent call last):" in log and "KeyError: 'missing_key'" in log
    meta = read_meta(home, "hand")
    assert meta["status"] == "failed"
    assert meta["error"] == "KeyError: 'missing_key'"
    assert (home / "hand" / "train.py").read_text().startswith("\nfrom twinkle_auto.runtime")


def test_sigterm_saves_a_twinkle_style_checkpoint_records_data_position_and_stops(home: Path) -> None:
    record = home.parent / "saved.json"
    child = _run_script(
        home,
        f"""
        import json, time
        from twinkle_auto.runtime import TrainingRuntime

        class Model:  # the Twinkle client's MultiLoraTransformersModel.save signature
            def save(self, name, save_optimizer=False, consumed_train_samples=None):
                json.dump(dict(name=name, save_optimizer=save_optimizer,
                               consumed_train_samples=consumed_train_samples), open({str(record)!r}, "w"))
                return "ckpt/" + name

        class Loader:
            def __init__(self): self.consumed = 0
            def get_state(self): return {{"consumed_train_samples": self.consumed}}

        rt = TrainingRuntime()
        rt.start("Qwen/Qwen3.5-4B", {{"total_steps": 100000}})
        loader = Loader()
        rt.register_graceful_shutdown(Model(), loader)
        step = rt.get_resume_info()["last_step"]
        while True:
            step += 1
            loader.consumed += 8
            rt.log_metrics(step=step, loss=1.0 / step)
            time.sleep(0.01)
        """,
        run_id="sig",
    )
    wait_for(
        lambda: (
            (home / "sig" / "metrics.jsonl").exists()
            and len((home / "sig" / "metrics.jsonl").read_text().splitlines()) >= 5
        )
    )
    child.send_signal(signal.SIGTERM)
    assert child.wait(timeout=20) == 0
    saved = json.loads(record.read_text())
    assert saved["name"] == "interrupted" and saved["save_optimizer"] is True
    assert saved["consumed_train_samples"] >= 40 and saved["consumed_train_samples"] % 8 == 0
    meta = read_meta(home, "sig")
    assert meta["status"] == "stopped"
    assert meta["shutdown"]["checkpoint"] == "ckpt/interrupted"
    assert meta["progress"]["consumed_train_samples"] == saved["consumed_train_samples"]
    last = json.loads((home / "sig" / "metrics.jsonl").read_text().splitlines()[-1])["step"]
    assert meta["progress"]["last_step"] == last


def test_sigterm_with_a_plain_pytorch_hook_runs_at_the_step_boundary(home: Path) -> None:
    child = _run_script(
        home,
        """
        import time
        from twinkle_auto.runtime import TrainingRuntime
        rt = TrainingRuntime()
        rt.start("toy", {})
        state = {"step": 0, "mid_step": False}
        def save(runtime):
            assert not state["mid_step"], "hook ran in the middle of a step"
            return f"checkpoint-{state['step']}.pt"
        rt.register_graceful_shutdown(on_shutdown=save)
        while True:
            state["mid_step"] = True
            time.sleep(0.02)          # forward/backward/optimizer
            state["step"] += 1
            state["mid_step"] = False
            rt.log_metrics(step=state["step"], loss=0.1)
        """,
        run_id="hook",
    )
    wait_for(
        lambda: (
            (home / "hook" / "metrics.jsonl").exists()
            and (home / "hook" / "metrics.jsonl").stat().st_size > 100
        )
    )
    child.send_signal(signal.SIGTERM)
    assert child.wait(timeout=20) == 0
    meta = read_meta(home, "hook")
    assert meta["status"] == "stopped"
    assert meta["shutdown"]["checkpoint"] == f"checkpoint-{meta['progress']['last_step']}.pt"
    assert "error" not in meta["shutdown"]


def test_importing_the_runtime_pulls_in_no_heavy_library() -> None:
    code = (
        "import sys, twinkle_auto.runtime; "
        "bad=[m for m in sys.modules if m.split('.')[0] in "
        "('langchain','langchain_core','langgraph','pydantic','rich','psutil','yaml','prompt_toolkit')]; "
        "print(bad)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def test_runtime_module_uses_only_the_standard_library() -> None:
    import ast

    runtime_dir = Path(training_mod.__file__).parent
    stdlib = set(sys.stdlib_module_names)
    for path in runtime_dir.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            for name in names:
                top = name.split(".")[0]
                assert top in stdlib or top == "twinkle_auto" or top == "__future__", f"{path.name}: {name}"
                if top == "twinkle_auto":
                    assert name.startswith("twinkle_auto.runtime"), f"{path.name}: {name}"


def test_run_id_from_environment_and_validation(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TWINKLE_RUN_ID", "from-env")
    assert TrainingRuntime().run_dir == home / "from-env"
    monkeypatch.delenv("TWINKLE_RUN_ID")
    with pytest.raises(ValueError, match="TWINKLE_RUN_ID"):
        TrainingRuntime()
    with pytest.raises(ValueError, match="invalid run id"):
        TrainingRuntime("../escape")


def test_script_path_is_copied_and_a_different_previous_one_archived(home: Path, tmp_path: Path) -> None:
    v1 = tmp_path / "a.py"
    v1.write_text("print(1)\n")
    v2 = tmp_path / "b.py"
    v2.write_text("print(2)\n")
    rt = TrainingRuntime("copy")
    rt.start(script_path=v1)
    rt.finish()
    rt = TrainingRuntime("copy")
    rt.start(script_path=v2)
    rt.finish()
    folder = home / "copy"
    assert (folder / "train.py").read_text() == "print(2)\n"
    assert (folder / "train_v1.py").read_text() == "print(1)\n"
    assert read_meta(home, "copy")["script_version"] == 2
