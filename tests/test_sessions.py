"""Named sessions, --resume, and the index of conversations."""

from __future__ import annotations

from pathlib import Path

import pytest

from twinkle_auto.app.sessions import SessionIndex, choose_session


def test_named_resumed_and_new_sessions(home: Path) -> None:
    assert choose_session(home, "work", resume=False) == "work"
    assert choose_session(home, None, resume=True) == "default"  # nothing to resume yet
    SessionIndex(home).touch("work")
    SessionIndex(home).touch("other")
    SessionIndex(home).touch("work")
    assert choose_session(home, None, resume=True) == "work"
    assert SessionIndex(home).sessions()["work"]["turns"] == 2
    fresh = choose_session(home, None, resume=False)
    assert fresh.startswith("s") and fresh not in ("work", "other")
    with pytest.raises(ValueError, match="invalid"):
        choose_session(home, "../escape", resume=False)


def test_a_corrupt_index_is_not_fatal(home: Path) -> None:
    index = SessionIndex(home)
    index.path.write_text("{broken")
    assert index.last() is None
    index.touch("again")
    assert index.last() == "again"
