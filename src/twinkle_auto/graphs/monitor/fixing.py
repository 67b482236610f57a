"""One fix attempt: find a patch that applies, compiles, passes the guards and differs from what failed.

Candidates come cheapest and surest first: a fix that already worked for the same error signature in
another run (the fix ledger), then a deterministic known fix, then the LLM. The LLM is asked for a
structured edit plan against a focused, numbered excerpt (never the whole script), and every answer it
gives is checked; when one cannot be used, the model is told exactly why (the parser's or the guard's
words, the lines that did not match) and asked again, up to `rounds` times. Nothing here touches the run
folder: the graph's nodes write, relaunch and count.
"""

from __future__ import annotations

import ast
import builtins
import difflib
import hashlib
import json
import logging
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import HumanMessage, SystemMessage

from twinkle_auto.graphs.monitor import prompts
from twinkle_auto.monitor.edits import apply_answer, edit_plan_schema
from twinkle_auto.monitor.fix_context import build_fix_context, estimate_tokens, statement_at
from twinkle_auto.monitor.guards import review_patch
from twinkle_auto.monitor.ledger import LedgerEntry
from twinkle_auto.monitor.patching import PatchError, apply_patch, unified_diff

log = logging.getLogger("twinkle_auto.monitor")

ROUNDS_PER_ATTEMPT = 3
RETRY_TEMPERATURES = (0.0, 0.5, 0.8)
"""Sampling temperature by how many answers this run's fixes already got: the first is the model's most
likely patch; after that a small model at temperature 0 sends the same patch again however it is told
why it failed, so later answers are sampled (the guards and the checks still judge every one)."""
"""Answers the model may give within one attempt, each after being told why the last could not be used."""
CONTEXT_TOKENS = 1700
"""Budget of the focused excerpt; system prompt, history and feedback bring a round to <= PROMPT_TOKENS."""
PROMPT_TOKENS = 2500
"""Budget of one round's whole prompt (estimated). A round whose feedback and history push it over gets a
smaller excerpt: the error, the failing lines and the names they use are kept, outer context goes."""
MIN_CONTEXT_TOKENS = 400
HISTORY_ATTEMPTS = 2
HISTORY_DIFF_CHARS = 700
FEEDBACK_ANSWER_CHARS = 500
_BUILTIN_NAMES = frozenset(dir(builtins)) | {"__file__", "__name__", "__doc__", "__spec__", "__builtins__"}


def script_hash(text: str) -> str:
    """Identity of a candidate script: the same patch on the same file gives the same hash."""
    return hashlib.sha1(text.encode("utf-8")).hexdigest()[:16]


# --------------------------------------------------------------------------------------------- review
@dataclass
class Review:
    """What the guards said about a patch: `unsafe` = new capabilities; any message = refusal."""

    ok: bool
    unsafe: bool
    messages: list[str]
    failing_lines: list[int] = field(default_factory=list)


def review(old: str, new: str, *, run_dir: str | Path, failing_lines: list[int]) -> Review:
    """The guards' verdict on one patch (capabilities, gaming, honesty), as plain data."""
    result = review_patch(old, new, run_dir=run_dir, failing_lines=failing_lines)
    return Review(bool(result.ok), bool(result.unsafe), list(result.messages()), list(failing_lines))


def changed_lines(old: str, new: str) -> list[int]:
    """1-based numbers of the lines of `new` that the patch replaced or inserted."""
    matcher = difflib.SequenceMatcher(a=old.splitlines(), b=new.splitlines(), autojunk=False)
    changed: list[int] = []
    for tag, _, _, j1, j2 in matcher.get_opcodes():
        if tag in ("replace", "insert"):
            changed.extend(range(j1 + 1, j2 + 1))
    return changed


def _defined_names(tree: ast.AST) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and isinstance(node.ctx, (ast.Store, ast.Del)):
            names.add(node.id)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.arg):
            names.add(node.arg)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            for alias in node.names:
                if alias.name == "*":
                    names.add("*")
                names.add((alias.asname or alias.name).split(".")[0])
        elif isinstance(node, ast.ExceptHandler) and node.name:
            names.add(node.name)
        elif isinstance(node, (ast.Global, ast.Nonlocal)):
            names.update(node.names)
        elif isinstance(node, ast.MatchAs | ast.MatchStar) and node.name:
            names.add(node.name)
    return names


def static_problems(old: str, new: str) -> list[str]:
    """Before anything runs: the patched script compiles, and the names its edited lines read exist.

    A name is "defined" when the script binds it anywhere or it is a builtin; that is what can be checked
    without running the script, and it catches the commonest broken fix (a helper or import the model
    assumed).
    """
    try:
        tree = ast.parse(new)
        compile(tree, "train.py", "exec")
    except SyntaxError as exc:
        where = f" at line {exc.lineno}" if exc.lineno else ""
        return [f"the patched script does not compile: {exc.msg}{where}"]
    defined = _defined_names(tree)
    if "*" in defined:
        return []
    changed = set(changed_lines(old, new))
    try:
        old_defined = _defined_names(ast.parse(old))
    except SyntaxError:
        old_defined = set()
    lost = (old_defined - defined) - _BUILTIN_NAMES
    missing: dict[str, int] = {}
    reads: dict[str, int] = {}  # names the edit stopped binding, where the script still reads them
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load)):
            continue
        if node.id in lost:
            reads.setdefault(node.id, node.lineno)
        if node.lineno in changed and node.id not in defined and node.id not in _BUILTIN_NAMES:
            missing.setdefault(node.id, node.lineno)
    problems = [
        f"line {line} uses {name!r}, which is not defined anywhere in the script (define or import it)"
        for name, line in sorted(missing.items(), key=lambda kv: kv[1])
    ]
    for name, line in sorted(reads.items(), key=lambda kv: kv[1]):
        problems.append(f"the edit removes the only assignment of {name!r}, which line {line} still reads")
    for name, line, first in _read_before_assigned(tree, changed):
        if name not in missing:
            problems.append(
                f"line {line} reads {name!r} before the script assigns it (first at line {first}): the "
                "edit uses a value that does not exist yet"
            )
    return problems


_SCOPES = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda, ast.ListComp, ast.SetComp)
_SCOPES_MORE = (ast.DictComp, ast.GeneratorExp)


def _read_before_assigned(tree: ast.Module, lines: set[int]) -> list[tuple[str, int, int]]:
    """(name, line, first binding line) for module-level code on `lines` that reads a module name
    before its first binding, outside any loop (in a loop an earlier iteration may have bound it).

    `X = X.view(256, 10)` where X was the data: the script would die with a NameError at start-up."""
    first_bound: dict[str, int] = {}
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            first_bound[node.name] = min(first_bound.get(node.name, node.lineno), node.lineno)
    found: list[tuple[str, int, int]] = []

    def visit(node: ast.AST, in_loop: bool) -> None:
        if isinstance(node, _SCOPES + _SCOPES_MORE):
            return  # another scope: its names resolve when it runs
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            for alias in node.names:
                name = (alias.asname or alias.name).split(".")[0]
                first_bound.setdefault(name, node.lineno)
            return
        loop = in_loop or isinstance(node, (ast.For, ast.AsyncFor, ast.While))
        if isinstance(node, ast.Assign | ast.AugAssign | ast.AnnAssign):
            value = node.value
            if value is not None:
                visit(value, loop)  # the value is read before the target is bound
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                for sub in ast.walk(target):
                    if isinstance(sub, ast.Name) and isinstance(sub.ctx, ast.Store):
                        first_bound.setdefault(sub.id, node.lineno)
                    elif isinstance(sub, ast.Name):
                        visit(sub, loop)
            return
        if isinstance(node, ast.Name):
            if isinstance(node.ctx, ast.Load) and node.lineno in lines and not loop:
                if node.id not in first_bound and node.id in later_bound:
                    found.append((node.id, node.lineno, later_bound[node.id]))
            elif isinstance(node.ctx, ast.Store):
                first_bound.setdefault(node.id, node.lineno)
            return
        for child in ast.iter_child_nodes(node):
            visit(child, loop)

    later_bound: dict[str, int] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            later_bound[node.id] = min(later_bound.get(node.id, node.lineno), node.lineno)
    for statement in tree.body:
        visit(statement, False)
    return found


# ------------------------------------------------------------------------------------------ candidates
@dataclass
class Candidate:
    new_script: str
    summary: str
    source: str
    """`llm`, `known fix: <name>`, or `the fix that worked for this error in run <id>`."""
    diff: str
    review: Review

    @property
    def hash(self) -> str:
        return script_hash(self.new_script)


@dataclass
class Proposal:
    """How one attempt to find a patch ended.

    outcome: `ok` (a clean candidate), `refused` (the last answer failed a guard; the candidate is kept
    so that `ask` can show it with the warning), `unusable` (no answer applied and compiled), `repeat`
    (the model only re-sent patches that already failed or were declined), `unreachable` (the LLM did
    not answer), `no_llm` (no deterministic fix and no LLM to ask).
    """

    outcome: str
    candidate: Candidate | None = None
    reason: str = ""
    rounds: int = 0
    llm_calls: int = 0
    prompt_tokens: list[int] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    """Deterministic candidates that were tried and why they were not used."""


@dataclass
class AttemptInput:
    """Everything one attempt looks at; plain data, read by the node from the run folder."""

    run_id: str
    run_dir: Path
    script: str
    traceback: str
    diagnosis: str
    policy: str
    history: list[dict[str, Any]] = field(default_factory=list)
    """Earlier attempts of this run: {attempt, diff, outcome, error}."""
    rejected: dict[str, str] = field(default_factory=dict)
    """hash of a candidate script -> why it must not be offered again (failed, declined)."""
    ledger_fixes: list[LedgerEntry] = field(default_factory=list)
    known_fix: Any = None
    """A `monitor.known_fixes.KnownFix` (or None): name, summary, new_script."""
    attempt: int = 1
    """Which attempt of the run this is (1-based)."""


def check_candidate(
    inp: AttemptInput, new_script: str, summary: str, source: str, failing_lines: list[int]
) -> tuple[Candidate | None, str, str]:
    """(candidate, why-not, kind); kind is "" (usable), `refused` (a guard said no: the candidate is
    returned with it), `repeat` (failed or declined before) or `unusable`."""
    if new_script == inp.script:
        return None, "the patch changes nothing in train.py", "unusable"
    why_rejected = inp.rejected.get(script_hash(new_script))
    if why_rejected:
        return None, why_rejected, "repeat"
    problems = static_problems(inp.script, new_script)
    if problems:
        return None, "; ".join(problems[:3]), "unusable"
    verdict = review(inp.script, new_script, run_dir=inp.run_dir, failing_lines=failing_lines)
    candidate = Candidate(new_script, summary, source, unified_diff(inp.script, new_script), verdict)
    if not verdict.ok:
        return candidate, "refused by the guards: " + "; ".join(verdict.messages[:3]), "refused"
    return candidate, "", ""


def _deterministic(inp: AttemptInput, failing_lines: list[int], notes: list[str]) -> Candidate | None:
    for entry in inp.ledger_fixes:
        try:
            new = apply_patch(inp.script, entry.diff)
        except PatchError as exc:
            notes.append(f"the fix from run {entry.run_id} does not apply here: {exc}")
            continue
        source = f"the fix that worked for this error in run {entry.run_id}"
        candidate, why, kind = check_candidate(inp, new, entry.summary, source, failing_lines)
        if candidate is not None and not kind:
            return candidate
        notes.append(f"the fix from run {entry.run_id} was not used: {why}")
    known = inp.known_fix
    if known is not None:
        source = f"known fix: {known.name}"
        candidate, why, kind = check_candidate(inp, known.new_script, known.summary, source, failing_lines)
        if candidate is not None and not kind:
            return candidate
        notes.append(f"{source} was not used: {why}")
    return None


# ------------------------------------------------------------------------------------------------ LLM
def _history_text(history: list[dict[str, Any]], nonce: str) -> str:
    shown = [h for h in history if h.get("diff")][-HISTORY_ATTEMPTS:]
    if not shown:
        return ""
    parts = [prompts.HISTORY_HEAD]
    for h in shown:
        diff = str(h.get("diff") or "")[:HISTORY_DIFF_CHARS]
        error = str(h.get("error") or h.get("outcome") or "")[:200]
        parts.append(
            f"Attempt {h.get('attempt')}: {h.get('outcome')} — {error}\n"
            + prompts.untrusted(diff, f"patch of attempt {h.get('attempt')}", nonce)
            + "\n"
        )
    return "".join(parts)


def build_messages(inp: AttemptInput, context_text: str, nonce: str, feedback: str = "") -> list[Any]:
    """The prompt of one round: rules, the untrusted blocks, earlier attempts, and why the last failed."""
    user = prompts.PATCH_USER.format(
        run_id=inp.run_id,
        diagnosis=prompts.untrusted(
            inp.diagnosis or "(none)", "monitor diagnosis, written from the log", nonce
        ),
        excerpt=prompts.untrusted(context_text, "error and numbered train.py excerpt", nonce),
        history=_history_text(inp.history, nonce),
        feedback=feedback,
    )
    return [
        SystemMessage(prompts.PATCH_SYSTEM.format(data_rule=prompts.data_rule(nonce))),
        HumanMessage(user),
    ]


def round_messages(inp: AttemptInput, context: Any, nonce: str, feedback: str = "") -> list[Any]:
    """`build_messages`, made to fit PROMPT_TOKENS when feedback and history push it over.

    Feedback (the last answer quoted, why it failed, the smaller question) and earlier attempts' patches
    grow with the rounds. The excerpt gives way first (it keeps the error, the failing lines and the
    names they use), then the older attempts' patches; the feedback, which says why the last answer
    failed, always stays.
    """
    messages = build_messages(inp, context.text, nonce, feedback)
    over = prompt_tokens(messages) - PROMPT_TOKENS
    if over <= 0:
        return messages
    budget = max(MIN_CONTEXT_TOKENS, estimate_tokens(context.text) - over - 20)
    text = build_fix_context(inp.script, inp.traceback, script_path="train.py", max_tokens=budget).text
    # still over: the earliest attempts' patches go next (the latest failure matters most), then all
    for history in (inp.history, inp.history[-1:], []):
        messages = build_messages(replace(inp, history=history), text, nonce, feedback)
        if prompt_tokens(messages) <= PROMPT_TOKENS:
            break
    return messages


def prompt_tokens(messages: list[Any]) -> int:
    """The estimated size of a prompt (what the budget and the bench's per-round figure count)."""
    return sum(estimate_tokens(str(m.content)) for m in messages)


LINE_FIX_SCHEMA: dict[str, Any] = {
    "title": "EditPlanLine",
    "description": "the new text of the failing statement",
    "type": "object",
    "properties": {"summary": {"type": "string"}, "replacement": {"type": "string"}},
    "required": ["summary", "replacement"],
}


def ask_plan(
    llm: BaseChatModel, messages: list[Any], schema: dict[str, Any] | None = None
) -> dict[str, Any] | str:
    """One call for an edit plan: structured output (json_schema) where the model supports it, else the
    answer's text, which `apply_answer` also reads (JSON, SEARCH/REPLACE or a unified diff).

    Exceptions of the call itself (unreachable, timeout) propagate: they are not the model's answer.
    """
    if schema is None:
        schema = {"title": "EditPlan", "description": "a minimal fix as line edits", **edit_plan_schema()}
    try:
        structured = llm.with_structured_output(schema, method="json_schema", include_raw=True)
    except (NotImplementedError, ValueError, TypeError, AttributeError):
        return str(llm.invoke(messages).content)
    result = structured.invoke(messages)
    parsed = result.get("parsed") if isinstance(result, dict) else result
    if isinstance(parsed, dict) and parsed:
        return parsed
    raw = result.get("raw") if isinstance(result, dict) else None
    return str(getattr(raw, "content", "") or "")


def with_temperature(llm: BaseChatModel, answers_before: int) -> BaseChatModel:
    """`llm` sampling at the temperature for its next answer (see RETRY_TEMPERATURES); a model without a
    `temperature` setting is used as it is."""
    temperature = RETRY_TEMPERATURES[min(answers_before, len(RETRY_TEMPERATURES) - 1)]
    current = getattr(llm, "temperature", None)
    if current is None or current == temperature or (answers_before == 0 and current is not None):
        return llm
    try:
        return llm.model_copy(update={"temperature": temperature})
    except (AttributeError, TypeError, ValueError):
        return llm


def failing_statement(script: str, failing: list[int]) -> tuple[int, int] | None:
    """1-based (first, last) lines of the simple statement at the last failing line, or None (a
    compound statement's header, such as a loop, is not a statement to rewrite alone)."""
    if not failing:
        return None
    try:
        tree = ast.parse(script)
    except SyntaxError:
        return None
    stmt = statement_at(tree, failing[-1])
    compound = (ast.For, ast.AsyncFor, ast.While, ast.If, ast.With, ast.AsyncWith, ast.Try)
    if not isinstance(stmt, ast.stmt) or isinstance(stmt, compound + (ast.FunctionDef, ast.ClassDef)):
        return None
    return stmt.lineno, stmt.end_lineno or stmt.lineno


def line_plan(answer: dict[str, Any] | str, span: tuple[int, int], current: str) -> dict[str, Any] | str:
    """A line-rewrite answer ({summary, replacement} for the failing statement) as an edit plan."""
    data: Any = answer
    if isinstance(answer, str):
        try:
            data = json.loads(answer[answer.find("{") : answer.rfind("}") + 1])
        except ValueError:
            return answer
    if not isinstance(data, dict) or not isinstance(data.get("replacement"), str):
        return answer
    edit = {"start_line": span[0], "end_line": span[1], "anchor": current, "replacement": data["replacement"]}
    return {"summary": str(data.get("summary") or ""), "edits": [edit]}


def _quote_answer(answer: dict[str, Any] | str) -> str:
    text = answer if isinstance(answer, str) else json.dumps(answer)
    return text[:FEEDBACK_ANSWER_CHARS] + (" ..." if len(text) > FEEDBACK_ANSWER_CHARS else "")


def propose(llm: BaseChatModel | None, inp: AttemptInput, *, rounds: int = ROUNDS_PER_ATTEMPT) -> Proposal:
    """Find the patch of one attempt (see the module docstring); never raises for the model's answers."""
    context = build_fix_context(inp.script, inp.traceback, script_path="train.py", max_tokens=CONTEXT_TOKENS)
    failing = list(context.failing_lines)
    notes: list[str] = []
    found = _deterministic(inp, failing, notes)
    if found is not None:
        return Proposal("ok", found, notes=notes)
    if llm is None:
        return Proposal("no_llm", reason="no LLM is available to write a patch", notes=notes)
    nonce = prompts.new_nonce()
    proposal = Proposal("unusable", notes=notes)
    feedback = ""
    kinds: list[str] = []
    last_refused: Candidate | None = None
    earlier = max(0, inp.attempt - 1)
    span = failing_statement(inp.script, failing)
    line_mode = False
    for index in range(rounds):
        sampled = with_temperature(llm, earlier + index)
        try:
            if line_mode and span is not None:
                current = "\n".join(inp.script.splitlines()[span[0] - 1 : span[1]])
                ask = prompts.LINE_ASK.format(
                    start=span[0],
                    end=span[1],
                    lines=prompts.untrusted(current, "the failing statement", nonce),
                )
                messages = round_messages(inp, context, nonce, feedback + ask)
                proposal.prompt_tokens.append(prompt_tokens(messages))
                answer = line_plan(ask_plan(sampled, messages, LINE_FIX_SCHEMA), span, current)
            else:
                messages = round_messages(inp, context, nonce, feedback)
                proposal.prompt_tokens.append(prompt_tokens(messages))
                answer = ask_plan(sampled, messages)
        except Exception as exc:  # unreachable, timeout, server error: not the model's answer
            proposal.outcome = "unreachable"
            proposal.reason = f"{type(exc).__name__}: {' '.join(str(exc).split())[:160]}"
            return proposal
        proposal.llm_calls += 1
        proposal.rounds += 1
        try:
            new_script, summary = apply_answer(inp.script, answer)
        except PatchError as exc:
            candidate, why, kind = None, str(exc), "unusable"
            # An edit plan the model cannot get into shape (it quotes lines that are not there, or sends
            # the lines back unchanged): the next round asks a smaller question, the failing statement's
            # new text, with the lines given. The fix may belong elsewhere; then this round is refused
            # or fails like any other, and later attempts ask for a whole plan again.
            line_mode = True
        else:
            candidate, why, kind = check_candidate(inp, new_script, summary, "llm", failing)
        if not kind and candidate is not None:
            proposal.outcome, proposal.candidate, proposal.reason = "ok", candidate, ""
            return proposal
        kinds.append(kind)
        if kind == "repeat":
            line_mode = True  # the same failed patch again: a different, smaller question
        if kind == "refused":
            last_refused = candidate
        proposal.reason = why
        feedback = prompts.FEEDBACK.format(
            why=why, answer=prompts.untrusted(_quote_answer(answer), "your previous answer", nonce)
        )
        log.info("fix round %d for %s not usable: %s", proposal.rounds, inp.run_id, why)
    if kinds and all(kind == "repeat" for kind in kinds):
        proposal.outcome = "repeat"
    elif last_refused is not None:
        proposal.outcome, proposal.candidate = "refused", last_refused
        proposal.reason = "refused by the guards: " + "; ".join(last_refused.review.messages[:3])
    return proposal
