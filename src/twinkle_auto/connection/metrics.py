"""Reading metrics.jsonl: the last N entries, or everything after a saved offset.

Both cost time proportional to the bytes they read, never to the file's length: the monitor ticks every
30 s on runs whose metrics files reach millions of lines. Both are bounded by the caps of runtime/tail.py
(bytes scanned, bytes per line) and read regular files only, since a training process writes this file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from twinkle_auto.runtime.tail import (
    MAX_LINE_BYTES,
    MAX_SCAN_BYTES,
    NotRegularFileError,
    Tail,
    iter_lines_back,
    open_regular,
    parse_metric_line,
)

MAX_CHUNK = 8 * 1024 * 1024
"""An incremental read takes at most this many bytes per call; the caller comes back for the rest."""


@dataclass
class MetricsChunk:
    entries: list[dict[str, Any]]
    offset: int
    """Where the next incremental read starts: just after the last complete line read."""
    bad_lines: int = 0
    """Lines that were not a JSON object, or longer than MAX_LINE_BYTES (skipped, never fatal)."""
    reset: bool = False
    """The file shrank below the saved offset (replaced or truncated), so reading restarted at 0."""
    more: bool = False
    """More complete lines are waiting beyond MAX_CHUNK."""
    skipping: bool = False
    """`offset` is inside a line too long to read: the next call drops everything up to its newline."""
    error: str | None = None
    """Why nothing was read (the file is a FIFO, a device, unreadable), in one line."""


@dataclass
class MetricsTail:
    """The last entries of a metrics file and what could not be read, for a person to see."""

    entries: list[dict[str, Any]]
    bad_lines: int = 0
    """Lines among those read that were not a JSON object (torn, foreign, too deep)."""
    problem: str | None = None
    """One line about overlong lines, a file without line ends, or a file that is not regular."""


def _why(path: Path, exc: OSError) -> str:
    return str(exc) if isinstance(exc, NotRegularFileError) else f"{path.name}: {exc.strerror or exc}"


def tail_metrics(path: Path, n: int) -> MetricsTail:
    """The last `n` well-formed entries, reading backwards only as far as needed and never past the caps.

    Torn, foreign and overlong lines are skipped and counted; a FIFO or device is refused (`problem`).
    """
    out = MetricsTail([])
    if n <= 0:
        return out
    path = Path(path)
    try:
        fd, size = open_regular(path)
    except FileNotFoundError:
        return out
    except OSError as exc:
        out.problem = _why(path, exc)
        return out
    tail = Tail()
    try:
        for line, _length in iter_lines_back(fd, size, tail):
            entry = parse_metric_line(line) if line.strip() else None
            if entry is None:
                out.bad_lines += 1 if line.strip() else 0
                continue
            out.entries.append(entry)
            if len(out.entries) >= n:
                break
    except OSError as exc:
        out.problem = _why(path, exc)
    finally:
        os.close(fd)
    out.entries.reverse()
    out.problem = out.problem or tail.problem()
    return out


def last_metrics(path: Path, n: int) -> list[dict[str, Any]]:
    """The last `n` well-formed entries; a torn last line and malformed lines are skipped."""
    return tail_metrics(path, n).entries


def read_metrics_from(
    path: Path, offset: int = 0, *, max_bytes: int = MAX_CHUNK, skipping: bool = False
) -> MetricsChunk:
    """Entries appended since `offset`; a partial last line waits for the next call.

    A line longer than MAX_LINE_BYTES is counted bad and skipped without being held (`skipping` carries
    that over calls), so a 50 MB line costs one bounded read per chunk, never a stuck offset.
    """
    path = Path(path)
    try:
        fd, size = open_regular(path)
    except FileNotFoundError:
        return MetricsChunk([], 0, reset=offset > 0)
    except OSError as exc:
        return MetricsChunk([], offset, error=_why(path, exc))
    try:
        reset = False
        if size < offset:
            offset, reset, skipping = 0, True, False
        window = max(0, min(size - offset, max_bytes))
        data = os.pread(fd, window, offset) if window > 0 else b""
        start = 0
        if skipping:
            nl = data.find(b"\n")
            if nl < 0:
                end = offset + len(data)
                return MetricsChunk([], end, reset=reset, more=end < size, skipping=True)
            start = nl + 1
        if data.rfind(b"\n") < start and offset + len(data) < size and len(data) - start <= MAX_LINE_BYTES:
            # one line longer than the chunk: look as far as a line may be long, no further
            data = os.pread(fd, min(size - offset, start + MAX_LINE_BYTES + 1), offset)
    finally:
        os.close(fd)
    cut = data.rfind(b"\n")
    if cut < start:
        if len(data) - start > MAX_LINE_BYTES:
            end = offset + len(data)
            return MetricsChunk([], end, bad_lines=1, reset=reset, more=end < size, skipping=True)
        return MetricsChunk([], offset + start, reset=reset)
    entries: list[dict[str, Any]] = []
    bad = 0
    for line in data[start : cut + 1].split(b"\n")[:-1]:
        if not line.strip():
            continue
        entry = parse_metric_line(line) if len(line) <= MAX_LINE_BYTES else None
        if entry is None:
            bad += 1
        else:
            entries.append(entry)
    new_offset = offset + cut + 1
    return MetricsChunk(entries, new_offset, bad, reset, more=offset + len(data) < size)


@dataclass
class MetricsFollower:
    """Keeps an offset into one metrics file and hands out only what was appended since last time."""

    path: Path
    offset: int = 0
    bad_lines: int = 0
    error: str | None = None
    _skipping: bool = field(default=False, repr=False)

    def poll(self, max_bytes: int = MAX_SCAN_BYTES) -> list[dict[str, Any]]:
        """What was appended since the last poll, reading at most about `max_bytes` (the rest waits)."""
        out: list[dict[str, Any]] = []
        start = self.offset
        while True:
            chunk = read_metrics_from(self.path, self.offset, skipping=self._skipping)
            self.offset = chunk.offset
            self._skipping = chunk.skipping
            self.bad_lines += chunk.bad_lines
            self.error = chunk.error
            out.extend(chunk.entries)
            if chunk.reset:
                start = 0
            if not chunk.more or self.offset - start >= max_bytes:
                return out


def metric_keys(entries: list[dict[str, Any]]) -> list[str]:
    """Metric names in first-seen order, without the bookkeeping keys."""
    seen: dict[str, None] = {}
    for entry in entries:
        for key in entry:
            if key not in ("ts", "step"):
                seen.setdefault(key, None)
    return list(seen)
