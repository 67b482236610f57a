"""What one streamed turn shows (app/chat.py's _TurnView): the tokens of the model call under way only."""

from __future__ import annotations

from io import StringIO

from langchain_core.messages import AIMessage
from rich.console import Console

from twinkle_auto.app.chat import _TurnView


class _Live:
    """rich.live.Live's surface that _TurnView uses: the live region and the console above it."""

    def __init__(self) -> None:
        self.console = Console(file=StringIO(), width=100)
        self.shown: list[str] = []

    def update(self, renderable) -> None:
        self.shown.append(getattr(renderable, "markup", ""))


def test_a_sent_back_answer_is_replaced_by_the_next_calls_tokens_and_never_printed() -> None:
    live = _Live()
    view = _TurnView(live)
    for token in ("There is ", "1 GPU."):
        view.sink("token", ("call-1", token))
    assert live.shown[-1] == "There is 1 GPU."
    view.sink("token", ("call-2", ""))  # the graph asked again: a new call (a tool call: no words)
    assert live.shown[-1] == ""
    view.sink("token", ("call-2", "There are "))
    assert live.shown[-1] == "There are "
    view.sink("token", ("call-2", "2 GPUs."))
    view.sink("ai", AIMessage("There are 2 GPUs."))
    printed = live.console.file.getvalue()
    assert "There are 2 GPUs." in printed and "1 GPU" not in printed
