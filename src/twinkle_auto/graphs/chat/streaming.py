"""The model's answer, streamed, and cut when the text starts repeating itself.

A small model at temperature 0 can fall into a loop ("... The server is running on CPU. The server is
running on CPU. ...") and write until the context is full: minutes on a CPU, with the person watching and
the turn holding the only slot of a local server. Streaming lets the node stop reading as soon as the
tail of the text is the same passage several times over; closing the stream ends the generation on the
server. Only the words are checked, never a tool call's arguments (code legitimately repeats itself), and
only exact repeats of a passage of some length, which prose that is not looping does not produce.
"""

from __future__ import annotations

import json
import re
from typing import Any

from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, message_chunk_to_message
from langchain_core.messages.tool import invalid_tool_call
from langchain_core.runnables import Runnable

MIN_PERIOD = 12
"""Shortest repeated passage (characters) that counts as a loop: shorter ones occur in tables and rules."""
MAX_PERIOD = 600
"""Longest passage looked for: a loop of whole paragraphs is caught once it has repeated."""
COPIES = 4
"""How many back-to-back copies of the passage make a loop."""
CHECK_EVERY = 48
"""Characters of new text between two checks (a check is O(MAX_PERIOD * COPIES))."""
_WORD = re.compile(r"[^\W\d_]{3,}")
"""A looping passage says something: rules of `=` and runs of table cells repeat without being loops."""
CUT_NOTE = "\n\n(The rest of this answer was cut: it kept repeating itself.)"


def loop_start(text: str, *, min_period: int = MIN_PERIOD, max_period: int = MAX_PERIOD) -> int | None:
    """Where the repeated tail of `text` begins after its first copy, or None when it does not repeat.

    The tail is a loop when its last `COPIES * p` characters have period `p` for some `p` in range; the
    answer keeps the first copy (the model meant to say it once) and drops the rest.
    """
    n = len(text)
    for p in range(min_period, min(max_period, n // COPIES) + 1):
        span = COPIES * p
        tail = text[n - span :]
        if tail[p:] == tail[:-p] and _WORD.search(tail[:p]):
            start = n - span  # the loop began where the passage was first said: walk back to it
            while start >= p and text[start - p : start] == text[start : start + p]:
                start -= p
            return start + p
    return None


def stream_answer(model: Runnable[Any, Any], messages: list[Any]) -> BaseMessage:
    """`model.invoke(messages)`, but streamed, and ended early when the words loop (see module doc).

    Token callbacks see every chunk as with `invoke` (LangGraph's "messages" stream mode included). A
    model without streaming yields its whole answer as one chunk, which is returned as it is.
    """
    full: Any = None
    checked = 0
    stream = model.stream(messages)
    try:
        for chunk in stream:
            full = chunk if full is None else full + chunk
            text = full.content if isinstance(full.content, str) else ""
            if len(text) - checked < CHECK_EVERY:
                continue
            checked = len(text)
            cut = loop_start(text)
            if cut is not None:
                return AIMessage(content=text[:cut].rstrip() + CUT_NOTE, id=full.id)
    finally:
        close = getattr(stream, "close", None)
        if close is not None:
            close()  # ends the HTTP stream, so the server stops generating
    if full is None:
        return AIMessage(content="")
    return _strict(full) if isinstance(full, AIMessageChunk) else full


def _strict(full: AIMessageChunk) -> AIMessage:
    """The joined answer; a tool call whose streamed arguments are not one JSON object is an invalid call.

    Joining chunks parses arguments leniently (`{"run_id": "x"` reads as complete), so a call cut off
    mid-way would run with what it had so far; as with a whole answer, it goes back to the model instead.
    """
    message = message_chunk_to_message(full)
    assert isinstance(message, AIMessage)
    known = {c.get("id") for c in message.invalid_tool_calls}
    broken: dict[Any, Any] = {}
    for chunk in full.tool_call_chunks:
        args = chunk.get("args") or ""
        try:
            error = "" if not args.strip() or isinstance(json.loads(args), dict) else "not a JSON object"
        except ValueError as exc:
            error = str(exc)
        if error and chunk.get("id") not in known:
            broken[chunk.get("id")] = invalid_tool_call(
                name=chunk.get("name"), args=args, id=chunk.get("id"), error=error
            )
    if not broken:
        return message
    return message.model_copy(
        update={
            "tool_calls": [c for c in message.tool_calls if c.get("id") not in broken],
            "invalid_tool_calls": [*message.invalid_tool_calls, *broken.values()],
        }
    )
