"""Tail of output.log within a character budget, keeping the last traceback whole when it fits.

The end of a log is what tells why a run died, but the traceback is often followed by noise (worker
shutdown messages, the launcher's lines); cutting at a fixed size would drop its head, which is the part
that names the code at fault.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from twinkle_auto.connection.tracebacks import parse_traceback

READ_FACTOR = 4
"""Read this many times the budget from the end, so a traceback just above the tail is still found."""


@dataclass
class LogTail:
    text: str
    """The tail to show; if a traceback is cut by the budget, it comes first, whole, then `[...]`."""
    traceback: str | None
    """The last traceback in the read window, whole (None when there is none)."""
    size: int
    """Size of output.log in bytes when read (a growing size means the process still writes)."""


def traceback_span(text: str) -> tuple[int, int] | None:
    """Start and end offsets of the traceback that decides why the process died (its chain included).

    The same choice the monitor makes (connection/tracebacks.py): the real error, not a shutdown-time
    "Exception ignored" report or a launcher's wrapper printed after it. A bare error line with no
    frames is not a traceback here.
    """
    parsed = parse_traceback(text)
    if parsed is None or not parsed.has_frames:
        return None
    return parsed.span


def tail_text(text: str, budget: int) -> str:
    """The last `budget` characters of text, re-anchored so the last traceback stays whole if it fits."""
    if len(text) <= budget:
        return text
    span = traceback_span(text)
    cut = len(text) - budget
    if span is None or span[0] >= cut:
        return text[cut:]
    tb = text[span[0] : span[1]]
    marker = "\n[...]\n"
    if len(tb) + len(marker) > budget:
        return text[cut:]
    rest_budget = budget - len(tb) - len(marker)
    after = text[span[1] :]
    return tb + marker + (after[-rest_budget:] if rest_budget > 0 else "")


def tail_log(path: Path, budget: int = 4000) -> LogTail:
    """Read only the end of the log (READ_FACTOR × budget bytes) and return the tail within budget."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return LogTail("", None, 0)
    try:
        size = os.fstat(fd).st_size
        want = min(size, budget * READ_FACTOR)
        raw = os.pread(fd, want, size - want)
    finally:
        os.close(fd)
    text = raw.decode("utf-8", "replace").replace("\r\n", "\n")
    if want < size:  # drop the first, probably partial, line
        nl = text.find("\n")
        text = text[nl + 1 :] if nl >= 0 else text
    span = traceback_span(text)
    return LogTail(tail_text(text, budget), text[span[0] : span[1]] if span else None, size)


def tail_lines(path: Path, n: int) -> list[str]:
    """The last `n` lines of the log (for `twinkle-auto logs -n N`), reading from the end only."""
    from twinkle_auto.runtime.tail import read_last_lines

    lines, end = read_last_lines(path, n)
    out = [line.decode("utf-8", "replace").rstrip("\r") for line in lines]
    try:
        size = os.path.getsize(path)
    except OSError:
        size = end
    if size > end:  # a last line still being written (no newline yet) is shown too
        with open(path, "rb") as f:
            f.seek(end)
            out.append(f.read(size - end).decode("utf-8", "replace"))
        out = out[-n:]
    return out
