"""Is the Twinkle server ready? Only the server's own answers count.

A port that answers is not a ready server: another program may hold it, and Ray Serve's proxy answers
404 for apps it has not deployed yet. Ready means, in order: the gateway's `/api/v1/healthz` returns
Twinkle's `{"status": "ok"}`, its capabilities list every model we configured, and each model and
sampler app answers from its own replica (Twinkle stamps `X-Twinkle-Replica-Id` on those answers; the
model's `/healthz` also pings its actors). A failure carries the tail of the server log, since that
is where the reason is.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPLICA_HEADER = "X-Twinkle-Replica-Id"
LAUNCHER_READY_LINE = "All applications started!"
"""Printed by the Twinkle launcher after its last `serve.run` returns, right before it installs its
SIGTERM handler: a server stopped before this line dies without shutting Serve down."""
HEADERS = {"Authorization": "Bearer EMPTY_TOKEN", "x-request-id": "twinkle-auto-health"}
PROBE_TIMEOUT_S = 3.0

MOCK_BASE_TIMEOUT_S = 240.0
"""Mock is ready in ~35 s here; a 2-core CI box under load takes several times that."""
REAL_BASE_TIMEOUT_S = 900.0
"""Real backends download and load weights before the model app answers."""
PER_SAMPLER_S = {"mock": 30.0, "real": 600.0}


class ServerStartError(RuntimeError):
    """The server did not become ready; the message is one line, `log_tail` holds the evidence."""

    def __init__(self, message: str, log_tail: str = "") -> None:
        super().__init__(message)
        self.log_tail = log_tail


@dataclass(frozen=True)
class Probe:
    ready: bool
    stage: str
    """The first check that failed (`healthz`, `capabilities`, `app:<name>`), or `ready`."""
    detail: str = ""
    models: tuple[str, ...] = ()


_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never via an HTTP proxy


def http_get(url: str, timeout: float = PROBE_TIMEOUT_S) -> tuple[int, dict[str, str], Any]:
    """(status, headers, parsed JSON or text); status 0 when nothing answered."""
    req = urllib.request.Request(url, headers=HEADERS, method="GET")
    try:
        with _opener.open(req, timeout=timeout) as resp:
            status, headers, body = resp.status, dict(resp.headers.items()), resp.read()
    except urllib.error.HTTPError as exc:
        status, headers, body = exc.code, dict(exc.headers.items()), exc.read()
    except (urllib.error.URLError, OSError, ValueError):
        return 0, {}, None
    try:
        return status, headers, json.loads(body.decode("utf-8", "replace"))
    except ValueError:
        return status, headers, body.decode("utf-8", "replace")[:200]


def twinkle_healthz(base_url: str) -> bool:
    status, _, body = http_get(f"{base_url}/api/v1/healthz")
    return status == 200 and isinstance(body, dict) and body.get("status") == "ok"


def supported_models(base_url: str, timeout: float = 10.0) -> list[str] | None:
    """Model names from the gateway's capabilities, or None when no Twinkle gateway answered."""
    status, _, body = http_get(f"{base_url}/api/v1/twinkle/get_server_capabilities", timeout)
    if status != 200 or not isinstance(body, dict) or not isinstance(body.get("supported_models"), list):
        return None
    names = []
    for item in body["supported_models"]:
        name = item.get("model_name") if isinstance(item, dict) else item
        if isinstance(name, str):
            names.append(name)
    return names


def app_answers(base_url: str, route: str, kind: str) -> tuple[bool, str]:
    """Whether the app behind `route` answers from its own replica (and, for a model, is healthy)."""
    header = REPLICA_HEADER.lower()
    status, headers, body = http_get(f"{base_url}{route}/healthz")
    if not any(k.lower() == header for k in headers):
        return False, f"not deployed yet (HTTP {status or 'no answer'})"
    if kind == "model":
        healthy = status == 200 and isinstance(body, dict) and body.get("healthy") is True
        detail = body.get("detail", "") if isinstance(body, dict) else ""
        return healthy, "" if healthy else f"model actors not healthy: {detail or status}"
    return True, ""


def probe(base_url: str, expected_models: Sequence[str], apps: Sequence[dict[str, str]]) -> Probe:
    """One pass over the readiness checks, stopping at the first that fails."""
    if not twinkle_healthz(base_url):
        return Probe(False, "healthz", "gateway not answering /api/v1/healthz yet")
    models = supported_models(base_url)
    if models is None:
        return Probe(False, "capabilities", "gateway did not answer get_server_capabilities")
    missing = [m for m in expected_models if m not in models]
    if missing:
        return Probe(False, "capabilities", f"models not listed: {', '.join(missing)}", tuple(models))
    for app in apps:
        ok, detail = app_answers(base_url, app["route"], app["kind"])
        if not ok:
            return Probe(False, f"app:{app['name']}", detail, tuple(models))
    return Probe(True, "ready", "", tuple(models))


def ready_timeout(backend: str, n_samplers: int) -> float:
    """Seconds to wait for readiness: more for real weights, more again per sampler engine."""
    if backend == "mock":
        return MOCK_BASE_TIMEOUT_S + PER_SAMPLER_S["mock"] * n_samplers
    return REAL_BASE_TIMEOUT_S + PER_SAMPLER_S["real"] * n_samplers


def log_tail(path: str | Path, *, lines: int = 30, budget: int = 2500) -> str:
    """The last lines of a log, cut to a budget (tracebacks end at the bottom)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, 2)
            size = f.tell()
            f.seek(max(0, size - 64 * 1024))
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return ""
    tail = "\n".join(text.splitlines()[-lines:])
    return tail[-budget:]


def wait_ready(
    base_url: str,
    *,
    expected_models: Sequence[str],
    apps: Sequence[dict[str, str]],
    exit_code: Callable[[], int | None],
    log_path: str | Path,
    timeout: float,
    interval: float = 1.0,
    log_offset: int = 0,
) -> Probe:
    """Poll until ready; ServerStartError when the launcher exits or the time is up.

    Ready needs the HTTP answers above and, last, the launcher's own "all applications started" line
    in its log (after `log_offset`, where this launch's output begins).
    """
    deadline = time.monotonic() + timeout
    last = Probe(False, "healthz", "not probed yet")
    while True:
        code = exit_code()
        if code is not None:
            how = f"exit code {code}" if code >= 0 else f"signal {-code}"
            tail = log_tail(log_path)
            reason = _reason(tail)
            raise ServerStartError(f"the Twinkle server exited during start-up ({how}){reason}", tail)
        last = probe(base_url, expected_models, apps)
        if last.ready:
            if launcher_done(log_path, log_offset):
                return last
            last = Probe(False, "launcher", "apps answer; launcher still finishing its deploys", last.models)
        if time.monotonic() >= deadline:
            tail = log_tail(log_path)
            raise ServerStartError(
                f"the Twinkle server was not ready within {timeout:.0f}s (stuck at {last.stage}: {last.detail})",
                tail,
            )
        time.sleep(interval)


def launcher_done(log_path: str | Path, offset: int = 0) -> bool:
    try:
        with open(log_path, "rb") as f:
            f.seek(offset)
            return LAUNCHER_READY_LINE.encode() in f.read()
    except OSError:
        return False


def _reason(tail: str) -> str:
    """The last error-looking line of the log, as a hint in the one-line message."""
    for line in reversed(tail.splitlines()):
        text = line.strip()
        if text and ("Error" in text or "error:" in text or "Exception" in text):
            return f": {text[:240]}"
    return ""
