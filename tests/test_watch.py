"""The watch daemon, alerts and concurrent ticks (issue 15, items 1-3), on real runs.

Real run folders and real processes (CLI-started scripts, or this test process standing in for a live
trainer), a real HTTP server on 127.0.0.1 for webhooks, the real `twinkle-auto watch` in a subprocess
with real signals. The fake chat model is only used in-process, to block one run's LLM call on purpose.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import psutil
import pytest
from conftest import EXAMPLES, read_meta, run_cli, wait_for
from fakes import ScriptedChatModel
from openai_stub import Rule, StubLLM

from twinkle_auto.app.alerts import WebhookSender, bell, body_for, dingtalk_signed
from twinkle_auto.app.monitor_loop import MonitorLoop, events_from_tick
from twinkle_auto.app.watch import LineWriter, daemon_presence, format_line, hold_presence
from twinkle_auto.connection import Connection
from twinkle_auto.connection.control import RunController

TRACEBACK = (
    "Traceback (most recent call last):\n"
    '  File "train.py", line 7, in <module>\n'
    '    print(rec["targets"])\n'
    "KeyError: 'targets'\n"
)
CRASH = """
import time
from twinkle_auto.runtime import TrainingRuntime
rt = TrainingRuntime()
rt.start(model_id="m", config={"total_steps": 6}, script_path=__file__)
for step in range(rt.get_resume_info()["last_step"] + 1, 7):
    rt.log_metrics(step=step, loss=1.0 / step)
    time.sleep(DELAY)
    rec = {"target": 1.0}
    print(rec["targets"])
rt.finish()
"""
PATCH = """<<<<<<< SEARCH
    print(rec["targets"])
=======
    print(rec["target"])
>>>>>>> REPLACE
"""
VERDICT = json.dumps({"decision": "FIX", "diagnosis": "KeyError: the record has 'target', not 'targets'."})
HEALTHY = EXAMPLES / "tiny" / "train.py"
HEALTHY_ENV = {"TOTAL_STEPS": "100000", "STEP_SLEEP": "0.05"}


# ------------------------------------------------------------------------------------------ helpers
class Hooks:
    """A real webhook receiver on 127.0.0.1; answers with the statuses queued in `statuses` (then 200)."""

    def __init__(self) -> None:
        self.bodies: list[Any] = []
        self.statuses: list[int] = []
        self.hold = threading.Event()
        self.hold.set()
        hooks = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                hooks.hold.wait(30)
                data = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                status = hooks.statuses.pop(0) if hooks.statuses else 200
                if status == 200:
                    hooks.bodies.append(json.loads(data))
                self.send_response(status)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook?access_token=secret"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.hold.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def hooks() -> Any:
    h = Hooks()
    yield h
    h.close()


def dead_pid() -> tuple[int, float]:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    ctime = psutil.Process(child.pid).create_time()
    child.wait()
    return child.pid, ctime


def crashed_run(home: Path, run_id: str) -> None:
    """A run folder whose process died with a traceback, as a crashed trainer leaves it."""
    folder = home / run_id
    folder.mkdir()
    pid, ctime = dead_pid()
    meta = {"run_id": run_id, "status": "running", "pid": pid, "pid_create_time": ctime, "model_id": "m"}
    (folder / "meta.json").write_text(json.dumps(meta))
    (folder / "train.py").write_text('rec = {"target": 1.0}\nprint(rec["targets"])\n')
    (folder / "metrics.jsonl").write_text(json.dumps({"ts": time.time(), "step": 1, "loss": 1.0}) + "\n")
    (folder / "output.log").write_text(TRACEBACK)


def live_run(home: Path, run_id: str) -> None:
    """A healthy run whose live process is this test process (alive, provably ours, fresh metrics)."""
    folder = home / run_id
    folder.mkdir()
    meta = {
        "run_id": run_id,
        "status": "running",
        "pid": os.getpid(),
        "pid_create_time": psutil.Process().create_time(),
        "model_id": "m",
        "start_time": time.time(),
        "launched_at": time.time(),
    }
    (folder / "meta.json").write_text(json.dumps(meta))
    (folder / "train.py").write_text("pass\n")
    now = time.time()
    rows = [{"ts": now - 0.1 * (50 - i), "step": i, "loss": 1.0 / (i + 1)} for i in range(50)]
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (folder / "output.log").write_text("step 49 loss 0.02\n")


def blocking_llm(release: threading.Event, entered: list[str]) -> ScriptedChatModel:
    """A chat model whose verdict call blocks until `release` is set (a hung LLM)."""

    def answer(messages: list[Any]) -> str:
        text = str(messages[-1].content)
        entered.append(text)
        release.wait(60)
        return VERDICT

    return ScriptedChatModel(default=answer)


def start_watch(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "twinkle_auto", *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
        start_new_session=True,
    )


def read_events(proc: subprocess.Popen[str], until: Any, timeout: float = 60) -> list[dict[str, Any]]:
    """JSON lines from a watch's stdout until `until(events)` holds (a reader thread: never blocks)."""
    events: list[dict[str, Any]] = []
    done = threading.Event()

    def reader() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            events.append(json.loads(line))
            if until(events):
                done.set()
        done.set()

    threading.Thread(target=reader, daemon=True).start()
    done.wait(timeout)
    return events


def stop_cli_run(run_id: str) -> None:
    run_cli("pause", run_id, timeout=30)


# ------------------------------------------------------------------------------- concurrent ticks
def test_llm_calls_in_flight_are_bounded_across_runs(home: Path) -> None:
    for run_id in ("c1", "c2", "c3"):
        crashed_run(home, run_id)
    release, entered = threading.Event(), []
    loop = MonitorLoop(
        Connection.open(home), blocking_llm(release, entered), policy="off", interval=60, max_llm_calls=1
    )

    async def scenario() -> dict[str, Any]:
        task = asyncio.ensure_future(loop.tick_all())
        await asyncio.to_thread(wait_for, lambda: loop.gate.in_flight == 1 and len(entered) == 1, 20)
        await asyncio.sleep(0.3)  # the other two are waiting for the one slot, not calling
        assert len(entered) == 1 and loop.gate.in_flight == 1
        release.set()
        return await asyncio.wait_for(task, 60)

    results = asyncio.run(scenario())
    assert {r["decision"] for r in results.values()} == {"FIX"}
    assert loop.gate.calls == 3 and loop.gate.peak == 1 and loop.gate.in_flight == 0
    verdicts = [e for e in loop.events if e["event"] == "verdict"]
    assert sorted(e["run_id"] for e in verdicts) == ["c1", "c2", "c3"]


def test_a_hung_llm_call_on_one_run_never_delays_rules_only_checks(home: Path) -> None:
    crashed_run(home, "slow")
    live_run(home, "fast-a")
    live_run(home, "fast-b")
    release, entered = threading.Event(), []
    loop = MonitorLoop(Connection.open(home), blocking_llm(release, entered), policy="off", interval=0.2)

    async def scenario() -> None:
        stop = asyncio.Event()
        task = asyncio.ensure_future(loop.run(stop))
        await asyncio.to_thread(wait_for, lambda: entered, 20)  # slow's verdict call hangs now
        await asyncio.to_thread(
            wait_for,
            lambda: min(loop.tick_counts.get("fast-a", 0), loop.tick_counts.get("fast-b", 0)) >= 5,
            30,
        )
        assert loop.tick_counts.get("slow", 0) == 0 and len(entered) == 1  # still hung, not re-asked
        release.set()
        await asyncio.to_thread(wait_for, lambda: loop.tick_counts.get("slow", 0) >= 1, 20)
        stop.set()
        await asyncio.wait_for(task, 30)

    asyncio.run(scenario())
    assert (
        loop.last_results["fast-a"]["decision"] == "LGTM" and loop.last_results["slow"]["decision"] == "FIX"
    )
    assert {e["run_id"] for e in loop.events} == {"slow"}  # healthy runs produce no events


def test_a_run_that_finishes_is_an_event_and_rings_the_bell(home: Path, controller: RunController) -> None:
    rings: list[str] = []
    connection = Connection(controller.store, controller)
    loop = MonitorLoop(connection, None, use_llm=False, interval=0.3, on_event=bell(rings.append))
    script = "import time\nfrom twinkle_auto.runtime import TrainingRuntime\nrt = TrainingRuntime()\n"
    script += "rt.start(model_id='m', config={'total_steps': 3})\n"
    script += (
        "for s in range(1, 4):\n    rt.log_metrics(step=s, loss=1.0)\n    time.sleep(0.3)\nrt.finish()\n"
    )

    async def scenario() -> None:
        stop = asyncio.Event()
        task = asyncio.ensure_future(loop.run(stop))
        controller.start("short", script)
        await asyncio.to_thread(wait_for, lambda: any(e["event"] == "run_finished" for e in loop.events), 30)
        stop.set()
        await asyncio.wait_for(task, 30)

    asyncio.run(scenario())
    (finished,) = [e for e in loop.events if e["event"] == "run_finished"]
    assert finished["run_id"] == "short" and "finished" in finished["message"] and finished["last_step"] == 3
    assert rings == ["\a"]


def test_bell_rings_only_for_fixes_questions_and_endings() -> None:
    rings: list[str] = []
    on, off = bell(rings.append), bell(rings.append, enabled=False)
    for kind in ("verdict", "fix", "fix_rejected", "approval_needed", "run_finished"):
        on({"event": kind})
        off({"event": kind})
    assert rings == ["\a", "\a", "\a"]


def test_events_from_a_tick() -> None:
    assert events_from_tick("r", {"decision": "LGTM", "message": None}) == []
    fixed = events_from_tick(
        "r",
        {"decision": "FIX", "diagnosis": "KeyError", "fixed": True, "message": "[Monitor] FIX r: renamed"},
    )
    assert [e["event"] for e in fixed] == ["verdict", "fix"] and fixed[1]["message"] == "FIX r: renamed"
    refused = events_from_tick("r", {"decision": "FIX", "fix_status": "refused", "message": "[Monitor] no"})
    assert [e["event"] for e in refused] == ["verdict", "fix_rejected"]
    line = format_line({**fixed[1], "message": "first\nsecond"})
    assert line.endswith("fix             r FIX: first") and "\n" not in line


def test_a_stuck_stdout_holds_only_the_writer_thread() -> None:
    unblock, written = threading.Event(), []

    def write(text: str) -> None:
        unblock.wait(30)  # a pipe nobody reads
        written.append(text)

    out = LineWriter(write, lambda: None, limit=3)
    for i in range(10):
        out.put(f"line {i}")  # returns at once every time
    assert out.dropped >= 6
    unblock.set()
    out.close()
    assert written[0] == "line 0\n" and len(written) == 10 - out.dropped


# ------------------------------------------------------------------------------ the daemon and chat
def test_a_chat_loop_defers_to_a_running_daemon_and_shows_its_verdicts(home: Path) -> None:
    crashed_run(home, "crashy")
    told: list[tuple[str, str]] = []
    chat = MonitorLoop(
        Connection.open(home),
        None,
        use_llm=False,
        follow_daemon=True,
        notify=lambda r, m: told.append((r, m)),
    )
    daemon = MonitorLoop(Connection.open(home), None, use_llm=False, policy="off")
    assert daemon_presence(home) is None
    with hold_presence(home, {"pid": os.getpid()}):
        assert daemon_presence(home) == {"pid": os.getpid()}
        assert asyncio.run(chat.tick_all()) == {}  # the daemon is the fixer: the chat ticks nothing
        assert "is watching these runs" in told[-1][1]
        asyncio.run(daemon.tick_all())
        assert asyncio.run(chat.tick_all()) == {}
        assert told[-1][0] == "crashy" and "FIX crashy (by watch)" in told[-1][1]
        assert chat.tick_counts == {} and daemon.tick_counts == {"crashy": 1}
        with pytest.raises(Exception, match="already watching"), hold_presence(home, {"pid": 1}):
            pass
    assert daemon_presence(home) is None
    asyncio.run(chat.tick_all())
    assert "watches the runs again" in told[-1][1]


# ------------------------------------------------------------------------------------------- alerts
def test_webhooks_retry_with_backoff_and_shape_bodies(hooks: Hooks) -> None:
    event = {"ts": 1.0, "run_id": "r", "event": "fix", "decision": "FIX", "message": "a <b> & c"}
    hooks.statuses = [500, 503]
    sender = WebhookSender([hooks.url], "generic", backoff=0.05)
    sender.send(event)
    wait_for(lambda: sender.sent == 1, 20)
    assert hooks.bodies == [event] and sender.failed == 0
    sender.close(5)
    assert body_for(event, "slack") == {"text": "twinkle-auto FIX r (fix): a &lt;b&gt; &amp; c"}
    assert body_for(event, "dingtalk") == {
        "msgtype": "text",
        "text": {"content": "twinkle-auto FIX r (fix): a <b> & c"},
    }
    signed = dingtalk_signed("https://oapi.example/robot/send?access_token=t", "SEC", now_ms=1700000000000)
    assert signed.startswith("https://oapi.example/robot/send?access_token=t&timestamp=1700000000000&sign=")


def test_a_hanging_webhook_never_blocks_the_sender_and_the_queue_is_bounded(hooks: Hooks) -> None:
    hooks.hold.clear()  # the server accepts and then hangs
    sender = WebhookSender([hooks.url], "generic", timeout=0.5, retries=0, queue_size=2)
    for i in range(10):
        sender.send({"run_id": "r", "event": "verdict", "n": i})  # returns at once every time
    assert sender.dropped >= 7
    wait_for(lambda: sender.failed >= 1, 20)  # the hung POST timed out and was given up
    hooks.hold.set()
    sender.close(10)


# --------------------------------------------------------------------------------- the real daemon
@pytest.mark.slow
def test_watch_once_reports_the_crashed_run_and_nothing_for_the_healthy_one(
    home: Path, tmp_path: Path
) -> None:
    (tmp_path / "crash.py").write_text(CRASH.replace("DELAY", "0"))
    assert run_cli("start", "healthy", "--script", str(HEALTHY), env=HEALTHY_ENV).returncode == 0
    assert run_cli("start", "crashy", "--script", str(tmp_path / "crash.py")).returncode == 0
    try:
        wait_for(lambda: read_meta(home, "crashy").get("status") == "failed", 30)
        out = run_cli("watch", "--json", "--once", "--no-llm", timeout=120)
        assert out.returncode == 0, out.stderr
        events = [json.loads(line) for line in out.stdout.splitlines()]
        # the misspelt key has a known fix, which needs no LLM: the crash is fixed in the same tick
        assert [(e["run_id"], e["event"], e["decision"]) for e in events] == [
            ("crashy", "verdict", "FIX"),
            ("crashy", "fix", "FIX"),
        ], events
        assert {"ts", "run_id", "event", "decision", "message"} <= set(events[0])
        assert "KeyError" in events[0]["message"]
        assert "known fix" in events[1]["message"], events[1]
    finally:
        stop_cli_run("healthy")


@pytest.mark.slow
def test_long_running_watch_fixes_a_crash_posts_webhooks_and_exits_0_on_sigterm(
    home: Path, tmp_path: Path, hooks: Hooks
) -> None:
    stub = StubLLM([Rule(match="Rule decision", text=VERDICT), Rule(match="train.py excerpt", text=PATCH)])
    url = stub.start()
    (tmp_path / "crash.py").write_text(CRASH.replace("DELAY", "0.3"))
    assert run_cli("start", "healthy", "--script", str(HEALTHY), env=HEALTHY_ENV).returncode == 0
    llm = ["--llm-base-url", url, "--llm-model", "stub-model", "--llm-api-key", "x"]
    watch = start_watch(*llm, "watch", "--json", "--interval", "2", "--webhook", hooks.url)
    try:
        wait_for(lambda: daemon_presence(home), 30)
        assert run_cli("start", "crashy", "--script", str(tmp_path / "crash.py")).returncode == 0
        events = read_events(watch, lambda evs: any(e["event"] == "run_finished" for e in evs), timeout=90)
        kinds = [(e["run_id"], e["event"]) for e in events]
        assert ("crashy", "verdict") in kinds and ("crashy", "fix") in kinds, events
        assert ("crashy", "run_finished") in kinds  # the fixed script ran to the end
        assert all(e["run_id"] == "crashy" for e in events)  # the healthy run produced none
        wait_for(lambda: {b["event"] for b in hooks.bodies} >= {"verdict", "fix", "run_finished"}, 30)
        assert all(b["run_id"] == "crashy" for b in hooks.bodies)
        assert (home / "crashy" / "train_v1.py").exists()
        assert 'rec["target"]' in (home / "crashy" / "train.py").read_text()
        watch.send_signal(signal.SIGTERM)
        assert watch.wait(timeout=30) == 0
        assert daemon_presence(home) is None
    finally:
        if watch.poll() is None:
            os.killpg(watch.pid, signal.SIGKILL)
            watch.wait()
        stop_cli_run("healthy")
        stub.stop()


@pytest.mark.slow
def test_watch_under_ask_without_a_terminal_asks_and_applies_nothing(home: Path, tmp_path: Path) -> None:
    stub = StubLLM([Rule(match="Rule decision", text=VERDICT), Rule(match="train.py excerpt", text=PATCH)])
    url = stub.start()
    (tmp_path / "crash.py").write_text(CRASH.replace("DELAY", "0"))
    assert run_cli("start", "asky", "--script", str(tmp_path / "crash.py")).returncode == 0
    try:
        wait_for(lambda: read_meta(home, "asky").get("status") == "failed", 30)
        before = (home / "asky" / "train.py").read_text()
        llm = ["--llm-base-url", url, "--llm-model", "stub-model", "--llm-api-key", "x"]
        out = run_cli(*llm, "watch", "--json", "--once", "--auto-fix", "ask", timeout=120)
        assert out.returncode == 0, out.stderr
        events = [json.loads(line) for line in out.stdout.splitlines()]
        asked = [e for e in events if e["event"] == "approval_needed"]
        assert len(asked) == 1 and asked[0]["run_id"] == "asky" and 'rec["target"]' in asked[0]["patch"]
        assert not [e for e in events if e["event"] == "fix"]
        assert (home / "asky" / "train.py").read_text() == before
        assert not (home / "asky" / "train_v1.py").exists()
    finally:
        stub.stop()


@pytest.mark.slow
def test_a_second_watch_on_the_same_home_is_refused(home: Path) -> None:
    watch = start_watch("watch", "--no-llm", "--interval", "5")
    try:
        wait_for(lambda: daemon_presence(home), 30)
        out = run_cli("watch", "--no-llm", "--once", timeout=60)
        assert out.returncode == 1 and "already watching" in out.stderr and out.stderr.count("\n") == 1
        bad = run_cli("watch", "--interval", "nan", "--once", timeout=60)
        assert bad.returncode == 1 and "--interval must be a finite number" in bad.stderr
    finally:
        watch.send_signal(signal.SIGTERM)
        assert watch.wait(timeout=30) == 0
