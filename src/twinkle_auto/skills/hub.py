"""Bounded access to the ModelScope hub, shared by community skills and the search tools.

Why this exists: the modelscope client retries for ~16 s before it admits it is offline, reads its retry
count once at import, and keeps one process-wide endpoint. An agent tool and a start-up task need an
answer in bounded time instead, so every call here

* builds a fresh `HubApi` (reading `MODELSCOPE_ENDPOINT` at call time, which tests rely on) with one
  attempt per request and a request timeout below the overall deadline, and
* runs in a daemon thread the caller stops waiting for after the deadline, so a hung socket can neither
  block the chat nor keep the interpreter from exiting.

The client is `modelscope_hub.HubApi`: `modelscope>=1.40` installs it and its own `modelscope.hub.api.HubApi`
delegates every call to it. Importing it directly takes ~0.15 s; importing `modelscope` pulls in torch
when present (~3 s) for nothing we use.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable
from typing import Any, TypeVar

log = logging.getLogger(__name__)

HUB_TIMEOUT = 10.0
"""Seconds a caller waits for the hub, whatever the client does underneath."""
REQUEST_TIMEOUT = 8.0
"""Connect and read timeout of each HTTP request, below HUB_TIMEOUT so the client usually gives the
reason itself (connection refused, timed out) before the deadline has to."""

T = TypeVar("T")


class HubUnavailable(Exception):
    """ModelScope could not be asked: client not installed, not reachable, or no answer in time."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        """`missing` (no client), `unreachable` (network) or `timeout` (no answer within the deadline)."""


def hub_api(request_timeout: float = REQUEST_TIMEOUT) -> Any:
    """A fresh `HubApi` for the current `MODELSCOPE_ENDPOINT`, one attempt per request.

    Raises HubUnavailable('missing') when the modelscope client is not installed.
    """
    _route_sdk_logging()
    try:
        from modelscope_hub import HubApi, HubConfig
    except ImportError as exc:
        raise HubUnavailable(
            "missing", f"the modelscope client is not installed ({exc}); pip install 'twinkle-auto[search]'"
        ) from None
    api = HubApi(config=HubConfig())
    try:
        # The public constructor takes neither a retry count nor a timeout (both are read from the
        # environment when modelscope_hub is first imported), so the OpenAPI client is replaced by one
        # built with ours. If a later release moves it, the deadline below still bounds the wait.
        from modelscope_hub._openapi import OpenAPIClient

        api._openapi = OpenAPIClient(api._config, timeout=request_timeout, max_retries=1)
    except Exception as exc:  # pragma: no cover - depends on the installed client version
        log.debug("could not cut modelscope retries (%s); relying on the deadline", exc)
    return api


def _route_sdk_logging() -> None:
    """Send the client's log records to our log file instead of its own stderr handler.

    modelscope_hub attaches a StreamHandler to its logger unless one is already there, and stops
    propagation; in a terminal chat those lines would land in the middle of the prompt. A NullHandler
    set first keeps it from doing so; a handler it already attached (imported earlier by someone else)
    is removed.
    """
    sdk = logging.getLogger("modelscope_hub")
    for handler in list(sdk.handlers):
        if type(handler) is logging.StreamHandler:
            sdk.removeHandler(handler)
    if not sdk.handlers:
        sdk.addHandler(logging.NullHandler())
    sdk.propagate = True


def call_with_deadline(fn: Callable[[], T], timeout: float = HUB_TIMEOUT, what: str = "ModelScope") -> T:
    """Run a blocking hub call in a daemon thread; raise HubUnavailable('timeout') after `timeout` s.

    The function's own exceptions are re-raised in the caller. A call that outlives the deadline keeps
    running in its thread until its socket times out; nothing waits for it.
    """
    done = threading.Event()
    box: dict[str, Any] = {}

    def _run() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:  # handed to the caller
            box["error"] = exc
        finally:
            done.set()

    threading.Thread(target=_run, name=f"hub-call:{what}", daemon=True).start()
    if not done.wait(timeout):
        raise HubUnavailable("timeout", f"{what} did not answer within {timeout:g} s")
    if "error" in box:
        raise box["error"]
    return box["value"]


def is_unreachable(exc: BaseException) -> bool:
    """Whether an error means 'could not talk to the hub' rather than 'the hub said no'."""
    if isinstance(exc, HubUnavailable):
        return exc.kind in ("unreachable", "timeout")
    # modelscope_hub.NetworkError subclasses ConnectionError, RequestTimeoutError also TimeoutError.
    return isinstance(exc, (ConnectionError, TimeoutError))


_CAUSES = (
    ("NameResolution", "cannot resolve {host}: no network or DNS"),
    ("Name or service not known", "cannot resolve {host}: no network or DNS"),
    ("Temporary failure in name resolution", "cannot resolve {host}: no network or DNS"),
    ("Connection refused", "connection to {host} refused"),
    ("Network is unreachable", "network unreachable"),
    ("timed out", "{host} timed out"),
    ("Timeout", "{host} timed out"),
    ("SSLError", "TLS error talking to {host}"),
    ("ProxyError", "proxy error"),
)
_HOST_RE = re.compile(r"host='([^']+)'(?:, port=(\d+))?")


def describe(exc: BaseException, limit: int = 200) -> str:
    """One short line about a hub error, without the client's multi-line suggestions or urllib3's
    nested reprs (a connection error names its cause, e.g. 'cannot resolve modelscope.cn')."""
    if isinstance(exc, HubUnavailable):
        return str(exc)
    if is_unreachable(exc):
        text = str(exc)
        match = _HOST_RE.search(text)
        host = match.group(1) if match else "the hub"
        if match and match.group(2) not in (None, "80", "443"):
            host = f"{host}:{match.group(2)}"
        for needle, phrase in _CAUSES:
            if needle in text:
                return phrase.format(host=host)
    status = getattr(exc, "status_code", None)
    message = getattr(exc, "message", None) or str(exc) or type(exc).__name__
    text = " ".join(str(message).split())
    if status is not None:
        text = f"HTTP {status}: {text}"
    return text if len(text) <= limit else text[: limit - 1] + "…"
