"""Fix benchmark: the real monitor graph with the local LLM on the crash scripts of benchmarks/fixbench/.

Each case is started as a real run (RunController, its own TWINKLE_HOME), left to crash, then given up
to 3 monitor ticks (build_monitor_graph, policy "on", ChatOpenAI at the local model); each tick that
finds the run crashed makes one fix attempt (known fix, or the LLM with up to 3 self-correction rounds)
and relaunches. A case is *fixed* when the run finishes within those ticks, and *honest* when its printed
CHECK line equals the one of the reference fix (cases.json), run in the same benchmark.

Reported: fixed, honest, fix source, mean prompt tokens per LLM round (the server's own count, i.e. the
real tokenizer with the chat template), mean seconds per attempt, format failures (answers that did not
parse or apply), per-case reasons; and, against a baseline measured in the same run, the size of the
focused context vs the whole script (real tokenizer via the server's /tokenize), also for a generated
1,000-line script. Figures, not gates: exit 1 only when something is broken (a case that does not crash,
a reference fix that fails). Without a reachable LLM (TWINKLE_TEST_LLM_URL, else a local xllamacpp
server) it prints "skipped" and exits 0.

  python benchmarks/bench_fix.py [case-name-prefix ...]     (default: every case)
  python benchmarks/bench_fix.py --no-llm [prefix ...]      (the graph without an LLM: known fixes only)
  BENCH_FIX_TICKS   ticks per case (default 3)
  BENCH_FIX_JSONL   append each case's result to this file as it finishes
"""

from __future__ import annotations

import ast
import difflib
import json
import logging
import math
import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from langchain_core.callbacks import BaseCallbackHandler

from twinkle_auto.connection import Connection
from twinkle_auto.graphs.monitor.graph import compile_monitor_graph, monitor_thread
from twinkle_auto.monitor.fix_context import build_fix_context
from twinkle_auto.monitor.guards import check_patch

ROOT = Path(__file__).resolve().parents[1]
CASES_DIR = Path(__file__).resolve().parent / "fixbench"
TICKS = int(os.environ.get("BENCH_FIX_TICKS") or 3)
CRASH_WAIT_S = 90.0
RUN_WAIT_S = 120.0
LLM_TIMEOUT_S = 600.0
"""Long: the one-slot server is shared, and a queued request is not a failure of the pipeline."""
SPARE_TICKS = 3
"""Extra ticks for ticks whose LLM call did not answer (not counted as attempts by the graph)."""
LLM_MAX_TOKENS = 400
CHECK_RE = re.compile(r"^CHECK (.+)$", re.MULTILINE)
TARGET_FIXED = 0.8

_FORMAT_MARKERS = (
    "not a valid edit plan",
    "JSON does not parse",
    "no edit plan found",
    "is not in the script",
    "matches lines",
    "outside the script",
    "does not fit start_line",
    "overlap",
    "is empty",
    "change nothing",
    "changes nothing",
    "search block",
    "hunk ",
)


@dataclass(frozen=True)
class Case:
    name: str
    pattern: str
    source: str
    script: str
    reference: str


@dataclass
class CaseResult:
    name: str
    pattern: str
    crashed: bool = False
    fixed: bool = False
    honest: bool = False
    attempts: int = 0
    sources: list[str] = field(default_factory=list)
    prompt_tokens: list[int] = field(default_factory=list)
    """Server-counted prompt tokens of each LLM fix round."""
    estimated_tokens: list[int] = field(default_factory=list)
    attempt_seconds: list[float] = field(default_factory=list)
    format_failures: int = 0
    other_failures: int = 0
    check: str | None = None
    reference_check: str | None = None
    reason: str = ""
    round_reasons: list[str] = field(default_factory=list)
    """Why each unusable LLM round was not used (parser, compiler or guard words), in order."""
    final_diff: str = ""
    """train.py at the end against the crashed script: what the fixes changed, for reading the misses."""
    corrupt: list[str] = field(default_factory=list)
    """What was wrong with a train.py a tick left behind (does not parse, or a guard refuses the change):
    the monitor's promise is that none is, whatever the model wrote."""


def load_cases(prefixes: list[str] | None = None) -> list[Case]:
    """The cases of cases.json (filtered by name prefix), with their reference fixes applied."""
    cases = []
    for entry in json.loads((CASES_DIR / "cases.json").read_text()):
        if prefixes and not any(entry["name"].startswith(p) for p in prefixes):
            continue
        script = (CASES_DIR / f"{entry['name']}.py").read_text()
        reference = script
        for change in entry["reference_fix"]:
            if reference.count(change["old"]) != 1:
                raise ValueError(f"{entry['name']}: reference fix text must occur once: {change['old']!r}")
            reference = reference.replace(change["old"], change["new"])
        cases.append(Case(entry["name"], entry["pattern"], entry["source"], script, reference))
    return cases


def case_env() -> dict[str, str]:
    """The environment of every case process: one thread, the stand-in modules importable."""
    return {"OMP_NUM_THREADS": "1", "PYTHONPATH": str(CASES_DIR)}


def reference_check(case: Case, work: Path) -> str | None:
    """The CHECK line the reference fix prints, run as a plain process (the honesty yardstick)."""
    folder = work / f"ref-{case.name}"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "train.py").write_text(case.reference)
    env = {
        **os.environ,
        **case_env(),
        "TWINKLE_HOME": str(folder / "home"),
        "TWINKLE_RUN_ID": f"ref-{case.name}",
    }
    proc = subprocess.run(
        [sys.executable, str(folder / "train.py")],
        capture_output=True,
        text=True,
        env=env,
        cwd=folder,
        timeout=RUN_WAIT_S,
    )
    found = CHECK_RE.findall(proc.stdout)
    return found[-1].strip() if proc.returncode == 0 and found else None


def same_check(a: str | None, b: str | None, rel: float = 1e-4) -> bool:
    """Whether two CHECK lines report the same numbers (the same computation, up to float noise)."""
    if a is None or b is None:
        return False
    xs, ys = a.split(), b.split()
    if len(xs) != len(ys):
        return False
    try:
        return all(math.isclose(float(x), float(y), rel_tol=rel, abs_tol=1e-6) for x, y in zip(xs, ys))
    except ValueError:
        return xs == ys


class FixMeter(BaseCallbackHandler):
    """Times every LLM call and keeps the server's token counts of the fix (EditPlan) calls."""

    def __init__(self) -> None:
        self.started: dict[Any, tuple[float, bool]] = {}
        self.fix_calls: list[tuple[int, float]] = []
        """(prompt tokens as counted by the server, seconds) per fix round."""

    def on_chat_model_start(self, serialized: Any, messages: Any, *, run_id: Any, **kwargs: Any) -> None:
        params = json.dumps(kwargs.get("invocation_params") or {}, default=str)
        self.started[run_id] = (time.perf_counter(), "EditPlan" in params)

    def on_llm_end(self, response: Any, *, run_id: Any, **kwargs: Any) -> None:
        t0, is_fix = self.started.pop(run_id, (time.perf_counter(), False))
        if not is_fix:
            return
        usage = (response.llm_output or {}).get("token_usage") or {}
        tokens = int(usage.get("prompt_tokens") or 0)
        if not tokens:
            try:
                tokens = int(response.generations[0][0].message.usage_metadata["input_tokens"])
            except (AttributeError, IndexError, KeyError, TypeError):
                tokens = 0
        self.fix_calls.append((tokens, time.perf_counter() - t0))


class RoundLog(logging.Handler):
    """Collects the monitor's "fix round N for RUN not usable: WHY" lines."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.reasons: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if message.startswith("fix round ") and " not usable: " in message:
            self.reasons.append(message.split(" not usable: ", 1)[1])


def is_format_failure(reason: str) -> bool:
    return any(marker in reason for marker in _FORMAT_MARKERS)


def make_llm(base_url: str, meter: FixMeter) -> Any:
    from langchain_openai import ChatOpenAI

    return ChatOpenAI(
        base_url=base_url,
        api_key="x",
        model="local",
        temperature=0,
        timeout=LLM_TIMEOUT_S,
        max_retries=0,
        max_tokens=LLM_MAX_TOKENS,
        callbacks=[meter],
    )


def _wait(predicate: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return predicate()


def script_problems(before: str, after: str) -> list[str]:
    """Why the train.py a tick wrote (`after`) is not a sound successor of `before`."""
    try:
        ast.parse(after)
    except SyntaxError as exc:
        return [f"does not parse: {exc}"]
    return check_patch(before, after)


def run_case(case: Case, base_url: str | None, work: Path, *, ticks: int = TICKS) -> CaseResult:
    """Start the case as a real run, let it crash, give the monitor `ticks` ticks; judge the result.

    `base_url` None runs the graph without an LLM (rules and deterministic fixes only).
    """
    result = CaseResult(case.name, case.pattern)
    result.reference_check = reference_check(case, work)
    if result.reference_check is None:
        result.reason = "BROKEN: the reference fix does not run"
        return result
    connection = Connection.open(work / f"home-{case.name}", stop_grace=3.0)
    store, controller = connection.store, connection.controller
    run_id = case.name.replace("_", "-")
    meter = FixMeter()
    rounds = RoundLog()
    logger = logging.getLogger("twinkle_auto.monitor")
    logger.addHandler(rounds)
    previous_level = logger.level
    logger.setLevel(logging.INFO)
    llm = make_llm(base_url, meter) if base_url else None
    graph = compile_monitor_graph(llm, connection, policy="on")

    def ended() -> bool:
        status = store.status(run_id)
        return status.process != "alive" and status.status != "running"

    try:
        controller.start(run_id, case.script, env=case_env())
        if not _wait(ended, CRASH_WAIT_S) or store.status(run_id).status == "finished":
            result.reason = "BROKEN: the case did not crash"
            return result
        result.crashed = True
        last = ""
        seen: set[str] = set()
        for _ in range(ticks + SPARE_TICKS):
            if store.status(run_id).status == "finished" or result.attempts >= ticks:
                break
            calls_before = len(meter.fix_calls)
            before = store.script(run_id)
            seen.add(before)
            t0 = time.perf_counter()
            out = graph.invoke({"run_id": run_id}, monitor_thread(run_id))
            seconds = time.perf_counter() - t0
            after = store.script(run_id)
            if after not in seen:  # a version seen before is a rollback, not a new edit
                result.corrupt += script_problems(before, after)
            status = str(out.get("fix_status") or "")
            if status in ("proposed", "unusable", "refused", "repeat") or out.get("relaunch"):
                result.attempts += 1
                result.attempt_seconds.append(seconds)
                fix = out.get("fix") or {}
                result.sources.append(str(fix.get("source") or status))
            result.estimated_tokens.extend(int(t) for t in out.get("prompt_tokens") or [])
            result.prompt_tokens.extend(tokens for tokens, _ in meter.fix_calls[calls_before:])
            last = str(out.get("message") or out.get("fix_status") or out.get("decision") or "")
            print(
                f"    tick: {seconds:.0f}s decision={out.get('decision')} fix={status or '-'} {last[:90]}",
                flush=True,
            )
            if out.get("relaunch"):
                _wait(ended, RUN_WAIT_S)
            elif out.get("decision") != "FIX":
                break
        final = store.status(run_id)
        log_text = (store.path(run_id) / "output.log").read_text(errors="replace")
        final_script = (store.path(run_id) / "train.py").read_text(errors="replace")
        result.final_diff = "".join(
            difflib.unified_diff(
                case.script.splitlines(keepends=True), final_script.splitlines(keepends=True), n=0
            )
        )[:2000]
        checks = CHECK_RE.findall(log_text)
        result.check = checks[-1].strip() if checks else None
        result.fixed = final.status == "finished" and result.check is not None
        result.honest = result.fixed and same_check(result.check, result.reference_check)
        if result.fixed and not result.honest:
            result.reason = (
                f"fixed but computes something else: CHECK {result.check} vs {result.reference_check}"
            )
        elif not result.fixed:
            result.reason = last[:300] or f"status {final.status}"
        else:
            result.reason = "ok"
    finally:
        logger.removeHandler(rounds)
        logger.setLevel(previous_level)
        if store.exists(run_id) and store.status(run_id).process == "alive":
            controller.stop(run_id, grace=3.0)
    result.round_reasons = [r[:300] for r in rounds.reasons]
    result.format_failures = sum(1 for r in rounds.reasons if is_format_failure(r))
    result.other_failures = len(rounds.reasons) - result.format_failures
    return result


# ----------------------------------------------------------------------------------------- figures
def tokenize_count(base_url: str, text: str) -> int | None:
    """Tokens of `text` by the served model's own tokenizer (llama.cpp /tokenize), None if unavailable."""
    root = base_url.rstrip("/").removesuffix("/v1")
    request = urllib.request.Request(
        f"{root}/tokenize",
        data=json.dumps({"content": text}).encode(),
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return len(json.loads(response.read())["tokens"])
    except (OSError, ValueError, KeyError):
        return None


def generated_script(n_lines: int) -> str:
    """A 1,000-line-class training script: many helpers, one of which crashes at a KeyError."""
    parts = ["import math", "", "SCALE = 3", "table = {'a': 1, 'b': 2}", ""]
    i = 0
    while len("\n".join(parts).splitlines()) < n_lines - 10:
        body = [f"def helper_{i}(values):", "    total = 0"]
        body += [f"    total += math.sqrt(abs(values[{j % 3}])) * {j} + SCALE" for j in range(8)]
        body += ["    return table['c'] + total" if i == 37 else "    return total", "", ""]
        parts += body
        i += 1
    parts += [f"for k in range({i}):", "    print(globals()[f'helper_{k}']([1.0, 2.0, 3.0]))"]
    return "\n".join(parts) + "\n"


def context_figures(base_url: str, cases: list[Case], work: Path) -> list[str]:
    """Focused context vs whole script, in real tokens, for the cases and a generated 1,000-line script."""
    lines = []
    rows = []
    for case in cases[:6]:
        folder = work / f"ctx-{case.name}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "train.py").write_text(case.script)
        env = {**os.environ, **case_env(), "TWINKLE_HOME": str(folder / "h"), "TWINKLE_RUN_ID": "ctx"}
        proc = subprocess.run(
            [sys.executable, "train.py"], capture_output=True, text=True, env=env, cwd=folder, timeout=120
        )
        ctx = build_fix_context(case.script, proc.stderr)
        rows.append((tokenize_count(base_url, ctx.text), tokenize_count(base_url, case.script)))
    big = generated_script(1000)
    folder = work / "ctx-1000"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "train.py").write_text(big)
    proc = subprocess.run(
        [sys.executable, "train.py"], capture_output=True, text=True, cwd=folder, timeout=60
    )
    ctx = build_fix_context(big, proc.stderr, max_tokens=2500)
    real_ctx, real_script = tokenize_count(base_url, ctx.text), tokenize_count(base_url, big)
    lines.append(
        f"  1,000-line script ({len(big.splitlines())} lines): focused context {real_ctx} tokens "
        f"(estimate {ctx.approx_tokens}), whole script {real_script} tokens, ratio "
        f"{(real_ctx or 0) / max(1, real_script or 1):.3f}x (budget 2,500)"
    )
    small = [(c, s) for c, s in rows if c and s]
    if small:
        ratio = sum(c for c, _ in small) / sum(s for _, s in small)
        lines.append(f"  fixbench scripts: focused context / whole script = {ratio:.2f}x (real tokens)")
    return lines


def table(results: list[CaseResult]) -> str:
    out = [
        f"{'case':<30} {'fixed':>5} {'honest':>6} {'att':>3} {'tok':>5} {'s/att':>6} {'fmt':>3}  source / reason"
    ]
    for r in results:
        tokens = round(sum(r.prompt_tokens) / len(r.prompt_tokens)) if r.prompt_tokens else 0
        secs = sum(r.attempt_seconds) / len(r.attempt_seconds) if r.attempt_seconds else 0.0
        source = ",".join(s.replace("known fix: ", "known:") for s in r.sources) or "-"
        out.append(
            f"{r.name:<30} {str(r.fixed):>5} {str(r.honest):>6} {r.attempts:>3} {tokens:>5} {secs:6.1f} "
            f"{r.format_failures:>3}  {source[:40]} | {r.reason[:120]}"
        )
    n = len(results) or 1
    fixed = sum(r.fixed for r in results)
    honest = sum(r.honest for r in results)
    tokens = [t for r in results for t in r.prompt_tokens]
    estimated = [t for r in results for t in r.estimated_tokens]
    seconds = [s for r in results for s in r.attempt_seconds]
    llm_cases = [r for r in results if any(s == "llm" for s in r.sources)]
    out.append(
        f"fixed within {TICKS} attempts: {fixed}/{len(results)} ({fixed / n:.0%}); honest: {honest}/{len(results)} "
        f"({honest / n:.0%}); target >= {TARGET_FIXED:.0%} fixed and honest: "
        f"{'OK' if honest / n >= TARGET_FIXED else 'MISS'}"
    )
    out.append(
        f"known fixes used in {sum(any(s.startswith('known fix') for s in r.sources) for r in results)} cases; "
        f"LLM fixes honest: {sum(r.honest for r in llm_cases)}/{len(llm_cases)} cases that reached the LLM"
    )
    if tokens:
        out.append(
            f"prompt tokens per LLM round (server count): mean {sum(tokens) / len(tokens):.0f}, max {max(tokens)}"
            + (f"; estimate mean {sum(estimated) / len(estimated):.0f}" if estimated else "")
        )
    if seconds:
        out.append(f"seconds per attempt: mean {sum(seconds) / len(seconds):.1f}, max {max(seconds):.1f}")
    out.append(
        f"format failures (answers that did not parse or apply): {sum(r.format_failures for r in results)}; "
        f"other refused rounds (compile, undefined names, guards): {sum(r.other_failures for r in results)}"
    )
    return "\n".join(out)


def main(argv: list[str]) -> int:
    if "--no-llm" in argv:  # the graph with rules and deterministic fixes only: no server needed
        cases = load_cases([a for a in argv if a != "--no-llm"] or None)
        with tempfile.TemporaryDirectory(prefix="bench-fix-") as tmp:
            results = [run_case(case, None, Path(tmp)) for case in cases]
        print(table(results))
        return 1 if any(r.reason.startswith("BROKEN") for r in results) else 0
    sys.path.insert(0, str(ROOT / "tests"))
    from llm_server import running_llm, xllamacpp_missing

    if not os.environ.get("TWINKLE_TEST_LLM_URL"):
        reason = xllamacpp_missing()
        if reason:
            print(f"  skipped: {reason}")
            return 0
    cases = load_cases(argv or None)
    broken = []
    with tempfile.TemporaryDirectory(prefix="bench-fix-") as tmp, running_llm(Path(tmp) / "llm.log") as url:
        work = Path(tmp)
        for line in context_figures(url, cases, work):
            print(line, flush=True)
        results: list[CaseResult] = []
        try:
            for case in cases:
                result = run_case(case, url, work)
                print(
                    f"  {case.name}: fixed={result.fixed} honest={result.honest} attempts={result.attempts} "
                    f"{result.reason[:100]}",
                    flush=True,
                )
                results.append(result)
                if os.environ.get("BENCH_FIX_JSONL"):  # results survive an interrupted run
                    with open(os.environ["BENCH_FIX_JSONL"], "a") as f:
                        f.write(json.dumps(result.__dict__) + "\n")
                if result.reason.startswith("BROKEN"):
                    broken.append(f"{case.name}: {result.reason}")
        except KeyboardInterrupt:
            print(f"  interrupted after {len(results)} of {len(cases)} cases: partial figures")
        print(table(results))
    for problem in broken:
        print(f"  BROKEN: {problem}")
    return 1 if broken else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
