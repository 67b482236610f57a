"""What a skill is, and how one markdown file becomes one (or is refused, with a reason).

A skill is a markdown guide with YAML front matter::

    ---
    name: twinkle-training-scripts
    description: Write SFT and GRPO training scripts that report to twinkle-auto.
    when_to_use: The user asks for a new training script, or to add resume/graceful stop to one.
    ---
    # body ...

Why so strict: only the name, description and when_to_use go into every system prompt, and the body is
read only when the agent asks for it (`load_skill`). A file without them cannot be offered economically,
so it is skipped with the reason logged instead of being pasted whole (the upstream tool concatenated
every skill into every prompt). Community skills from ModelScope follow the SKILL.md convention (name,
description, version), so for them `when_to_use` is optional.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import yaml

BUNDLED = "bundled"
LOCAL = "local"
COMMUNITY = "community"
SOURCES = (LOCAL, BUNDLED, COMMUNITY)
"""In order of trust: a local skill overrides a bundled one of the same name; a community skill never
overrides either."""

MAX_SKILL_CHARS = 20_000
"""A skill body longer than this (~5,000 tokens) is cut with a marker: one load_skill call must not fill
the model's context."""
MAX_DESCRIPTION_CHARS = 300
"""Longer descriptions and when_to_use texts are shortened where they are listed (the prompt section)."""

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_FRONT_MATTER_RE = re.compile(r"\A\ufeff?---[ \t]*\r?\n(.*?)\r?\n---[ \t]*(?:\r?\n|\Z)", re.DOTALL)
_CONTROL_RE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


class SkillError(ValueError):
    """Why a file is not a usable skill (one line, for the log and for /skills)."""


@dataclass(frozen=True)
class Skill:
    """One loaded skill: the listing fields, the body, and where it came from."""

    name: str
    description: str
    when_to_use: str
    body: str
    source: str
    """`bundled`, `local` or `community`."""
    origin: str
    """A file path, or `modelscope:owner/name` for a community skill."""
    truncated: bool = False
    original_chars: int = 0

    @property
    def trusted(self) -> bool:
        """Community skills are text written by strangers; the prompt says so wherever they appear."""
        return self.source != COMMUNITY


def one_line(text: str, limit: int = MAX_DESCRIPTION_CHARS) -> str:
    """Collapse whitespace and control characters so a field cannot break out of its listing line."""
    flat = " ".join(_CONTROL_RE.sub(" ", str(text)).split())
    return flat if len(flat) <= limit else flat[: limit - 1].rstrip() + "…"


def cut(body: str, limit: int = MAX_SKILL_CHARS) -> tuple[str, bool]:
    """The body cut to `limit` characters at a line break, with a marker saying how much was dropped."""
    if len(body) <= limit:
        return body, False
    head = body[:limit]
    newline = head.rfind("\n")
    if newline > limit * 0.8:
        head = head[:newline]
    marker = f"\n\n[… skill cut here: {len(head)} of {len(body)} characters shown …]\n"
    return head.rstrip() + marker, True


def _field(meta: dict, key: str, required: bool) -> str:
    value = meta.get(key)
    if value is None or (isinstance(value, str) and not value.strip()):
        if required:
            raise SkillError(f"front matter has no '{key}'")
        return ""
    if not isinstance(value, (str, int, float)):
        raise SkillError(f"front matter field '{key}' must be text, not {type(value).__name__}")
    return str(value).strip()


def parse_skill(
    text: str, *, source: str, origin: str, max_chars: int = MAX_SKILL_CHARS, fallback_name: str = ""
) -> Skill:
    """Build a Skill from a markdown file's text, or raise SkillError saying what is wrong with it.

    `fallback_name` is used when a community SKILL.md has no `name` (its repository name is the name).
    """
    if source not in SOURCES:
        raise ValueError(f"unknown skill source {source!r}")
    match = _FRONT_MATTER_RE.match(text)
    if not match:
        raise SkillError(
            "no front matter (the file must start with a '---' block holding name and description)"
        )
    try:
        meta = yaml.safe_load(match.group(1))
    except yaml.YAMLError as exc:
        first = " ".join(str(exc).split())[:160]
        raise SkillError(f"front matter is not valid YAML: {first}") from None
    if not isinstance(meta, dict):
        raise SkillError("front matter is not a mapping of fields")
    name = _field(meta, "name", required=not fallback_name) or fallback_name
    if not NAME_RE.match(name):
        raise SkillError(f"invalid name {name[:80]!r} (letters, digits, '._-', at most 64 characters)")
    description = _field(meta, "description", required=True)
    when_to_use = _field(meta, "when_to_use", required=source != COMMUNITY)
    body = text[match.end() :].strip()
    if not body:
        raise SkillError("the skill has front matter but no text")
    body_cut, truncated = cut(body, max_chars)
    return Skill(
        name=name,
        description=description,
        when_to_use=when_to_use,
        body=body_cut,
        source=source,
        origin=origin,
        truncated=truncated,
        original_chars=len(body),
    )
