"""Telling people outside the terminal: monitor events as webhook POSTs, and the terminal bell.

A webhook is somebody else's server: it may be slow, down or rate-limited. So sending never happens on
the monitor's path — each URL has its own bounded queue and a background thread that POSTs with a
timeout and retries with backoff; a full queue drops the event (counted, logged once) instead of
holding a tick. Webhook URLs usually carry a token, so only their scheme and host are ever logged.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import os
import queue
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from typing import Any

log = logging.getLogger("twinkle_auto.alerts")

EVENT_KINDS = ("verdict", "fix", "fix_rejected", "run_finished", "approval_needed")
FORMATS = ("generic", "slack", "dingtalk")
BELL_EVENTS = frozenset({"fix", "approval_needed", "run_finished"})
"""What rings the terminal bell in the chat: a change made for the person, a question, an ending."""

TIMEOUT_S = 5.0
RETRIES = 3
BACKOFF_S = 0.5
"""First retry after this long, doubling (0.5, 1, 2 s): enough for a restart, not a backlog."""
QUEUE_SIZE = 256
ENV_DINGTALK_SECRET = "TWINKLE_DINGTALK_SECRET"
"""A DingTalk robot with "sign" security: its secret (the URL then gets timestamp and sign)."""
MAX_TEXT = 3000
"""Chat services cut long messages anyway; a diff in a FIX message is kept to this many characters."""


class WebhookError(ValueError):
    """A webhook URL we will not send to (not http/https, no host)."""


def redact(url: str) -> str:
    """scheme://host[:port]/… — what may be logged of a URL whose path or query holds a token."""
    parts = urllib.parse.urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rsplit('@', 1)[-1]}/…"


def check_url(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise WebhookError(f"webhook {redact(url)!s} is not an http(s) URL")
    return url


def event_text(event: dict[str, Any]) -> str:
    """One human line for chat services: `twinkle-auto FIX run-a (fix): …`."""
    decision = event.get("decision") or ""
    head = f"twinkle-auto {decision} {event.get('run_id', '')} ({event.get('event', '')})".replace("  ", " ")
    message = str(event.get("message") or "")
    text = f"{head}: {message}" if message else head
    return text if len(text) <= MAX_TEXT else text[: MAX_TEXT - 1] + "…"


def _slack_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def body_for(event: dict[str, Any], fmt: str) -> dict[str, Any]:
    """The JSON body of one POST: the event itself, or the shape Slack / DingTalk robots accept."""
    if fmt == "slack":
        return {"text": _slack_escape(event_text(event))}
    if fmt == "dingtalk":
        return {"msgtype": "text", "text": {"content": event_text(event)}}
    return dict(event)


def dingtalk_signed(url: str, secret: str, now_ms: int | None = None) -> str:
    """The URL with DingTalk's `timestamp` and `sign` (HMAC-SHA256 of "timestamp\\nsecret", base64)."""
    stamp = str(now_ms if now_ms is not None else int(time.time() * 1000))
    digest = hmac.new(secret.encode(), f"{stamp}\n{secret}".encode(), hashlib.sha256).digest()
    sign = urllib.parse.quote_plus(base64.b64encode(digest))
    return f"{url}{'&' if '?' in url else '?'}timestamp={stamp}&sign={sign}"


class _Retry(Exception):
    pass


class WebhookSender:
    """POSTs events to webhook URLs from background threads; `send` never blocks."""

    def __init__(
        self,
        urls: list[str],
        fmt: str = "generic",
        *,
        timeout: float = TIMEOUT_S,
        retries: int = RETRIES,
        backoff: float = BACKOFF_S,
        queue_size: int = QUEUE_SIZE,
    ) -> None:
        if fmt not in FORMATS:
            raise WebhookError(f"unknown webhook format {fmt!r}: use one of {', '.join(FORMATS)}")
        self.urls = [check_url(u) for u in urls]
        self.fmt = fmt
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.sent = 0
        self.failed = 0
        self.dropped = 0
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._queues: list[queue.Queue[dict[str, Any] | None]] = []
        self._threads: list[threading.Thread] = []
        self._warned_full = False
        for i, url in enumerate(self.urls):
            q: queue.Queue[dict[str, Any] | None] = queue.Queue(maxsize=queue_size)
            t = threading.Thread(target=self._worker, args=(url, q), name=f"webhook-{i}", daemon=True)
            self._queues.append(q)
            self._threads.append(t)
            t.start()

    def send(self, event: dict[str, Any]) -> None:
        """Queue one event for every URL; a full queue drops it (the tick goes on)."""
        for url, q in zip(self.urls, self._queues, strict=True):
            try:
                q.put_nowait(event)
            except queue.Full:
                with self._lock:
                    self.dropped += 1
                    warn = not self._warned_full
                    self._warned_full = True
                if warn:
                    log.warning("webhook %s is not keeping up: events are being dropped", redact(url))

    def close(self, timeout: float = 5.0) -> None:
        """Send what is queued for at most `timeout` seconds, then stop (the threads are daemons)."""
        deadline = time.monotonic() + timeout
        for q in self._queues:
            try:
                q.put(None, timeout=max(0.0, deadline - time.monotonic()))
            except queue.Full:
                pass
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))
        self._closing.set()

    # ------------------------------------------------------------------------------------------ worker
    def _worker(self, url: str, q: queue.Queue[dict[str, Any] | None]) -> None:
        while True:
            event = q.get()
            if event is None:
                return
            ok = self._deliver(url, event)
            with self._lock:
                if ok:
                    self.sent += 1
                else:
                    self.failed += 1

    def _deliver(self, url: str, event: dict[str, Any]) -> bool:
        data = json.dumps(body_for(event, self.fmt), default=str).encode()
        for attempt in range(self.retries + 1):
            try:
                self._post(url, data)
                return True
            except _Retry as exc:
                if attempt == self.retries or self._closing.is_set():
                    log.warning("webhook %s failed after %d attempts: %s", redact(url), attempt + 1, exc)
                    return False
                time.sleep(self.backoff * 2**attempt)
            except Exception as exc:  # a 4xx: the request itself is wrong, sending it again will not help
                log.warning("webhook %s refused the event: %s", redact(url), exc)
                return False
        return False

    def _post(self, url: str, data: bytes) -> None:
        secret = os.environ.get(ENV_DINGTALK_SECRET, "")
        target = dingtalk_signed(url, secret) if self.fmt == "dingtalk" and secret else url
        request = urllib.request.Request(
            target,
            data=data,
            method="POST",
            headers={"Content-Type": "application/json; charset=utf-8", "User-Agent": "twinkle-auto"},
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                response.read(65536)
        except urllib.error.HTTPError as exc:
            if exc.code == 429 or exc.code >= 500:
                raise _Retry(f"HTTP {exc.code}") from None
            raise RuntimeError(f"HTTP {exc.code}") from None
        except (urllib.error.URLError, OSError) as exc:  # refused, reset, timed out, DNS
            raise _Retry(type(exc).__name__ + ": " + str(getattr(exc, "reason", exc))) from None


def bell(write: Callable[[str], Any], enabled: bool = True) -> Callable[[dict[str, Any]], None]:
    """An event listener that rings the terminal bell (BEL) on BELL_EVENTS; a no-op when disabled."""

    def on_event(event: dict[str, Any]) -> None:
        if enabled and event.get("event") in BELL_EVENTS:
            try:
                write("\a")
            except (OSError, ValueError):
                pass

    return on_event
