"""The real `twinkle-auto` chat driven in a pseudo-terminal, against a scripted OpenAI-compatible server:
`/runs`, "List my training runs", "Pause run X" — then the screen and the run's real state are checked."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pexpect
import pytest
from conftest import EXAMPLES, metric_steps, read_meta, wait_for
from openai_stub import Rule, StubLLM

pytestmark = pytest.mark.slow


@pytest.fixture
def stub():
    llm = StubLLM(
        [
            Rule(match="list my training runs", tool_calls=[("list_training_runs", {})]),
            Rule(match="pause run", tool_calls=[("pause_training", {"run_id": "e2e"})]),
            Rule(match="list my training runs", after_tool=True, text="You have **one** run: e2e, running."),
            Rule(match="pause run", after_tool=True, text="Paused e2e."),
        ]
    )
    url = llm.start()
    yield llm, url
    llm.stop()


def spawn(url: str, *extra: str) -> pexpect.spawn:
    env = dict(os.environ, TERM="xterm", COLUMNS="110", LINES="40")
    child = pexpect.spawn(
        sys.executable,
        ["-m", "twinkle_auto", "--llm-base-url", url, "--llm-model", "stub-model", *extra],
        env=env,
        encoding="utf-8",
        timeout=30,
        logfile=open(os.environ.get("E2E_LOG", os.devnull), "w"),  # noqa: SIM115
        dimensions=(40, 110),
    )
    return child


def test_slash_runs_list_and_pause_in_a_pty(home: Path, controller, stub) -> None:
    llm, url = stub
    controller.start(
        "e2e",
        (EXAMPLES / "tiny" / "train.py").read_text(),
        env={"STEP_SLEEP": "0.02", "TOTAL_STEPS": "100000"},
    )
    wait_for(lambda: len(metric_steps(home, "e2e")) > 3)
    child = spawn(url, "--session", "e2e-test")
    try:
        child.expect("you>")
        child.sendline("/runs")
        child.expect("e2e")
        child.expect("running")
        child.expect("you>")
        child.sendline("List my training runs")
        child.expect("list_training_runs")
        child.expect(r"You have .*one.* run: e2e, running\.")
        child.expect("you>")
        child.sendline("Pause run e2e")
        child.expect("pause_training")
        child.expect("Paused e2e.")
        child.expect("you>")
        child.sendeof()
        child.expect(pexpect.EOF, timeout=30)
    finally:
        if child.isalive():
            child.terminate(force=True)
    assert read_meta(home, "e2e")["status"] == "paused"
    assert controller.store.status("e2e").process in ("dead", "zombie")
    sent = [r for r in llm.requests if r.get("messages")]
    assert any(m.get("role") == "tool" for m in sent[-1]["messages"])


def test_unreachable_llm_says_one_line_and_slash_commands_still_work(home: Path) -> None:
    child = spawn("http://127.0.0.1:9/v1")
    try:
        child.expect("you>")
        child.expect("LLM at http://127.0.0.1:9/v1 not reachable")
        child.sendline("/runs")
        child.expect("no runs in")
        child.sendline("hello?")
        child.expect("not reachable")
        child.expect("you>")
        child.sendline("/quit")
        child.expect(pexpect.EOF, timeout=30)
    finally:
        if child.isalive():
            child.terminate(force=True)


def test_ctrl_c_cancels_a_turn_and_monitor_messages_reach_the_prompt(home: Path, controller) -> None:
    llm = StubLLM([Rule(match="slow", text="too late", delay=2.0), Rule(match="again", text="Here I am.")])
    url = llm.start()
    child = spawn(url, "--auto-fix", "off", "--monitor-interval", "1")
    try:
        child.expect("you>")
        child.sendline("a slow question")
        wait_for(lambda: any("slow" in json.dumps(r.get("messages")) for r in llm.requests))  # the turn runs
        child.sendintr()
        child.expect(r"\(cancelled\)")
        child.expect("you>")
        child.sendline("are you there again?")
        child.expect("Here I am.")
        child.expect("you>")
        # a run crashes while the prompt waits: the monitor tells, above the prompt
        buggy = (EXAMPLES / "tiny" / "train.py").read_text().replace('rec["target"]', 'rec["targets"]', 1)
        controller.start("crashy", buggy, env={"STEP_SLEEP": "0", "TOTAL_STEPS": "20"})
        child.expect(r"\[Monitor\] WARNING crashy", timeout=60)
        child.expect("auto-fix is off")
        child.sendline("/status crashy")
        child.expect("KeyError")
        child.sendline("/quit")
        child.expect(pexpect.EOF, timeout=30)
    finally:
        if child.isalive():
            child.terminate(force=True)
        llm.stop()
    assert not (home / "crashy" / "train_v1.py").exists()
