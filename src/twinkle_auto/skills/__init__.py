"""Skills: markdown guides the agent reads on demand (bundled, user-local, ModelScope community).

`SkillManager(home).start()` loads them in the background; `prompt_section()` lists them for the system
prompt within a token budget; `render(name)` is the full text the `load_skill` tool returns.
"""

from twinkle_auto.skills.manager import SkillManager
from twinkle_auto.skills.skill import BUNDLED, COMMUNITY, LOCAL, Skill, SkillError, parse_skill
from twinkle_auto.skills.sources import Problem

__all__ = ["BUNDLED", "COMMUNITY", "LOCAL", "Problem", "Skill", "SkillError", "SkillManager", "parse_skill"]
