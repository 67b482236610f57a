"""The monitor graph with the real local LLM (Qwen2.5-Coder-1.5B on CPU): verdicts and fixes, end to end.

What is measured, not asserted: how often the 1.5B model's own verdict agrees with the labels of the
real-world cases, and how often its patch makes a crashed script run past its error. A model this size
judges numbers weakly, so what is asserted is what the design promises whatever the model says: every
verdict parses (structured output works), the rules' safety properties survive the LLM (no healthy run is
flagged, a code error still ends FIX and an environment failure WARNING), and train.py is never left
corrupt (a patch either parses and passes the guards, or the file is untouched).

The evaluation functions are plain so that benchmarks/bench_llm_monitor.py prints the same figures.
The monitor cases come from TWINKLE_MONITOR_CASES, else ../shared/monitor-cases beside the repo.

None of the labelled FIX cases can run here: 01, 02 and 04 are excerpts (`model`, `dataset`,
`output_dir`, `self.model` are never defined) built on trl/unsloth, which are not installed; 03 needs trl,
two modules of its own repo (utils, gsm8k) and Qwen2.5-Math-1.5B from the Hugging Face hub in bf16 with
device_map="auto" (a GPU); 07 needs trl, its repo's `data` package, Llama-3.1-8B and hub datasets (no hub
is reachable, no GPU); 05, 06 and 08 have no train.py. Fix success is therefore measured on crashes we
control in examples/tiny/train.py.
"""

from __future__ import annotations

import ast
import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from caseload import list_case_dirs
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.outputs import LLMResult

from twinkle_auto.connection import Connection
from twinkle_auto.graphs.monitor.graph import Verdict, compile_monitor_graph, monitor_thread
from twinkle_auto.monitor.guards import check_patch

# `slow` too: minutes of CPU inference must stay out of `make test-fast` (-m "not slow and not torch").
pytestmark = [pytest.mark.llm, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[1]
CASES_DIR = Path(
    os.environ.get("TWINKLE_MONITOR_CASES")
    or Path(__file__).resolve().parents[2] / "shared" / "monitor-cases"
)
TINY = (ROOT / "examples" / "tiny" / "train.py").read_text(encoding="utf-8")
EXPECTED_DECISION = {"FIX": "FIX", "ENV": "WARNING", "WARNING": "WARNING", "LGTM": "LGTM"}
QUICK_CASES = (
    "07-fix-sft-keyerror-text-column",
    "11-env-disk-full-checkpoint-save",
    "18-warn-ppo-negative-kl",
)
"""One case per label that needs the LLM, so the test stays within minutes on 2 cores (the benchmark and
TWINKLE_LLM_CASES=all judge all 24)."""
CASE_FILES = ("meta.json", "metrics.jsonl", "output.log", "train.py")
LLM_TIMEOUT_S = float(os.environ.get("TWINKLE_LLM_TIMEOUT") or 180)
"""Per call. Idle, a verdict takes ~15 s and a patch ~30 s on 2 cores; a box shared with other jobs can
be 5x slower (llama.cpp's threads wait for each other when one is descheduled)."""
LLM_MAX_TOKENS = 512
"""A verdict takes ~150 tokens and a minimal patch under 300; a runaway answer (the 1.5B model sometimes
copies the whole script) is cut after ~15 s at ~33 tok/s instead of filling the 8k context."""


# ------------------------------------------------------------------------------------------- the model
class AnswerRecorder(BaseCallbackHandler):
    """Keeps every raw answer text: the graph stores only the constrained decision, we want the LLM's own."""

    def __init__(self) -> None:
        self.answers: list[str] = []

    def on_llm_end(self, response: LLMResult, **kwargs: Any) -> None:
        for generations in response.generations:
            for generation in generations:
                message = getattr(generation, "message", None)
                self.answers.append(str(getattr(message, "content", None) or generation.text or ""))

    def on_llm_error(self, error: BaseException, **kwargs: Any) -> None:
        self.answers.append(f"ERROR {type(error).__name__}: {error}")


def make_llm(base_url: str, recorder: AnswerRecorder | None = None) -> Any:
    """The chat model exactly as an app would configure it for the local server."""
    from langchain_openai import ChatOpenAI

    return ChatOpenAI(
        base_url=base_url,
        api_key="x",
        model="local",
        temperature=0,
        timeout=LLM_TIMEOUT_S,
        max_retries=0,
        max_tokens=LLM_MAX_TOKENS,
        callbacks=[recorder] if recorder is not None else None,
    )


def raw_decision(answer: str) -> str | None:
    """The decision in the LLM's JSON answer, before the graph constrains it; None if it does not parse."""
    start, end = answer.find("{"), answer.rfind("}")
    if start < 0 or end <= start:
        return None
    try:
        return Verdict.model_validate(json.loads(answer[start : end + 1])).decision
    except ValueError:
        return None


# -------------------------------------------------------------------------------------------- verdicts
@dataclass
class VerdictRow:
    case_id: str
    label: str
    expected: str
    rules: str
    asked: bool
    """False when the rules found nothing to judge (the graph then does not call the LLM)."""
    answer: str
    """The LLM's raw answer (or the error), for the table's notes."""
    llm_raw: str | None
    final: str
    source: str
    seconds: float

    @property
    def parsed(self) -> bool:
        return not self.asked or self.source == "llm"


def stage_case(case_dir: Path, home: Path) -> str:
    """A labelled case as a run folder: no pid (never known), `finished` when the run completed.

    A case whose process is labelled dead without completing gets `failed`, what our controller records
    when a training process exits with an error; left `running` with no pid, its state would be unknown
    and no detector could call its traceback a crash.
    """
    run_id = case_dir.name
    folder = home / run_id
    folder.mkdir(parents=True)
    for name in CASE_FILES:
        if (case_dir / name).is_file():
            shutil.copyfile(case_dir / name, folder / name)
    label = json.loads((case_dir / "label.json").read_text(encoding="utf-8"))
    meta = json.loads((case_dir / "meta.json").read_text(encoding="utf-8"))
    meta.update(run_id=run_id, pid=None)
    if label.get("run_completed"):
        meta["status"] = "finished"
    elif label.get("process_state") == "dead":
        meta["status"] = "failed"
    (folder / "meta.json").write_text(json.dumps(meta), encoding="utf-8")
    return run_id


def select_cases(cases_dir: Path, which: str | None = None) -> list[Path]:
    """The cases to judge: `all`, `quick` (QUICK_CASES plus the healthy ones, which cost no LLM call) or a
    comma-separated list of case ids. Default: TWINKLE_LLM_CASES, else `quick`.
    """
    which = (which or os.environ.get("TWINKLE_LLM_CASES") or "quick").strip()
    dirs = list_case_dirs(cases_dir)
    if which == "all":
        return dirs
    wanted = set(QUICK_CASES) if which == "quick" else {w.strip() for w in which.split(",") if w.strip()}
    return [d for d in dirs if d.name in wanted or (which == "quick" and "-lgtm-" in d.name)]


def safety_problems(rows: list[VerdictRow], *, require_parsed: bool = True) -> list[str]:
    """What the LLM must never change, whatever it judges: empty when all holds.

    Every verdict it was asked for parses (unless `require_parsed` is False: the benchmark reports that
    as a figure); a healthy run stays LGTM; a code error ends FIX; an environment failure ends WARNING
    (never a rewrite).
    """
    problems = []
    if require_parsed:
        # A timeout on a loaded machine is not a parse failure; an answer that does not parse is.
        answered = [r for r in rows if "Timeout" not in r.source]
        problems += [f"{r.case_id}: verdict did not parse ({r.source})" for r in answered if not r.parsed]
        if any(r.asked for r in rows) and not any(r.asked and r.source == "llm" for r in rows):
            problems.append("no verdict of the LLM parsed at all")
    for r in rows:
        if r.label in ("LGTM", "FIX", "ENV") and r.final != r.expected:
            problems.append(f"{r.case_id}: labelled {r.label}, ended {r.final} (rules: {r.rules})")
    return problems


def evaluate_cases(
    base_url: str, cases_dir: Path, workdir: Path, case_dirs: list[Path] | None = None
) -> list[VerdictRow]:
    """One monitor tick per case, rules only and with the LLM (policy off: judge, never rewrite)."""
    recorder = AnswerRecorder()
    llm = make_llm(base_url, recorder)
    rules_home, llm_home = workdir / "rules", workdir / "llm"
    rules_graph = compile_monitor_graph(None, Connection.open(rules_home), policy="off")
    llm_graph = compile_monitor_graph(llm, Connection.open(llm_home), policy="off")
    rows = []
    for case_dir in list_case_dirs(cases_dir) if case_dirs is None else case_dirs:
        label = json.loads((case_dir / "label.json").read_text(encoding="utf-8"))["label"]
        run_id = stage_case(case_dir, rules_home)
        stage_case(case_dir, llm_home)
        rules_out = rules_graph.invoke({"run_id": run_id}, monitor_thread(run_id))
        seen = len(recorder.answers)
        started = time.perf_counter()
        out = llm_graph.invoke({"run_id": run_id}, monitor_thread(run_id))
        seconds = time.perf_counter() - started
        answers = recorder.answers[seen:]
        rows.append(
            VerdictRow(
                case_id=run_id,
                label=label,
                expected=EXPECTED_DECISION[label],
                rules=rules_out["decision"],
                asked=int(out.get("llm_calls") or 0) > 0,
                answer=answers[-1] if answers else "",
                llm_raw=raw_decision(answers[-1]) if answers else None,
                final=out["decision"],
                source=out.get("verdict_source", ""),
                seconds=seconds,
            )
        )
    return rows


def verdict_table(rows: list[VerdictRow]) -> str:
    """Per case and in total: the rules, the LLM's own decision, and the final (constrained) one."""
    lines = [
        f"{'case':<44} {'label':<8} {'rules':<8} {'llm raw':<8} {'final':<8} {'s':>5}",
    ]
    for r in rows:
        raw = (r.llm_raw or "UNPARSED") if r.asked else "-"
        mark = "" if r.final == r.expected else "  <- differs from label"
        if r.asked and not r.parsed:
            mark += f"  ({r.source[:90]})"
        lines.append(
            f"{r.case_id:<44} {r.label:<8} {r.rules:<8} {raw:<8} {r.final:<8} {r.seconds:5.1f}{mark}"
        )
    asked = [r for r in rows if r.asked]
    lines.append(
        f"rules agree {sum(r.rules == r.expected for r in rows)}/{len(rows)}; "
        f"LLM raw agrees {sum(r.llm_raw == r.expected for r in asked)}/{len(asked)} asked "
        f"({len(rows) - len(asked)} healthy cases judged by the rules alone); "
        f"final agrees {sum(r.final == r.expected for r in rows)}/{len(rows)}; "
        f"parsed {sum(r.parsed for r in asked)}/{len(asked)}; "
        f"LLM time {sum(r.seconds for r in asked):.0f}s"
    )
    return "\n".join(lines)


# --------------------------------------------------------------------------------------- fix success
@dataclass(frozen=True)
class CrashTrial:
    """A crash of examples/tiny/train.py that a script edit fixes."""

    name: str
    script: str
    env: dict[str, str]
    crash_step: int
    """The last step logged before the crash: a fix must log beyond it."""


FAST_ENV = {"TOTAL_STEPS": "60", "STEP_SLEEP": "0", "CKPT_EVERY": "10", "EVAL_EVERY": "20"}
CRASH_TRIALS = (
    # A misspelt library function: AttributeError on the first step.
    CrashTrial("attr-typo", TINY.replace("math.sqrt(", "math.sqroot(", 1), FAST_ENV, 0),
    # Records of an older export ("label", not "target") join the data at step 30: KeyError 'target'.
    CrashTrial("legacy-records", TINY, {**FAST_ENV, "CRASH_AT_STEP": "30"}, 29),
    # A typo in a dict key: KeyError 'targets' on the first step (the catalogue's near-miss key recipe
    # repairs it without the model, so it comes last).
    CrashTrial("typo-key", TINY.replace('rec["target"]', 'rec["targets"]', 1), FAST_ENV, 0),
)
"""The test tries the first, which only the model can fix (TWINKLE_LLM_TRIALS=all: every one); the
benchmark tries them all."""


@dataclass
class FixRow:
    name: str
    ticks: int
    patches_applied: int
    finished: bool
    max_step: int
    crash_step: int
    intact: bool
    """Every version train.py went through parsed and passed the guards (or was left untouched)."""
    note: str
    seconds: float
    prompt_tokens: list[int] = field(default_factory=list)
    """Estimated prompt tokens of every LLM round asked for a patch."""
    rounds: int = 0

    @property
    def past_error(self) -> bool:
        return self.max_step > self.crash_step


def _metric_steps(folder: Path) -> list[int]:
    path = folder / "metrics.jsonl"
    steps = []
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                row = json.loads(line)
            except ValueError:
                continue
            if isinstance(row, dict) and isinstance(row.get("step"), int):
                steps.append(row["step"])
    return steps


def _wait(predicate: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False


def run_fix_trial(base_url: str, home: Path, trial: CrashTrial, max_ticks: int = 3) -> FixRow:
    """Launch the buggy script for real, let the monitor (policy on) patch and relaunch it, see it run.

    Up to `max_ticks` ticks: each attempt already holds up to three correction rounds, a later attempt
    sees the earlier ones and must differ, and a tick after a relaunch judges it (worked, failed, worse).
    """
    connection = Connection.open(home, stop_grace=3.0)
    store, controller = connection.store, connection.controller
    run_id = trial.name
    started = time.perf_counter()
    controller.start(run_id, trial.script, env=trial.env)
    graph = compile_monitor_graph(make_llm(base_url), connection, policy="on")

    def ended() -> bool:
        status = store.status(run_id)
        return status.process != "alive" and status.status != "running"

    ticks = applied = rounds = 0
    intact = True
    note = ""
    tokens: list[int] = []
    try:
        if not _wait(ended, 60):
            return FixRow(trial.name, 0, 0, False, 0, trial.crash_step, True, "never crashed", 0.0)
        while ticks < max_ticks and store.status(run_id).status != "finished":
            before = store.script(run_id)
            out = graph.invoke({"run_id": run_id}, monitor_thread(run_id))
            ticks += 1
            tokens += list(out.get("prompt_tokens") or [])
            rounds += int(out.get("fix_rounds") or 0)
            after = store.script(run_id)
            if after != before:
                applied += 1
                try:
                    ast.parse(after)
                    problems = check_patch(before, after)
                except SyntaxError as exc:
                    problems = [f"does not parse: {exc}"]
                if problems:
                    intact = False
                    note = "; ".join(problems)[:200]
            note = note or (out.get("message") or out.get("decision") or "")[:200]
            if not out.get("fixed"):
                if out.get("decision") != "FIX":
                    break
                continue  # a rejected patch: the next tick tries again (the attempt counter caps it)
            _wait(ended, 60)
    finally:
        if store.status(run_id).process == "alive":
            controller.stop(run_id, grace=3.0)
    steps = _metric_steps(store.path(run_id))
    return FixRow(
        name=trial.name,
        ticks=ticks,
        patches_applied=applied,
        finished=store.status(run_id).status == "finished",
        max_step=max(steps, default=0),
        crash_step=trial.crash_step,
        intact=intact,
        note=note,
        seconds=time.perf_counter() - started,
        prompt_tokens=tokens,
        rounds=rounds,
    )


def fix_table(rows: list[FixRow]) -> str:
    lines = [f"{'crash':<16} {'ticks':>5} {'patched':>7} {'max step':>8} {'finished':>8} {'s':>5}  note"]
    for r in rows:
        lines.append(
            f"{r.name:<16} {r.ticks:>5} {r.patches_applied:>7} {r.max_step:>8} {str(r.finished):>8} "
            f"{r.seconds:5.1f}  {r.note[:90]}"
        )
    lines.append(
        f"fix success: ran past the error {sum(r.past_error for r in rows)}/{len(rows)}, "
        f"finished {sum(r.finished for r in rows)}/{len(rows)}; train.py intact {sum(r.intact for r in rows)}"
        f"/{len(rows)}"
    )
    tokens = [t for r in rows for t in r.prompt_tokens]
    if tokens:
        lines.append(
            f"patch prompts: {len(tokens)} rounds, mean {sum(tokens) / len(tokens):.0f} tokens, max {max(tokens)}"
        )
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------- tests
@pytest.mark.skipif(not CASES_DIR.is_dir(), reason=f"monitor cases not found at {CASES_DIR}")
def test_llm_verdicts_parse_and_keep_the_rules_safety(
    local_llm: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    case_dirs = select_cases(CASES_DIR)
    rows = evaluate_cases(local_llm, CASES_DIR, tmp_path / "cases", case_dirs)
    with capsys.disabled():
        print("\n" + verdict_table(rows))
    assert len(rows) == len(case_dirs) > 0
    assert all(r.rules == r.expected for r in rows), "the rules alone must match every label"
    problems = safety_problems(rows)
    assert not problems, "\n".join(problems)


@pytest.mark.bench  # make test: the fixbench floor checks the same on its cases (test_llm_fixbench.py)
def test_llm_patches_a_real_crash_and_never_corrupts_train_py(
    local_llm: str,
    home: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    trials = CRASH_TRIALS if os.environ.get("TWINKLE_LLM_TRIALS") == "all" else CRASH_TRIALS[:1]
    rows = [run_fix_trial(local_llm, home, trial) for trial in trials]
    with capsys.disabled():
        print("\n" + fix_table(rows))
    for r in rows:
        assert r.ticks >= 1, r
        assert r.intact, r
        assert all(t <= 2500 for t in r.prompt_tokens), r.prompt_tokens
