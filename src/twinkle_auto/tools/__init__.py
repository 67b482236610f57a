"""The agent's tools, one module per family; `get_tools` assembles the registry of a chat session."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from twinkle_auto.tools.base import Scope, ToolContext, ToolError

if TYPE_CHECKING:
    from langchain_core.tools import BaseTool

log = logging.getLogger("twinkle_auto.tools")


def get_tools(
    ctx: ToolContext | None = None, *, skills: Any = None, server: bool = True, search: bool = True
) -> list[BaseTool]:
    """Every tool of a chat session: runs, training (recipes), charts, server, search and skills.

    With its defaults this is exactly the set the chat app uses. Tools read their collaborators from the
    graph's runtime context; `ctx` is the fallback for a graph invoked without one. `skills` (a
    SkillManager; default `ctx.skills`) adds load_skill. The families are imported here, not at module
    level, so `twinkle_auto.tools.base` stays cheap for slash commands before the LLM stack loads.
    """
    from twinkle_auto.tools.charts import make_chart_tools
    from twinkle_auto.tools.runs import make_run_tools
    from twinkle_auto.tools.training import make_training_tools

    tools: list[BaseTool] = [*make_run_tools(ctx), *make_training_tools(ctx), *make_chart_tools(ctx)]
    if server:
        from twinkle_auto.tools.server import make_server_tools

        tools += make_server_tools(ctx)
    if search:
        from twinkle_auto.tools.search import make_search_tools

        tools += make_search_tools(ctx)
    manager = skills if skills is not None else getattr(ctx, "skills", None)
    if manager is not None:
        from twinkle_auto.tools.skills import make_skill_tools

        tools += make_skill_tools(manager)
    return tools


__all__ = ["Scope", "ToolContext", "ToolError", "get_tools"]
