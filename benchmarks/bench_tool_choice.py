"""Tool choice of the chat with the real local model on our request set (tests/chat_requests/).

Prints first-tool accuracy, argument validity and multi-step completion over every request, each miss,
and the ratio against a baseline measured in the same run on the same requests: always calling the most
common expected tool (what a model that ignores the request would score). Target: >= 95% overall.

    TWINKLE_TEST_LLM_URL=http://127.0.0.1:8080/v1 .venv/bin/python benchmarks/bench_tool_choice.py [--only 1,5,9] [--subset] [--holdout] [--requests FILE]

Without TWINKLE_TEST_LLM_URL the pinned GGUF is served locally (tests/llm_server.py), as the tests do.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections import Counter
from contextlib import ExitStack
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "tests" / "chat_requests"))

TARGET_PCT = 95.0


def baseline_pct(requests: list[dict]) -> float:
    """First-tool accuracy of always calling the most common expected first tool."""
    firsts = Counter(r["steps"][0]["tool"] if r["steps"] else None for r in requests)
    return 100.0 * firsts.most_common(1)[0][1] / len(requests)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--only", default="", help="comma-separated request ids")
    parser.add_argument("--subset", action="store_true", help="only the subset the llm test uses")
    parser.add_argument(
        "--holdout", action="store_true", help="the holdout set (tests/chat_requests/holdout.json)"
    )
    parser.add_argument("--requests", type=Path, default=None, help="another request file, same format")
    opts = parser.parse_args()

    import harness

    from twinkle_auto.app.llm import make_chat_model

    requests = harness.load_requests(subset=opts.subset, holdout=opts.holdout, path=opts.requests)
    if opts.only:
        wanted = {int(i) for i in opts.only.split(",")}
        requests = [r for r in requests if r["id"] in wanted]
    with ExitStack() as stack:
        url = os.environ.get("TWINKLE_TEST_LLM_URL")
        if not url:
            from llm_server import running_llm

            url = stack.enter_context(running_llm())
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-tools-")))
        home = tmp / "home"
        home.mkdir()
        os.environ["TWINKLE_HOME"] = str(home)
        os.environ["MODELSCOPE_HOME"] = str(tmp / "ms")
        os.environ["TWINKLE_AUTO_COMMUNITY_SKILLS"] = "0"
        os.environ.setdefault("OMP_NUM_THREADS", "1")
        llm = make_chat_model(url, "local", "x", timeout=900, max_retries=0)
        llm.max_tokens = harness.ANSWER_TOKENS
        t0 = time.monotonic()

        def echo(line: str) -> None:
            print(line, flush=True)  # each line has its request's seconds: a send-back shows up long

        outcomes, figures = harness.evaluate(home, ROOT / "examples", llm, requests, echo=echo)
        elapsed = time.monotonic() - t0
    misses = [o for o in outcomes if not (o.first_ok and o.args_ok is not False and o.completed is not False)]
    base = baseline_pct(requests)
    print(
        f"\nrequests {figures['requests']}: first tool {figures['first_tool']} ({figures['first_tool_pct']}%), "
        f"arguments valid {figures['args_valid']} ({figures['args_valid_pct']}%), multi-step completed "
        f"{figures['multi_step']} ({figures['multi_step_pct']}%), overall {figures['overall']} "
        f"({figures['overall_pct']}%) in {elapsed:.0f} s"
    )
    print(
        f"baseline (always the most common tool): {base:.1f}% first tool; ratio {figures['first_tool_pct'] / base:.1f}x"
    )
    subset = [o for o in outcomes if o.request.get("subset")]
    if subset and len(subset) < len(outcomes):
        sub = harness.summarize(subset)
        print(f"subset of the llm test ({sub['requests']}): overall {sub['overall']} ({sub['overall_pct']}%)")
    print(f"misses: {len(misses)}")
    for o in misses:
        print("  " + o.line())
    return 0 if figures["overall_pct"] >= TARGET_PCT else 1


if __name__ == "__main__":
    raise SystemExit(main())
