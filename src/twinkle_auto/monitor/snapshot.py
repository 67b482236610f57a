"""Collecting what one monitor tick looks at, and a digest of it.

A tick must cost the same on a 1,000,000-line metrics file as on a 1,000-line one, so it reads only the
last rows (backwards from the end), the run's first rows (where the loss started: the rules judge
progress against it, so a long converged run is not a 'plateau' of its last 512 rows) and the end of the
log. The digest is built from content that moves
while a run is alive (last step, log bytes, process state) so that "nothing changed" is a fact, not a
guess from lengths that stop changing.
"""

from __future__ import annotations

import hashlib
import math
import os
import shutil
import time
from typing import Any

from twinkle_auto.connection import Connection
from twinkle_auto.connection.logs import tail_text, traceback_span
from twinkle_auto.connection.metrics import read_metrics_from
from twinkle_auto.connection.store import CorruptMetaError
from twinkle_auto.monitor.metric_names import INDEX_KEYS, canonical
from twinkle_auto.monitor.tracebacks import script_mentions
from twinkle_auto.runtime import format as fmt

METRIC_ROWS = 512
"""Last rows read per tick: the spike window (128) and the trend window (64) fit with room to spare."""
HEAD_ROWS = 64
"""First rows of the run read per tick (from the file's start, bounded by HEAD_BYTES): where it started."""
HEAD_BYTES = 256 * 1024
SCRIPT_BYTES = 512 * 1024
"""A script larger than this is not read for the error's identifiers (the rule then relies on frames)."""
LOG_BUDGET = 1500
"""Characters of output.log shown to the LLM; the last traceback goes first and whole when it fits."""
LOG_READ = 6000
"""Characters read from the end of the log for detection (tracebacks often sit above worker noise)."""
TREND_KEYS = 8
LAUNCH_MARKER = "===== twinkle-auto: launch #"
"""The launcher's marker line: what is above the last one belongs to an earlier process."""


def _finite(values: list[Any]) -> list[float]:
    return [
        float(v)
        for v in values
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
    ]


def window_rows(rows: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(head, tail) of a whole metrics list as a tick sees it: the last METRIC_ROWS rows, and the first
    HEAD_ROWS rows when the tail does not reach back to them (no overlap)."""
    tail = rows[-METRIC_ROWS:]
    head = rows[: max(0, min(HEAD_ROWS, len(rows) - METRIC_ROWS))]
    return head, tail


_HEAD_CACHE: dict[tuple[str, int, int], tuple[int, list[dict[str, Any]]]] = {}
"""(path, device, inode) -> (bytes the head spans, head rows): a run's first rows never change, so a tick
reads them once per metrics file, not every 30 s (kept while the file is not replaced or truncated)."""
_HEAD_CACHE_MAX = 256


def _head_rows(path: Any, tail: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The first HEAD_ROWS rows of the metrics file, when the tail does not already hold them."""
    if len(tail) < METRIC_ROWS:
        return []  # the tail is the whole file
    try:
        st = os.stat(path)
    except OSError:
        return []
    key = (str(path), st.st_dev, st.st_ino)
    cached = _HEAD_CACHE.get(key)
    if cached is not None and st.st_size >= cached[0]:
        head = cached[1]
    else:
        head, want = [], 16 * 1024
        while True:  # read as little as the first rows need (rows run from 50 bytes to a few KB)
            try:
                chunk = read_metrics_from(path, 0, max_bytes=want)
            except OSError:
                return []
            head = chunk.entries[:HEAD_ROWS]
            if len(head) >= HEAD_ROWS or want >= HEAD_BYTES or chunk.offset >= st.st_size:
                break
            want *= 4
        if len(_HEAD_CACHE) >= _HEAD_CACHE_MAX:
            _HEAD_CACHE.pop(next(iter(_HEAD_CACHE)))
        _HEAD_CACHE[key] = (min(want, st.st_size), head)
    for i, row in enumerate(head):
        if row == tail[0]:
            return head[:i]
    return list(head)


def trends(metrics: list[dict[str, Any]], keys: int = TREND_KEYS) -> dict[str, dict[str, Any]]:
    """Per-key summary of recent rows: last value, mean of the first and last quarter, direction.

    Sized for an LLM prompt: a handful of numbers per key instead of hundreds of rows. Known metrics
    (metric_names) come first, each entry naming its canonical meaning; unknown keys follow and are never
    dropped silently: those beyond the budget are listed by name under "_other_keys".
    """
    out: dict[str, dict[str, Any]] = {}
    names: list[str] = []
    for row in metrics:
        for key in row:
            if key not in INDEX_KEYS and key not in names:
                names.append(key)
    names.sort(key=lambda k: canonical(k) is None)
    for key in names[:keys]:
        series = [row[key] for row in metrics if key in row]
        finite = _finite(series)
        bad = len(series) - len(finite)
        entry: dict[str, Any] = {"n": len(series), "last": series[-1] if series else None}
        meaning = canonical(key)
        if meaning is not None and meaning != key:
            entry["means"] = meaning
        if bad:
            entry["non_finite"] = bad
        if len(finite) >= 4:
            q = max(1, len(finite) // 4)
            first, last = sum(finite[:q]) / q, sum(finite[-q:]) / q
            scale = max(abs(first), abs(last), 1e-12)
            change = (last - first) / scale
            entry.update(
                first_quarter_mean=round(first, 6),
                last_quarter_mean=round(last, 6),
                direction="up" if change > 0.05 else "down" if change < -0.05 else "flat",
                min=round(min(finite), 6),
                max=round(max(finite), 6),
            )
        out[key] = entry
    if len(names) > keys:
        out["_other_keys"] = {"names": names[keys : keys + 40], "n": len(names) - keys}
    return out


def collect(connection: Connection, run_id: str, *, stall_reset_at: float | None = None) -> dict[str, Any]:
    """One snapshot of a run as plain data (what the detectors and the state need)."""
    store = connection.store
    status = store.status(run_id)
    try:
        meta = store.read_meta(run_id)
    except CorruptMetaError:
        meta = {}
    metrics = store.last_metrics(run_id, METRIC_ROWS)
    folder = store.path(run_id)
    head = _head_rows(folder / fmt.METRICS_FILE, metrics)
    tail = store.log_tail(run_id, LOG_READ)
    log_text, traceback = tail.text, tail.traceback
    cut = log_text.rfind(LAUNCH_MARKER)
    if cut >= 0:  # only the current process's output speaks for it
        log_text = log_text[cut:]
        span = traceback_span(log_text)
        traceback = log_text[span[0] : span[1]] if span else None
    now = time.time()
    last_ts = next((row["ts"] for row in reversed(metrics) if isinstance(row.get("ts"), (int, float))), None)
    anchors = [t for t in (last_ts, meta.get("launched_at"), stall_reset_at) if isinstance(t, (int, float))]
    watched = status.process == "alive" or status.remote  # a remote run's only sign of life is its files
    stall = max(0.0, now - max(anchors)) if anchors and watched else None
    process_state = status.process
    if process_state == "unknown" and status.status not in ("running", "stopping", "unknown"):
        process_state = "dead"  # no pid to ask, but the run itself reported that it ended
    last_step = status.last_step
    try:
        usage = shutil.disk_usage(folder)
        disk_free, disk_total = int(usage.free), int(usage.total)
    except OSError:
        disk_free = disk_total = None
    mentions = script_mentions(log_text, lambda: _script_text(folder / fmt.SCRIPT_FILE))
    digest_src = f"{last_step}|{tail.size}|{process_state}|{status.status}|{meta.get('launch_count')}"
    return {
        "run_id": run_id,
        "status": status.status,
        "effective_status": status.effective_status,
        "process_state": process_state,
        "pid": status.pid,
        "host": status.host,
        "remote": status.remote,
        "last_step": last_step,
        "total_steps": status.total_steps,
        "metrics": head + metrics,
        "head_rows": len(head),
        "log_tail": log_text,
        "traceback": traceback,
        "log_size": tail.size,
        "stall_seconds": stall,
        "error": status.error,
        "exit_code": meta.get("exit_code"),
        "launch_count": meta.get("launch_count"),
        "disk_free": disk_free,
        "disk_total": disk_total,
        "script_mentions": mentions,
        "digest": hashlib.sha1(digest_src.encode()).hexdigest()[:16],
    }


def _script_text(path: Any) -> str | None:
    from twinkle_auto.runtime.tail import read_regular

    try:  # a FIFO or device as train.py is refused by type, a big file by size, both unread
        return read_regular(path, SCRIPT_BYTES).decode("utf-8", "replace")
    except (OSError, ValueError):
        return None


def log_excerpt(snapshot: dict[str, Any], budget: int = LOG_BUDGET) -> str:
    """About `budget` characters of the log for a prompt: the last traceback first, then the tail."""
    tb = snapshot.get("traceback")
    tail = snapshot.get("log_tail") or ""
    if not tb:
        return tail_text(tail, budget)
    if len(tb) >= budget:
        return tb[-budget:]
    rest = budget - len(tb) - 20
    after = tail[tail.rfind(tb) + len(tb) :] if tb in tail else tail
    return tb + ("\n[... log tail ...]\n" + after[-rest:] if after.strip() and rest > 0 else "")
