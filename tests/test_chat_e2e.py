"""The real `twinkle-auto` chat driven in a pseudo-terminal, against a scripted OpenAI-compatible server:
`/runs`, "List my training runs", "Pause run X" — then the screen and the run's real state are checked."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import signal
import sys
import time
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


def log_dir() -> str:
    """Where a spawned chat runs, so its ./auto.log lands next to the test's TWINKLE_HOME."""
    return str(Path(os.environ["TWINKLE_HOME"]).parent)


def quit_chat(child: pexpect.spawn, timeout: float = 180) -> None:
    """Ctrl-D, then /quit if the app is still there; fail with every thread's stack if it never goes.

    A Ctrl-D that arrives while prompt_toolkit prints above the prompt (a monitor message: the terminal
    is in cooked mode for that moment) reaches the app as a NUL byte and is lost, as in any prompt_toolkit
    app; a typed line is not. An app that ignores both is hung: SIGUSR1 makes it write its stacks to
    ./auto.log (`logging_setup.dump_stacks_on_signal`), printed here.
    """
    child.sendeof()
    if child.expect([pexpect.EOF, pexpect.TIMEOUT], timeout=20) == 0:
        return
    child.sendline("/quit")
    if child.expect([pexpect.EOF, pexpect.TIMEOUT], timeout=timeout) == 0:
        return
    log = Path(child.cwd or ".") / "auto.log"
    child.kill(signal.SIGUSR1)
    time.sleep(3)
    stacks = log.read_text(errors="replace")[-12000:] if log.exists() else "(no auto.log)"
    raise AssertionError(f"the chat did not quit within {timeout:.0f} s of /quit; its log ends:\n{stacks}")


def spawn(url: str, *extra: str) -> pexpect.spawn:
    env = dict(os.environ, TERM="xterm", COLUMNS="110", LINES="40")
    child = pexpect.spawn(
        sys.executable,
        ["-m", "twinkle_auto", "--llm-base-url", url, "--llm-model", "stub-model", *extra],
        env=env,
        cwd=log_dir(),
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
        quit_chat(child, timeout=30)
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


def test_resume_keeps_the_selected_run_and_the_chart_view(home: Path) -> None:
    """Session one selects a run (slash command) and zooms (the model's tool call); --resume shows both."""
    folder = home / "kept"
    folder.mkdir()
    (folder / "meta.json").write_text(json.dumps({"run_id": "kept", "status": "finished", "model_id": "m"}))
    (folder / "metrics.jsonl").write_text(
        "".join(json.dumps({"step": i, "loss": 1 / i}) + "\n" for i in range(1, 20))
    )
    llm = StubLLM(
        [
            Rule(match="closer look", tool_calls=[("zoom_chart", {"start_step": 2, "end_step": 6})]),
            Rule(match="closer look", after_tool=True, text="Zoomed in."),
        ]
    )
    url = llm.start()
    try:
        child = spawn(url, "--session", "keep")
        child.expect("you>")
        child.sendline("/select kept")
        child.expect("selected")
        child.expect("you>")
        child.sendline("take a closer look at the start")
        child.expect("Zoomed in.")
        child.expect("you>")
        child.sendline("/quit")
        child.expect(pexpect.EOF, timeout=30)
        again = spawn(url, "--resume")
        again.expect("resumed session: run kept selected, steps 2-6", timeout=60)
        again.sendline("/quit")
        again.expect(pexpect.EOF, timeout=30)
    finally:
        llm.stop()


# ------------------------------------------------------------------------- the seed's conversation, real
def _checkpoint_values(home: Path, session: str) -> dict:
    """The chat graph's state as the app saved it (read from its SQLite file while it runs)."""
    from twinkle_auto.app.sessions import open_checkpointer, thread_id

    saver = open_checkpointer(home)
    try:
        found = saver.get_tuple({"configurable": {"thread_id": thread_id(session)}})
        return dict(found.checkpoint["channel_values"]) if found else {}
    finally:
        saver.conn.close()


EMPTY_PROMPT = r"you>\x1b\[\d+D"
"""The prompt drawn empty, waiting for the next line (its redraws of an accepted line carry the text)."""


def _healthy(url: str) -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(url + "/api/v1/healthz", timeout=5) as response:
            return response.status == 200
    except OSError:
        return False


NEEDS_SERVER = pytest.mark.skipif(
    importlib.util.find_spec("twinkle") is None or importlib.util.find_spec("ray") is None,
    reason="needs the server extra: twinkle-kit[server,client]==0.5.1 and ray[serve]",
)


@pytest.mark.llm
@pytest.mark.twinkle_server
@NEEDS_SERVER
@pytest.mark.bench  # `make bench` runs it; why not `make test`: the docstring
def test_the_seed_conversation_with_the_real_model_and_the_mock_server(
    home: Path, tmp_path: Path, local_llm: str
) -> None:
    """Every request of the README's list, in one session with the real local model: each is checked by
    its effect — server processes and health, run folders, process state, the saved chart view, the hub
    requests — not by the tool name alone.

    Not part of `make test`, although the issue asks for it there: measured 2026-12-03 on 2 cores, it
    takes 550-650 s alone and 1,376 s inside `make test`, where the other worker's tests share the cores
    (that clean-clone run took 32 min, against the 20-min budget). Most of it is the model's turns while
    the mock server and its run share the cores (generation fell from ~13 to 3-5 tokens/s; nicing both
    to 19 changed nothing: llama.cpp's threads wait for each other at every layer) and ~90 s of Ray
    Serve starting the server. `make test` runs the scripted twin below, with the same checks."""
    from stubs.server_helpers import free_port

    _seed_conversation(home, tmp_path, local_llm, "local", free_port())


@pytest.mark.twinkle_server
@NEEDS_SERVER
def test_the_seed_conversation_with_a_scripted_model_and_the_mock_server(home: Path, tmp_path: Path) -> None:
    """The same conversation and checks with the model's choices scripted: the app's part (tools,
    approvals with the whole script, recipes, server, session state) is checked whatever the model."""
    from stubs.server_helpers import free_port

    port = free_port()
    data = tmp_path / "math.jsonl"
    calls = [
        ("List my training runs", "list_training_runs", {}),
        (
            f"Start the Twinkle server with the mock backend and a mock-model sampler on port {port}",
            "start_server",
            {"backend": "mock", "port": port, "samplers": [{"model_id": "mock-model"}]},
        ),
        ("How many GPUs are available?", "get_cluster_info", {}),
        (
            f"Start a GRPO training with mock-model on {data} for 100000 steps",
            "start_training",
            {"recipe": "twinkle-grpo", "model": "mock-model", "dataset": str(data), "max_steps": 100000},
        ),
        ("How is the training going?", "get_training_status", {}),
        ("Show me the reward-related metrics", "plot_metrics", {"keys": ["reward"]}),
        ("Zoom into steps 100-200", "zoom_chart", {"start_step": 100, "end_step": 200}),
        ("Reset the chart view", "reset_chart", {}),
        ("Pause the current run", "pause_training", {}),
        ("Resume training", "resume_training", {}),
        ("Stop training", "stop_training", {}),
        ("Search for math datasets", "search_datasets", {"query": "math"}),
        ("Find Qwen models on ModelScope", "search_models", {"query": "Qwen"}),
        ("Shut down the server", "shutdown_server", {}),
    ]
    answer = "There are 2 GPUs. Found competition_math and Qwen2.5-7B-Instruct."
    rules = [Rule(match=say, after_tool=True, text=answer) for say, _, _ in calls]
    rules += [Rule(match=say, tool_calls=[(name, args)]) for say, name, args in calls]
    llm = StubLLM(rules)
    url = llm.start()
    try:
        _seed_conversation(home, tmp_path, url, "stub-model", port)
    finally:
        llm.stop()


def _seed_conversation(home: Path, tmp_path: Path, llm_url: str, llm_model: str, port: int) -> None:
    from hubserver import HubServer, model_entry
    from recipe_data.helpers import GRPO_ROWS, write_jsonl
    from stubs.server_helpers import STUBS, alive

    from twinkle_auto.server.manager import ServerManager

    folder = home / "warmup"
    folder.mkdir()
    (folder / "meta.json").write_text(json.dumps({"run_id": "warmup", "status": "finished", "model_id": "m"}))
    (folder / "metrics.jsonl").write_text(
        "".join(json.dumps({"step": i, "loss": 1 / i}) + "\n" for i in range(1, 9))
    )
    data = write_jsonl(tmp_path / "math.jsonl", GRPO_ROWS)
    hub = HubServer()
    hub.models = [model_entry("Qwen/Qwen2.5-7B-Instruct", downloads=9000)]
    hub.datasets = [model_entry("modelscope/competition_math", downloads=8000, task="")]
    hub.start()
    manager = ServerManager(home)
    env = dict(
        os.environ,
        TERM="xterm",
        COLUMNS="200",
        LINES="40",
        PAGER="cat",
        MODELSCOPE_ENDPOINT=hub.url,
        PATH=f"{STUBS}{os.pathsep}{os.environ.get('PATH', '')}",
        STUB_GPUS="2",
    )
    child = pexpect.spawn(
        sys.executable,
        [
            "-m",
            "twinkle_auto",
            "--llm-base-url",
            llm_url,
            "--llm-model",
            llm_model,
            "--auto-fix",
            "off",
            # the monitor is tested on its own; here its LLM explanations would queue on the one-slot
            # model server before the person's turns (one took 164 s of a 21-minute run)
            "--monitor-interval",
            "3600",
            "--session",
            "seed",
        ],
        env=env,
        cwd=log_dir(),
        encoding="utf-8",
        timeout=600,
        logfile=open(os.environ.get("E2E_LOG", os.devnull), "w"),  # noqa: SIM115
        dimensions=(40, 200),
    )
    pids: list[int] = []
    """Every process of ours: the server's and the run's (checked gone at the end)."""
    run_pids: list[int] = []
    transcript: list[str] = []
    took: list[tuple[float, str]] = []
    """Seconds per request, printed at the end: where the conversation's time goes."""

    def say(text: str, approve: bool = False) -> str:
        """Send one request; approve what the chat asks; return the screen text of the turn."""
        began = time.monotonic()
        child.sendline(text)
        seen = ""
        tool_seen = False
        while True:
            i = child.expect([r"Approve\? \[y/N", r"Type 'yes'", "⚙ ", EMPTY_PROMPT])
            seen += child.before + (child.after if isinstance(child.after, str) else "")
            if i == 2:
                tool_seen = True
                continue
            if i == 3:
                if tool_seen:
                    break
                # an empty prompt before any tool line may be a redraw (e.g. after the terminal's CPR
                # warning) rather than the end of the turn: give the turn time to show its tool call
                try:
                    child.expect("⚙ ", timeout=30)
                except pexpect.TIMEOUT:
                    break
                seen += child.before + "⚙ "
                tool_seen = True
                continue
            assert approve, f"unexpected question after {text!r}:\n{seen[-2000:]}"
            child.sendline("yes" if i == 1 else "y")
            # the prompt redraws the question with the answer typed in: read on to the call's result
            # (each approved request here makes one call), or that redraw is taken for a second question
            # and its answer leaks into the next prompt as a message of its own
            child.expect("↳ ")
            seen += child.before + "↳ "
        transcript.append(f">>> {text}\n{seen}")
        took.append((time.monotonic() - began, text))
        return seen

    def run_of(recipe: str) -> str | None:
        for meta_file in home.glob("*/meta.json"):
            meta = json.loads(meta_file.read_text())
            if (meta.get("config") or {}).get("recipe") == recipe:
                return str(meta["run_id"])
        return None

    try:
        child.expect("you>")
        screen = say("List my training runs")
        assert "warmup" in screen

        say(f"Start the Twinkle server with the mock backend and a mock-model sampler on port {port}")
        state = manager.load_state() or {}
        assert state.get("url") == f"http://127.0.0.1:{port}" and _healthy(state["url"])
        pids += [p.pid for p in manager.processes()]
        assert pids

        screen = say("How many GPUs are available?")
        assert "get_cluster_info" in screen and '"count":2' in screen.replace(" ", "")  # the stub's two
        answer = screen.split("↳")[-1].split("\n", 1)[-1]
        assert re.search(r"\b(2|two)\b", answer, re.I), answer

        # steps enough to outlast the conversation: with 1000 the mock run finished before "Stop training"
        # when the model's turns were slow (a clean-clone `make test`, 2026-12-02)
        screen = say(f"Start a GRPO training with mock-model on {data} for 100000 steps", approve=True)
        assert "TrainingRuntime" in screen  # the whole script was shown before it ran
        run = run_of("twinkle-grpo")
        assert run, screen[-2000:]
        meta = read_meta(home, run)
        pids.append(meta["pid"])
        run_pids.append(meta["pid"])
        assert meta["model_id"] == "mock-model" and meta["config"]["params"]["server_url"] == state["url"]
        wait_for(lambda: any("reward" in r for r in _rows(home, run)), timeout=240)

        screen = say("How is the training going?")
        assert "get_training_status" in screen

        say("Show me the reward-related metrics")
        chart = _checkpoint_values(home, "seed").get("chart") or {}
        assert any("reward" in k for k in chart.get("keys", [])), chart

        say("Zoom into steps 100-200")
        assert _checkpoint_values(home, "seed")["chart"]["step_range"] == [100, 200]
        say("Reset the chart view")
        assert _checkpoint_values(home, "seed")["chart"].get("step_range") is None

        say("Pause the current run")
        assert read_meta(home, run)["status"] == "paused" and alive([meta["pid"]]) == []

        say("Resume training")
        resumed = read_meta(home, run)
        assert resumed["status"] == "running" and resumed["launch_count"] == 2 and alive([resumed["pid"]])
        pids.append(resumed["pid"])
        run_pids.append(resumed["pid"])

        say("Stop training", approve=True)
        wait_for(lambda: read_meta(home, run)["status"] == "stopped", timeout=60)

        before = hub.hits("datasets")
        screen = say("Search for math datasets")
        assert hub.hits("datasets") > before and "competition_math" in screen
        before = hub.hits("models")
        screen = say("Find Qwen models on ModelScope")
        assert hub.hits("models") > before and "Qwen2.5-7B-Instruct" in screen

        say("Shut down the server", approve=True)
        assert manager.processes() == [] and alive(pids) == [] and manager.load_state() is None
        quit_chat(child)
    except Exception:
        print("\n".join(transcript)[-20000:])
        raise
    finally:
        print("\n".join(f"{seconds:6.1f} s  {text[:70]}" for seconds, text in took))
        if child.isalive():
            child.terminate(force=True)
        hub.stop()
        manager.shutdown()
        for pid in alive(run_pids):  # the chat's training processes, in their own process groups
            try:
                os.killpg(pid, 9)
            except (ProcessLookupError, PermissionError):
                pass


def _rows(home: Path, run_id: str) -> list[dict]:
    path = home / run_id / "metrics.jsonl"
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out
