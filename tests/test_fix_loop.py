"""The fix loop of the monitor graph, with a hand-written scripted model and real processes.

Self-correction inside an attempt (wrong twice, then right), later attempts that must differ, the
verification after a relaunch (worked / worse and rolled back), crash recovery of a half-done fix,
honest accounting (unreachable LLM, corrupt state), symlinked scripts, and the cheap candidates that
come before the LLM (the fix ledger, known fixes).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from conftest import metric_steps, read_meta, wait_for
from fakes import ScriptedChatModel
from test_monitor_graph import BUG, BUGGY_TINY, TINY

from twinkle_auto.connection import Connection
from twinkle_auto.connection.control import RunController
from twinkle_auto.graphs.monitor import fixing
from twinkle_auto.graphs.monitor.graph import compile_monitor_graph, monitor_thread
from twinkle_auto.monitor.ledger import FixLedger, error_signature

FAST = {"STEP_SLEEP": "0", "TOTAL_STEPS": "60", "CKPT_EVERY": "10", "EVAL_EVERY": "20"}
ERR_LINE = '        err = sum(wi * xi for wi, xi in zip(w, x, strict=True)) + b - rec["targets"]'
TRACEBACK = (
    "Traceback (most recent call last):\n"
    '  File "train.py", line 57, in loss_and_grad\n'
    f"    {ERR_LINE.strip()}\n"
    "KeyError: 'targets'\n"
)


def _plan(anchor: str, replacement: str, line: int | None = None, summary: str = "Fix the key.") -> str:
    n = line if line is not None else BUGGY_TINY.splitlines().index(anchor) + 1
    edit = {"start_line": n, "end_line": n, "anchor": anchor, "replacement": replacement}
    return json.dumps({"summary": summary, "edits": [edit]})


GOOD_PLAN = _plan(ERR_LINE, ERR_LINE.replace('rec["targets"]', BUG), summary="Read the 'target' key.")


def _tick(graph, run_id: str):
    return graph.invoke({"run_id": run_id}, monitor_thread(run_id))


def _crashed(home: Path, controller, run_id: str, script: str = BUGGY_TINY, env: dict | None = None) -> Path:
    controller.start(run_id, script, env=env or FAST)
    wait_for(lambda: read_meta(home, run_id).get("exit_code") is not None, timeout=60)
    assert read_meta(home, run_id)["status"] == "failed"
    return home / run_id


def _ended(home: Path, run_id: str) -> bool:
    meta = read_meta(home, run_id)
    return meta.get("exit_code") is not None and meta.get("status") != "running"


def _state(folder: Path) -> dict:
    return json.loads((folder / "auto_state.json").read_text())


# ------------------------------------------------------------------------------ self-correction
def test_wrong_twice_then_right_is_one_attempt_and_the_model_is_told_exactly_why(tmp_path: Path) -> None:
    llm = ScriptedChatModel(
        responses=[
            "Sure! I would change the key to target.",  # no plan at all
            json.dumps(
                {"summary": "s", "edits": [{"anchor": 'err = rec["nope"]', "replacement": "err = 0.0"}]}
            ),
            GOOD_PLAN,
        ]
    )
    inp = fixing.AttemptInput("r", tmp_path, BUGGY_TINY, TRACEBACK, "KeyError 'targets'", "on")
    proposal = fixing.propose(llm, inp)
    assert proposal.outcome == "ok" and proposal.rounds == 3 and proposal.llm_calls == 3
    assert BUG in proposal.candidate.new_script and proposal.candidate.summary == "Read the 'target' key."
    second, third = llm.calls[1][-1].content, llm.calls[2][-1].content
    assert "could not be used: no edit plan found in the answer" in second
    assert "could not be used: edit 1: anchor" in third and "is not in the script; closest: line 56" in third
    assert max(proposal.prompt_tokens) <= 2500


def test_a_guard_refusal_is_fed_back_and_a_repeat_of_a_failed_patch_is_not_an_attempt(tmp_path: Path) -> None:
    unsafe = _plan(ERR_LINE, ERR_LINE.replace('rec["targets"]', BUG) + "\n        import os; os.system('id')")
    llm = ScriptedChatModel(responses=[unsafe, GOOD_PLAN])
    inp = fixing.AttemptInput("r", tmp_path, BUGGY_TINY, TRACEBACK, "", "on")
    proposal = fixing.propose(llm, inp)
    assert proposal.outcome == "ok" and proposal.rounds == 2
    assert "refused by the guards" in llm.calls[1][-1].content and "os.system" in llm.calls[1][-1].content
    # the same good patch failed before: offered three times, it is a repeat, never an attempt
    rejected = {proposal.candidate.hash: "this is the patch of attempt 1, which did not work (KeyError)"}
    again = fixing.propose(
        ScriptedChatModel(default=GOOD_PLAN),
        fixing.AttemptInput("r", tmp_path, BUGGY_TINY, TRACEBACK, "", "on", rejected=rejected),
    )
    assert again.outcome == "repeat" and again.candidate is None


def test_static_check_catches_undefined_names_in_edited_lines() -> None:
    new = BUGGY_TINY.replace('rec["targets"]', "normalise(rec)")
    assert fixing.static_problems(BUGGY_TINY, new) == [
        f"line {BUGGY_TINY.splitlines().index(ERR_LINE) + 1} uses 'normalise', which is not defined anywhere "
        "in the script (define or import it)"
    ]
    assert fixing.static_problems(BUGGY_TINY, BUGGY_TINY.replace('rec["targets"]', "(((")) != []
    assert fixing.static_problems(BUGGY_TINY, BUGGY_TINY.replace('rec["targets"]', BUG)) == []


# ------------------------------------------------------------------------------ verification
WORSE_LINE = "    return LR * min(1.0, step / WARMUP_STEPS)"
WORSE_PLAN = _plan(
    WORSE_LINE,
    "    return LR * min(1.0, step / (WARMUP_STEPS - 20))",
    line=TINY.splitlines().index(WORSE_LINE) + 1,
)
LEGACY_LINE = '        err = sum(wi * xi for wi, xi in zip(w, x, strict=True)) + b - rec["target"]'
LEGACY_PLAN = _plan(
    LEGACY_LINE,
    LEGACY_LINE.replace('rec["target"]', 'rec["target"] if "target" in rec else rec["label"]'),
    line=TINY.splitlines().index(LEGACY_LINE) + 1,
    summary="Accept records of the older export, which name the target 'label'.",
)


USELESS_LINE = '        x = rec["features"]'
USELESS_PLAN = _plan(USELESS_LINE, '        x = list(rec["features"])', summary="Copy the features.")


@pytest.mark.slow
def test_a_fix_that_leaves_the_same_error_is_rolled_back_before_the_next_attempt(
    home: Path, controller
) -> None:
    folder = _crashed(home, controller, "same")
    llm = ScriptedChatModel(responses=[USELESS_PLAN, GOOD_PLAN])
    graph = compile_monitor_graph(llm, Connection(controller.store, controller))
    first = _tick(graph, "same")
    assert first["fixed"] is True and 'list(rec["features"])' in (folder / "train.py").read_text()
    wait_for(lambda: _ended(home, "same"), timeout=60)
    second = _tick(graph, "same")  # verify: the same KeyError on the same line
    assert "the same error at the same place" in second["verify_message"], second["verify_message"]
    assert "rolled back" in second["verify_message"]
    history = _state(folder)["fixes"]
    assert history[0]["outcome"] == "failed" and history[0]["rolled_back_as"] == "train_v2.py"
    assert 'list(rec["features"])' in llm.calls[-1][-1].content  # attempt 1 is shown as failed
    text = (folder / "train.py").read_text()
    # attempt 2 started from the script that crashed, not from attempt 1's patch
    assert BUG in text and 'list(rec["features"])' not in text
    assert second["fixed"] is True and second["fix_attempts"] == 2
    wait_for(lambda: _ended(home, "same"), timeout=60)
    third = _tick(graph, "same")
    assert "attempt 2 worked" in third["verify_message"]
    outcomes = [(e.attempt, e.outcome) for e in FixLedger(home / "auto").entries() if e.run_id == "same"]
    assert outcomes == [(1, "failed"), (2, "worked")]


BROKEN_PLAN = _plan(ERR_LINE, ERR_LINE.replace('rec["targets"]', 'rec["target"] / len(rec["x"])'))


@pytest.mark.slow
def test_a_fix_whose_own_line_raises_is_rolled_back(home: Path, controller) -> None:
    folder = _crashed(home, controller, "broken")
    llm = ScriptedChatModel(responses=[BROKEN_PLAN, GOOD_PLAN])
    graph = compile_monitor_graph(llm, Connection(controller.store, controller))
    first = _tick(graph, "broken")
    assert first["fixed"] is True and 'len(rec["x"])' in (folder / "train.py").read_text()
    wait_for(lambda: _ended(home, "broken"), timeout=60)
    second = _tick(graph, "broken")  # KeyError 'x' raised on the very line the fix wrote
    assert "a new error in the lines the fix wrote" in second["verify_message"], second["verify_message"]
    assert "rolled back" in second["verify_message"]
    assert _state(folder)["fixes"][0]["outcome"] == "worse"
    text = (folder / "train.py").read_text()
    assert BUG in text and 'len(rec["x"])' not in text
    wait_for(lambda: _ended(home, "broken"), timeout=60)


def test_reading_a_name_before_the_script_assigns_it_is_caught_before_anything_runs() -> None:
    script = "import torch\nX = torch.randn(4, 3)\nfor step in range(3):\n    print(X.sum())\n"
    assert fixing.static_problems(script, script.replace("torch.randn(4, 3)", "X.view(4, 3)")) == [
        "line 2 reads 'X' before the script assigns it (first at line 2): the edit uses a value that does "
        "not exist yet"
    ]
    loop = "for i in range(3):\n    if i:\n        print(prev)\n    prev = i\n"
    assert fixing.static_problems(loop, loop.replace("print(prev)", "print(prev + 1)")) == []


@pytest.mark.slow
def test_a_fix_that_crashes_earlier_is_rolled_back_and_the_next_attempt_sees_it(
    home: Path, controller
) -> None:
    env = {**FAST, "CRASH_AT_STEP": "30"}
    folder = _crashed(home, controller, "worse", TINY, env)
    assert max(metric_steps(home, "worse")) == 29
    llm = ScriptedChatModel(responses=[WORSE_PLAN, LEGACY_PLAN])
    connection = Connection(controller.store, controller)
    graph = compile_monitor_graph(llm, connection)
    first = _tick(graph, "worse")
    assert first["fixed"] is True and "(WARMUP_STEPS - 20)" in (folder / "train.py").read_text(), first[
        "message"
    ]
    wait_for(lambda: _ended(home, "worse"), timeout=60)
    second = _tick(graph, "worse")  # verify: ZeroDivisionError before any step, the old crash was at 29
    assert "made it worse" in second["verify_message"], (
        _state(folder)["fixes"],
        metric_steps(home, "worse")[-5:],
    )
    assert "rolled back" in second["verify_message"]
    assert "ZeroDivisionError" in second["verify_message"]
    history = _state(folder)["fixes"]
    assert history[0]["outcome"] == "worse" and history[0]["rolled_back_as"] == "train_v2.py"
    assert (folder / "train_v2.py").read_text() != TINY and "(WARMUP_STEPS - 20)" in (
        folder / "train_v2.py"
    ).read_text()
    # the same tick tried again from the rolled-back script, seeing attempt 1 and the error it produced
    prompt = llm.calls[-1][-1].content
    assert "KeyError" in prompt and "ZeroDivisionError" in prompt and "WARMUP_STEPS - 20" in prompt
    assert second["fixed"] is True and second["fix_attempts"] == 2
    text = (folder / "train.py").read_text()
    assert 'rec["label"]' in text and "(WARMUP_STEPS - 20)" not in text
    wait_for(lambda: _ended(home, "worse"), timeout=60)
    third = _tick(graph, "worse")
    assert "attempt 2 worked" in third["verify_message"] and third["decision"] == "LGTM"
    outcomes = [(e.attempt, e.outcome) for e in FixLedger(home / "auto").entries() if e.run_id == "worse"]
    assert outcomes == [(1, "worse"), (2, "worked")]
    assert max(metric_steps(home, "worse")) == 60
    meta = read_meta(home, "worse")
    assert meta["script_version"] == 4 and sorted(p.name for p in folder.glob("train_v*.py")) == [
        "train_v1.py",
        "train_v2.py",
        "train_v3.py",
    ]


# ------------------------------------------------------------------------------ crash recovery
class _DiesAt(RunController):
    """A controller that dies like a killed assistant at one step of the fix (a BaseException)."""

    def __init__(self, store, where: str) -> None:
        super().__init__(store, stop_grace=5.0)
        self.where = where

    def update_script(self, run_id: str, new_text: str):
        if self.where == "before write":
            raise KeyboardInterrupt
        return super().update_script(run_id, new_text)

    def launch(self, run_id: str, **kwargs):
        if self.where == "before launch" and "auto-fix" in kwargs.get("reason", ""):
            raise KeyboardInterrupt
        result = super().launch(run_id, **kwargs)
        if self.where == "after launch" and "auto-fix" in kwargs.get("reason", ""):
            self._children.pop(result.pid, None)
            raise KeyboardInterrupt
        return result


@pytest.mark.slow
@pytest.mark.parametrize("where", ["before write", "before launch", "after launch"])
def test_a_fix_interrupted_anywhere_is_completed_once_without_asking_again(
    home: Path, controller, where: str
) -> None:
    run_id = f"cut-{where.replace(' ', '-')}"
    folder = _crashed(home, controller, run_id)
    dying = _DiesAt(controller.store, where)
    llm = ScriptedChatModel(responses=[GOOD_PLAN], default=AssertionError("asked again"))
    with pytest.raises(KeyboardInterrupt):
        _tick(compile_monitor_graph(llm, Connection(controller.store, dying)), run_id)
    pending = _state(folder).get("pending_fix")
    assert pending and pending["stage"] == ("approved" if where == "before write" else "written")
    out = _tick(compile_monitor_graph(llm, Connection(controller.store, controller)), run_id)
    if where == "after launch":
        assert "recorded after an interruption" in out["verify_message"]
    else:
        assert out["fixed"] is True and "interrupted assistant" in out["message"]
    wait_for(lambda: _ended(home, run_id), timeout=60)
    state = _state(folder)
    meta = read_meta(home, run_id)
    assert state["fix_attempts"] == 1 and state.get("pending_fix") is None
    assert meta["launch_count"] == 2 and meta["status"] == "finished"
    assert sorted(p.name for p in folder.glob("train_v*.py")) == ["train_v1.py"]
    assert (folder / "train_v1.py").read_text() == BUGGY_TINY and BUG in (folder / "train.py").read_text()
    assert meta["script_version"] == 2  # meta.json and the archive agree
    assert len(llm.calls) == 1  # the patch; a code error needs no verdict call


# ------------------------------------------------------------------------------ accounting
def _dead_run(home: Path, run_id: str, script: str = BUGGY_TINY) -> Path:
    folder = home / run_id
    folder.mkdir()
    (folder / "meta.json").write_text(json.dumps({"run_id": run_id, "status": "failed", "pid": None}))
    (folder / "output.log").write_text(TRACEBACK)
    (folder / "train.py").write_text(script)
    return folder


def test_an_unreachable_llm_is_not_an_attempt(home: Path) -> None:
    folder = _dead_run(home, "offline")
    llm = ScriptedChatModel(responses=[], default=ConnectionError("Connection refused"))
    out = _tick(compile_monitor_graph(llm, Connection.open(home)), "offline")
    assert out["decision"] == "FIX" and out["fix_status"] == "unreachable" and out["fix_attempts"] == 0
    assert "not counted" in out["message"] and (folder / "train.py").read_text() == BUGGY_TINY
    assert int(_state(folder).get("fix_attempts") or 0) == 0


def test_a_corrupt_state_fails_closed_and_says_so(home: Path) -> None:
    folder = _dead_run(home, "corrupt")
    (folder / "auto_state.json").write_text('{"fix_attempts": 1, "fixes": [')
    llm = ScriptedChatModel(responses=[], default=AssertionError("no patch may be asked"))
    graph = compile_monitor_graph(llm, Connection.open(home))
    out = _tick(graph, "corrupt")
    assert out["fix_status"] == "corrupt" and "auto_state.json was corrupt" in out["message"]
    assert "reached the auto-fix limit" in out["message"]
    assert (folder / "auto_state.json.corrupt").read_text() == '{"fix_attempts": 1, "fixes": ['
    assert _state(folder)["corrupt"]["kept_as"] == "auto_state.json.corrupt"
    again = _tick(compile_monitor_graph(llm, Connection.open(home)), "corrupt")
    assert again["fix_status"] == "corrupt" and again["message"] is None  # still closed, told once
    assert (folder / "train.py").read_text() == BUGGY_TINY


# ------------------------------------------------------------------------------ symlinks
def test_a_script_linked_from_outside_is_neither_sent_nor_written(home: Path, tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere.py"
    outside.write_text(BUGGY_TINY)
    folder = _dead_run(home, "linked")
    (folder / "train.py").unlink()
    (folder / "train.py").symlink_to(outside)
    llm = ScriptedChatModel(responses=[], default=AssertionError("the script must not be sent"))
    out = _tick(compile_monitor_graph(llm, Connection.open(home)), "linked")
    assert out["fix_status"] == "outside" and str(outside) in out["message"]
    assert not llm.calls and outside.read_text() == BUGGY_TINY
    assert (folder / "train.py").is_symlink()


@pytest.mark.slow
def test_a_script_linked_inside_is_archived_as_a_copy_and_its_target_kept(home: Path, controller) -> None:
    folder = _crashed(home, controller, "linked-in")
    real = folder / "src" / "real_train.py"
    real.parent.mkdir()
    real.write_text(BUGGY_TINY)
    (folder / "train.py").unlink()
    (folder / "train.py").symlink_to(real)
    llm = ScriptedChatModel(responses=[GOOD_PLAN])
    out = _tick(compile_monitor_graph(llm, Connection(controller.store, controller)), "linked-in")
    assert out["fixed"] is True
    archive = folder / "train_v1.py"
    assert not archive.is_symlink() and archive.read_text() == BUGGY_TINY
    assert not (folder / "train.py").is_symlink() and BUG in (folder / "train.py").read_text()
    assert real.read_text() == BUGGY_TINY
    wait_for(lambda: _ended(home, "linked-in"), timeout=60)


# ------------------------------------------------------------------------------ before the LLM
@pytest.mark.slow
def test_a_fix_that_worked_in_another_run_is_offered_first(home: Path, controller) -> None:
    from twinkle_auto.monitor.patching import unified_diff

    diff = unified_diff(BUGGY_TINY, BUGGY_TINY.replace('rec["targets"]', BUG))
    FixLedger(home / "auto").record(
        run_id="earlier",
        attempt=1,
        signature=error_signature(TRACEBACK),
        summary="Read 'target'.",
        diff=diff,
        outcome="worked",
    )
    folder = _crashed(home, controller, "again")
    llm = ScriptedChatModel(responses=[], default=AssertionError("the LLM must not write this patch"))
    out = _tick(compile_monitor_graph(llm, Connection(controller.store, controller)), "again")
    assert out["fixed"] is True and "worked for this error in run earlier" in out["message"]
    assert BUG in (folder / "train.py").read_text() and not llm.calls
    wait_for(lambda: _ended(home, "again"), timeout=60)


KNOWN = """class TrainingArguments:
    def __init__(self, output_dir, eval_strategy="no"):
        self.output_dir, self.eval_strategy = output_dir, eval_strategy


args = TrainingArguments(output_dir=".", evaluation_strategy="steps")
print("strategy", args.eval_strategy)
"""


@pytest.mark.slow
def test_a_known_fix_needs_no_llm_and_says_what_it_is(home: Path, controller) -> None:
    folder = _crashed(home, controller, "renamed", KNOWN)
    out = _tick(compile_monitor_graph(None, Connection(controller.store, controller)), "renamed")
    assert out["fixed"] is True and "known fix: renamed keyword" in out["message"], out["message"]
    assert "eval_strategy=" in (folder / "train.py").read_text()
    assert "+args = TrainingArguments" in out["message"]  # the diff is part of the message
    wait_for(lambda: _ended(home, "renamed"), timeout=30)
    assert read_meta(home, "renamed")["status"] == "finished"


def test_answers_after_the_first_are_sampled_so_a_failed_patch_is_not_sent_again() -> None:
    from langchain_openai import ChatOpenAI

    llm = ChatOpenAI(base_url="http://127.0.0.1:9/v1", api_key="x", model="m", temperature=0)
    assert fixing.with_temperature(llm, 0) is llm  # the first answer: the configured model as it is
    assert fixing.with_temperature(llm, 1).temperature == 0.5
    assert fixing.with_temperature(llm, 7).temperature == 0.8
    assert llm.temperature == 0  # a copy: the shared model is untouched
    scripted = ScriptedChatModel(responses=[])
    assert fixing.with_temperature(scripted, 2) is scripted  # no temperature setting: used as it is


def test_after_an_edit_plan_that_does_not_apply_the_failing_statement_alone_is_asked_for(
    tmp_path: Path,
) -> None:
    unchanged = _plan(ERR_LINE, ERR_LINE)  # the lines sent back as they are
    rewrite = json.dumps(
        {"summary": "Read the 'target' key.", "replacement": ERR_LINE.replace('rec["targets"]', BUG)}
    )
    llm = ScriptedChatModel(responses=[unchanged, rewrite])
    inp = fixing.AttemptInput("r", tmp_path, BUGGY_TINY, TRACEBACK, "", "on")
    proposal = fixing.propose(llm, inp)
    assert proposal.outcome == "ok" and proposal.rounds == 2, proposal.reason
    assert BUG in proposal.candidate.new_script
    second = llm.calls[1][-1].content
    assert (
        "the edits change nothing" in second
        and "rewrite only the statement that failed, lines 57-57" in second
    )
    assert ERR_LINE.strip() in second


def test_the_failing_statement_spans_all_its_lines() -> None:
    script = "x = 1\nfor i in range(2):\n    y = f(\n        x,\n        i)\n"
    assert fixing.failing_statement(script, [3]) == (3, 5)
    assert fixing.failing_statement(script, [2]) is None  # a loop header alone is not a statement to rewrite


@pytest.mark.slow
@pytest.mark.torch
def test_a_fix_whose_lines_raise_after_passing_the_old_crash_step_is_still_rolled_back(
    home: Path, controller, monkeypatch: pytest.MonkeyPatch
) -> None:
    """fixbench c09 with the 1.5B model's first answer: `retain_graph=True` gets one step further, then the
    same line raises an in-place error. The fix is broken; it must not be the base of the next attempt.
    The catalogue's repair of this crash (detach the carried state) is set aside, so the model's patch is
    the one tried."""
    pytest.importorskip("torch")
    from twinkle_auto.graphs.monitor import nodes

    monkeypatch.setattr(nodes, "find_known_fix", lambda script, traceback: None)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from bench_fix import case_env, load_cases

    case = load_cases(["c09"])[0]
    controller.start("bptt", case.script, env=case_env())
    wait_for(lambda: _ended(home, "bptt"), timeout=60)
    n = case.script.splitlines().index("    loss.backward()") + 1
    retain = _plan(
        "    loss.backward()", "    loss.backward(retain_graph=True)", line=n, summary="Retain the graph."
    )
    graph = compile_monitor_graph(
        ScriptedChatModel(responses=[retain]), Connection(controller.store, controller)
    )
    assert _tick(graph, "bptt")["fixed"] is True
    wait_for(lambda: _ended(home, "bptt"), timeout=60)
    assert max(metric_steps(home, "bptt")) >= 2  # it did get past the old crash step (1)
    second = _tick(graph, "bptt")
    assert "a new error in the lines the fix wrote" in second["verify_message"], second["verify_message"]
    assert "retain_graph" not in (home / "bptt" / "train.py").read_text()


def test_an_edit_that_removes_the_only_assignment_of_a_name_still_read_is_caught() -> None:
    script = "import torch\nmask = torch.ones(3)\nout = torch.sigmoid(mask)\n"
    assert fixing.static_problems(script, script.replace("mask = torch.ones(3)", "torch.ones(3)")) == [
        "the edit removes the only assignment of 'mask', which line 3 still reads"
    ]
    assert fixing.static_problems(script, script.replace("torch.ones(3)", "torch.ones(3).bool()")) == []


def test_an_environment_error_on_a_line_the_fix_wrote_is_not_blamed_on_the_fix(
    home: Path, controller
) -> None:
    """A disk that fills up or a GPU out of memory on a fixed line says nothing about the fix: only a code
    error raised there rolls the fix back as broken (the other rules judge the attempt)."""
    from twinkle_auto.graphs.monitor.context import MonitorContext
    from twinkle_auto.graphs.monitor.nodes import _raised_in_fixed_lines
    from twinkle_auto.monitor.thresholds import DEFAULT_THRESHOLDS

    folder = home / "envfix"
    folder.mkdir()
    (folder / "meta.json").write_text(json.dumps({"run_id": "envfix", "status": "failed"}))
    old = "import json\nrows = [json.loads(x) for x in open('d.jsonl')]\nprint(rows[0]['targets'])\n"
    new = old.replace("['targets']", "['target']")
    (folder / "train_v1.py").write_text(old)
    (folder / "train.py").write_text(new)
    ctx = MonitorContext(
        None, Connection(controller.store, controller), "on", DEFAULT_THRESHOLDS, 3, use_llm=False
    )

    def died(error: str) -> str:
        return f"Traceback (most recent call last):\n  File \"train.py\", line 3, in <module>\n    print(rows[0]['target'])\n{error}\n"

    fix = {"archived_version": 1}
    assert _raised_in_fixed_lines(ctx, "envfix", fix, died("KeyError: 'target'"))
    assert not _raised_in_fixed_lines(ctx, "envfix", fix, died("OSError: [Errno 28] No space left on device"))
    oom = "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB"
    assert not _raised_in_fixed_lines(ctx, "envfix", fix, died(oom))


def test_every_round_stays_within_the_prompt_budget_however_long_the_feedback_grows(tmp_path: Path) -> None:
    """A long failing function, two earlier attempts' patches and long wrong answers: each round's prompt is
    at most PROMPT_TOKENS, and the failing line and the error are in every one of them."""
    body = "".join(
        f"    v{i} = rec['x'] * {i} + len(str(v{i - 1} if {i} > 1 else 0))\n" for i in range(1, 400)
    )
    script = f"def step(rec):\n    v0 = 0\n{body}    return rec['targets']\n\nstep({{'x': 1}})\n"
    n = script.splitlines().index("    return rec['targets']") + 1
    traceback = (
        "Traceback (most recent call last):\n"
        f"  File \"train.py\", line {n + 2}, in <module>\n    step({{'x': 1}})\n"
        f"  File \"train.py\", line {n}, in step\n    return rec['targets']\n"
        "KeyError: 'targets'\n"
    )
    wordy = json.dumps(
        {
            "summary": "x" * 400,
            "edits": [{"anchor": "    return rec['nope'] " + "y" * 600, "replacement": "pass"}],
        }
    )
    history = [
        {
            "attempt": a,
            "diff": "-    return rec['targets']\n+" + "z" * 900,
            "outcome": "failed",
            "error": "E" * 300,
        }
        for a in (1, 2)
    ]
    llm = ScriptedChatModel(default=wordy)
    inp = fixing.AttemptInput("r", tmp_path, script, traceback, "d" * 600, "on", history=history, attempt=3)
    proposal = fixing.propose(llm, inp)
    assert proposal.rounds == fixing.ROUNDS_PER_ATTEMPT and len(llm.calls) == fixing.ROUNDS_PER_ATTEMPT
    assert max(proposal.prompt_tokens) <= fixing.PROMPT_TOKENS, proposal.prompt_tokens
    for call in llm.calls:
        text = "\n".join(str(m.content) for m in call)
        assert "KeyError: 'targets'" in text and "return rec['targets']" in text
        assert "could not be used" in text or call is llm.calls[0]  # why the last answer failed stays
