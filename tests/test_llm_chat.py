"""With the real local model (Qwen2.5-Coder-1.5B on CPU): a fixed subset of our request set
(tests/chat_requests/, 20 requests: every family, paraphrases, multi-step, no-tool) against the chat
graph with every tool the app has. Prints each outcome; asserts a regression floor on the overall score (first
tool right, its arguments valid, multi-step requests completed). The full set is measured by
benchmarks/bench_tool_choice.py."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from conftest import EXAMPLES

sys.path.insert(0, str(Path(__file__).parent / "chat_requests"))
import harness  # noqa: E402

from twinkle_auto.app.llm import make_chat_model  # noqa: E402

pytestmark = pytest.mark.llm

FLOOR_PCT = 90.0
"""The issue's floor, asserted: 18 of the 20 requests. Measured with benchmarks/bench_tool_choice.py on a
quiet box: the 16 requests of this subset before #61, #88, #97 and #106 were added back gave 15/16 to
16/16 in the last five runs (2026-12-03), and those four were right in every run of the whole set since
the grounding checks (104/108 at 028b209). Twenty requests, not sixteen, so that the 90% floor allows
two misses: the 1.5B model at temperature 0 still varies with the prompt cache and the machine's
numerics from run to run, and 90% of 16 would fail a run on its second miss. Time: 227 s alone with the
prompt cached, 553 s in a slow clean-clone `make test` (cold prompt, cores shared with the other worker)."""


def test_request_subset_picks_the_right_tools(home: Path, local_llm: str) -> None:
    requests = harness.load_requests(subset=True)
    assert len(requests) == 20
    llm = make_chat_model(local_llm, "local", "x", timeout=600, max_retries=0)
    llm.max_tokens = harness.ANSWER_TOKENS
    outcomes, figures = harness.evaluate(home, EXAMPLES, llm, requests)
    lines = "\n".join(o.line() for o in outcomes)
    print(lines)
    print(figures)
    assert figures["overall_pct"] >= FLOOR_PCT, lines
