"""Persistent conversations: a SqliteSaver file under TWINKLE_HOME/auto/, named sessions, pruning.

Bound: LangGraph writes a checkpoint per graph step, each holding the whole message history, so an
unpruned file grows with (turns × history) — ~145 MB after 200 turns. After every turn we keep only the
newest KEEP_CHECKPOINTS checkpoints of the thread (and their pending writes) and reclaim freed pages, so
the file stays at about KEEP_CHECKPOINTS × (one history) + a fixed overhead. Our chat graph uses plain
`add_messages` channels (no DeltaChannel), so the newest checkpoint alone restores the conversation.
"""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path
from typing import Any

from twinkle_auto.runtime import format as fmt

DB_FILE = "chat.sqlite"
INDEX_FILE = "sessions.json"
KEEP_CHECKPOINTS = 3
DEFAULT_SESSION = "default"


def auto_dir(home: Path) -> Path:
    path = Path(home) / "auto"
    path.mkdir(parents=True, exist_ok=True)
    return path


def open_checkpointer(home: Path) -> Any:
    """A SqliteSaver on TWINKLE_HOME/auto/chat.sqlite (sync: the app runs graph turns in a thread)."""
    from langgraph.checkpoint.sqlite import SqliteSaver

    conn = sqlite3.connect(auto_dir(home) / DB_FILE, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    saver = SqliteSaver(conn)
    saver.setup()
    return saver


def thread_id(session: str) -> str:
    return f"chat:{session}"


def prune(saver: Any, session: str, keep: int = KEEP_CHECKPOINTS) -> int:
    """Delete all but the newest `keep` checkpoints of a session; returns how many were deleted."""
    tid = thread_id(session)
    with saver.lock, saver.conn:
        rows = saver.conn.execute(
            "SELECT checkpoint_id FROM checkpoints WHERE thread_id=? ORDER BY checkpoint_id DESC", (tid,)
        ).fetchall()
        old = [r[0] for r in rows[keep:]]
        for start in range(0, len(old), 500):
            chunk = old[start : start + 500]
            marks = ",".join("?" * len(chunk))
            saver.conn.execute(
                f"DELETE FROM checkpoints WHERE thread_id=? AND checkpoint_id IN ({marks})", (tid, *chunk)
            )
            saver.conn.execute(
                f"DELETE FROM writes WHERE thread_id=? AND checkpoint_id IN ({marks})", (tid, *chunk)
            )
    if old:
        free, total = (
            saver.conn.execute("PRAGMA freelist_count").fetchone()[0],
            saver.conn.execute("PRAGMA page_count").fetchone()[0],
        )
        if total and free > total // 4:
            with saver.lock:
                saver.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                saver.conn.execute("VACUUM")
    return len(old)


class SessionIndex:
    """Which sessions exist and which was used last (for --resume); a small JSON file."""

    def __init__(self, home: Path) -> None:
        self.path = auto_dir(home) / INDEX_FILE

    def _read(self) -> dict[str, Any]:
        try:
            data = fmt.read_json_file(self.path)
        except (OSError, ValueError):
            return {"last": None, "sessions": {}}
        data.setdefault("sessions", {})
        return data

    def last(self) -> str | None:
        last = self._read().get("last")
        return last if isinstance(last, str) else None

    def touch(self, session: str) -> None:
        data = self._read()
        entry = data["sessions"].setdefault(session, {"created": time.time(), "turns": 0})
        entry["updated"] = time.time()
        entry["turns"] = int(entry.get("turns", 0)) + 1
        data["last"] = session
        fmt.atomic_write_text(self.path, json.dumps(data, indent=2), fsync=False)

    def sessions(self) -> dict[str, Any]:
        return dict(self._read()["sessions"])


def choose_session(home: Path, name: str | None, resume: bool) -> str:
    """`--session NAME` names one; `--resume` continues the last; otherwise a new timestamped session."""
    if name:
        fmt.validate_run_id(name)  # same rules: a name that is safe everywhere
        return name
    if resume:
        return SessionIndex(home).last() or DEFAULT_SESSION
    return time.strftime("s%Y%m%d-%H%M%S")
