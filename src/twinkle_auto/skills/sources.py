"""Skills from folders on disk: the bundled guides (package data) and the user's local skills.

A folder holds skills as `<name>.md` files or as `<name>/SKILL.md` (the layout ModelScope and other skill
hubs use, so a downloaded skill can be dropped in as it is). README/LICENSE-like files are not skills and
are passed over silently; anything else that fails to parse is reported as a Problem.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from twinkle_auto.skills.skill import MAX_SKILL_CHARS, Skill, SkillError, parse_skill

log = logging.getLogger(__name__)

BUNDLED_DIR = Path(__file__).resolve().parent / "bundled"
MAX_FILE_BYTES = 1_000_000
"""A 'skill' larger than this is not read at all: it would be cut to MAX_SKILL_CHARS anyway, and a
stray dataset dropped into the folder should not be loaded into memory."""
_NOT_SKILLS = frozenset({"readme", "license", "licence", "changelog", "contributing", "index"})


@dataclass(frozen=True)
class Problem:
    """A file that looked like a skill but was skipped, and why (shown by /skills, written to the log)."""

    source: str
    origin: str
    reason: str


def default_home() -> Path:
    """TWINKLE_HOME, else ~/.cache/twinkle (same rule as the runtime; the skills layer imports nothing)."""
    env = os.environ.get("TWINKLE_HOME")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "twinkle"


def local_dir(home: Path | None = None) -> Path:
    """Where the user's own skills live: TWINKLE_HOME/auto/skills/local/."""
    return (home or default_home()) / "auto" / "skills" / "local"


def cache_dir(home: Path | None = None) -> Path:
    """Where community skills are cached between starts: TWINKLE_HOME/auto/skills/cache/."""
    return (home or default_home()) / "auto" / "skills" / "cache"


def _candidates(directory: Path) -> list[Path]:
    found: list[Path] = []
    try:
        entries = sorted(directory.iterdir())
    except OSError:
        return found
    for entry in entries:
        if entry.name.startswith("."):
            continue
        if entry.is_file() and entry.suffix.lower() == ".md" and entry.stem.lower() not in _NOT_SKILLS:
            found.append(entry)
        elif entry.is_dir():
            skill_md = next((p for p in sorted(entry.glob("*")) if p.name.lower() == "skill.md"), None)
            if skill_md is not None and skill_md.is_file():
                found.append(skill_md)
    return found


def read_skill_file(path: Path, source: str, max_chars: int = MAX_SKILL_CHARS) -> Skill:
    """One file as a Skill, or SkillError with the reason (size, encoding, front matter)."""
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise SkillError(f"file is {size} bytes, more than {MAX_FILE_BYTES} (not read)")
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        raise SkillError("file is not UTF-8 text") from None
    except OSError as exc:
        raise SkillError(f"cannot read file: {exc.strerror or exc}") from None
    fallback = path.parent.name if path.name.lower() == "skill.md" else ""
    return parse_skill(text, source=source, origin=str(path), max_chars=max_chars, fallback_name=fallback)


def load_dir(
    directory: Path, source: str, max_chars: int = MAX_SKILL_CHARS
) -> tuple[list[Skill], list[Problem]]:
    """Every skill in a folder, plus the files that were skipped and why. A missing folder is empty."""
    skills: list[Skill] = []
    problems: list[Problem] = []
    seen: dict[str, str] = {}
    for path in _candidates(directory):
        try:
            skill = read_skill_file(path, source, max_chars)
        except SkillError as exc:
            problems.append(Problem(source, str(path), str(exc)))
            log.warning("skill skipped: %s (%s): %s", path, source, exc)
            continue
        if skill.name in seen:
            reason = f"name '{skill.name}' already used by {seen[skill.name]}"
            problems.append(Problem(source, str(path), reason))
            log.warning("skill skipped: %s (%s): %s", path, source, reason)
            continue
        if skill.truncated:
            log.warning(
                "skill %s (%s) cut to %d of %d characters", skill.name, path, max_chars, skill.original_chars
            )
        seen[skill.name] = str(path)
        skills.append(skill)
    return skills, problems
