"""The monitor graph: each route with a scripted model, the attempt cap, the counter surviving a restart,
malformed LLM answers that never touch train.py, approval, and a real crashed script fixed end to end."""

from __future__ import annotations

import json
import os
from pathlib import Path

import psutil
import pytest
from conftest import EXAMPLES, metric_steps, read_meta, wait_for
from fakes import ScriptedChatModel
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.types import Command

from twinkle_auto.connection import Connection
from twinkle_auto.graphs.monitor.graph import build_monitor_graph, compile_monitor_graph, monitor_thread

SNAPSHOT = Path(__file__).parent / "snapshots" / "monitor_graph.mmd"
TINY = (EXAMPLES / "tiny" / "train.py").read_text()
BUG = 'rec["target"]'
BUGGY_TINY = TINY.replace(BUG, 'rec["targets"]', 1)
GOOD_PATCH = f"""Here is the fix.
<<<<<<< SEARCH
        err = sum(wi * xi for wi, xi in zip(w, x, strict=True)) + b - rec["targets"]
=======
        err = sum(wi * xi for wi, xi in zip(w, x, strict=True)) + b - {BUG}
>>>>>>> REPLACE
"""
FIX_VERDICT = (
    '{"decision": "FIX", "diagnosis": "KeyError: the record key is \\"target\\", not \\"targets\\"."}'
)


def _alive_meta(run_id: str, **extra) -> dict:
    """meta.json naming this very test process: alive, and provably ours."""
    return {
        "run_id": run_id,
        "status": "running",
        "pid": os.getpid(),
        "pid_create_time": psutil.Process().create_time(),
        **extra,
    }


def _make_run(
    home: Path, run_id: str, meta: dict, rows: list[dict], log: str = "", script: str = TINY
) -> Path:
    folder = home / run_id
    folder.mkdir()
    (folder / "meta.json").write_text(json.dumps(meta))
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (folder / "output.log").write_text(log)
    (folder / "train.py").write_text(script)
    return folder


def _crashed_run(home: Path, controller, run_id: str = "crashy") -> Path:
    controller.start(run_id, BUGGY_TINY, env={"STEP_SLEEP": "0", "TOTAL_STEPS": "60"})
    wait_for(lambda: read_meta(home, run_id).get("status") == "failed")
    wait_for(lambda: read_meta(home, run_id).get("exit_code") is not None)
    return home / run_id


def _tick(graph, run_id: str, config=None):
    return graph.invoke({"run_id": run_id}, config or monitor_thread(run_id))


def test_graph_drawing_matches_the_snapshot(home: Path) -> None:
    graph = build_monitor_graph(None, Connection.open(home)).compile()
    drawing = graph.get_graph().draw_mermaid()
    if os.environ.get("UPDATE_SNAPSHOTS"):
        SNAPSHOT.parent.mkdir(exist_ok=True)
        SNAPSHOT.write_text(drawing)
    assert drawing == SNAPSHOT.read_text()
    for node in ("collect", "triage", "classify", "notify", "rewrite", "approve", "archive", "resume"):
        assert node in drawing


def test_healthy_progressing_run_is_lgtm_without_asking_the_llm(home: Path) -> None:
    rows = [{"ts": 1e9 + i, "step": i, "loss": 2.0 - i * 0.001, "grad_norm": 1.0} for i in range(1, 200)]
    import time

    rows[-1]["ts"] = time.time()
    _make_run(home, "healthy", _alive_meta("healthy"), rows)
    llm = ScriptedChatModel(default=AssertionError("the LLM must not be called"))
    graph = compile_monitor_graph(llm, Connection.open(home), checkpointer=InMemorySaver())
    for _ in range(3):
        out = _tick(graph, "healthy")
        assert out["decision"] == "LGTM" and out["message"] is None
    assert llm.calls == []


def test_finished_run_is_lgtm_and_watching_ends(home: Path) -> None:
    rows = [{"step": i, "loss": 2.0 / i} for i in range(1, 50)]
    _make_run(home, "done", {"run_id": "done", "status": "finished", "pid": None}, rows)
    out = _tick(compile_monitor_graph(None, Connection.open(home)), "done")
    assert out["decision"] == "LGTM" and out["done"] is True


def test_warning_is_told_once_and_the_llm_asked_once(home: Path) -> None:
    rows = [{"step": i, "loss": 1.0, "grad_norm": 1.0} for i in range(1, 30)]
    rows += [{"step": 30, "loss": float("nan"), "grad_norm": float("nan")}]
    _make_run(home, "nan", _alive_meta("nan"), rows)
    told: list[str] = []
    llm = ScriptedChatModel(responses=['{"decision": "WARNING", "diagnosis": "loss became NaN at step 30"}'])
    graph = compile_monitor_graph(
        llm, Connection.open(home), checkpointer=InMemorySaver(), notify=lambda run, msg: told.append(msg)
    )
    first = _tick(graph, "nan")
    assert first["decision"] == "WARNING" and first["verdict_source"] == "llm"
    assert first["message"] == "[Monitor] WARNING nan: loss became NaN at step 30"
    assert any(f["kind"] == "NAN" for f in first["findings"])
    second = _tick(graph, "nan")
    assert second["decision"] == "WARNING" and second["message"] is None
    assert len(llm.calls) == 1 and told == [first["message"]]
    # a new thread (restarted assistant) does not repeat it either
    third = _tick(compile_monitor_graph(llm, Connection.open(home)), "nan")
    assert third["message"] is None and len(llm.calls) == 1


def test_unreachable_llm_leaves_the_rules_to_decide(home: Path) -> None:
    rows = [{"step": i, "loss": float("nan")} for i in range(1, 5)]
    _make_run(home, "offline", _alive_meta("offline"), rows)
    llm = ScriptedChatModel(default=ConnectionError("Connection refused"))
    out = _tick(compile_monitor_graph(llm, Connection.open(home)), "offline")
    assert out["decision"] == "WARNING"
    assert out["verdict_source"].startswith("rules (LLM unreachable: ConnectionError")


def test_environment_error_is_a_warning_never_a_rewrite(home: Path) -> None:
    log = (
        'Traceback (most recent call last):\n  File "train.py", line 9, in <module>\n    loss.backward()\n'
        "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB\n"
    )
    _make_run(home, "oom", {"run_id": "oom", "status": "running", "pid": None}, [], log)
    (home / "oom" / "meta.json").write_text(
        json.dumps({"run_id": "oom", "status": "failed", "pid": 999999, "pid_create_time": 1.0})
    )
    llm = ScriptedChatModel(responses=[FIX_VERDICT], default=AssertionError("no patch for hardware"))
    out = _tick(compile_monitor_graph(llm, Connection.open(home)), "oom")
    assert out["decision"] == "WARNING"
    assert any(f["kind"] == "ENV" for f in out["findings"])
    assert not (home / "oom" / "train_v1.py").exists()


@pytest.mark.slow
def test_a_real_crashed_script_is_fixed_and_training_resumes(home: Path, controller) -> None:
    folder = _crashed_run(home, controller)
    llm = ScriptedChatModel(responses=[GOOD_PATCH])
    connection = Connection(controller.store, controller)
    out = _tick(compile_monitor_graph(llm, connection), "crashy")
    assert out["decision"] == "FIX" and out["fixed"] is True
    assert out["archived_as"] == "train_v1.py"
    assert (folder / "train_v1.py").read_text() == BUGGY_TINY
    assert BUG in (folder / "train.py").read_text()
    assert out["message"].startswith("[Monitor] FIX crashy:")
    wait_for(lambda: read_meta(home, "crashy").get("status") == "finished", timeout=60)
    assert max(metric_steps(home, "crashy")) == 60  # ran past the old error to the end
    assert read_meta(home, "crashy")["launch_env"]["TOTAL_STEPS"] == "60"
    state = json.loads((folder / "auto_state.json").read_text())
    assert state["fix_attempts"] == 1 and state["fixes"][-1]["ok"] is True
    # the next tick sees the finished run: LGTM, watching ends
    after = _tick(compile_monitor_graph(llm, connection), "crashy")
    assert after["decision"] == "LGTM" and after["done"] is True


BAD_ANSWERS = {
    "no patch": "I think you should check the dataset keys.",
    "does not apply": "<<<<<<< SEARCH\nthis line is not in the script\n=======\nx = 1\n>>>>>>> REPLACE\n",
    "breaks syntax": f"<<<<<<< SEARCH\n{' ' * 8}err = sum(wi * xi for wi, xi in zip(w, x, strict=True)) + b - "
    'rec["targets"]\n=======\n        err = (((\n>>>>>>> REPLACE\n',
    "deletes the loop": None,  # built below from the real loop
}


def _loop_deleting_patch() -> str:
    lines = TINY.splitlines()
    start = next(
        i
        for i, line in enumerate(lines)
        if line.strip().startswith("while ") or line.strip().startswith("for step")
    )
    body = [lines[start]]
    indent = len(lines[start]) - len(lines[start].lstrip())
    for line in lines[start + 1 :]:
        if line.strip() and len(line) - len(line.lstrip()) <= indent:
            break
        body.append(line)
    block = "\n".join(body)
    return f"<<<<<<< SEARCH\n{block}\n=======\n{' ' * indent}pass\n>>>>>>> REPLACE\n"


@pytest.mark.slow
@pytest.mark.parametrize("case", list(BAD_ANSWERS))
def test_malformed_patches_never_change_train_py(home: Path, controller, case: str) -> None:
    folder = _crashed_run(home, controller, f"bad-{case.replace(' ', '-')}")
    run_id = folder.name
    answer = BAD_ANSWERS[case] or _loop_deleting_patch().replace(BUG, 'rec["targets"]')
    llm = ScriptedChatModel(responses=[answer])
    out = _tick(compile_monitor_graph(llm, Connection(controller.store, controller)), run_id)
    assert out["decision"] == "FIX" and out["fixed"] is False
    assert (folder / "train.py").read_text() == BUGGY_TINY
    assert not (folder / "train_v1.py").exists()
    assert "train.py unchanged" in out["message"]
    assert json.loads((folder / "auto_state.json").read_text())["fix_attempts"] == 1


@pytest.mark.slow
def test_three_attempts_then_the_limit_even_after_a_restart(home: Path, controller) -> None:
    folder = _crashed_run(home, controller, "capped")
    connection = Connection(controller.store, controller)
    llm = ScriptedChatModel(responses=[], default="no patch here")
    for attempt in (1, 2):
        out = _tick(compile_monitor_graph(llm, connection, checkpointer=InMemorySaver()), "capped")
        assert out["fix_attempts"] == attempt
    # the assistant restarts: a fresh graph, a fresh thread; the counter comes from the run folder
    out = _tick(compile_monitor_graph(llm, connection), "capped")
    assert out["fix_attempts"] == 3
    calls_before = len(llm.calls)
    out = _tick(compile_monitor_graph(llm, connection), "capped")
    assert out["decision"] == "FIX" and out["fix_attempts"] == 3
    assert "limit (3 attempts) is reached" in out["message"]
    assert len(llm.calls) == calls_before  # no patch was requested
    assert (folder / "train.py").read_text() == BUGGY_TINY
    again = _tick(compile_monitor_graph(llm, connection), "capped")
    assert again["message"] is None  # told once


ALT_PATCH = GOOD_PATCH.replace(f"b - {BUG}", f"b - float({BUG})")


@pytest.mark.slow
def test_ask_policy_interrupts_with_the_diff_and_respects_the_answer(home: Path, controller) -> None:
    folder = _crashed_run(home, controller, "asked")
    connection = Connection(controller.store, controller)
    llm = ScriptedChatModel(responses=[GOOD_PATCH, GOOD_PATCH, ALT_PATCH])
    graph = compile_monitor_graph(llm, connection, policy="ask", checkpointer=InMemorySaver())
    config = monitor_thread("asked")
    out = graph.invoke({"run_id": "asked"}, config)
    question = out["__interrupt__"][0].value
    assert question["kind"] == "fix_approval" and "+        err = sum" in question["patch"]
    assert question["source"] == "llm" and question["warnings"] == [] and question["unsafe"] is False
    assert (folder / "train.py").read_text() == BUGGY_TINY  # nothing happens before the answer
    out = graph.invoke(Command(resume=False), config)
    assert out["fixed"] is False and "declined" in out["message"] and out["fix_attempts"] == 0
    assert (folder / "train.py").read_text() == BUGGY_TINY
    # the declined patch is not offered again: the model is told so and sends another one
    out = graph.invoke({"run_id": "asked"}, config)
    second = out["__interrupt__"][0].value
    assert "float(" in second["patch"] and len(llm.calls) == 3
    assert "declined this patch" in llm.calls[-1][-1].content
    # no answer (no terminal): nothing applied or counted; the next check offers it again without the LLM
    out = graph.invoke(Command(resume={"approved": None}), config)
    assert out["fix_status"] == "unanswered" and out["fix_attempts"] == 0
    fresh = compile_monitor_graph(llm, connection, policy="ask", checkpointer=InMemorySaver())
    out = fresh.invoke({"run_id": "asked"}, config)
    assert out["__interrupt__"][0].value["patch"] == second["patch"] and len(llm.calls) == 3
    out = fresh.invoke(Command(resume=True), config)
    assert out["fixed"] is True and out["fix_attempts"] == 1 and (folder / "train_v1.py").exists()
    assert "float(" in (folder / "train.py").read_text()


def test_policy_off_and_no_llm_tell_instead_of_fixing(home: Path) -> None:
    log = (
        'Traceback (most recent call last):\n  File "train.py", line 57, in loss_and_grad\n'
        "KeyError: 'targets'\n"
    )
    _make_run(home, "off", {"run_id": "off", "status": "failed", "pid": None}, [], log, BUGGY_TINY)
    out = _tick(
        compile_monitor_graph(
            ScriptedChatModel(responses=[FIX_VERDICT]), Connection.open(home), policy="off"
        ),
        "off",
    )
    assert out["decision"] == "FIX" and "auto-fix is off" in out["message"]
    # the same verdict is not asked again: it comes back from the run folder
    again = _tick(compile_monitor_graph(None, Connection.open(home)), "off")
    assert again["verdict_source"] == "llm" and again["message"] is None
    _make_run(home, "nollm", {"run_id": "nollm", "status": "failed", "pid": None}, [], log, BUGGY_TINY)
    out = _tick(compile_monitor_graph(None, Connection.open(home)), "nollm")
    assert out["decision"] == "FIX" and out["verdict_source"] == "rules (no LLM configured)"
    assert "no LLM is available to write a patch" in out["message"]
    assert not (home / "off" / "train_v1.py").exists() and not (home / "nollm" / "train_v1.py").exists()
