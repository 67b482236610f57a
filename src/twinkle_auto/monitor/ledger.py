"""The fix ledger: every auto-fix attempt and how it turned out, across runs.

Why it exists: the same error comes back in other runs (a renamed keyword, a typo copied between
scripts). A fix that already worked for an error of the same *signature* is the best first candidate for
the next run, and cheaper than asking a model. It still goes through the guards like any other patch.

Format: `TWINKLE_HOME/auto/fixes.jsonl`, one JSON object per line, appended, never rewritten:
`{"ts", "run_id", "attempt", "signature", "summary", "diff", "outcome"}`. An outcome that becomes known
later (the relaunched run got past its old crash) is a new line for the same `(run_id, attempt)`; the
last line of a pair wins. A torn or foreign line is skipped, never fatal.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from twinkle_auto.connection.tracebacks import parse_traceback, script_frames, user_frames

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

LEDGER_FILE = "fixes.jsonl"
OUTCOMES = ("relaunched", "worked", "failed", "worse", "refused")
"""`relaunched`: applied, verdict pending; `worked`: the run got past the old crash; `failed`: the same
error came back at the same place; `worse`: a new error came earlier (rolled back); `refused`: a guard
said no."""
MAX_READ_BYTES = 4_000_000
"""The ledger is read from its end; older history beyond this is not consulted."""

_QUOTED_PATH_RE = re.compile(r"""(['"])(?:/|[A-Za-z]:\\|\./|\.\./)[^'"]*\1""")
_PATH_RE = re.compile(r"(?:/[\w.+-]+){2,}/?")
_HEX_RE = re.compile(r"\b0x[0-9a-fA-F]+\b")
_DIMS_RE = re.compile(r"\b\d+(?:x\d+)+\b")
_NUMBER_RE = re.compile(r"(?<![A-Za-z_])\d+(?:\.\d+)?(?:e[+-]?\d+)?")
_SPACE_RE = re.compile(r"\s+")


def _normalise_message(message: str) -> str:
    """What stays the same when the same error happens again: no paths, addresses or numbers."""
    text = _QUOTED_PATH_RE.sub("'<path>'", message)
    text = _PATH_RE.sub("<path>", text)
    text = _HEX_RE.sub("<addr>", text)
    text = _DIMS_RE.sub(lambda m: "x".join("N" * (m.group(0).count("x") + 1)), text)
    text = _NUMBER_RE.sub("N", text)
    return _SPACE_RE.sub(" ", text).strip()[:300]


def error_signature(traceback: str, *, script_name: str = "train.py") -> str:
    """A stable name for "this error": exception type, normalised message, failing code line.

    Line numbers and paths are left out on purpose: a fix shifts lines, and the same script runs from
    different folders, yet it is the same error. The failing line is the innermost frame in the script
    (else in the user's code, else anywhere). Returns "" when the text holds no exception.
    """
    parsed = parse_traceback(traceback or "")
    if parsed is None or not parsed.exception:
        return ""
    frames = script_frames(parsed, script_name) or user_frames(parsed) or list(parsed.frames)
    codes = [frame.code.strip() for frame in frames if frame.code.strip()]
    code = _SPACE_RE.sub(" ", codes[-1]) if codes else ""
    return f"{parsed.short_name}: {_normalise_message(parsed.message)} @ {code}"


@dataclass(frozen=True)
class LedgerEntry:
    ts: float
    run_id: str
    attempt: int
    signature: str
    summary: str
    diff: str
    outcome: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "ts": self.ts,
            "run_id": self.run_id,
            "attempt": self.attempt,
            "signature": self.signature,
            "summary": self.summary,
            "diff": self.diff,
            "outcome": self.outcome,
        }


class FixLedger:
    """Append-only JSON lines under TWINKLE_HOME/auto, shared by every assistant process.

    One `write` per line on an O_APPEND descriptor under an exclusive `flock`, so lines of two
    processes never interleave.
    """

    def __init__(self, auto_dir: str | Path) -> None:
        self.path = Path(auto_dir) / LEDGER_FILE

    def record(
        self,
        *,
        run_id: str,
        attempt: int,
        signature: str,
        summary: str,
        diff: str,
        outcome: str,
    ) -> LedgerEntry:
        if outcome not in OUTCOMES:
            raise ValueError(f"unknown fix outcome {outcome!r} (expected one of {', '.join(OUTCOMES)})")
        entry = LedgerEntry(
            time.time(), run_id, int(attempt), signature, summary[:500], diff[:20000], outcome
        )
        self.path.parent.mkdir(parents=True, exist_ok=True)
        line = (json.dumps(entry.as_dict(), ensure_ascii=False) + "\n").encode("utf-8")
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            if fcntl is not None:
                fcntl.flock(fd, fcntl.LOCK_EX)
            os.write(fd, line)
        finally:
            os.close(fd)
        return entry

    def _lines(self) -> Iterator[dict[str, Any]]:
        try:
            with open(self.path, "rb") as f:
                f.seek(0, os.SEEK_END)
                size = f.tell()
                f.seek(max(0, size - MAX_READ_BYTES))
                raw = f.read()
        except FileNotFoundError:
            return
        if len(raw) >= MAX_READ_BYTES:  # the first line may be cut by the seek
            raw = raw.split(b"\n", 1)[-1]
        for line in raw.decode("utf-8", errors="replace").splitlines():
            try:
                data = json.loads(line)
            except ValueError:
                continue
            if isinstance(data, dict) and isinstance(data.get("signature"), str):
                yield data

    def entries(self) -> list[LedgerEntry]:
        """Every attempt once, with its latest outcome, oldest first."""
        latest: dict[tuple[str, int], LedgerEntry] = {}
        for data in self._lines():
            try:
                entry = LedgerEntry(
                    ts=float(data.get("ts") or 0.0),
                    run_id=str(data.get("run_id") or ""),
                    attempt=int(data.get("attempt") or 0),
                    signature=str(data["signature"]),
                    summary=str(data.get("summary") or ""),
                    diff=str(data.get("diff") or ""),
                    outcome=str(data.get("outcome") or ""),
                )
            except (TypeError, ValueError):
                continue
            key = (entry.run_id, entry.attempt)
            latest.pop(key, None)  # re-insert: order follows the latest line
            latest[key] = entry
        return list(latest.values())

    def worked_for(self, signature: str, *, exclude_run: str | None = None) -> list[LedgerEntry]:
        """Fixes that worked for this signature in other runs, newest first (one per distinct diff)."""
        if not signature:
            return []
        seen: set[str] = set()
        out: list[LedgerEntry] = []
        for entry in reversed(self.entries()):
            if entry.signature != signature or entry.outcome != "worked" or not entry.diff:
                continue
            if exclude_run is not None and entry.run_id == exclude_run:
                continue
            if entry.diff in seen:
                continue
            seen.add(entry.diff)
            out.append(entry)
        return out
