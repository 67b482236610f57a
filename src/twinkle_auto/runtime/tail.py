"""Reading the end of an append-only file without reading the rest (standard library only).

Metrics files of long runs reach millions of lines; every reader that wants "the last N" must cost the
same on a 1,000-line file as on a 1,000,000-line one, so it reads backwards in blocks from the end.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

BLOCK = 64 * 1024


def read_last_lines(path: Path, n: int, *, block: int = BLOCK) -> tuple[list[bytes], int]:
    """The last `n` complete lines of a file and the file size they were read against.

    A last line without its newline is a write still in progress (or cut by a kill): it is left out, and
    the returned size points at its start so an incremental reader picks it up once it is whole.
    """
    if n <= 0:
        return [], 0
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return [], 0
    try:
        size = os.fstat(fd).st_size
        end = size
        buf = b""
        pos = size
        # Find the last newline: everything after it is a partial line.
        while pos > 0:
            start = max(0, pos - block)
            chunk = os.pread(fd, pos - start, start)
            buf = chunk + buf
            pos = start
            if b"\n" in chunk:
                break
        cut = buf.rfind(b"\n")
        if cut < 0:
            return [], 0
        end = pos + cut + 1
        buf = buf[: cut + 1]
        while buf.count(b"\n") <= n and pos > 0:
            start = max(0, pos - block)
            buf = os.pread(fd, pos - start, start) + buf
            pos = start
        lines = buf.split(b"\n")[:-1]
        if pos > 0:  # the first piece may be the tail of a line we did not read whole
            lines = lines[1:]
        return lines[-n:], end
    finally:
        os.close(fd)


def parse_metric_line(line: bytes | str) -> dict[str, Any] | None:
    """One metrics.jsonl line as a dict, or None when it is not a JSON object (a torn or foreign line)."""
    try:
        obj = json.loads(line)
    except (ValueError, UnicodeDecodeError):
        return None
    return obj if isinstance(obj, dict) else None


def last_step(path: Path) -> int | None:
    """The highest `step` among the last lines of a metrics file, ignoring torn lines."""
    lines, _ = read_last_lines(path, 32)
    best: int | None = None
    for line in lines:
        entry = parse_metric_line(line)
        step = entry.get("step") if entry else None
        if isinstance(step, (int, float)) and not isinstance(step, bool) and math.isfinite(step):
            best = int(step) if best is None else max(best, int(step))
    return best
