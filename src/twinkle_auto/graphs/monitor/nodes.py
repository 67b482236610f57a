"""The monitor graph's nodes and routers: top-level functions of (state, context).

The fix sequence is built so that two assistants on one run, a kill at any point, and an unanswered
approval all leave the run in a state the next tick understands:
- `claim` takes the run lock (no waiting: the other assistant is told "a fix is in progress") and checks
  again, under it, that the crash it judged is still the current one;
- the chosen patch is recorded as the run's *pending fix* before train.py is touched, and its stage
  (`awaiting_approval` → `approved` → `written`) is advanced before each step, so a killed assistant's
  successor relaunches the pending fix instead of asking the LLM to patch the patched file;
- an attempt is counted when a patch is relaunched or refused by the guards (or when the model gave
  nothing usable in all its rounds); an unreachable LLM, an unanswered or a declined approval do not
  count, and a declined patch is never offered again;
- later ticks `verify` the relaunch: past the old crash step = worked, the same error = failed, an
  earlier new error = worse, rolled back. Outcomes go to the run's state and to the fix ledger.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from pathlib import Path
from typing import Any, Literal

import psutil
from langchain_core.messages import HumanMessage, SystemMessage
from langgraph.graph import END
from langgraph.types import interrupt

from twinkle_auto.connection.errors import RunError
from twinkle_auto.connection.store import CorruptMetaError
from twinkle_auto.graphs.monitor import fixing, prompts
from twinkle_auto.graphs.monitor.context import MonitorContext
from twinkle_auto.graphs.monitor.state import MonitorState
from twinkle_auto.graphs.monitor.verdict import ask_verdict, constrain, short_error
from twinkle_auto.monitor.detectors import rule_decision, triage
from twinkle_auto.monitor.fix_context import script_frames
from twinkle_auto.monitor.known_fixes import find_known_fix
from twinkle_auto.monitor.ledger import error_signature
from twinkle_auto.monitor.snapshot import collect as collect_snapshot
from twinkle_auto.monitor.snapshot import log_excerpt, trends
from twinkle_auto.monitor.tracebacks import classify_error
from twinkle_auto.runtime import format as fmt

log = logging.getLogger("twinkle_auto.monitor")

ISSUE_SEVERITIES = ("warning", "critical")
MAX_HISTORY = 20
MAX_TRACEBACK_KEPT = 4000
MAX_VERIFY_CHUNKS = 8
_ALIVE = ("alive", "stopped")


# ------------------------------------------------------------------------------------------ helpers
def _has_issue(findings: list[dict[str, Any]]) -> bool:
    return any(f.get("severity") in ISSUE_SEVERITIES for f in findings)


def _judge_key(snapshot: dict[str, Any], findings: list[dict[str, Any]]) -> str:
    """What a verdict is about: finding kinds, the traceback, the run's state — not the step counter."""
    kinds = sorted({f"{f.get('kind')}:{f.get('severity')}" for f in findings})
    tb = snapshot.get("traceback") or ""
    src = json.dumps([kinds, tb[-2000:], snapshot.get("status"), snapshot.get("process_state")])
    return hashlib.sha1(src.encode()).hexdigest()[:16]


def _findings_text(findings: list[dict[str, Any]]) -> str:
    if not findings:
        return "(none)"
    return "\n".join(f"- [{f.get('severity')}] {f.get('kind')}: {f.get('message')}" for f in findings)


def _rules_diagnosis(findings: list[dict[str, Any]], reason: str) -> str:
    issues = [f for f in findings if f.get("severity") in ISSUE_SEVERITIES]
    if not issues:
        return reason
    return "; ".join(str(f.get("message")) for f in issues[:3])


def _persist(ctx: MonitorContext, run_id: str, **fields: Any) -> dict[str, Any]:
    def merge(state: dict[str, Any]) -> dict[str, Any]:
        if "fix_attempts" in fields:  # the counter never goes down, whoever writes
            fields["fix_attempts"] = max(int(state.get("fix_attempts") or 0), int(fields["fix_attempts"]))
        state.update(fields)
        return state

    try:
        return ctx.connection.store.update_auto_state(run_id, merge)
    except (OSError, RunError) as exc:
        ctx.tell(run_id, f"[Monitor] WARNING {run_id}: could not save the monitor's state: {exc}")
        return {}


def _saved(ctx: MonitorContext, run_id: str) -> dict[str, Any]:
    return ctx.connection.store.auto_state(run_id)


def _meta(ctx: MonitorContext, run_id: str) -> dict[str, Any]:
    try:
        return ctx.connection.store.read_meta(run_id)
    except CorruptMetaError:
        return {}


def _sha(text: str | None) -> str | None:
    return fixing.script_hash(text) if text is not None else None


def _script_or_none(ctx: MonitorContext, run_id: str) -> str | None:
    try:
        return ctx.connection.store.script(run_id)
    except (RunError, OSError, UnicodeDecodeError):
        return None


def _owner() -> dict[str, Any]:
    try:
        ctime = psutil.Process().create_time()
    except psutil.Error:
        ctime = None
    return {"pid": os.getpid(), "ctime": ctime}


def _owner_is_other_live_process(owner: Any) -> bool:
    """True when `owner` names a live process other than this one (its approval may still come)."""
    if not isinstance(owner, dict) or not isinstance(owner.get("pid"), int):
        return False
    if owner["pid"] == os.getpid():
        return False
    try:
        process = psutil.Process(owner["pid"])
        ctime = owner.get("ctime")
        return not (isinstance(ctime, (int, float)) and abs(process.create_time() - ctime) > 1.0)
    except psutil.Error:
        return False


def _outside_target(folder: Path) -> Path | None:
    """The target of train.py when it is a symlink leading out of the run folder, else None."""
    script = folder / fmt.SCRIPT_FILE
    if not script.is_symlink():
        return None
    target = Path(os.path.realpath(script))
    root = Path(os.path.realpath(folder))
    return None if target.is_relative_to(root) else target


def _relaunch_steps(
    ctx: MonitorContext, run_id: str, fix: dict[str, Any], rows: list[dict[str, Any]]
) -> int | None:
    """The highest step the relaunched process logged: rows after the metrics offset taken at the relaunch
    (exact), else rows stamped after the launch time (a relaunch recorded after an interruption)."""
    offset = fix.get("metrics_offset")
    if isinstance(offset, int):
        best: int | None = None
        for _ in range(MAX_VERIFY_CHUNKS):
            chunk = ctx.connection.store.metrics_from(run_id, offset)
            if chunk.reset:
                break
            steps = [int(r["step"]) for r in chunk.entries if isinstance(r.get("step"), int)]
            if steps:
                best = max(steps) if best is None else max(best, *steps)
            if not chunk.more:
                return best
            offset = chunk.offset
        return best
    since = float(fix.get("relaunched_at") or 0.0)
    steps = [
        int(r["step"])
        for r in rows
        if isinstance(r.get("step"), int) and isinstance(r.get("ts"), (int, float)) and r["ts"] >= since
    ]
    return max(steps) if steps else None


def _raised_in_fixed_lines(ctx: MonitorContext, run_id: str, fix: dict[str, Any], traceback: str) -> bool:
    """Whether the relaunched script died of a code error on a line the fix wrote: then the fix is broken.

    An environment error there (out of memory, a full disk, a lost connection) is the machine's doing,
    not the fix's: the other rules judge the attempt (past the old crash step, it worked)."""
    try:
        old = ctx.connection.store.archived_script(run_id, int(fix.get("archived_version") or 0))
        new = ctx.connection.store.script(run_id)
    except (RunError, OSError, ValueError):
        return False
    if (classify_error(traceback, script=new) or {}).get("kind") == "ENV":
        return False
    frames = script_frames(traceback, "train.py", len(new.splitlines()))
    return bool(frames) and frames[-1].line in set(fixing.changed_lines(old, new))


def _metrics_size(ctx: MonitorContext, run_id: str) -> int:
    try:
        return (ctx.connection.store.path(run_id) / fmt.METRICS_FILE).stat().st_size
    except OSError:
        return 0


def _exception_line(traceback: str | None) -> str:
    from twinkle_auto.connection.tracebacks import parse_traceback

    parsed = parse_traceback(traceback or "")
    if parsed is None:
        return ""
    return f"{parsed.short_name}: {' '.join(parsed.message.split())[:200]}"


def _first_sentence(text: str, diff: str) -> str:
    """What changed, in one plain sentence: the model's summary cut at its first sentence, else a count."""
    text = " ".join((text or "").split())
    for end in (". ", "! ", "? "):
        if end in text:
            text = text[: text.index(end) + 1]
    if text:
        return text[:300]
    changed = sum(1 for line in diff.splitlines() if line.startswith("+") and not line.startswith("+++"))
    return f"Changed {changed} line(s) of train.py."


# --------------------------------------------------------------------------------------- collecting
def collect(state: MonitorState, ctx: MonitorContext) -> dict[str, Any]:
    run_id = state["run_id"]
    ctx.release(run_id)  # one tick per run at a time: a lock still held here is a failed tick's leftover
    saved = _saved(ctx, run_id)
    snap = collect_snapshot(ctx.connection, run_id, stall_reset_at=saved.get("stall_reset_at"))
    rows = snap.pop("metrics")
    ctx.put_rows(run_id, rows, snap["log_tail"])
    snap["trends"] = trends(rows)
    snap["log_excerpt"] = log_excerpt(snap)
    snap.pop("log_tail", None)
    attempts = max(int(state.get("fix_attempts") or 0), int(saved.get("fix_attempts") or 0))
    told = state.get("told") if state.get("told") is not None else saved.get("told", [])
    earlier: dict[str, Any] = {}
    if not state.get("judge_key") and saved.get("judge_key"):  # a new thread or a restarted assistant
        earlier = {
            k: saved[k] for k in ("judge_key", "decision", "diagnosis", "verdict_source") if k in saved
        }
    corrupt = saved.get("corrupt") if isinstance(saved.get("corrupt"), dict) else None
    return {
        **earlier,
        "snapshot": snap,
        "digest": snap["digest"],
        "fix_attempts": attempts,
        "told": list(told),
        "message": None,
        "verify_message": None,
        "patch": None,
        "fix": None,
        "fix_status": None,
        "archived_as": None,
        "relaunch": None,
        "fixed": False,
        "state_corrupt": (
            f"{fmt.AUTO_STATE_FILE} was corrupt ({corrupt.get('reason')}); kept as "
            f"{corrupt.get('kept_as', fmt.AUTO_STATE_FILE + '.corrupt')}"
            if corrupt
            else None
        ),
    }


def verify(state: MonitorState, ctx: MonitorContext) -> dict[str, Any]:
    """Judge the last relaunched fix from what the run did since: worked, failed, or worse (rolled back)."""
    run_id = state["run_id"]
    recorded = finish_interrupted_relaunch(ctx, run_id)
    if recorded is not None:
        return {"verify_message": recorded}
    saved = _saved(ctx, run_id)
    fixes = list(saved.get("fixes") or [])
    if not fixes or fixes[-1].get("outcome") != "relaunched":
        return {}
    fix = dict(fixes[-1])
    snap = state["snapshot"]
    cached = ctx.peek_rows(run_id)
    rows = cached[0] if cached else []
    crash_step = fix.get("crash_step")
    new_max = _relaunch_steps(ctx, run_id, fix, rows)
    past = new_max is not None and (crash_step is None or new_max > int(crash_step))
    meta = _meta(ctx, run_id)
    same_launch = meta.get("launch_count") == fix.get("launch_count")
    outcome: str | None = None
    same_error = in_fix = False
    dead_with_error = same_launch and snap.get("process_state") not in _ALIVE and bool(snap.get("traceback"))
    new_sig = error_signature(snap.get("traceback") or "") if dead_with_error else ""
    if (
        dead_with_error
        and new_sig != fix.get("signature")
        and _raised_in_fixed_lines(ctx, run_id, fix, snap.get("traceback") or "")
    ):
        # the lines the fix wrote raised a new error: the fix is broken, however far the run got
        outcome, in_fix = "worse", True
    elif past or (same_launch and snap.get("effective_status") == fmt.FINISHED):
        outcome = "worked"
    elif dead_with_error:
        if new_sig and new_sig == fix.get("signature"):
            outcome, same_error = "failed", True
        elif crash_step is not None and (new_max is None or new_max < int(crash_step)):
            outcome = "worse"
        else:
            outcome = "failed"
    if outcome is None:
        return {}
    attempt = int(fix.get("attempt") or 0)
    result_error = _exception_line(snap.get("traceback")) if outcome != "worked" else ""
    message: str
    # A fix that made it worse, or left the same error at the same place, is no progress: train.py goes
    # back to the version the fix was applied to, so the next attempt starts from the script that
    # crashed (told what failed) instead of stacking edits on a patch that did not help.
    if outcome == "worse" or same_error:
        if not ctx.acquire(run_id):
            return {}  # another assistant holds the run; it will judge this relaunch
        try:
            old = ctx.connection.store.archived_script(run_id, int(fix.get("archived_version") or 0))
            update = ctx.connection.controller.update_script(run_id, old)
            fix["rolled_back_as"] = update.archived_as
        except (RunError, OSError, ValueError) as exc:
            fix["rollback_error"] = str(exc)
        finally:
            ctx.release(run_id)
        where = f"at step {new_max}" if new_max is not None else "before its first step"
        done = (
            f"train.py is rolled back to the version before the fix (the patched one is kept as "
            f"{fix.get('rolled_back_as')})"
            if "rolled_back_as" in fix
            else f"the rollback failed: {fix.get('rollback_error')}"
        )
        if in_fix:
            message = (
                f"[Monitor] WARNING {run_id}: fix attempt {attempt} made it worse: a new error in the lines "
                f"the fix wrote: {result_error}; {done}"
            )
        elif outcome == "worse":
            message = (
                f"[Monitor] WARNING {run_id}: fix attempt {attempt} made it worse: a new error {where}, "
                f"before the old crash (step {crash_step}): {result_error}; {done}"
            )
        else:
            message = (
                f"[Monitor] WARNING {run_id}: fix attempt {attempt} did not fix it, the same error at the "
                f"same place: {result_error or 'it crashed again'}; {done}"
            )
    elif outcome == "failed":
        message = f"[Monitor] WARNING {run_id}: fix attempt {attempt} did not fix it: {result_error or 'it crashed again'}"
    else:
        message = f"[Monitor] {run_id}: fix attempt {attempt} worked: the run got past its old crash" + (
            f" (step {crash_step})" if crash_step is not None else ""
        )
    fix.update(outcome=outcome, result_error=result_error, judged_at=time.time())

    def merge(current: dict[str, Any]) -> dict[str, Any]:
        history = list(current.get("fixes") or [])
        for i in range(len(history) - 1, -1, -1):
            if history[i].get("attempt") == attempt and history[i].get("outcome") == "relaunched":
                history[i] = fix
                break
        current["fixes"] = history
        if outcome != "worked" and fix.get("hash"):
            rejected = dict(current.get("rejected") or {})
            rejected[fix["hash"]] = (
                f"this is the patch of attempt {attempt}, which did not work ({result_error or outcome})"
            )
            current["rejected"] = rejected
        return current

    ctx.connection.store.update_auto_state(run_id, merge)
    ctx.ledger.record(
        run_id=run_id,
        attempt=attempt,
        signature=str(fix.get("signature") or ""),
        summary=str(fix.get("summary") or ""),
        diff=str(fix.get("diff") or ""),
        outcome=outcome,
    )
    ctx.tell(run_id, message)
    return {"verify_message": message}


def triage_node(state: MonitorState, ctx: MonitorContext) -> dict[str, Any]:
    run_id = state["run_id"]
    snap = dict(state["snapshot"])
    cached = ctx.take_rows(run_id)
    if cached is None:  # resumed in another process: read again
        again = collect_snapshot(ctx.connection, run_id)
        cached = (again["metrics"], again["log_tail"])
    rows, log_tail = cached
    return {"findings": triage({**snap, "metrics": rows, "log_tail": log_tail}, ctx.thresholds)}


def classify(state: MonitorState, ctx: MonitorContext) -> dict[str, Any]:
    run_id = state["run_id"]
    snap = state["snapshot"]
    findings = state.get("findings", [])
    rules = rule_decision(findings)
    key = _judge_key(snap, findings)
    out: dict[str, Any] = {"judge_key": key}
    if not _has_issue(findings):
        out.update(decision=rules["decision"], diagnosis=rules["reason"], verdict_source="rules")
    elif key == state.get("judge_key") and state.get("decision"):
        out.update(decision=state["decision"], diagnosis=state.get("diagnosis", ""))
        out["verdict_source"] = state.get("verdict_source", "rules")
    elif ctx.model is None:
        out.update(
            decision=rules["decision"],
            diagnosis=_rules_diagnosis(findings, rules["reason"]),
            verdict_source="rules" if not ctx.use_llm else "rules (no LLM configured)",
        )
    elif rules["decision"] == "FIX" and ctx.policy != "off":
        # A dead process with a traceback raised from the script's own code: nothing is left to judge,
        # and the patch request that follows explains the error anyway. Asking for a verdict here cost a
        # full LLM call before every fix attempt (a third of the time per attempt on a CPU model).
        out.update(
            decision="FIX",
            diagnosis=_rules_diagnosis(findings, rules["reason"]),
            verdict_source="rules (code error: the fix explains it)",
        )
    else:
        nonce = prompts.new_nonce()
        messages = [
            SystemMessage(prompts.VERDICT_SYSTEM.format(data_rule=prompts.data_rule(nonce))),
            HumanMessage(
                prompts.VERDICT_USER.format(
                    run_id=run_id,
                    status=snap.get("status"),
                    process_state=snap.get("process_state"),
                    last_step=snap.get("last_step"),
                    total_steps=snap.get("total_steps"),
                    rule_decision=rules["decision"],
                    rule_reason=rules["reason"],
                    findings=prompts.untrusted(_findings_text(findings), "detector findings", nonce),
                    trends=prompts.untrusted(
                        json.dumps(snap.get("trends", {}), default=str)[:2000], "metrics", nonce
                    ),
                    log=prompts.untrusted(snap.get("log_excerpt", ""), "training log", nonce),
                )
            ),
        ]
        out["llm_calls"] = int(state.get("llm_calls") or 0) + 1
        try:
            verdict = ask_verdict(ctx.model, messages)
            decision = constrain(verdict.decision, rules["decision"], findings)
            out.update(decision=decision, diagnosis=verdict.diagnosis.strip(), verdict_source="llm")
        except Exception as exc:  # unreachable, timeout, malformed: the rules decide alone
            out.update(
                decision=rules["decision"],
                diagnosis=_rules_diagnosis(findings, rules["reason"]),
                verdict_source=f"rules (LLM unreachable: {short_error(exc)})",
            )
    if snap.get("effective_status") in (fmt.FINISHED,) and out["decision"] == "LGTM":
        out["done"] = True
    _persist(
        ctx,
        run_id,
        judge_key=key,
        decision=out["decision"],
        diagnosis=out["diagnosis"],
        verdict_source=out["verdict_source"],
        checked_at=time.time(),
    )
    return out


def route_after_classify(state: MonitorState, ctx: MonitorContext) -> Literal["claim", "notify", "__end__"]:
    decision = state.get("decision")
    if decision == "FIX":
        return "notify" if ctx.policy == "off" else "claim"
    if decision == "WARNING":
        return "notify"
    return END


# ------------------------------------------------------------------------------------------- fixing
def claim(state: MonitorState, ctx: MonitorContext) -> dict[str, Any]:
    """Become the run's one fixer, or say why not; under the lock, re-check what `classify` judged."""
    run_id = state["run_id"]
    snap = state["snapshot"]
    if state.get("state_corrupt"):
        return {"fix_status": "corrupt"}
    folder = ctx.connection.store.path(run_id)
    outside = _outside_target(folder)
    if outside is not None:
        return {"fix_status": "outside", "fix": {"target": str(outside)}}
    if not ctx.acquire(run_id):
        return {"fix_status": "busy"}
    saved = _saved(ctx, run_id)
    meta = _meta(ctx, run_id)
    attempts = max(int(saved.get("fix_attempts") or 0), int(state.get("fix_attempts") or 0))
    status = ctx.connection.store.status(run_id)
    if meta.get("launch_count") != snap.get("launch_count") or status.process in _ALIVE:
        return {"fix_status": "stale", "fix_attempts": attempts}
    pending = saved.get("pending_fix") if isinstance(saved.get("pending_fix"), dict) else None
    if pending is not None:
        current = _sha(_script_or_none(ctx, run_id))
        stage = pending.get("stage")
        fix = {k: pending.get(k) for k in ("attempt", "summary", "source", "hash", "warnings", "unsafe")}
        if stage in ("approved", "written"):
            # written or not yet: `archive` writes it when train.py is still the old one, then relaunches
            if current in (pending.get("new_sha"), pending.get("old_sha")):
                return {
                    "fix_status": "recover",
                    "fix": fix,
                    "patch": pending.get("diff"),
                    "fix_attempts": attempts,
                }
        elif stage == "awaiting_approval":
            if _owner_is_other_live_process(pending.get("owner")):
                return {"fix_status": "busy", "fix_attempts": attempts}
            if ctx.policy == "ask" and current == pending.get("old_sha"):
                _persist(ctx, run_id, pending_fix={**pending, "owner": _owner()})
                ctx.release(run_id)  # not held across the approval: it can take hours
                return {
                    "fix_status": "reoffer",
                    "fix": fix,
                    "patch": pending.get("diff"),
                    "fix_attempts": attempts,
                }
        _persist(ctx, run_id, pending_fix=None)  # train.py changed under it, or the policy did
    if attempts >= ctx.max_attempts:
        return {"fix_status": "limit", "fix_attempts": attempts}
    if saved.get("stuck_key") and saved.get("stuck_key") == state.get("judge_key"):
        return {"fix_status": "stuck", "fix_attempts": attempts}
    return {"fix_status": "claimed", "fix_attempts": attempts}


def route_after_claim(state: MonitorState) -> Literal["rewrite", "approve", "archive", "notify"]:
    status = state.get("fix_status")
    if status == "claimed":
        return "rewrite"
    if status == "reoffer":
        return "approve"
    if status == "recover":
        return "archive"
    return "notify"


def _attempt_input(
    state: MonitorState, ctx: MonitorContext, saved: dict[str, Any], script: str
) -> fixing.AttemptInput:
    run_id = state["run_id"]
    fixes = list(saved.get("fixes") or [])
    traceback = state["snapshot"].get("traceback") or ""
    if fixes and fixes[-1].get("rolled_back_as") and fixes[-1].get("traceback"):
        traceback = str(fixes[-1]["traceback"])  # rolled back: the original error is the one to fix
    history = [
        {
            "attempt": f.get("attempt"),
            "diff": f.get("diff"),
            "outcome": f.get("outcome"),
            "error": f.get("result_error") or f.get("reason"),
        }
        for f in fixes
        if f.get("outcome") in ("failed", "worse", "refused") and f.get("diff")
    ]
    signature = error_signature(traceback)
    known = None
    if signature:
        try:
            known = find_known_fix(script, traceback)
        except Exception:  # a catalogue bug must not stop the LLM from trying
            known = None
    return fixing.AttemptInput(
        run_id=run_id,
        run_dir=ctx.connection.store.path(run_id),
        script=script,
        traceback=traceback,
        diagnosis=state.get("diagnosis", ""),
        policy=ctx.policy,
        history=history,
        rejected=dict(saved.get("rejected") or {}),
        ledger_fixes=ctx.ledger.worked_for(signature, exclude_run=run_id) if signature else [],
        known_fix=known,
        attempt=max(int(saved.get("fix_attempts") or 0), int(state.get("fix_attempts") or 0)) + 1,
    )


def rewrite(state: MonitorState, ctx: MonitorContext) -> dict[str, Any]:
    """Find this attempt's patch (ledger, known fix, LLM with self-correction) and record it as pending."""
    run_id = state["run_id"]
    saved = _saved(ctx, run_id)
    attempts = max(int(saved.get("fix_attempts") or 0), int(state.get("fix_attempts") or 0))
    attempt = attempts + 1
    script = _script_or_none(ctx, run_id)
    if script is None:
        ctx.release(run_id)
        return {
            "fix_status": "no_script",
            "message": f"[Monitor] WARNING {run_id}: train.py cannot be read; no fix",
        }
    try:
        inp = _attempt_input(state, ctx, saved, script)
        proposal = fixing.propose(ctx.model, inp)
    except Exception as exc:  # our own bug must neither hold the run nor count as the model's attempt
        ctx.release(run_id)
        log.exception("fix attempt for %s failed", run_id)
        return {
            "fix_status": "error",
            "message": f"[Monitor] WARNING {run_id}: the fix attempt failed inside twinkle-auto "
            f"({short_error(exc)}); train.py unchanged, not counted",
        }
    out: dict[str, Any] = {
        "llm_calls": int(state.get("llm_calls") or 0) + proposal.llm_calls,
        "fix_rounds": proposal.rounds,
        "prompt_tokens": proposal.prompt_tokens,
    }
    candidate = proposal.candidate
    offer = proposal.outcome == "ok" or (proposal.outcome == "refused" and ctx.policy == "ask")
    if offer and candidate is not None:
        fix = {
            "attempt": attempt,
            "summary": _first_sentence(candidate.summary, candidate.diff),
            "source": candidate.source,
            "hash": candidate.hash,
            "warnings": candidate.review.messages,
            "unsafe": candidate.review.unsafe,
            "rounds": proposal.rounds,
        }
        snap = state["snapshot"]
        meta = _meta(ctx, run_id)
        pending = {
            **fix,
            "stage": "approved" if ctx.policy == "on" else "awaiting_approval",
            "old_sha": _sha(script),
            "new_sha": _sha(candidate.new_script),
            "new_script": candidate.new_script,
            "diff": candidate.diff,
            "launch_count_before": meta.get("launch_count"),
            "crash_step": snap.get("last_step"),
            "signature": error_signature(inp.traceback),
            "traceback": inp.traceback[-MAX_TRACEBACK_KEPT:],
            "owner": _owner(),
            "recorded_at": time.time(),
        }
        _persist(ctx, run_id, pending_fix=pending, stuck_key=None)
        if ctx.policy != "on":
            ctx.release(run_id)  # not held across the approval: it can take hours
        return {**out, "fix_status": "proposed", "fix": fix, "patch": candidate.diff}
    ctx.release(run_id)
    limit = f"{attempt}/{ctx.max_attempts}"
    if proposal.outcome in ("refused", "unusable"):
        record = {
            "attempt": attempt,
            "outcome": "refused" if proposal.outcome == "refused" else "unusable",
            "reason": proposal.reason[:500],
            "diff": candidate.diff if candidate is not None else "",
            "source": candidate.source if candidate is not None else "llm",
            "rounds": proposal.rounds,
            "time": time.time(),
        }
        rejected = dict(saved.get("rejected") or {})
        if candidate is not None:
            rejected[candidate.hash] = (
                f"this is the patch of attempt {attempt}, refused: {proposal.reason[:200]}"
            )
        _persist(
            ctx,
            run_id,
            fix_attempts=attempt,
            fixes=(list(saved.get("fixes") or []) + [record])[-MAX_HISTORY:],
            rejected=rejected,
        )
        if candidate is not None:
            ctx.ledger.record(
                run_id=run_id,
                attempt=attempt,
                signature=error_signature(inp.traceback),
                summary=candidate.summary,
                diff=candidate.diff,
                outcome="refused",
            )
        what = "refused" if proposal.outcome == "refused" else "gave no usable patch"
        message = (
            f"[Monitor] WARNING {run_id}: auto-fix attempt {limit} {what} after {proposal.rounds} "
            f"round(s), train.py unchanged: {proposal.reason}"
        )
        return {**out, "fix_status": proposal.outcome, "fix_attempts": attempt, "message": message}
    if proposal.outcome == "repeat":
        _persist(ctx, run_id, stuck_key=state.get("judge_key"))
        message = (
            f"[Monitor] WARNING {run_id}: the model only proposed patches that already failed or were "
            f"declined ({proposal.reason}); not counted as an attempt, and not asked again until the run "
            "changes: fix it by hand"
        )
        return {**out, "fix_status": "repeat", "message": message}
    if proposal.outcome == "unreachable":
        message = (
            f"[Monitor] WARNING {run_id}: {state.get('diagnosis', '')} (the LLM did not answer: "
            f"{proposal.reason}; nothing changed, not counted as an attempt, tried again next tick)"
        )
        return {**out, "fix_status": "unreachable", "message": message}
    return {**out, "fix_status": "no_llm"}


def route_after_rewrite(state: MonitorState, ctx: MonitorContext) -> Literal["approve", "archive", "notify"]:
    if state.get("fix_status") != "proposed":
        return "notify"
    return "approve" if ctx.policy == "ask" else "archive"


def approve(state: MonitorState, ctx: MonitorContext) -> dict[str, Any]:
    # No side effects before interrupt(): this node re-runs from the top on resume.
    run_id = state["run_id"]
    fix = dict(state.get("fix") or {})
    warnings = list(fix.get("warnings") or [])
    answer = interrupt(
        {
            "kind": "fix_approval",
            "run_id": run_id,
            "question": f"Apply this fix to {run_id}/train.py and relaunch it?",
            "diagnosis": state.get("diagnosis", ""),
            "summary": fix.get("summary", ""),
            "source": fix.get("source", ""),
            "patch": state.get("patch", ""),
            "warnings": warnings,
            "unsafe": bool(fix.get("unsafe")),
            "warning": (
                "WARNING: the guards refused this patch: " + "; ".join(warnings[:5]) if warnings else ""
            ),
        }
    )
    if isinstance(answer, dict):
        answer = answer.get("approved")
    if isinstance(answer, str):
        answer = {"y": True, "yes": True, "n": False, "no": False}.get(answer.strip().lower())
    if answer is True:
        return {"fix_status": "approved"}
    if answer is None:
        return {
            "fix_status": "unanswered",
            "message": (
                f"[Monitor] {run_id}: a fix awaits approval (no answer yet); train.py unchanged, not counted "
                "as an attempt; it is offered again on the next check"
            ),
        }
    saved = _saved(ctx, run_id)
    rejected = dict(saved.get("rejected") or {})
    if fix.get("hash"):
        rejected[str(fix["hash"])] = "the person declined this patch; propose a different one"
    _persist(ctx, run_id, pending_fix=None, rejected=rejected)
    return {
        "fix_status": "declined",
        "patch": None,
        "message": (
            f"[Monitor] FIX {run_id}: the fix was declined; train.py unchanged, not counted as an attempt, and "
            "the same patch is not offered again"
        ),
    }


def route_after_approve(state: MonitorState) -> Literal["archive", "notify"]:
    return "archive" if state.get("fix_status") == "approved" else "notify"


def archive(state: MonitorState, ctx: MonitorContext) -> dict[str, Any]:
    """Write the pending fix: archive train.py (a copy of its content) and write the new one."""
    run_id = state["run_id"]
    if not ctx.acquire(run_id):
        return {"fix_status": "busy"}
    saved = _saved(ctx, run_id)
    pending = saved.get("pending_fix") if isinstance(saved.get("pending_fix"), dict) else None
    fix = state.get("fix") or {}
    if pending is None or pending.get("hash") != fix.get("hash"):
        return {"fix_status": "stale"}
    meta = _meta(ctx, run_id)
    if meta.get("launch_count") != pending.get("launch_count_before"):
        if isinstance(meta.get("launch_count"), int) and pending.get("stage") == "written":
            return {"archived_as": pending.get("archived_as")}  # relaunched, not recorded: resume records it
        return {"fix_status": "stale"}
    if ctx.connection.store.status(run_id).process in _ALIVE:
        return {"fix_status": "stale"}
    folder = ctx.connection.store.path(run_id)
    current = _script_or_none(ctx, run_id)
    if _sha(current) == pending.get("new_sha"):
        return {"archived_as": pending.get("archived_as")}  # written before a kill: relaunch it
    if _sha(current) != pending.get("old_sha") or _outside_target(folder) is not None:
        _persist(ctx, run_id, pending_fix=None)
        return {
            "fix_status": "changed",
            "message": f"[Monitor] WARNING {run_id}: train.py changed while the fix was prepared; nothing written",
        }
    _persist(ctx, run_id, pending_fix={**pending, "stage": "approved"})
    script = folder / fmt.SCRIPT_FILE
    try:
        if script.is_symlink():  # the archive must hold the content, not a second link; the target stays
            fmt.atomic_write_text(script, current or "")
        update = ctx.connection.controller.update_script(run_id, str(pending["new_script"]))
    except (RunError, OSError) as exc:
        _persist(ctx, run_id, pending_fix=None)
        return {
            "fix_status": "write_failed",
            "message": f"[Monitor] WARNING {run_id}: the fix could not be written: {exc}",
        }
    version = int(update.archived_as[len("train_v") : -len(".py")]) if update.archived_as else None
    _persist(
        ctx,
        run_id,
        pending_fix={
            **pending,
            "stage": "written",
            "archived_as": update.archived_as,
            "archived_version": version,
        },
    )
    return {"archived_as": update.archived_as}


def route_after_archive(state: MonitorState) -> Literal["resume", "notify"]:
    return "notify" if state.get("fix_status") in ("busy", "stale", "changed", "write_failed") else "resume"


def _record_relaunch(
    ctx: MonitorContext,
    run_id: str,
    saved: dict[str, Any],
    pending: dict[str, Any],
    relaunch: dict[str, Any],
    meta: dict[str, Any],
    diagnosis: str,
) -> int:
    """Count the attempt, add it to the run's history and the ledger, clear the pending fix."""
    attempt = int(pending.get("attempt") or int(saved.get("fix_attempts") or 0) + 1)
    now = time.time()
    record = {
        "attempt": attempt,
        "outcome": "relaunched" if "pid" in relaunch else "relaunch_failed",
        "ok": "pid" in relaunch,
        "summary": pending.get("summary", ""),
        "source": pending.get("source", ""),
        "diff": pending.get("diff", ""),
        "hash": pending.get("hash"),
        "signature": pending.get("signature", ""),
        "traceback": pending.get("traceback", ""),
        "reason": diagnosis,
        "crash_step": pending.get("crash_step"),
        "archived_as": pending.get("archived_as"),
        "archived_version": pending.get("archived_version"),
        # launched_at is when the new process started; our clock minus a second is as good a bound
        "relaunched_at": float(meta.get("launched_at") or now) if relaunch.get("recovered") else now - 1.0,
        "launch_count": relaunch.get("launch_count"),
        "metrics_offset": pending.get("metrics_offset"),
        "relaunch": relaunch,
        "time": now,
    }
    _persist(
        ctx,
        run_id,
        fix_attempts=attempt,
        fixes=(list(saved.get("fixes") or []) + [record])[-MAX_HISTORY:],
        pending_fix=None,
        stall_reset_at=now,
        told=[],
        judge_key=None,
        stuck_key=None,
    )
    ctx.ledger.record(
        run_id=run_id,
        attempt=attempt,
        signature=str(pending.get("signature") or ""),
        summary=str(pending.get("summary") or ""),
        diff=str(pending.get("diff") or ""),
        outcome="relaunched",
    )
    return attempt


def _fix_message(
    ctx: MonitorContext, run_id: str, pending: dict[str, Any], attempt: int, where: str, note: str
) -> str:
    """One plain sentence of what changed, where it came from, and the diff."""
    return (
        f"[Monitor] FIX {run_id}: {pending.get('summary', '')} ({pending.get('source', 'llm')}{note}; "
        f"attempt {attempt}/{ctx.max_attempts}; old version kept as {pending.get('archived_as')}; {where})\n"
        f"{pending.get('diff', '')}"
    ).rstrip()


def finish_interrupted_relaunch(ctx: MonitorContext, run_id: str) -> str | None:
    """A fix written and relaunched by an assistant killed before it recorded the relaunch: record it."""
    pending = _saved(ctx, run_id).get("pending_fix")
    if not isinstance(pending, dict) or pending.get("stage") != "written":
        return None
    meta = _meta(ctx, run_id)
    if not isinstance(meta.get("launch_count"), int) or meta["launch_count"] == pending.get(
        "launch_count_before"
    ):
        return None
    if not ctx.acquire(run_id):
        return None
    try:
        saved = _saved(ctx, run_id)
        pending = saved.get("pending_fix")
        if not isinstance(pending, dict) or pending.get("stage") != "written":
            return None
        relaunch = {"pid": meta.get("pid"), "launch_count": meta["launch_count"], "recovered": True}
        attempt = _record_relaunch(ctx, run_id, saved, pending, relaunch, meta, "")
    finally:
        ctx.release(run_id)
    message = _fix_message(
        ctx,
        run_id,
        pending,
        attempt,
        f"relaunched as pid {meta.get('pid')}",
        ", recorded after an interruption",
    )
    ctx.tell(run_id, message)
    return message


def resume(state: MonitorState, ctx: MonitorContext) -> dict[str, Any]:
    """Relaunch the written fix and record it: the attempt is counted here, the pending fix cleared."""
    run_id = state["run_id"]
    try:
        saved = _saved(ctx, run_id)
        pending = dict(saved.get("pending_fix") or {})
        attempt = int(pending.get("attempt") or int(saved.get("fix_attempts") or 0) + 1)
        meta = _meta(ctx, run_id)
        before = pending.get("launch_count_before")
        if isinstance(meta.get("launch_count"), int) and meta.get("launch_count") != before:
            relaunch = {"pid": meta.get("pid"), "launch_count": meta["launch_count"], "recovered": True}
        else:
            pending["metrics_offset"] = _metrics_size(ctx, run_id)
            try:
                result = ctx.connection.controller.launch(run_id, reason=f"auto-fix #{attempt}")
                relaunch = {
                    "pid": result.pid,
                    "launch_count": result.launch_count,
                    "version": result.script_version,
                }
            except RunError as exc:
                relaunch = {"error": str(exc)}
            meta = _meta(ctx, run_id)
        attempt = _record_relaunch(ctx, run_id, saved, pending, relaunch, meta, state.get("diagnosis", ""))
    finally:
        ctx.release(run_id)
    where = (
        f"relaunched as pid {relaunch['pid']}"
        if "pid" in relaunch
        else f"relaunch failed: {relaunch['error']}"
    )
    note = ", left pending by an interrupted assistant" if state.get("fix_status") == "recover" else ""
    message = _fix_message(ctx, run_id, pending, attempt, where, note)
    ctx.tell(run_id, message)
    return {
        "relaunch": relaunch,
        "fixed": "pid" in relaunch,
        "fix_attempts": attempt,
        "archived_as": pending.get("archived_as"),
        "message": message,
        "told": [],
        "judge_key": "",
    }


# ------------------------------------------------------------------------------------------- telling
_ONCE = {
    "corrupt": "FIX-CORRUPT",
    "outside": "FIX-OUTSIDE",
    "stuck": "FIX-STUCK",
    "no_llm": "FIX-BLOCKED",
    "off": "FIX-BLOCKED",
    "unreachable": "FIX-UNREACHABLE",
}


def _fix_status_message(state: MonitorState, ctx: MonitorContext, status: str) -> str | None:
    run_id = state["run_id"]
    diagnosis = state.get("diagnosis", "")
    if status == "corrupt":
        return (
            f"[Monitor] WARNING {run_id}: {diagnosis} ({state.get('state_corrupt')}: the run is treated as "
            f"having reached the auto-fix limit; no rewrite. Delete {fmt.AUTO_STATE_FILE} to allow fixes again)"
        )
    if status == "limit":
        return f"[Monitor] WARNING {run_id}: {diagnosis} (the auto-fix limit ({ctx.max_attempts} attempts) is reached; no rewrite)"
    if status == "busy":
        return f"[Monitor] {run_id}: a fix is in progress in another assistant; leaving the run alone"
    if status == "stale":
        return f"[Monitor] {run_id}: another assistant already relaunched this run; nothing to fix here"
    if status == "outside":
        target = (state.get("fix") or {}).get("target")
        return (
            f"[Monitor] WARNING {run_id}: {diagnosis} (train.py links to {target}, outside the run folder: "
            "auto-fix neither sends that file to the LLM nor writes it; fix it by hand)"
        )
    if status == "stuck":
        return None  # told when it happened
    if status in ("off", "no_llm"):
        reason = "auto-fix is off" if status == "off" else "no LLM is available to write a patch"
        return f"[Monitor] WARNING {run_id}: {diagnosis} ({reason})"
    return None


def notify_node(state: MonitorState, ctx: MonitorContext) -> dict[str, Any]:
    run_id = state["run_id"]
    ctx.release(run_id)  # every path that ends here ends the fix sequence
    message = state.get("message")
    told = list(state.get("told") or [])
    decision = state.get("decision")
    if decision == "FIX":
        status = state.get("fix_status") or ("off" if ctx.policy == "off" else "")
        key = _ONCE.get(status)
        if status == "limit":
            key = f"FIX-LIMIT:{int(state.get('fix_attempts') or 0)}"
        if message is None:
            message = _fix_status_message(state, ctx, status)
        if key is not None:
            if key in told:
                message = None
            told = sorted(set(told) | {key})
    elif message is None:
        findings = [f for f in state.get("findings", []) if f.get("severity") in ISSUE_SEVERITIES]
        kinds = sorted({str(f.get("kind")) for f in findings})
        if [k for k in kinds if k not in told]:
            message = f"[Monitor] WARNING {run_id}: {state.get('diagnosis', '')}"
        told = kinds  # a kind that went away and comes back is told again
    if message:
        ctx.tell(run_id, message)
    _persist(ctx, run_id, told=told)
    return {"message": message, "told": told}
