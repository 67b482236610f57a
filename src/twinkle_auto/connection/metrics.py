"""Reading metrics.jsonl: the last N entries, or everything after a saved offset.

Both cost time proportional to the bytes they read, never to the file's length: the monitor ticks every
30 s on runs whose metrics files reach millions of lines.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from twinkle_auto.runtime.tail import parse_metric_line, read_last_lines

MAX_CHUNK = 8 * 1024 * 1024
"""An incremental read takes at most this many bytes per call; the caller comes back for the rest."""


@dataclass
class MetricsChunk:
    entries: list[dict[str, Any]]
    offset: int
    """Where the next incremental read starts: just after the last complete line read."""
    bad_lines: int = 0
    """Lines that were not a JSON object (skipped, never fatal)."""
    reset: bool = False
    """The file shrank below the saved offset (replaced or truncated), so reading restarted at 0."""
    more: bool = False
    """More complete lines are waiting beyond MAX_CHUNK."""


def last_metrics(path: Path, n: int) -> list[dict[str, Any]]:
    """The last `n` well-formed entries; a torn last line and malformed lines are skipped."""
    if n <= 0:
        return []
    want = n
    while True:
        lines, _ = read_last_lines(path, want)
        entries = [e for e in (parse_metric_line(line) for line in lines) if e is not None]
        if len(entries) >= n or len(lines) < want:
            return entries[-n:]
        want *= 2  # some lines were malformed: read a little further back


def read_metrics_from(path: Path, offset: int = 0, *, max_bytes: int = MAX_CHUNK) -> MetricsChunk:
    """Entries appended since `offset`; a partial last line waits for the next call."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return MetricsChunk([], 0, reset=offset > 0)
    try:
        size = os.fstat(fd).st_size
        reset = False
        if size < offset:
            offset, reset = 0, True
        length = min(size - offset, max_bytes)
        data = os.pread(fd, length, offset) if length > 0 else b""
    finally:
        os.close(fd)
    cut = data.rfind(b"\n")
    if cut < 0:
        return MetricsChunk([], offset, reset=reset, more=False)
    entries: list[dict[str, Any]] = []
    bad = 0
    for line in data[: cut + 1].split(b"\n")[:-1]:
        if not line.strip():
            continue
        entry = parse_metric_line(line)
        if entry is None:
            bad += 1
        else:
            entries.append(entry)
    new_offset = offset + cut + 1
    return MetricsChunk(entries, new_offset, bad, reset, more=new_offset < size and length == max_bytes)


@dataclass
class MetricsFollower:
    """Keeps an offset into one metrics file and hands out only what was appended since last time."""

    path: Path
    offset: int = 0
    bad_lines: int = 0
    _pending: list[dict[str, Any]] = field(default_factory=list, repr=False)

    def poll(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        while True:
            chunk = read_metrics_from(self.path, self.offset)
            self.offset = chunk.offset
            self.bad_lines += chunk.bad_lines
            out.extend(chunk.entries)
            if not chunk.more:
                return out


def metric_keys(entries: list[dict[str, Any]]) -> list[str]:
    """Metric names in first-seen order, without the bookkeeping keys."""
    seen: dict[str, None] = {}
    for entry in entries:
        for key in entry:
            if key not in ("ts", "step"):
                seen.setdefault(key, None)
    return list(seen)
