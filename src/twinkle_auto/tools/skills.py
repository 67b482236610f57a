"""`load_skill`: the one way the full text of a skill reaches the model.

The system prompt carries only each skill's name and description (`SkillManager.prompt_section`); the
model calls this tool when a task needs the guide. Community skills come back wrapped and labelled as
untrusted text, so instructions hidden in them read as quoted material, not as the user's wishes.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from langchain_core.tools import BaseTool, StructuredTool
from pydantic import BaseModel, Field

from twinkle_auto.skills import SkillManager
from twinkle_auto.tools.base import ToolError

WAIT_FOR_LOADING_S = 2.0
"""An unknown name right after start-up may just not be loaded yet: wait this long for the disk sources
(milliseconds in practice) before saying it does not exist."""


GUIDE_WORDS = ("skill", "guide", "docs", "documentation", "instructions", "manual")
"""Words with which a person asks for a guide as such, whatever its subject."""
STEM = 5
"""Letters two words must share at their start to be one word here ("debug" and "debugging")."""
_WORD = re.compile(r"[a-z][a-z0-9]+")


def _stems(text: str) -> set[str]:
    return {w[:STEM] for w in _WORD.findall(text.lower()) if len(w) >= 4}


class LoadSkillArgs(BaseModel):
    name: str = Field(description="Skill name exactly as listed under 'Skills' in the system prompt.")

    @classmethod
    def mismatches(cls, args: Mapping[str, Any], request: str, conversation: str = "") -> list[str]:
        """A guide is read when the person's words are about its subject (a word of its name: "debug"
        for training-metrics-debugging) or ask for a guide; "good job" and "what does GRPO stand for?"
        are neither (the 1.5B model loaded a guide for both)."""
        name = str(args.get("name") or "")
        words = request.lower()
        if not name or any(w in words for w in GUIDE_WORDS) or _stems(name) & _stems(words):
            return []
        return [f"the person's words are not about what {name!r} covers and ask for no guide"]


def make_skill_tools(manager: SkillManager) -> list[BaseTool]:
    """The skill tools for one chat session, bound to its SkillManager."""

    def load_skill(name: str) -> str:
        name = name.strip()
        text = manager.render(name)
        if text is None and not manager.wait(WAIT_FOR_LOADING_S, community=False):
            raise ToolError("skills are still loading; try again in a moment")
        text = text or manager.render(name)
        if text is not None:
            return text
        names = manager.names()
        loading = "" if manager.ready else " (community skills are still loading)"
        if not names:
            raise ToolError(f"no skill named {name!r}: no skills are loaded{loading}")
        raise ToolError(f"no skill named {name!r}{loading}; available: {', '.join(names)}")

    return [
        StructuredTool.from_function(
            func=load_skill,
            name="load_skill",
            description=(
                "Read the full text of a guide listed under 'Skills' in the system prompt: before writing "
                "or repairing a training script, or when the person asks for the guide. Not for questions "
                "you can answer yourself."
            ),
            args_schema=LoadSkillArgs,
        )
    ]
