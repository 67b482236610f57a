"""Reading the end of an append-only file without reading the rest (standard library only).

Metrics files of long runs reach millions of lines; every reader that wants "the last N" must cost the
same on a 1,000-line file as on a 1,000,000-line one, so it reads backwards in blocks from the end.

The files are written by a training process, which is untrusted input: one line can be 50 MB, a file can
be 1 GB without a single newline, and "output.log" can be a FIFO or a device. So every read here is
bounded — at most `max_scan` bytes looked at, at most `max_line` bytes kept per line (a longer line is
reported, never loaded), blocks kept in a list and joined once — and only regular files are read: a FIFO,
device or socket is refused with one line, checked before it is opened and opened non-blocking, so no
reader ever waits on a writer. This module is the one implementation; metrics, logs and the runtime's
resume read all go through it.
"""

from __future__ import annotations

import json
import math
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BLOCK = 64 * 1024
"""First block read from the end; later blocks double up to MAX_BLOCK (few syscalls on long scans)."""
MAX_BLOCK = 1024 * 1024
MAX_LINE_BYTES = 1024 * 1024
"""A line longer than this is malformed: counted and skipped (or cut to its end), never held whole."""
MAX_SCAN_BYTES = 64 * 1024 * 1024
"""At most this many bytes are looked at per read; what lies beyond is reported as not read."""


class NotRegularFileError(OSError):
    """The path is a FIFO, device, socket or directory: reading it could block or never end."""


_KINDS = (
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISDIR, "a directory"),
)


def _kind(mode: int) -> str:
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")


def open_regular(path: str | Path) -> tuple[int, int]:
    """Open a regular file for reading: `(fd, size)`; NotRegularFileError for anything else.

    The type is checked with stat before opening (opening some devices has effects) and again on the
    open descriptor (the path may have been swapped in between); O_NONBLOCK makes even that open of a
    FIFO return at once instead of waiting for a writer. FileNotFoundError passes through.
    """
    path = Path(path)
    st = os.stat(path)
    if not stat.S_ISREG(st.st_mode):
        raise NotRegularFileError(f"{path.name} is {_kind(st.st_mode)}, not a regular file; not read")
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise NotRegularFileError(f"{path.name} is {_kind(st.st_mode)}, not a regular file; not read")
    except BaseException:
        os.close(fd)
        raise
    return fd, st.st_size


def read_regular(path: str | Path, max_bytes: int) -> bytes:
    """A whole regular file of at most `max_bytes`; ValueError (one line) when it is larger.

    The size is checked before a byte is read, so `/dev/zero` or a 10 GB file costs nothing.
    """
    fd, size = open_regular(path)
    try:
        if size > max_bytes:
            raise ValueError(
                f"{Path(path).name} is {size} bytes, more than the limit of {max_bytes}; not read"
            )
        parts: list[bytes] = []
        got = 0
        while got <= max_bytes:
            chunk = os.read(fd, min(MAX_BLOCK, max_bytes + 1 - got))
            if not chunk:
                break
            parts.append(chunk)
            got += len(chunk)
        if got > max_bytes:  # it grew while we read
            raise ValueError(f"{Path(path).name} is more than the limit of {max_bytes} bytes; not read")
        return b"".join(parts)
    finally:
        os.close(fd)


@dataclass
class Tail:
    """The end of a file, read within bounds, and what was left out and why."""

    lines: list[bytes] = field(default_factory=list)
    """Complete lines, oldest first (without their newline)."""
    cut: dict[int, int] = field(default_factory=dict)
    """Index in `lines` → full length, for lines longer than `max_line` kept as their last bytes."""
    malformed: int = 0
    """Lines longer than `max_line` that were skipped (or, with `keep_long`, cut)."""
    partial: bytes = b""
    """A last line without its newline (a write in progress): at most `max_line` of its last bytes."""
    partial_len: int = 0
    """Full length of that unterminated last line (0 when the file ends with a newline)."""
    end: int = 0
    """Offset just after the last newline: where an incremental reader picks up the partial line."""
    size: int = 0
    """File size when read."""
    truncated: bool = False
    """The scan cap was reached before `n` lines (or the start of the file) were found."""
    error: str | None = None
    """Why nothing was read (not a regular file, unreadable); None when the read went through."""

    def problem(self, max_line: int = MAX_LINE_BYTES) -> str | None:
        """One line for a person about what was not read, or None when everything was."""
        if self.error:
            return self.error
        parts = []
        if self.end < 0:
            parts.append(f"malformed: no line end in the last {_mib(self.partial_len)} of {_mib(self.size)}")
        elif self.partial_len > max_line:
            parts.append(f"malformed: an unterminated last line of {self.partial_len} bytes")
        if self.malformed:
            parts.append(f"malformed: {self.malformed} line(s) longer than {max_line} bytes skipped")
        if self.truncated and self.end >= 0:
            parts.append(f"only the last {_mib(MAX_SCAN_BYTES)} were scanned")
        return "; ".join(parts) or None


def _mib(n: int) -> str:
    return f"{n / 2**20:.0f} MiB" if n >= 2**20 else f"{n} bytes"


class _Line:
    """One line being assembled backwards: its pieces newest first, kept only up to `limit` bytes."""

    __slots__ = ("pieces", "kept", "length")

    def __init__(self) -> None:
        self.pieces: list[bytes] = []
        self.kept = 0
        self.length = 0

    def add(self, piece: bytes, limit: int) -> None:
        self.length += len(piece)
        if self.kept < limit and piece:
            room = limit - self.kept
            piece = piece[-room:] if len(piece) > room else piece
            self.pieces.append(piece)
            self.kept += len(piece)

    def data(self) -> bytes:
        return b"".join(reversed(self.pieces))


def iter_lines_back(
    fd: int,
    size: int,
    tail: Tail,
    *,
    max_line: int = MAX_LINE_BYTES,
    max_scan: int = MAX_SCAN_BYTES,
    keep_long: bool = False,
    block: int = BLOCK,
) -> Iterator[tuple[bytes, int]]:
    """`(line, full_length)` for the complete lines of an open file, newest first, within the bounds.

    A line over `max_line` is counted in `tail.malformed` and skipped, or (with `keep_long`) yielded as
    its last `max_line` bytes beside its full length. The unterminated last line, the offset of the last
    newline and whether the scan cap was hit go to `tail`. Costs O(bytes scanned), at most `max_scan`.
    """
    tail.size = size
    pos = size
    scanned = 0
    cur = _Line()
    in_partial = True  # bytes after the last newline belong to an unterminated last line
    tail.end = size
    while pos > 0:
        if scanned >= max_scan:
            tail.truncated = True
            if in_partial:
                tail.partial_len = cur.length
                tail.partial = cur.data()
                tail.end = -1  # no line end found within the scan
            return
        want = min(block, pos, max_scan - scanned)
        start = pos - want
        chunk = os.pread(fd, want, start)
        if len(chunk) < want:  # the file shrank under us: read what is there next time
            tail.truncated = True
            return
        scanned += want
        block = min(block * 2, MAX_BLOCK)
        hi = len(chunk)
        while True:
            i = chunk.rfind(b"\n", 0, hi)
            if i < 0:
                cur.add(chunk[:hi], max_line)
                break
            cur.add(chunk[i + 1 : hi], max_line)
            hi = i
            if in_partial:
                in_partial = False
                tail.partial_len = cur.length
                tail.partial = cur.data()
                tail.end = start + i + 1
            else:
                line = _finish(cur, tail, max_line, keep_long)
                if line is not None:
                    yield line
            cur = _Line()
        pos = start
    # reached the start of the file: what is left is the first line, complete if a newline followed it
    if in_partial:
        tail.partial_len = cur.length
        tail.partial = cur.data()
        tail.end = 0
    else:
        line = _finish(cur, tail, max_line, keep_long)
        if line is not None:
            yield line


def _finish(cur: _Line, tail: Tail, max_line: int, keep_long: bool) -> tuple[bytes, int] | None:
    if cur.length > max_line:
        tail.malformed += 1
        if not keep_long:
            return None
    return cur.data(), cur.length


def read_tail(
    path: str | Path,
    n: int,
    *,
    max_line: int = MAX_LINE_BYTES,
    max_scan: int = MAX_SCAN_BYTES,
    keep_long: bool = False,
) -> Tail:
    """The last `n` complete lines of a file, within the bounds.

    A missing file is an empty Tail; a FIFO, device or unreadable file is an empty Tail whose `error`
    says why in one line. Never raises for what the file contains.
    """
    tail = Tail()
    if n <= 0:
        return tail
    try:
        fd, size = open_regular(path)
    except FileNotFoundError:
        return tail
    except OSError as exc:
        tail.error = (
            str(exc) if isinstance(exc, NotRegularFileError) else f"{Path(path).name}: {exc.strerror}"
        )
        return tail
    rev: list[bytes] = []
    lengths: list[int] = []
    try:
        for line, length in iter_lines_back(
            fd, size, tail, max_line=max_line, max_scan=max_scan, keep_long=keep_long
        ):
            rev.append(line)
            lengths.append(length)
            if len(rev) >= n:
                break
    except OSError as exc:
        tail.error = f"{Path(path).name}: {exc.strerror or exc}"
    finally:
        os.close(fd)
    rev.reverse()
    lengths.reverse()
    tail.lines = rev
    tail.cut = {i: length for i, length in enumerate(lengths) if length > len(rev[i])}
    return tail


def read_last_lines(path: Path, n: int) -> tuple[list[bytes], int]:
    """The last `n` complete lines and the offset after the last newline (0 when none was found).

    A last line without its newline is a write still in progress (or cut by a kill): it is left out, and
    the offset points at its start so an incremental reader picks it up once it is whole.
    """
    tail = read_tail(path, n)
    return tail.lines, max(tail.end, 0)


def _metric_int(digits: str) -> int | float:
    value = int(digits)
    return value if -(2**63) <= value < 2**63 else float(value)


_METRIC_DECODER = json.JSONDecoder(parse_int=_metric_int)
"""Built once: `json.loads(..., parse_int=...)` would build a decoder per line."""


def parse_metric_line(line: bytes | str) -> dict[str, Any] | None:
    """One metrics.jsonl line as a dict, or None when it is not a JSON object (a torn or foreign line).

    An integer beyond 64 bits becomes a float (the magnitude is the fact; downstream code and the
    checkpoint serializer take C integers only), and a `step` that no 64-bit integer can hold is not a
    step: it is dropped, so no reader turns it into a huge int.
    """
    try:
        obj = _METRIC_DECODER.decode(line.decode("utf-8") if isinstance(line, bytes) else line)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None
    if not isinstance(obj, dict):
        return None
    step = obj.get("step")
    if isinstance(step, float) and not (math.isfinite(step) and abs(step) < 2**63):
        del obj["step"]
    return obj


def last_step(path: Path) -> int | None:
    """The highest `step` among the last lines of a metrics file, ignoring torn and malformed lines."""
    best: int | None = None
    for line in read_tail(path, 32).lines:
        entry = parse_metric_line(line)
        step = entry.get("step") if entry else None
        ok = isinstance(step, (int, float)) and not isinstance(step, bool) and math.isfinite(step)
        if ok and abs(step) < 2**63:
            best = int(step) if best is None else max(best, int(step))
    return best
