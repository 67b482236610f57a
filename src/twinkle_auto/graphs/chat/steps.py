"""A request of several steps, done one step at a time.

"List my runs, then pause the one that is running": a small model calls the first tool, reads its
result and answers, as if the request ended there (1 of 9 such requests completed with the 1.5B model,
whatever the system prompt said). People who give an assistant a list of things to do expect each of
them done in order, and the words that join the steps are few and plain ("then", "after that", ", and
<verb>"). So the graph splits the request where those words are and, when the model has answered one
step, says the next one as a message of its own ("Step 2 of 2: pause the one that is running"). The
model keeps the whole request and every earlier result in view; it only never has to remember that
something is left.

The split is deliberately conservative: a request that cannot be split with confidence is left whole,
as before. Conditions ("if it is failing, stop it") are never split, because a step said on its own
would lose its condition; nor is "and" between nouns ("plot loss and reward").
"""

from __future__ import annotations

import re
from collections.abc import Collection, Sequence

from langchain_core.messages import AIMessage, AnyMessage, HumanMessage

from twinkle_auto.tools.base import STEP_MARK, STEP_TEXT, is_step_message, message_text

MAX_STEPS = 5
"""A request that splits into more parts is prose, not a list of things to do: it is left whole."""

ACTION_VERBS = frozenset(
    [
        "list",
        "show",
        "display",
        "check",
        "look",
        "get",
        "tell",
        "give",
        "report",
        "summarize",
        "summarise",
        "compare",
        "pause",
        "suspend",
        "hold",
        "freeze",
        "resume",
        "continue",
        "unpause",
        "restart",
        "stop",
        "kill",
        "terminate",
        "cancel",
        "abort",
        "start",
        "launch",
        "begin",
        "kick",
        "plot",
        "chart",
        "graph",
        "visualize",
        "visualise",
        "zoom",
        "narrow",
        "reset",
        "undo",
        "clear",
        "select",
        "switch",
        "focus",
        "pick",
        "search",
        "find",
        "fetch",
        "open",
        "read",
        "load",
        "update",
        "replace",
        "overwrite",
        "edit",
        "shut",
        "turn",
        "tear",
        "spin",
        "fire",
        "bring",
        "serve",
        "put",
        "make",
        "set",
        "change",
        "explain",
        "delete",
        "remove",
    ]
)
"""Verbs that begin a request to the assistant. A step joined by "and" or a comma must begin with one:
"and" between nouns ("loss and reward") joins arguments, not steps. Nouns that are also verbs here
(run, train, end, start of a range) are left out or only split after an explicit "then"."""

_THEN = re.compile(
    r"(?:[,;.!?]\s*|\s+)(?:and\s+)?(?:then|after\s+that|afterwards|after\s+which|and\s+finally|finally|"
    r"once\s+(?:that\s+is|that's|it\s+is|it's)\s+done|when\s+(?:that\s+is|that's|it\s+is|it's)\s+done)"
    r"\b[,:]?\s*",
    re.IGNORECASE,
)
"""Words that say "one thing after another" wherever they stand."""
_JOIN = re.compile(
    r"(?:\s*[,;]\s*(?:and\s+)?|\s*[.!?]\s+(?:and\s+)?|\s+and\s+)(?:also\s+)?(?=(\w+))", re.IGNORECASE
)
"""A comma, semicolon, sentence end or "and": a step boundary only when a request verb follows."""
_CONDITION = re.compile(
    r"\b(?:if|unless|in\s+case|when|whenever|once|as\s+soon\s+as|until|while|otherwise)\b", re.IGNORECASE
)
"""Words that make a step depend on something (looked for once the sequencing phrases are taken out)."""
_NOT_SEQUENCE = re.compile(r"\b(?:since|by|until|till|and\s+since)\s*$", re.IGNORECASE)
"""'since then', 'by then': "then" that is a time, not a next step."""
_LEAD = re.compile(r"^(?:and|also|please|now|then|so)\b[,\s]*", re.IGNORECASE)
_WORD = re.compile(r"[A-Za-z][\w'./-]*")


def _words(text: str) -> list[str]:
    return _WORD.findall(text)


def _clean(part: str) -> str:
    part = part.strip(" \t\n,;")
    while True:
        stripped = _LEAD.sub("", part)
        if stripped == part:
            break
        part = stripped
    return part.strip(" \t\n,;")


def _split_on_then(text: str) -> list[str]:
    parts: list[str] = []
    last = 0
    for match in _THEN.finditer(text):
        if _NOT_SEQUENCE.search(text[last : match.start()] + " "):
            continue
        if match.start() == 0:
            continue
        parts.append(text[last : match.start()])
        last = match.end()
    parts.append(text[last:])
    return parts


def _split_on_verbs(text: str) -> list[str]:
    parts: list[str] = []
    last = 0
    for match in _JOIN.finditer(text):
        verb = match.group(1).lower()
        if match.start() == 0 or verb not in ACTION_VERBS:
            continue
        left = text[last : match.start()]
        if len(_words(left)) < 2:  # "ok, show me…", "pause and resume sft-chat": one request
            continue
        parts.append(left)
        last = match.end()
    parts.append(text[last:])
    return parts


def split_steps(text: str) -> list[str]:
    """The steps of a request, in order; one element (the request itself) when it is not a list.

    A step is a part of the request between sequencing words ("then", "after that", "finally"), or
    after a comma, a sentence end or "and" when the part begins with a request verb. Every step must
    have words of its own; a request with a condition in it, or that would split into more than
    MAX_STEPS parts, stays whole.
    """
    text = " ".join(str(text or "").split())
    if not text:
        return []
    if _CONDITION.search(_THEN.sub(" ", text)):
        return [text]
    steps: list[str] = []
    for part in _split_on_then(text):
        steps.extend(_split_on_verbs(part))
    steps = [_clean(s) for s in steps]
    if len(steps) < 2 or len(steps) > MAX_STEPS or any(len(_words(s)) < 1 for s in steps):
        return [text]
    return steps


def step_message(steps: Sequence[str], index: int) -> HumanMessage:
    """The message that hands the model step `index` (0-based) of the person's request."""
    return HumanMessage(
        f"Step {index + 1} of {len(steps)} of my request: {steps[index]}",
        additional_kwargs={STEP_MARK: index + 1, STEP_TEXT: steps[index]},
    )


def person_request(messages: Sequence[AnyMessage]) -> tuple[str, int]:
    """(text of the person's latest message, steps already handed out since it)."""
    handed = 0
    for message in reversed(messages):
        if isinstance(message, HumanMessage):
            if is_step_message(message):
                handed += 1
                continue
            return message_text(message), handed
    return "", 0


def next_step(messages: Sequence[AnyMessage]) -> HumanMessage | None:
    """The step to hand the model next, or None when the request is whole or every step was handed.

    Called at the start of a turn (the first step) and after each plain answer of the model. The next
    step is handed even when the answer ended on a question ("Shall I pause it now?"): the person
    already said what they want next, and a step that acts on something asks for approval anyway.
    """
    text, handed = person_request(messages)
    steps = split_steps(text)
    if len(steps) < 2 or handed >= len(steps):
        return None
    return step_message(steps, handed)


UNDONE = (
    "(Your answer says how this step could be done instead of doing it. Do it now: call the tool it needs.)"
)
"""Sent once per step, with a tool call required, after an answer `described_not_done` recognises."""


def _plain(text: str) -> str:
    return " ".join(text.lower().split())


def described_not_done(
    answer: AnyMessage, messages: Sequence[AnyMessage], tool_names: Collection[str]
) -> bool:
    """Whether a words-only answer to a step of the person's request talked about the step instead of
    doing it: it names one of our tools ("you can use the pause_training function"; the person never
    calls a tool), or it repeats an earlier answer of this turn word for word (it adds nothing).

    Only for steps: each one starts with an action verb (split_steps), so a step answered in words is
    a step not done, whereas a whole request may rightly ask what the tools are.
    """
    if not isinstance(answer, AIMessage) or answer.tool_calls or answer.invalid_tool_calls:
        return False
    text = message_text(answer)
    last = next((m for m in reversed(messages) if isinstance(m, HumanMessage)), None)
    if not text.strip() or last is None or not is_step_message(last):
        return False
    if any(re.search(rf"(?<![\w-]){re.escape(name)}(?![\w-])", text) for name in tool_names if name):
        return True
    mine = _plain(text)
    for message in reversed(messages):
        if isinstance(message, HumanMessage) and not is_step_message(message):
            break  # the person's request: earlier turns' answers may repeat rightly
        if isinstance(message, AIMessage) and _plain(message_text(message)) == mine:
            return True
    return False


__all__ = [
    "ACTION_VERBS",
    "MAX_STEPS",
    "UNDONE",
    "described_not_done",
    "next_step",
    "person_request",
    "split_steps",
    "step_message",
]
