"""The training monitor as an explicit LangGraph state machine.

    collect → triage → classify ─┬─ LGTM ──────────────────────────────────────────▶ END
                                 ├─ WARNING ─▶ notify ──────────────────────────────▶ END
                                 └─ FIX ─▶ rewrite ─┬─▶ (approve) ─▶ archive ─▶ resume ─▶ END
                                                    └─ rejected / declined ─▶ notify ─▶ END

One invocation is one tick of one run (thread `monitor:{run_id}`). The rules decide; the LLM is asked
only when there is something new to judge, explains it, and writes a minimal patch that must pass the
guards before anything on disk changes. The fix-attempt counter lives in the state and in the run folder,
so neither a restart of the assistant nor a new thread resets it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable
from typing import Any, Literal

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import HumanMessage, SystemMessage
from langgraph.graph import END, START, StateGraph
from langgraph.types import interrupt
from pydantic import BaseModel, Field

from twinkle_auto.connection import Connection
from twinkle_auto.connection.errors import RunError
from twinkle_auto.graphs.monitor import prompts
from twinkle_auto.graphs.monitor.state import MonitorState
from twinkle_auto.monitor.detectors import rule_decision, triage
from twinkle_auto.monitor.guards import check_patch
from twinkle_auto.monitor.patching import PatchError, apply_patch, extract_patch
from twinkle_auto.monitor.snapshot import collect as collect_snapshot
from twinkle_auto.monitor.snapshot import log_excerpt, trends
from twinkle_auto.monitor.thresholds import DEFAULT_THRESHOLDS, Thresholds
from twinkle_auto.runtime import format as fmt

log = logging.getLogger("twinkle_auto.monitor")

MAX_FIX_ATTEMPTS = 3
AutoFixPolicy = Literal["on", "ask", "off"]
_ISSUE_SEVERITIES = ("warning", "critical")


class Verdict(BaseModel):
    """The LLM's structured verdict (requested without tools)."""

    decision: Literal["LGTM", "WARNING", "FIX"] = Field(description="LGTM, WARNING or FIX")
    diagnosis: str = Field(
        description="one or two sentences: what is wrong, the evidence, what to do",
        max_length=400,  # a small model otherwise rambles into its token cap and the JSON never closes
    )


def _has_issue(findings: list[dict[str, Any]]) -> bool:
    return any(f.get("severity") in _ISSUE_SEVERITIES for f in findings)


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
    issues = [f for f in findings if f.get("severity") in _ISSUE_SEVERITIES]
    if not issues:
        return reason
    return "; ".join(str(f.get("message")) for f in issues[:3])


def _parse_verdict(text: str) -> Verdict:
    start, end = text.find("{"), text.rfind("}")
    if start < 0 or end <= start:
        raise ValueError("the LLM answered without a JSON verdict")
    return Verdict.model_validate(json.loads(text[start : end + 1]))


def ask_verdict(llm: BaseChatModel, messages: list[Any]) -> Verdict:
    """One call: structured output (json_schema) where the model supports it, else JSON read from text.

    `include_raw` keeps the raw answer, so a model that ignores the schema is parsed from its text
    instead of being asked twice.
    """
    try:
        structured = llm.with_structured_output(Verdict, method="json_schema", include_raw=True)
    except (NotImplementedError, ValueError, TypeError, AttributeError):
        return _parse_verdict(str(llm.invoke(messages).content))
    result = structured.invoke(messages)
    parsed = result.get("parsed") if isinstance(result, dict) else result
    if isinstance(parsed, Verdict):
        return parsed
    if isinstance(parsed, dict):
        return Verdict.model_validate(parsed)
    raw = result.get("raw") if isinstance(result, dict) else None
    return _parse_verdict(str(getattr(raw, "content", "") or ""))


def _short_error(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return f"{type(exc).__name__}: {text[:160]}"


def build_monitor_graph(
    llm: BaseChatModel | None,
    connection: Connection,
    *,
    policy: AutoFixPolicy = "on",
    thresholds: Thresholds = DEFAULT_THRESHOLDS,
    max_attempts: int = MAX_FIX_ATTEMPTS,
    use_llm: bool = True,
    notify: Callable[[str, str], None] | None = None,
) -> StateGraph:
    """An uncompiled monitor graph; compile it with a checkpointer of your own (needed for `ask`).

    `llm` may be None (rules only). `notify(run_id, message)` is called with every message the graph has
    to tell, besides the message being returned in the state.
    """
    store = connection.store
    controller = connection.controller
    rows_cache: dict[str, tuple[list[dict[str, Any]], str]] = {}
    fixes_cache: dict[str, str] = {}

    def persisted(run_id: str) -> dict[str, Any]:
        return store.auto_state(run_id)

    def persist(run_id: str, **fields: Any) -> None:
        state = store.auto_state(run_id)
        state.update(fields)
        try:
            store.save_auto_state(run_id, state)
        except (OSError, RunError) as exc:
            log.warning("could not save monitor state of %s: %s", run_id, exc)

    # ---------------------------------------------------------------------------------------- nodes
    def collect(state: MonitorState) -> dict[str, Any]:
        run_id = state["run_id"]
        saved = persisted(run_id)
        snap = collect_snapshot(connection, run_id, stall_reset_at=saved.get("stall_reset_at"))
        rows = snap.pop("metrics")
        rows_cache[run_id] = (rows, snap["log_tail"])
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
        return {
            **earlier,
            "snapshot": snap,
            "digest": snap["digest"],
            "fix_attempts": attempts,
            "told": list(told),
            "message": None,
            "patch": None,
            "archived_as": None,
            "relaunch": None,
            "fixed": False,
        }

    def triage_node(state: MonitorState) -> dict[str, Any]:
        run_id = state["run_id"]
        snap = dict(state["snapshot"])
        cached = rows_cache.pop(run_id, None)
        if cached is None:  # resumed in another process: read again
            again = collect_snapshot(connection, run_id)
            cached = (again["metrics"], again["log_tail"])
        rows, log_tail = cached
        findings = triage({**snap, "metrics": rows, "log_tail": log_tail}, thresholds)
        return {"findings": findings}

    def classify(state: MonitorState) -> dict[str, Any]:
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
        elif llm is None or not use_llm:
            out.update(
                decision=rules["decision"],
                diagnosis=_rules_diagnosis(findings, rules["reason"]),
                verdict_source="rules" if not use_llm else "rules (no LLM configured)",
            )
        else:
            messages = [
                SystemMessage(prompts.VERDICT_SYSTEM),
                HumanMessage(
                    prompts.VERDICT_USER.format(
                        run_id=run_id,
                        status=snap.get("status"),
                        process_state=snap.get("process_state"),
                        last_step=snap.get("last_step"),
                        total_steps=snap.get("total_steps"),
                        rule_decision=rules["decision"],
                        rule_reason=rules["reason"],
                        findings=_findings_text(findings),
                        trends=json.dumps(snap.get("trends", {}), default=str)[:2000],
                        log=snap.get("log_excerpt", ""),
                    )
                ),
            ]
            out["llm_calls"] = int(state.get("llm_calls") or 0) + 1
            try:
                verdict = ask_verdict(llm, messages)
                decision = _constrain(verdict.decision, rules["decision"], findings)
                out.update(decision=decision, diagnosis=verdict.diagnosis.strip(), verdict_source="llm")
            except Exception as exc:  # unreachable, timeout, malformed: the rules decide alone
                log.warning("verdict LLM failed for %s: %s", run_id, exc)
                out.update(
                    decision=rules["decision"],
                    diagnosis=_rules_diagnosis(findings, rules["reason"]),
                    verdict_source=f"rules (LLM unreachable: {_short_error(exc)})",
                )
        if snap.get("effective_status") in (fmt.FINISHED,) and out["decision"] == "LGTM":
            out["done"] = True
        persist(
            run_id,
            judge_key=key,
            decision=out["decision"],
            diagnosis=out["diagnosis"],
            verdict_source=out["verdict_source"],
            checked_at=time.time(),
        )
        return out

    def route_after_classify(state: MonitorState) -> Literal["rewrite", "notify", "__end__"]:
        decision = state.get("decision")
        if decision == "FIX":
            if (
                policy == "off"
                or int(state.get("fix_attempts") or 0) >= max_attempts
                or llm is None
                or not use_llm
            ):
                return "notify"
            return "rewrite"
        if decision == "WARNING":
            return "notify"
        return END

    def rewrite(state: MonitorState) -> dict[str, Any]:
        run_id = state["run_id"]
        attempts = int(state.get("fix_attempts") or 0) + 1
        persist(run_id, fix_attempts=attempts)  # counted before the LLM answers: a crash here still counts
        snap = state["snapshot"]
        out: dict[str, Any] = {"fix_attempts": attempts}
        try:
            script = store.script(run_id)
            answer = llm.invoke(  # type: ignore[union-attr]
                [
                    SystemMessage(prompts.PATCH_SYSTEM),
                    HumanMessage(
                        prompts.PATCH_USER.format(
                            run_id=run_id,
                            diagnosis=state.get("diagnosis", ""),
                            log=snap.get("log_excerpt", ""),
                            version=fmt.current_version(store.path(run_id)),
                            script=script,
                        )
                    ),
                ]
            )
            out["llm_calls"] = int(state.get("llm_calls") or 0) + 1
            patch = extract_patch(str(answer.content))
            new_script = apply_patch(script, patch)
            violations = check_patch(script, new_script)
            if violations:
                raise PatchError("; ".join(violations[:3]))
        except Exception as exc:
            reason = str(exc) if isinstance(exc, (PatchError, RunError)) else _short_error(exc)
            _record_fix(run_id, attempts, ok=False, reason=reason)
            out.update(patch=None, message=_fix_rejected_message(run_id, attempts, max_attempts, reason))
            return out
        fixes_cache[run_id] = new_script
        out["patch"] = patch
        return out

    def route_after_rewrite(state: MonitorState) -> Literal["approve", "archive", "notify"]:
        if not state.get("patch"):
            return "notify"
        return "approve" if policy == "ask" else "archive"

    def approve(state: MonitorState) -> dict[str, Any]:
        # No side effects before interrupt(): this node re-runs from the top on resume.
        answer = interrupt(
            {
                "kind": "fix_approval",
                "run_id": state["run_id"],
                "question": f"Apply this fix to {state['run_id']}/train.py and relaunch it?",
                "diagnosis": state.get("diagnosis", ""),
                "patch": state.get("patch", ""),
            }
        )
        approved = answer is True or (isinstance(answer, str) and answer.strip().lower() in ("y", "yes"))
        if isinstance(answer, dict):
            approved = bool(answer.get("approved"))
        if approved:
            return {}
        _record_fix(
            state["run_id"], int(state.get("fix_attempts") or 0), ok=False, reason="declined by the user"
        )
        return {
            "patch": None,
            "message": f"[Monitor] FIX {state['run_id']}: the fix was declined; train.py unchanged",
        }

    def route_after_approve(state: MonitorState) -> Literal["archive", "notify"]:
        return "archive" if state.get("patch") else "notify"

    def archive(state: MonitorState) -> dict[str, Any]:
        run_id = state["run_id"]
        new_script = fixes_cache.pop(run_id, None)
        if new_script is None:  # resumed elsewhere: the patch applies deterministically to train.py
            new_script = apply_patch(store.script(run_id), state.get("patch") or "")
        update = controller.update_script(run_id, new_script)
        return {"archived_as": update.archived_as}

    def resume(state: MonitorState) -> dict[str, Any]:
        run_id = state["run_id"]
        attempts = int(state.get("fix_attempts") or 0)
        try:
            result = controller.launch(run_id, reason=f"auto-fix #{attempts}")
            relaunch = {
                "pid": result.pid,
                "launch_count": result.launch_count,
                "version": result.script_version,
            }
        except RunError as exc:
            relaunch = {"error": str(exc)}
        now = time.time()
        persist(run_id, stall_reset_at=now, told=[], judge_key=None)
        _record_fix(
            run_id,
            attempts,
            ok="error" not in relaunch,
            reason=state.get("diagnosis", ""),
            archived_as=state.get("archived_as"),
            relaunch=relaunch,
        )
        where = (
            f"relaunched as pid {relaunch['pid']}"
            if "pid" in relaunch
            else f"relaunch failed: {relaunch['error']}"
        )
        message = (
            f"[Monitor] FIX {run_id}: {state.get('diagnosis', '')} — patched train.py "
            f"(attempt {attempts}/{max_attempts}, old version kept as {state.get('archived_as')}), {where}"
        )
        _tell(run_id, message)
        return {
            "relaunch": relaunch,
            "fixed": "pid" in relaunch,
            "message": message,
            "told": [],
            "judge_key": "",
        }

    def notify_node(state: MonitorState) -> dict[str, Any]:
        run_id = state["run_id"]
        message = state.get("message")
        told = list(state.get("told") or [])
        if message is None:
            findings = [f for f in state.get("findings", []) if f.get("severity") in _ISSUE_SEVERITIES]
            kinds = sorted({str(f.get("kind")) for f in findings})
            decision = state.get("decision")
            if decision == "FIX":
                attempts = int(state.get("fix_attempts") or 0)
                if attempts >= max_attempts:
                    reason = f"the auto-fix limit ({max_attempts} attempts) is reached; no rewrite"
                elif policy == "off":
                    reason = "auto-fix is off"
                else:
                    reason = "no LLM is available to write a patch"
                key = f"FIX-LIMIT:{attempts}" if attempts >= max_attempts else "FIX-BLOCKED"
                new = key not in told
                message = (
                    f"[Monitor] WARNING {run_id}: {state.get('diagnosis', '')} ({reason})" if new else None
                )
                told = sorted(set(told) | {key})
            else:
                new_kinds = [k for k in kinds if k not in told]
                if new_kinds:
                    message = f"[Monitor] WARNING {run_id}: {state.get('diagnosis', '')}"
                told = kinds  # a kind that went away and comes back is told again
        if message:
            _tell(run_id, message)
        persist(run_id, told=told)
        return {"message": message, "told": told}

    def _tell(run_id: str, message: str) -> None:
        log.info("%s", message)
        if notify is not None:
            try:
                notify(run_id, message)
            except Exception:  # a broken display must not stop the monitor
                log.exception("notify callback failed")

    def _record_fix(run_id: str, attempt: int, *, ok: bool, reason: str, **extra: Any) -> None:
        history = list(persisted(run_id).get("fixes", []))
        history.append({"attempt": attempt, "ok": ok, "reason": reason[:500], "time": time.time(), **extra})
        persist(run_id, fixes=history[-20:])

    graph = StateGraph(MonitorState)
    graph.add_node("collect", collect)
    graph.add_node("triage", triage_node)
    graph.add_node("classify", classify)
    graph.add_node("notify", notify_node)
    graph.add_node("rewrite", rewrite)
    graph.add_node("approve", approve)
    graph.add_node("archive", archive)
    graph.add_node("resume", resume)
    graph.add_edge(START, "collect")
    graph.add_edge("collect", "triage")
    graph.add_edge("triage", "classify")
    graph.add_conditional_edges("classify", route_after_classify, ["rewrite", "notify", END])
    graph.add_conditional_edges("rewrite", route_after_rewrite, ["approve", "archive", "notify"])
    graph.add_conditional_edges("approve", route_after_approve, ["archive", "notify"])
    graph.add_edge("archive", "resume")
    graph.add_edge("resume", END)
    graph.add_edge("notify", END)
    return graph


def _constrain(llm_decision: str, rules_decision: str, findings: list[dict[str, Any]]) -> str:
    """The LLM explains and may soften; it cannot invent a FIX the rules did not see.

    FIX needs a code-error traceback from a dead process (a rewrite cannot fix hardware or a live run);
    a run the rules found healthy stays LGTM, since a 1.5B model's judgement of numbers is weak.
    """
    has_code_error = any(f.get("kind") == "CODE_ERROR" for f in findings)
    if llm_decision == "FIX" and not has_code_error:
        return rules_decision
    if rules_decision == "LGTM":
        return "LGTM"
    return llm_decision


def _fix_rejected_message(run_id: str, attempt: int, max_attempts: int, reason: str) -> str:
    return (
        f"[Monitor] WARNING {run_id}: auto-fix attempt {attempt}/{max_attempts} rejected, train.py unchanged: "
        f"{reason}"
    )


def compile_monitor_graph(
    llm: BaseChatModel | None, connection: Connection, *, checkpointer: Any = None, **kwargs: Any
) -> Any:
    return build_monitor_graph(llm, connection, **kwargs).compile(checkpointer=checkpointer)


def monitor_thread(run_id: str) -> dict[str, Any]:
    """The config of a run's monitor thread (one thread per run)."""
    return {"configurable": {"thread_id": f"monitor:{run_id}"}}
