"""Chat benchmarks (issue 4), printed in one run:

1. `twinkle-auto --version` against `python -c pass` (target: at most 0.3 s more — lazy imports).
2. Time to the first prompt of the chat in a pseudo-terminal (target <= 1.5 s), against `python -c pass`.
3. Graph overhead per turn with an instant fake model (target <= 20 ms), with the SQLite checkpointer.
4. Prompt tokens per turn over a 100-turn session with tool calls (flat: last/first ratio, target <= 1.5x).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(Path(__file__).parent))
from _util import best_of, report  # noqa: E402


def _run(cmd: list[str]) -> None:
    subprocess.run(cmd, check=True, capture_output=True)


def startup(home: Path) -> tuple[float, float]:
    env_cmd = [sys.executable, "-m", "twinkle_auto", "--version"]
    t_pass = best_of(lambda: _run([sys.executable, "-c", "pass"]), repeats=7)
    t_version = best_of(lambda: _run(env_cmd), repeats=7)
    print(f"  python -c pass {t_pass * 1e3:.0f} ms, twinkle-auto --version {t_version * 1e3:.0f} ms")
    import pexpect
    from openai_stub import StubLLM

    stub = StubLLM()
    url = stub.start()
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        child = pexpect.spawn(
            sys.executable,
            ["-m", "twinkle_auto", "--llm-base-url", url, "--llm-model", "stub-model"],
            env=dict(os.environ, TWINKLE_HOME=str(home), TERM="xterm"),
            encoding="utf-8",
            timeout=30,
            cwd=str(home),
        )
        child.expect("you>")
        times.append(time.perf_counter() - t0)
        child.sendeof()
        child.expect(pexpect.EOF)
    stub.stop()
    first_prompt = min(times)
    print(f"  time to first prompt {first_prompt * 1e3:.0f} ms")
    return t_version - t_pass, first_prompt


def graph_overhead(home: Path) -> float:
    from fakes import ScriptedChatModel
    from langchain_core.messages import HumanMessage

    from twinkle_auto.app.sessions import open_checkpointer, prune
    from twinkle_auto.connection import Connection
    from twinkle_auto.graphs.chat.graph import compile_chat_graph
    from twinkle_auto.tools import get_tools
    from twinkle_auto.tools.base import ToolContext

    tools = get_tools(ToolContext(Connection.open(home)), server=False, search=False)
    saver = open_checkpointer(home)
    graph = compile_chat_graph(ScriptedChatModel(default="ok"), tools, checkpointer=saver)
    cfg = {"configurable": {"thread_id": "chat:bench"}}
    n = [0]

    def turn() -> None:
        n[0] += 1
        graph.invoke({"messages": [HumanMessage(f"hello {n[0]}")]}, cfg)
        prune(saver, "bench")

    for _ in range(20):
        turn()
    per_turn = best_of(turn, repeats=5, number=20)
    print(f"  graph turn with instant model + SQLite + pruning {per_turn * 1e3:.1f} ms")
    return per_turn * 1e3


def prompt_tokens(home: Path) -> float:
    import json

    from fakes import ScriptedChatModel
    from langchain_core.messages import AIMessage, HumanMessage
    from langgraph.checkpoint.memory import InMemorySaver

    from twinkle_auto.connection import Connection
    from twinkle_auto.graphs.chat.graph import compile_chat_graph
    from twinkle_auto.tools import get_tools
    from twinkle_auto.tools.base import ToolContext

    tools = get_tools(ToolContext(Connection.open(home)), server=False, search=False)
    llm = ScriptedChatModel()
    graph = compile_chat_graph(llm, tools, checkpointer=InMemorySaver())
    cfg = {"configurable": {"thread_id": "tokens"}}
    per_turn = []
    for i in range(100):
        llm.responses = [
            AIMessage(content="", tool_calls=[{"name": "list_training_runs", "args": {}, "id": f"c{i}"}]),
            f"answer {i} " + "words " * 40,
        ]
        start = len(llm.calls)
        graph.invoke({"messages": [HumanMessage(f"question {i} " + "words " * 20)]}, cfg)
        sent = llm.calls[start:]
        tokens = sum(len(json.dumps([str(m.content) for m in call])) // 4 for call in sent) // max(
            1, len(sent)
        )
        per_turn.append(tokens)
    first, last = sum(per_turn[20:30]) / 10, sum(per_turn[-10:]) / 10
    print(
        f"  prompt tokens per LLM call: turns 1-10 {sum(per_turn[:10]) / 10:.0f}, 21-30 {first:.0f}, "
        f"91-100 {last:.0f} (window of 50 messages)"
    )
    return last / first


def main() -> int:
    with tempfile.TemporaryDirectory() as d:
        home = Path(d)
        os.environ["TWINKLE_HOME"] = str(home)
        version_extra, first_prompt = startup(home)
        ok = report("twinkle-auto --version minus python -c pass, seconds", version_extra, 0.3, unit="s")
        ok &= report("time to the first chat prompt, seconds", first_prompt, 1.5, unit="s")
        ok &= report("graph overhead per turn (instant fake model), ms", graph_overhead(home), 20, unit="ms")
        ok &= report("prompt tokens per turn, turns 91-100 / turns 21-30", prompt_tokens(home), 1.5)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
