"""Cutting an answer that loops: which texts count as a loop, and the stream is closed when one does."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from langchain_core.messages import AIMessage, AIMessageChunk
from langchain_core.runnables import RunnableGenerator

from twinkle_auto.graphs.chat.streaming import COPIES, CUT_NOTE, MIN_PERIOD, loop_start, stream_answer


def test_a_sentence_repeated_back_to_back_is_a_loop_and_its_first_copy_is_kept() -> None:
    text = "All done. " + "The server is running on CPU. " * 6
    cut = loop_start(text)
    assert cut is not None and text[:cut] == "All done. The server is running on CPU. "


def test_a_repeated_paragraph_with_newlines_is_a_loop() -> None:
    para = "Run r1 is paused.\n- loss 0.31\n- reward 0.72\n\n"
    assert loop_start("Status:\n" + para * COPIES) is not None


def test_prose_tables_and_short_repeats_are_not_loops() -> None:
    table = "| step | loss |\n|------|------|\n" + "".join(f"| {i} | 0.{i} |\n" for i in range(30))
    assert loop_start(table) is None
    assert loop_start("| --- | --- | --- | --- | --- | --- |") is None  # shorter than MIN_PERIOD
    assert loop_start("=" * (MIN_PERIOD * COPIES * 2)) is None  # one character: no passage
    prose = "The loss fell from 2.1 to 0.4 over 300 steps; the reward rose. Nothing needs fixing now."
    assert loop_start(prose) is None
    assert loop_start("once. once. once.") is None  # too short to be anything but emphasis


def test_stream_answer_stops_reading_a_loop_and_closes_the_stream() -> None:
    state: dict[str, Any] = {"sent": 0, "closed": False}

    def endless(_: Iterator[Any]) -> Iterator[AIMessageChunk]:
        try:
            yield AIMessageChunk(content="Here is the status. ", id="run-1")
            while True:
                state["sent"] += 1
                yield AIMessageChunk(content="It is fine. ")
        finally:
            state["closed"] = True

    answer = stream_answer(RunnableGenerator(endless), [])
    assert isinstance(answer, AIMessage) and answer.id == "run-1"
    assert answer.content == "Here is the status. It is fine." + CUT_NOTE
    assert state["closed"] and state["sent"] < 40


def test_stream_answer_returns_tool_calls_and_a_non_streaming_answer_unchanged() -> None:
    def calls(_: Iterator[Any]) -> Iterator[AIMessageChunk]:
        yield AIMessageChunk(
            content="",
            tool_call_chunks=[{"name": "pause_training", "args": '{"run_id"', "id": "c1", "index": 0}],
        )
        yield AIMessageChunk(
            content="", tool_call_chunks=[{"name": None, "args": ': "r1"}', "id": None, "index": 0}]
        )

    answer = stream_answer(RunnableGenerator(calls), [])
    assert isinstance(answer, AIMessage) and not isinstance(answer, AIMessageChunk)
    assert answer.tool_calls == [
        {"name": "pause_training", "args": {"run_id": "r1"}, "id": "c1", "type": "tool_call"}
    ]

    from fakes import ScriptedChatModel

    whole = AIMessage(content="plain", id="x")
    assert stream_answer(ScriptedChatModel(responses=[whole]), []).content == "plain"
