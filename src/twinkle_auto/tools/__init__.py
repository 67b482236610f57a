"""The agent's tools, one module per family; `get_tools` assembles the registry for a session."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from twinkle_auto.tools.base import ToolContext, ToolError

if TYPE_CHECKING:
    from langchain_core.tools import BaseTool

log = logging.getLogger("twinkle_auto.tools")


def get_tools(
    ctx: ToolContext, *, skills: Any = None, server: bool = True, search: bool = True
) -> list[BaseTool]:
    """Every tool of a chat session: runs, charts, server, search and (with a manager) skills.

    The families are imported here, not at module level, so that `twinkle_auto.tools.base` stays cheap
    for the parts of the app that only need the context (slash commands before the LLM stack loads).
    """
    from twinkle_auto.tools.charts import make_chart_tools
    from twinkle_auto.tools.runs import make_run_tools

    tools: list[BaseTool] = [*make_run_tools(ctx), *make_chart_tools(ctx)]
    if server:
        from twinkle_auto.tools.server import make_server_tools

        tools += make_server_tools(ctx)
    if search:
        from twinkle_auto.tools.search import make_search_tools

        tools += make_search_tools(ctx)
    if skills is not None:
        from twinkle_auto.tools.skills import make_skill_tools

        tools += make_skill_tools(skills)
    return tools


__all__ = ["ToolContext", "ToolError", "get_tools"]
