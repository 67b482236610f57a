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
from twinkle_auto.runtime.tail import NotRegularFileError, open_regular, read_tail

READ_FACTOR = 4
"""Read this many times the budget from the end, so a traceback just above the tail is still found."""
LOG_LINE_BYTES = 4096
"""`logs -n N` shows at most this many bytes of one line (its end, marked): a 50 MB line stays readable."""


@dataclass
class LogTail:
    text: str
    """The tail to show; if a traceback is cut by the budget, it comes first, whole, then `[...]`."""
    traceback: str | None
    """The last traceback in the read window, whole (None when there is none)."""
    size: int
    """Size of output.log in bytes when read (a growing size means the process still writes)."""
    problem: str | None = None
    """Why the log was not read (a FIFO, a device, unreadable), in one line; None when it was."""


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
    """Read only the end of the log (READ_FACTOR × budget bytes) and return the tail within budget.

    Only a regular file is read (a FIFO or device as output.log is refused in `problem`, never waited on).
    """
    try:
        fd, size = open_regular(path)
    except FileNotFoundError:
        return LogTail("", None, 0)
    except OSError as exc:
        why = str(exc) if isinstance(exc, NotRegularFileError) else f"{Path(path).name}: {exc.strerror}"
        return LogTail("", None, 0, problem=why)
    try:
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


def _shown(data: bytes, length: int) -> str:
    text = data.decode("utf-8", "replace").rstrip("\r")
    if length > len(data):
        return f"[... line of {length} bytes cut, last {len(data)} shown ...] {text}"
    return text


def tail_lines(path: Path, n: int, *, max_line: int = LOG_LINE_BYTES) -> list[str]:
    """The last `n` lines of the log (for `twinkle-auto logs -n N`), reading from the end only.

    A line longer than `max_line` is shown as its last `max_line` bytes behind a marker saying how long
    it was; a last line still being written (no newline yet) is shown too. Raises OSError
    (one line) when the log is a FIFO, device or socket.
    """
    tail = read_tail(path, n, max_line=max_line, keep_long=True)
    if tail.error:
        raise OSError(tail.error)
    out = [_shown(line, tail.cut.get(i, len(line))) for i, line in enumerate(tail.lines)]
    if tail.partial_len:
        if tail.end < 0:
            out.append(
                f"[... no line end in the last {tail.partial_len} bytes; last {len(tail.partial)} shown ...] "
                + tail.partial.decode("utf-8", "replace")
            )
        else:
            out.append(_shown(tail.partial, tail.partial_len))
    return out[-n:] if n > 0 else []
