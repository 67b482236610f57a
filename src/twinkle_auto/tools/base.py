"""What every tool family shares: the context, the session scope, approvals, argument coercion, results.

Tools are LangChain `StructuredTool`s with pydantic argument schemas, one module per family (`runs`,
`charts`, `server`, `search`, `recipes`, `skills`), each exposing `make_<family>_tools(ctx)`.

Where things live (the LangGraph way, so `--resume` and the LangGraph server get them right):
- Collaborators (the run connection, the server manager, skills) are a `ToolContext`, passed to the graph
  as its runtime context (`context_schema`); a tool reads it from `runtime.context` (`ToolRuntime`). The
  context given to `get_tools` is only the fallback for a graph invoked without one.
- The session (selected run, chart view) is chat-graph state. A tool reads it from `runtime.state` and
  changes it by returning `Command(update=…)` (`Scope.reply`), so the change is checkpointed.

Approvals: a tool that destroys or replaces something declares `metadata={"approval": describe}` where
`describe(args: dict, scope: Scope) -> Approval | str` says what will happen. It runs before the person
answers, so it only reads. The chat graph asks the person (a LangGraph interrupt); the tool never
prompts. `describe_call` is the one place that calls a describer.

A refusal or failure raises `ToolError` with one line the model can act on; the graph turns it into a
ToolMessage and the loop goes on.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, get_args, get_origin

from langchain_core.tools import StructuredTool
from pydantic import BaseModel, ConfigDict, model_validator
from typing_extensions import TypedDict

from twinkle_auto.connection import Connection

MAX_CHART_KEYS = 4
RESULT_BUDGET = 2000
"""Characters a tool result may take: results are sized for an LLM's context, not for a person."""


class ToolError(Exception):
    """A refusal or failure the model should read and act on (one line)."""


@dataclass
class ToolContext:
    """The collaborators tools act through: the graph's runtime context (`context_schema`).

    It holds no session state (that is graph state), so one context may serve many threads.
    `server` is built on first use: most sessions never touch the Twinkle server.
    """

    connection: Connection = field(default_factory=Connection.open)
    """Default: the runs under TWINKLE_HOME (what a LangGraph server builds when a request brings no context)."""
    server: Any = None
    """A `twinkle_auto.server.manager.ServerManager`; default: one over the connection's TWINKLE_HOME."""
    skills: Any = None
    """A `twinkle_auto.skills.SkillManager`, or None."""

    def server_manager(self) -> Any:
        if self.server is None:
            from twinkle_auto.server.manager import ServerManager

            self.server = ServerManager(self.connection.store.home)
        return self.server


class ChartView(TypedDict, total=False):
    """The chart of the selected run, as plain data in the graph state."""

    keys: list[str]
    step_range: list[int] | None
    """[first, last] step, or None for all steps."""


SESSION_KEYS = ("selected_run", "chart")
"""The graph-state keys tools may change through `Scope.reply`."""


@dataclass
class Scope:
    """What one tool call sees: the context, the session state and its own call id."""

    context: ToolContext
    state: Mapping[str, Any] = field(default_factory=dict)
    tool_call_id: str | None = None
    tool_name: str = ""

    @classmethod
    def of(cls, runtime: Any, fallback: ToolContext | None, name: str = "") -> Scope:
        """From a `ToolRuntime` (None when a tool is invoked directly, outside a graph)."""
        context = getattr(runtime, "context", None)
        if not isinstance(context, ToolContext):
            context = fallback
        if context is None:
            context = ToolContext(Connection.open())
        state = getattr(runtime, "state", None)
        return cls(
            context,
            state if isinstance(state, Mapping) else {},
            getattr(runtime, "tool_call_id", None),
            name,
        )

    @property
    def connection(self) -> Connection:
        return self.context.connection

    @property
    def selected_run(self) -> str | None:
        run = self.state.get("selected_run")
        return str(run) if run else None

    @property
    def chart(self) -> ChartView:
        chart = self.state.get("chart")
        return dict(chart) if isinstance(chart, Mapping) else {}  # type: ignore[return-value]

    def resolve_run(self, run_id: str | None, states: Iterable[str] = ()) -> str | None:
        """The run a call is about (`choose_run`): the id given when that run exists; otherwise the one
        run the person named in their latest message; otherwise the one run their words describe ("the
        chat one"; `states`, the statuses the action applies to, picks among several); otherwise, when
        the given id is not in that message either (the model made it up), the selected run; otherwise
        the id given (the tool then says it is unknown).

        Small models often leave the id out, or write a placeholder, a fragment of the words ("chat"),
        a near miss ("grpo-math-backup") or an invented id ("twinkle-grpo-2023-04-01-12-34-56"), while
        the person's words name or describe the run or name none: a command acts on the run the person
        meant, or on the selected one when they named none, and the tool's reply and the approval text
        say which. An id the person wrote that does not exist is theirs to correct, never replaced.
        """
        store = self.connection.store
        if run_id:
            try:
                if store.exists(run_id):
                    return run_id
            except ValueError:  # not even a valid id: let the tool say so, unless the person named one
                pass
        try:
            ids = store.run_ids()
        except OSError:
            ids = []
        return choose_run(
            run_id,
            latest_request(self.state),
            ids,
            self.selected_run,
            self.run_words,
            lambda run: store.status(run).effective_status,
            states,
        )

    def run_words(self, run_id: str) -> frozenset[str]:
        """`run_words` of one of the person's runs (its model read from meta.json; none if unreadable)."""
        try:
            model = self.connection.store.read_meta(run_id).get("model_id")
        except Exception:  # a corrupt meta.json leaves the id's own words
            model = None
        return run_words(run_id, model if isinstance(model, str) else None)

    def run_or_selected(self, run_id: str | None, states: Iterable[str] = ()) -> str:
        run = self.resolve_run(run_id, states)
        if not run:
            raise ToolError("no run given and none selected; call list_training_runs and pass run_id")
        return run

    def reply(self, content: str, **updates: Any) -> Any:
        """The tool's result; with session updates, a `Command` that writes them into the graph state."""
        unknown = set(updates) - set(SESSION_KEYS)
        if unknown:
            raise ValueError(f"not session keys: {sorted(unknown)}")
        if not updates or self.tool_call_id is None:
            return content  # invoked outside a graph: nothing to update
        from langchain_core.messages import ToolMessage
        from langgraph.types import Command

        message = ToolMessage(content=content, tool_call_id=self.tool_call_id, name=self.tool_name)
        return Command(update={**updates, "messages": [message]})


STEP_MARK = "twinkle_step"
"""additional_kwargs key of the messages the chat graph writes to hand the model one step of a request
(graphs/chat/steps.py): they are in the person's voice but not the person's words."""


def _extra(message: Any) -> Mapping[str, Any]:
    """The message's additional_kwargs (object or dict); empty when it has none."""
    extra = getattr(message, "additional_kwargs", None)
    if extra is None and isinstance(message, Mapping):
        extra = message.get("additional_kwargs")
    return extra if isinstance(extra, Mapping) else {}


def is_step_message(message: Any) -> bool:
    """Whether `message` is one of the chat graph's step messages, not something the person typed."""
    return bool(_extra(message).get(STEP_MARK))


def message_text(message: Any) -> str:
    """The text of a message (object or dict); a list of content parts is joined."""
    content = getattr(message, "content", None)
    if content is None and isinstance(message, Mapping):
        content = message.get("content")
    if isinstance(content, list):
        content = " ".join(str(p.get("text", "")) if isinstance(p, Mapping) else str(p) for p in content)
    return str(content or "")


STEP_TEXT = "twinkle_step_text"
"""additional_kwargs key of a step message's own words ("pause the one that is running")."""


def latest_request(state: Mapping[str, Any]) -> str:
    """The person's latest words in the session state ('' when there is none): the step being done
    when the chat graph handed a request of several steps one at a time (a call in "stop the chat run,
    then start a grpo run" acts on the chat run, whatever the grpo words describe), else their message."""
    for message in reversed(list(state.get("messages") or [])):
        if is_step_message(message):
            words = _extra(message).get(STEP_TEXT)
            if isinstance(words, str) and words.strip():
                return words
            continue  # a step saved before its words were kept: the whole request
        kind = getattr(message, "type", None) or (
            message.get("type") if isinstance(message, Mapping) else None
        )
        role = message.get("role") if isinstance(message, Mapping) else None
        if kind == "human" or role in ("user", "human"):
            return message_text(message)
    return ""


# ------------------------------------------------------------------------------------------ approvals
class Finding(TypedDict, total=False):
    """One guard finding shown with an approval (same fields as monitor.guards' GuardFinding)."""

    family: str
    rule: str
    message: str
    line: int | None


class Approval(TypedDict, total=False):
    """What the person sees before a tool runs. Plain data: it travels in a LangGraph interrupt."""

    text: str
    """One or two lines: what will happen."""
    script: str
    """The whole script that will run (shown highlighted, paged when long)."""
    diff: str
    """A unified diff against what it replaces."""
    findings: list[Finding]
    """What the guards found in the script or patch."""
    unsafe: bool
    """The findings block the tool unless the person approves this very call."""
    editable: str
    """Name of the argument holding the script, when the person may edit it before it runs."""


Describer = Callable[[dict[str, Any], Scope], "Approval | str"]


def needs_approval(tool: Any) -> Describer | None:
    meta = getattr(tool, "metadata", None) or {}
    describe = meta.get("approval")
    return describe if callable(describe) else None


def reads_only(tool: Any) -> bool:
    """Whether the tool changes nothing (declared at its definition: `make_tool(..., reads_only=True)`)."""
    meta = getattr(tool, "metadata", None)
    return bool(isinstance(meta, Mapping) and meta.get("reads_only"))


def describe_call(tool: Any, args: dict[str, Any], scope: Scope) -> Approval:
    """The approval of one call, never raising: a describer bug must not block the question."""
    describe = needs_approval(tool)
    name = getattr(tool, "name", "tool")
    if describe is None:
        return {"text": f"Run {name}?"}
    try:
        result = describe(dict(args), scope)
    except ToolError as exc:
        return {"text": f"Run {name}? (it will fail: {exc})"}
    except Exception as exc:
        return {"text": f"Run {name} with {compact(args, 300)}? ({type(exc).__name__} while describing)"}
    return {"text": result} if isinstance(result, str) else result


def approved_calls(scope: Scope) -> set[str]:
    """Call ids the person approved explicitly (after seeing the findings), recorded by the graph."""
    return {str(c) for c in scope.state.get("approved_calls") or []}


# ------------------------------------------------------------------------------------------ arguments
_NONE_WORDS = {"", "none", "null", "nil", "default"}
PLACEHOLDER_RUN_ID = re.compile(
    r"^<.*>$|^\{.*\}$|\b(your|selected|current|active|this|the)[-_ ]?(run)?[-_ ]?(id|name)?([-_ ]?here)?$"
    r"|^(run[-_ ]?id|run[-_ ]?name|selected|current|example)$|[-_ ]run[-_ ]?id$",
    re.IGNORECASE,
)
"""What a small model writes for a run id it was not given ("your-run-id", "selected_run_id",
"<run_id>"): read as "not given", so the tool uses the selected run instead of failing on a fake id."""


def _wants(annotation: Any, kinds: tuple[type, ...]) -> bool:
    if annotation in kinds or get_origin(annotation) in kinds:
        return True
    return any(_wants(a, kinds) for a in get_args(annotation) if a is not type(None))


def _optional(annotation: Any) -> bool:
    return type(None) in get_args(annotation)


def runs_named_in(text: str, ids: Iterable[str]) -> list[str]:
    """The ids of `ids` that `text` writes as whole words ("sft-chat", not the "sft" of "trl-sft")."""
    return [r for r in ids if re.search(rf"(?<![\w.-]){re.escape(r)}(?![\w-]|\.\w)", text)]


_GENERIC_WORDS = (
    "a an and the my our your this that it its of on in for to with from one ones run runs job jobs "
    "training trainings train experiment experiments model models finetune finetunes finetuning fine "
    "tune tuning tuned new"
)
NOT_A_RUN_WORD = frozenset(_GENERIC_WORDS.split())
"""Words that describe every run alike, so never tell one run from another ("the chat finetune")."""

_WORD_RE = re.compile(r"[a-z0-9]+(?:\.[0-9]+[a-z]*)?")


_CHUNK_RE = re.compile(r"[a-z0-9][a-z0-9._/-]*[a-z0-9]|[a-z0-9]")


def _words(text: str) -> list[str]:
    return _WORD_RE.findall(text.lower())


def _said_words(text: str) -> set[str]:
    """The words of a request, a name written with - _ or / ("sft-chat-2", "Qwen/Qwen2.5-7B") kept
    whole: it names one thing, so its parts do not describe a run (an id the person wrote that does not
    exist is theirs to correct, not a description of the run whose id it resembles)."""
    out: set[str] = set()
    for chunk in _CHUNK_RE.findall(text.lower()):
        out |= {chunk} if re.search(r"[-_/]", chunk) else set(_words(chunk))
    return out


def run_words(run_id: str, model_id: str | None = None) -> frozenset[str]:
    """Words a person may use for a run instead of its id: the parts of the id ("sft", "chat") and of
    its model's id ("qwen2.5", "qwen", "0.5b", "instruct"), minus NOT_A_RUN_WORD and bare small numbers."""
    words = set(_words(run_id))
    if model_id:
        words |= {model_id.lower(), model_id.lower().rsplit("/", 1)[-1]}
    for part in _words((model_id or "").replace("/", " ")):
        words.add(part)
        stem = re.match(r"[a-z]+", part)
        if stem and stem.group() != part and len(stem.group()) > 2:
            words.add(stem.group())  # "qwen2.5" is also said "qwen"
    return frozenset(w for w in words if w not in NOT_A_RUN_WORD and not (w.isdigit() and len(w) < 3))


def runs_described_in(text: str, words_of: Mapping[str, Iterable[str]]) -> list[str]:
    """The runs `text` points at by description ("the chat one", "the qwen 0.5b run", "the math
    GRPO"): of the words it shares with the runs' `run_words`, those some runs have and others not
    count; the runs with the most of them, or none when no such word is said.

    Why: people name runs by what they are, and the 1.5B model then passes a fragment ("chat") as the
    run id, or none and the tool would act on the selected run. Several runs fit equally ("the qwen
    run" of four Qwen runs) means the words do not say which: the caller decides (states, or asking)."""
    words = {r: frozenset(w) for r, w in words_of.items()}
    said = _said_words(text) - NOT_A_RUN_WORD
    score: dict[str, int] = {}
    for word in said:
        holders = [r for r, w in words.items() if word in w]
        if 0 < len(holders) < len(words):
            for r in holders:
                score[r] = score.get(r, 0) + 1
    if not score:
        return []
    top = max(score.values())
    return [r for r in words if score.get(r) == top]


def choose_run(
    given: str | None,
    request: str,
    ids: Iterable[str],
    selected: str | None,
    words_of: Callable[[str], Iterable[str]],
    status_of: Callable[[str], str] | None = None,
    states: Iterable[str] = (),
) -> str | None:
    """The run a call acts on (Scope.resolve_run says why, in this order): the id given when that run
    exists; else the one run the person's latest words (`request`) name by id; else the one they
    describe (among several described, the one whose status is in `states`, the statuses the action
    applies to); else, for an id the model made up (not in the words), the selected run; else the id
    given, or the selected run. The chat's grounding checks and the tools call this one function, so a
    call is judged on the run it will act on."""
    ids = list(ids)
    if given and given in ids:
        return given
    named = runs_named_in(request, ids) if request else []
    if len(named) == 1:
        return named[0]
    if not named and request:
        described = runs_described_in(request, {r: words_of(r) for r in ids})
        wanted = set(states)
        if len(described) > 1 and wanted and status_of is not None:
            described = [r for r in described if status_of(r) in wanted]
        if len(described) == 1:
            return described[0]
    if given and not named and request and selected and given.lower() not in request.lower():
        return selected  # the person wrote no id and not this one: a guess of the model
    return given or selected


class ToolArgs(BaseModel):
    """Argument schemas of our tools: common slips of small models are repaired before validation.

    - an object or list sent as a JSON string (`"[{\\"model_id\\": …}]"`) is parsed;
    - a single item where a list is expected becomes a one-item list; "a, b" becomes ["a", "b"];
    - "null"/"none" for an optional field means the field is left out;
    - unknown keys are ignored (pydantic's default), so a stray extra argument costs nothing.
    What cannot be repaired fails with pydantic's message, which names the field and what it expects.
    """

    model_config = ConfigDict(populate_by_name=True, json_schema_extra=lambda schema: _drop_titles(schema))
    GROUNDED: ClassVar[tuple[str, ...]] = ()
    """Fields that name something the person must have named (a model, a dataset, a script, a server,
    a run, metrics): the chat graph does not keep a call whose value for one of them is nowhere in the
    conversation (for a list of names: none of them is)."""
    GUESS_IS_DEFAULT: ClassVar[tuple[str, ...]] = ()
    """Grounded fields whose default is what a call without them means ("the models on my server": the
    server we started): a value nobody gave is dropped, as if left out, and the call runs."""
    MAKES_A_RUN: ClassVar[bool] = False
    """The call makes a new run: when the person's words name one of their runs and the call names none
    of its own grounded values, the request is about that run, and the call is sent back."""

    RUN_STATES: ClassVar[tuple[str, ...]] = ()
    """Effective statuses (store.effective_status: running, paused, stopped, crashed, failed,
    finished…) of the runs this action applies to; empty for any. A call on a run in another state is
    sent back before it runs or asks for approval, with the run's state, `STATE_HINTS` and the runs that
    are in one of these: pausing a paused run or resuming a running one is never what was meant."""
    STATE_HINTS: ClassVar[Mapping[str, str]] = {}
    """Why a run in a given state does not need this action ("paused": "it is already paused")."""
    ASKED_BY: ClassVar[Mapping[str, tuple[str, ...]]] = {}
    """Actions akin to this one and the words that ask for each ({"pause_training": ("pause", "on
    hold"), …}): which of them the person's words ask for."""
    NEVER_FOR: ClassVar[tuple[str, ...]] = ()
    """Actions of ASKED_BY this one must never stand in for: a call when the person's words ask for
    one of these, and for no other action of ASKED_BY, is sent back ("pause it" answered with
    resume_training; "put it on hold" with stop_training)."""

    @classmethod
    def amend(cls, args: Mapping[str, Any], request: str) -> Mapping[str, Any]:
        """The call's arguments with what the person's `request` (their words for this step) fixes
        uniquely set to it; unchanged by default."""
        return args

    @classmethod
    def mismatches(cls, args: Mapping[str, Any], request: str, conversation: str = "") -> list[str]:
        """Why the call's choices contradict the person's `request` (their words for this step; the
        whole `conversation`, lowercased, is what the person and the tools said before), one
        clause each; none by default. The chat graph asks the model once more, with these clauses."""
        return []

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        """Optional fields are drawn as their plain type: `anyOf [X, null]` and `default: null` cost the
        model tokens on every call and say nothing a missing key does not say."""
        super().__pydantic_init_subclass__(**kwargs)
        changed = False
        for info in cls.model_fields.values():
            if _optional(info.annotation) and info.json_schema_extra is None:
                info.json_schema_extra = _plain_optional
                changed = True
        if changed:
            cls.model_rebuild(force=True)

    @model_validator(mode="before")
    @classmethod
    def _coerce(cls, data: Any) -> Any:
        if isinstance(data, str):
            try:
                data = json.loads(data)
            except ValueError:
                return data
        if not isinstance(data, dict):
            return data
        out = dict(data)
        for name, info in cls.model_fields.items():
            key = name if name in out else next((a for a in _aliases(info) if a in out), None)
            if key is None:
                continue
            value = out[key]
            annotation = info.annotation
            if isinstance(value, str) and value.strip().lower() in _NONE_WORDS and _optional(annotation):
                out.pop(key)
                continue
            placeholder = isinstance(value, str) and bool(PLACEHOLDER_RUN_ID.search(value.strip()))
            if name == "run_id" and placeholder and _optional(annotation):
                out.pop(key)
                continue
            wants_list = _wants(annotation, (list,))
            wants_dict = _wants(annotation, (dict,)) or _wants_model(annotation)
            if isinstance(value, str) and (wants_list or wants_dict):
                text = value.strip()
                if text[:1] in "[{":
                    try:
                        value = json.loads(text)
                    except ValueError:
                        pass
            if wants_list and not isinstance(value, list):
                if isinstance(value, str) and not _wants_model_list(annotation):
                    value = [v.strip() for v in re.split(r"[,;]", value) if v.strip()]
                elif value is not None:
                    value = [value]
            out[key] = value
        return out


def _drop_titles(schema: Any) -> None:
    """Property titles ('Start Step') repeat the names; the model reads names and descriptions."""
    if isinstance(schema, dict):
        schema.pop("title", None)
        for value in schema.values():
            if isinstance(value, dict):
                for sub in value.values() if value is schema.get("properties") else [value]:
                    _drop_titles(sub)
            elif isinstance(value, list):
                for item in value:
                    _drop_titles(item)


def _plain_optional(schema: dict[str, Any]) -> None:
    options = schema.get("anyOf")
    if isinstance(options, list):
        kept = [o for o in options if o != {"type": "null"}]
        if len(kept) == 1 and len(kept) < len(options):
            del schema["anyOf"]
            schema.update(kept[0])
    if "default" in schema and schema["default"] is None:
        del schema["default"]


def _aliases(info: Any) -> list[str]:
    alias = info.validation_alias
    choices = getattr(alias, "choices", None)
    if choices:
        return [c for c in choices if isinstance(c, str)]
    return [alias] if isinstance(alias, str) else []


def _wants_model(annotation: Any) -> bool:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return True
    return any(_wants_model(a) for a in get_args(annotation))


def _wants_model_list(annotation: Any) -> bool:
    if get_origin(annotation) is list:
        return any(_wants_model(a) for a in get_args(annotation))
    return any(_wants_model_list(a) for a in get_args(annotation))


def validation_message(exc: Exception, tool: str) -> str:
    """A pydantic ValidationError as one line per field: what was wrong and what is expected."""
    errors = getattr(exc, "errors", None)
    if not callable(errors):
        return f"invalid arguments for {tool}: {exc}"
    return _format_errors(errors(), tool)


def _format_errors(errors: Any, tool: str) -> str:
    parts = []
    for err in errors:
        where = ".".join(str(p) for p in err.get("loc", ())) or "arguments"
        got = err.get("input")
        shown = "" if isinstance(got, dict) else f" (got {json.dumps(got, default=str)[:60]})"
        parts.append(f"{where}: {err.get('msg', 'invalid')}{shown}")
    return f"invalid arguments for {tool}: " + "; ".join(parts) + ". Fix them and call the tool again."


# ------------------------------------------------------------------------------------------- results
def _finite(value: Any) -> Any:
    if isinstance(value, float):
        if not math.isfinite(value):
            return "NaN" if value != value else ("inf" if value > 0 else "-inf")
        return float(f"{value:.6g}")
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def compact(data: Any, budget: int = RESULT_BUDGET) -> str:
    """JSON for the model: short floats, no NaN tokens, cut to the budget with a marker."""
    text = json.dumps(_finite(data), separators=(",", ":"), default=str)
    if len(text) > budget:
        text = text[: budget - 20] + "…[truncated]"
    return text


def tool_error_message(exc: Exception, tool: str = "") -> str:
    """What the model reads when a tool fails: one line, and for bad arguments what to change."""
    from pydantic import ValidationError

    from twinkle_auto.connection.errors import RunError
    from twinkle_auto.runtime.format import RunIdError

    tool = tool or getattr(exc, "tool_name", "") or "the tool"
    cause = exc
    filtered = getattr(exc, "filtered_errors", None)  # ToolNode's, without injected arguments
    if filtered:
        return "Error: " + _format_errors(filtered, tool)
    # ToolNode wraps argument validation failures; the pydantic error is what says what to fix
    for _ in range(3):
        if isinstance(cause, ValidationError):
            return "Error: " + validation_message(cause, tool)
        inner = getattr(cause, "source", None) or cause.__cause__
        if inner is None:
            break
        cause = inner
    if isinstance(exc, (ToolError, RunError, RunIdError)):
        return "Error: " + " ".join(str(exc).split())
    return f"Error: {tool} failed: {type(exc).__name__}: {' '.join(str(exc).split())[:300]}"


class SchemaTool(StructuredTool):
    """A StructuredTool whose schema for the model is its own `args_schema` class.

    LangChain rebuilds a subset model for the model-facing schema and drops field-level schema settings
    on the way (our plain optional fields); our argument classes hold no injected fields, so the class
    itself is the right schema.
    """

    @property
    def tool_call_schema(self) -> Any:  # type: ignore[override]
        schema = self.args_schema
        if isinstance(schema, type) and issubclass(schema, ToolArgs):
            return schema
        return super().tool_call_schema


def make_tool(
    func: Callable[..., Any],
    name: str,
    description: str,
    args_schema: type[ToolArgs] | None = None,
    approval: Describer | None = None,
    reads_only: bool = False,
) -> SchemaTool:
    """One of our tools: `args_schema` None infers it from `func` (tools without arguments).

    `reads_only` declares a tool that changes nothing (no run, server, selection or chart view): the
    chat may make the model call one to read a fact again (graphs/chat/freshness.py).
    """
    metadata: dict[str, Any] = {"approval": approval} if approval else {}
    if reads_only:
        metadata["reads_only"] = True
    tool = SchemaTool.from_function(
        func=func,
        name=name,
        description=description,
        args_schema=args_schema,
        metadata=metadata,
    )
    assert isinstance(tool, SchemaTool)
    return tool
