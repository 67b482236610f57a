"""Tool calls held against the conversation before they run: what the model made up is not the person's.

A small model asked "hi there" may answer with start_training(model="twinkle-llm"); asked for "the
models on my server" it may add url="https://huggingface.co"; told "a plain PyTorch fine-tune" it may
pick the TRL recipe. Which model to train, on which data, with which script, on which server and with
which framework are the person's to say (or a tool's to report). Each argument schema declares which
of its fields name such things (tools/base.py: ToolArgs), and before a call runs the agent node
(nodes.agent) applies, in order:

1. `amend`: a value nobody gave, in a field whose default is what the call means (`GUESS_IS_DEFAULT`),
   is dropped, as if left out; a choice the person's words fix uniquely (the schema's `amend`) is set.
2. `refused_calls`: a value nobody gave in a field that defines the action (`GROUNDED`: model, dataset,
   script), or a choice that contradicts the person's words (the schema's `mismatches`), means the
   call is not kept: the model is asked once more, with a note saying why. It is not shown its refused
   call (shown one, the 1.5B model reported it as done). Refused again, the tool is withheld for the
   step: the model is asked a last time with the other tools only (the 1.5B model resends a refused
   call word for word, so a second note alone changes nothing). That third answer runs as it is: the
   approval and the tool's own checks are still ahead of it.

Matching is lenient on purpose (refusing a value the person did give is worse than letting a guess
through): case, punctuation and spacing are ignored, and a hub id's or a path's last part is enough.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from typing import Any

from langchain_core.messages import AIMessage, AnyMessage, HumanMessage, ToolMessage
from langchain_core.tools import BaseTool

from twinkle_auto.tools.base import choose_run, message_text, run_words

UNGROUNDED = "{name}={value!r} is in nothing the person said or a tool returned"
ADVICE = (
    "Use only values from the conversation: ask the person for what they did not give, or answer "
    "without a tool if they asked for nothing to be done."
)
WITHHELD = (
    "{tools} {verb} not for this request: call the tool whose description fits what the person "
    "asked, or ask them for what is missing."
)
ABOUT_A_RUN = "a request that names a run is about that run"
ABOUT_ONLY = "The request is about that run: call whichever of {tools} fits what the person asked."
SHORT = 3
"""Values this short (normalised) are matched as whole words: without spaces they occur by accident."""
_NOT_ALNUM = re.compile(r"[^0-9a-z]+")


def _norm(text: str) -> str:
    return _NOT_ALNUM.sub("", text.lower())


def evidence(messages: Sequence[AnyMessage]) -> str:
    """What the person wrote and the tools returned, lowercased (the model's own words are not evidence)."""
    return " ".join(message_text(m) for m in messages if isinstance(m, (HumanMessage, ToolMessage))).lower()


def latest_words(messages: Sequence[AnyMessage]) -> str:
    """The text of the last message in the person's voice (theirs, or the step of it being done)."""
    for message in reversed(messages):
        if isinstance(message, HumanMessage):
            return message_text(message)
    return ""


def is_grounded(value: str, said: str) -> bool:
    """Whether `value` (or, for a path or hub id, its last part) occurs in the evidence `said`.

    Long values are compared with punctuation and spacing taken out ("qwen2.5 0.5b" is
    "Qwen2.5-0.5B"); values of three characters or fewer must stand as a word, or be the initials of
    consecutive words ("lr": "learning rate").
    """
    if not _norm(value):
        return True
    for candidate in (value, re.split(r"[/\\]", value.rstrip("/\\"))[-1]):
        short = _norm(candidate)
        if not short:
            continue
        if len(short) <= SHORT:
            if re.search(rf"(?<![0-9a-z]){re.escape(candidate.lower())}(?![0-9a-z])", said):
                return True
            if len(short) > 1 and _initials_of(short, said):
                return True
        elif short in _norm(said):
            return True
    return False


def _initials_of(short: str, said: str) -> bool:
    """Whether consecutive words of `said` start with the letters of `short` ("learning rate": lr)."""
    words = re.findall(r"[0-9a-z]+", said)
    n = len(short)
    return any("".join(w[0] for w in words[i : i + n]) == short for i in range(len(words) - n + 1))


def _strings(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, str) for v in value)


def _declared(tool: BaseTool | None, attr: str) -> tuple[str, ...]:
    fields = getattr(getattr(tool, "args_schema", None), attr, ())
    return tuple(fields) if isinstance(fields, (tuple, list)) else ()


def _names(schema: Any, field: str) -> list[str]:
    """The field's name and the aliases the schema accepts for it ("model_id" for "model")."""
    info = getattr(schema, "model_fields", {}).get(field)
    alias = getattr(info, "validation_alias", None)
    choices = getattr(alias, "choices", None) or ([alias] if isinstance(alias, str) else [])
    return [field, *(c for c in choices if isinstance(c, str) and c != field)]


def ungrounded(
    call: Mapping[str, Any], tool: BaseTool | None, said: str, fields: tuple[str, ...] | None = None
) -> list[tuple[str, str]]:
    """(argument as written, value) of the call's grounded fields (or of `fields`) that the evidence
    does not contain."""
    args = call.get("args") or {}
    schema = getattr(tool, "args_schema", None)
    out = []
    for field in _declared(tool, "GROUNDED") if fields is None else fields:
        for name in _names(schema, field):
            value = args.get(name)
            if isinstance(value, str) and value.strip() and not is_grounded(value, said):
                out.append((name, value))
            elif _strings(value) and not any(is_grounded(v, said) for v in value):
                out.append((name, value))  # a list: one of its values named is enough
    return out


def _hook(tool: BaseTool | None, name: str) -> Any:
    return getattr(getattr(tool, "args_schema", None), name, None)


def amend(answer: AIMessage, tools: Mapping[str, BaseTool], said: str, request: str) -> AIMessage:
    """`answer` with guessed defaults dropped and the choices the person's words fix set (see above);
    `said` is the conversation's `evidence`, `request` its `latest_words`."""
    calls, changed = [], False
    for call in answer.tool_calls:
        tool = tools.get(call["name"])
        args = dict(call.get("args") or {})
        for name in _declared(tool, "GROUNDED"):
            written = _as_written(args.get(name), said)
            if written is not None:
                args[name] = written
        guessable = _declared(tool, "GUESS_IS_DEFAULT")
        if guessable:
            guessed = {name for name, _ in ungrounded(call, tool, said, guessable)}
            args = {k: v for k, v in args.items() if k not in guessed}
        fix = _hook(tool, "amend")
        if callable(fix):
            try:
                args = dict(fix(args, request))
            except Exception:  # an amendment is a kindness: never let it break a turn
                pass
        if args != (call.get("args") or {}):
            call, changed = {**call, "args": args}, True
        calls.append(call)
    return answer.model_copy(update={"tool_calls": calls}) if changed else answer


def _as_written(value: Any, said: str) -> str | None:
    """The hub id the person wrote, for a value the model made of it with a prefix nobody wrote
    ("modelscope/Qwen/Qwen2.5-0.5B-Instruct" for "Qwen/Qwen2.5-0.5B-Instruct"); None to keep `value`.
    A path (starting with /, . or ~) is kept: its folders are not decoration."""
    if not isinstance(value, str) or value.startswith(("/", ".", "~")) or value.lower() in said:
        return None
    parts = value.strip("/").split("/")
    if len(parts) < 3:
        return None
    tail = "/".join(parts[-2:])
    pattern = rf"(?<![\w./-]){re.escape(tail.lower())}(?![\w/-])"
    return tail if re.search(pattern, said) else None


class RunBook(Mapping[str, str]):
    """The person's runs: their ids at once, each one's effective status when first asked for (reading
    a status looks at the run's process, so only the runs a check needs are read)."""

    def __init__(
        self,
        ids: Collection[str],
        status_of: Callable[[str], str | None],
        words_of: Callable[[str], frozenset[str]] = run_words,
    ) -> None:
        self._ids = list(dict.fromkeys(ids))
        self._status_of = status_of
        self._words_of = words_of
        self._known: dict[str, str | None] = {}
        self._words: dict[str, frozenset[str]] = {}

    def words(self, run: str) -> frozenset[str]:
        """The words that describe `run` (tools.base.run_words), read once."""
        if run not in self._words:
            try:
                self._words[run] = self._words_of(run)
            except Exception:  # an unreadable run is described by its id alone
                self._words[run] = run_words(run)
        return self._words[run]

    def __getitem__(self, run: str) -> str:
        if run not in self._ids:
            raise KeyError(run)
        if run not in self._known:
            try:
                self._known[run] = self._status_of(run)
            except Exception:  # an unreadable run has no status to hold a call against
                self._known[run] = None
        return self._known[run] or "unknown"

    def __iter__(self) -> Iterator[str]:
        return iter(self._ids)

    def __len__(self) -> int:
        return len(self._ids)


def problems(
    call: Mapping[str, Any],
    tool: BaseTool | None,
    said: str,
    request: str,
    runs: Collection[str] = (),
    selected: str | None = None,
) -> list[str]:
    """Why the call should not run as it is, one clause each: values nobody gave in the fields that
    define the action, a new run when the person's words are about one of their `runs`, an action on a
    run whose state it does not fit (`runs` a mapping of id to status; `selected` the run a call
    without an id acts on), and choices that contradict the person's words for this step."""
    free = set(_declared(tool, "GUESS_IS_DEFAULT"))
    missing = [(n, v) for n, v in ungrounded(call, tool, said) if not _described(n, tool, request, runs)]
    out = [UNGROUNDED.format(name=n, value=v) for n, v in missing if n not in free]
    named = {n for n, _ in missing}
    args = call.get("args") or {}
    # a run's id written where a model or dataset goes ("twinkle-models/lora-test") names no new value
    given = any(
        name not in named and not _a_run_id(args.get(name), runs) for name in _given(call, tool, free)
    )
    out += _about_a_run(call, tool, request, runs, given=given)
    out += _contrary(call, tool, request)
    if isinstance(runs, Mapping):
        out += _out_of_state(call, tool, request, runs, selected)
    check = _hook(tool, "mismatches")
    if callable(check):
        try:
            out += [str(m) for m in check(dict(call.get("args") or {}), request, said)]
        except Exception:  # a check is advice: never let it break a turn
            pass
    return out


def refused_calls(
    answer: AIMessage,
    tools: Mapping[str, BaseTool],
    said: str,
    request: str,
    runs: Collection[str] = (),
    selected: str | None = None,
) -> list[tuple[str, list[str]]]:
    """(tool name, its problems) of each call of `answer` that should not run as it is; `runs` are the
    person's runs (ids, or a RunBook of id to status), `selected` the selected run."""
    out = []
    for call in answer.tool_calls:
        found = problems(call, tools.get(call["name"]), said, request, runs, selected)
        if found:
            out.append((call["name"], found))
    return out


def _a_run_id(value: Any, runs: Collection[str]) -> bool:
    """Whether `value` (or, for a path or hub id, its last part) is one of the person's run ids."""
    if not isinstance(value, str) or not value.strip():
        return False
    last = _norm(re.split(r"[/\\]", value.rstrip("/\\"))[-1])
    return bool(last) and any(_norm(run) == last for run in runs)


def _described(name: str, tool: BaseTool | None, request: str, runs: Collection[str]) -> bool:
    """Whether `name` is the call's run id and the person's words pick out one of their runs ("the chat
    one"): the model wrote that run's id, or a fragment of it, and the tool acts on the run described
    (choose_run), so the value is the person's even though its letters are not in their words."""
    if not runs or name not in _names(getattr(tool, "args_schema", None), "run_id"):
        return False
    words_of = runs.words if isinstance(runs, RunBook) else run_words
    return choose_run(None, request, runs, None, words_of) is not None


def _given(call: Mapping[str, Any], tool: BaseTool | None, free: set[str]) -> list[str]:
    """The grounded fields (but those whose guess is the default) that the call sets."""
    args = call.get("args") or {}
    schema = getattr(tool, "args_schema", None)
    fields = [f for f in _declared(tool, "GROUNDED") if f not in free]
    return [name for f in fields for name in _names(schema, f) if args.get(name) not in (None, "", [])]


def _about_a_run(
    call: Mapping[str, Any], tool: BaseTool | None, request: str, runs: Collection[str], *, given: bool
) -> list[str]:
    """A new run asked for with none of its own values named, while the person's words name one of
    their runs: the request is about that run ("pick grpo-math back up", "work with sft-chat")."""
    if given or not getattr(getattr(tool, "args_schema", None), "MAKES_A_RUN", False):
        return []
    named = [run for run in runs if is_grounded(run, request.lower())]
    if not named:
        return []
    return [
        f"{named[0]!r} is one of the person's runs and {call.get('name')} starts a new one: {ABOUT_A_RUN}"
    ]


def about_a_run(refused: Sequence[tuple[str, list[str]]]) -> bool:
    """Whether a call was refused because the person's words are about one of their runs."""
    return any(clause.endswith(ABOUT_A_RUN) for _, found in refused for clause in found)


def run_tools(tools: Mapping[str, BaseTool]) -> list[str]:
    """The tools that act on one existing run (their schema takes a run_id and makes no new run): what
    a request about one of the person's runs is offered once a new run has been refused twice."""
    out = []
    for name, tool in tools.items():
        schema = getattr(tool, "args_schema", None)
        fields = getattr(schema, "model_fields", {})
        if "run_id" in fields and not getattr(schema, "MAKES_A_RUN", False):
            out.append(name)
    return out


def _says(text: str, word: str) -> bool:
    """Whether `text` has `word` (or phrase) as words of its own; "…" in it stands for up to 3 words."""
    gap = r"(?:\s+\S+){0,3}\s+"
    pattern = gap.join(r"\s+".join(re.escape(w) for w in part.split()) for part in word.split("…"))
    return re.search(rf"(?<![\w-]){pattern}(?![\w-])", text, re.IGNORECASE) is not None


def _contrary(call: Mapping[str, Any], tool: BaseTool | None, request: str) -> list[str]:
    """An action other than the one the person's words ask for: resuming a run they said to pause,
    ending one they said to put on hold. The schema names the akin actions and the words that ask for
    each (ASKED_BY), and those it must never stand in for (NEVER_FOR); words that ask for two actions
    ("stop it for now, I'll resume it later") are left to the model."""
    schema = getattr(tool, "args_schema", None)
    asked_by = getattr(schema, "ASKED_BY", None) or {}
    asked = {name: next((w for w in words if _says(request, w)), None) for name, words in asked_by.items()}
    asked = {name: word for name, word in asked.items() if word}
    if len(asked) != 1:
        return []
    (wanted, word), name = next(iter(asked.items())), call.get("name")
    if wanted == name or wanted not in _declared(tool, "NEVER_FOR"):
        return []
    return [f"the person said {word!r}, which asks for {wanted}, not {name}: call {wanted} instead"]


def _out_of_state(
    call: Mapping[str, Any],
    tool: BaseTool | None,
    request: str,
    runs: Mapping[str, str],
    selected: str | None,
) -> list[str]:
    """An action on a run whose state it does not fit (the schema's RUN_STATES): pausing a paused run,
    resuming a running one. Said with the run's state, what fits it and the runs the action does fit."""
    schema = getattr(tool, "args_schema", None)
    states = tuple(getattr(schema, "RUN_STATES", ()) or ())
    if not states:
        return []
    args = call.get("args") or {}
    given = next(
        (args[n] for n in _names(schema, "run_id") if isinstance(args.get(n), str) and args[n]), None
    )
    # the run the tool will act on (the tools resolve it with the same function); an unknown id is left
    # to the tool, which lists the runs
    words_of = runs.words if isinstance(runs, RunBook) else run_words
    run = choose_run(given, request, runs, selected, words_of, runs.__getitem__, states)
    if not run or run not in runs:
        return []
    status = runs[run]
    if status in states or status == "unknown":
        return []
    name = call.get("name") or "this tool"
    clause = f"{run!r} is {status}, and {name} acts only on a run that is {' or '.join(states)}"
    hints = getattr(schema, "STATE_HINTS", {}) or {}
    if hints.get(status):
        clause += f": {hints[status]}"
    fitting = [r for r in runs if r != run and runs[r] in states]
    if fitting:
        clause += f" (now {' or '.join(states)}: {', '.join(fitting[:5])})"
    return [clause]


ECHO_WORDS = 5
"""Words in a row an answer shares with our advice before it counts as copied from it."""


def _words_of(text: str) -> list[str]:
    return re.findall(r"[a-z0-9_'-]+", text.lower())


def echoes(answer: AnyMessage) -> bool:
    """Whether a words-only `answer` copies the advice of our notes (ADVICE, WITHHELD, ABOUT_ONLY, not
    the facts they give): ECHO_WORDS of its words in a row are the advice's, or all of them for a
    shorter answer of three words or more. Refused, the 1.5B model sometimes answered with the advice
    itself ("ask the person for what they did not give"), which is no answer for the person."""
    if not isinstance(answer, AIMessage) or answer.tool_calls or answer.invalid_tool_calls:
        return False
    said = _words_of(message_text(answer))
    n = min(ECHO_WORDS, len(said))
    if n < 3:
        return False
    grams = set()
    for advice in (ADVICE, WITHHELD, ABOUT_ONLY):
        for part in re.split(r"\{\w+\}", advice):  # each stretch between placeholders
            words = _words_of(part)
            grams |= {tuple(words[i : i + n]) for i in range(len(words) - n + 1)}
    return any(tuple(said[i : i + n]) in grams for i in range(len(said) - n + 1))


def question(refused: Sequence[tuple[str, list[str]]]) -> str:
    """What the person reads when every answer of a step was refused: nothing ran, what was considered
    and why it was not done, and a request to say it again with the names it needs."""
    reasons = "; ".join(f"{name}: {'; '.join(found)}" for name, found in refused)
    for ours, yours in (("the person's", "your"), ("the person", "you")):
        reasons = reasons.replace(ours, yours)
    return (
        f"I have not done anything: I was not sure what you meant ({reasons}). Could you say what you "
        "would like done, naming the run, model or data it is about?"
    )


def note(
    refused: Sequence[tuple[str, list[str]]], withheld: Sequence[str] = (), offered: Sequence[str] = ()
) -> str:
    """What the model reads before it answers again (sent once, never kept in the history): why each
    refused call was not run, and the tools it is no longer offered for this step (`withheld`), or the
    only ones it is (`offered`)."""
    reasons = ". ".join(f"{name}: {'; '.join(found)}" for name, found in refused)
    if offered:
        return f"(Not done: {reasons}. {ABOUT_ONLY.format(tools=', '.join(offered))})"
    if withheld:
        return f"(Not done: {reasons}. {WITHHELD.format(tools=' and '.join(withheld), verb='are' if len(withheld) > 1 else 'is')})"
    return f"(Not done: {reasons}. {ADVICE})"


__all__ = [
    "RunBook",
    "about_a_run",
    "amend",
    "evidence",
    "is_grounded",
    "latest_words",
    "note",
    "problems",
    "question",
    "refused_calls",
    "run_tools",
    "ungrounded",
]
