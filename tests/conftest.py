"""Shared fixtures: every test gets its own TWINKLE_HOME and working directory (auto.log lands there)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

# The real local LLM's session fixture (`local_llm`), registered once so one server serves every test.
pytest_plugins = ("llm_server",)

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    """Under CI=true a skip is a failure: a suite that needs an extra must run there, never vanish quietly."""
    outcome = yield
    report = outcome.get_result()
    if (
        report.skipped
        and os.environ.get("CI", "").lower() in ("1", "true", "yes")
        and not hasattr(report, "wasxfail")
    ):
        report.outcome = "failed"
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.longrepr = f"skipped under CI=true (a suite that needs an extra must run in CI): {reason}"


SHARED_RESOURCE_GROUPS = (("llm", "llm"), ("ray", "ray"), ("twinkle_server", "ray"))
"""(marker, xdist group): `make test` runs two pytest-xdist workers (`--dist loadgroup`); the tests of one
group run in one worker, one at a time. The local LLM is one server with one slot (two workers would each
start one and halve both); Ray heads and the mock Twinkle server (on Ray Serve) start Ray clusters that
are not meant to run side by side on two cores. Everything else is independent: its own TWINKLE_HOME,
working directory, processes and ports. The groups come first, the longest first, so the scheduler hands
them to different workers at the start and the short tests fill in around them (no long group at the end)."""


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook, which reads the groups into the node ids
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    order = list(dict.fromkeys(g for _, g in SHARED_RESOURCE_GROUPS))
    rank: dict[str, int] = {}
    for item in items:
        group = next((g for marker, g in SHARED_RESOURCE_GROUPS if item.get_closest_marker(marker)), None)
        if group is not None:
            item.add_marker(pytest.mark.xdist_group(group))
        rank[item.nodeid] = order.index(group) if group is not None else len(order)
    items.sort(key=lambda item: rank[item.nodeid])  # stable: the order within a group is kept


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private TWINKLE_HOME: tests never touch the user's ~/.cache/twinkle."""
    h = tmp_path / "twinkle-home"
    h.mkdir()
    monkeypatch.setenv("TWINKLE_HOME", str(h))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("TWINKLE_AUTO_COMMUNITY_SKILLS", "0")  # app tests never contact the hub
    monkeypatch.setenv("MODELSCOPE_HOME", str(tmp_path / "modelscope"))
    monkeypatch.delenv("TWINKLE_RUN_ID", raising=False)
    monkeypatch.delenv("TWINKLE_AUTO_OUTPUT_CAPTURED", raising=False)
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    return h


def wait_for(predicate: Callable[[], object], timeout: float = 20.0, interval: float = 0.05) -> object:
    """Poll until predicate() is truthy; fail the test with a clear message on timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s: {getattr(predicate, '__name__', predicate)}")


def read_meta(home: Path, run_id: str) -> dict:
    return json.loads((home / run_id / "meta.json").read_text())


def metric_steps(home: Path, run_id: str) -> list[int]:
    steps = []
    path = home / run_id / "metrics.jsonl"
    if not path.exists():
        return steps
    for line in path.read_text().splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if "step" in entry:
            steps.append(int(entry["step"]))
    return steps


def run_cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess:
    """The real `twinkle-auto` command, as a user runs it."""
    full_env = dict(os.environ)
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "twinkle_auto", *args],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=timeout,
    )


@pytest.fixture
def controller(home: Path) -> Iterator[object]:
    """A RunController whose launched processes are all killed (by pid) at teardown."""
    from twinkle_auto.connection.control import RunController
    from twinkle_auto.connection.store import RunStore

    ctl = RunController(RunStore(home), stop_grace=5.0)
    yield ctl
    for pid, child in list(ctl._children.items()):
        if child.poll() is None:
            try:
                os.killpg(pid, 9)
            except ProcessLookupError:
                pass
            child.wait(timeout=10)
