"""The agent's tools, one module per family; `get_tools` assembles the registry of a chat session."""

from __future__ import annotations

import json
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
    return in_prompt_order(tools)


def in_prompt_order(tools: list[BaseTool]) -> list[BaseTool]:
    """The tools as the model reads them: those whose calls the chat may refuse last, the largest last.

    Why: the chat withholds a tool whose call was refused twice, and an OpenAI-compatible server
    (llama.cpp) reuses the prompt it has already read only up to the first token that changed. The
    tools come before the conversation, so withholding one makes the server read again everything after
    it, for that answer and again for the next request with every tool: a tool in the middle of the list
    cost a 2-core CPU ~45 s each time, the last one a few. A tool is refusable when its schema has
    grounded fields whose guess is not simply dropped (`GROUNDED` minus `GUESS_IS_DEFAULT`) or a
    `mismatches` check; the largest schemas invite the most invented arguments, so they go last. The
    others keep their family order.
    """

    def key(tool: BaseTool) -> tuple[bool, int]:
        refusable = _refusable(tool)
        return refusable, _schema_chars(tool) if refusable else 0

    return sorted(tools, key=key)


def _refusable(tool: BaseTool) -> bool:
    from twinkle_auto.tools.base import ToolArgs

    schema = getattr(tool, "args_schema", None)
    grounded = set(getattr(schema, "GROUNDED", ())) - set(getattr(schema, "GUESS_IS_DEFAULT", ()))
    check = getattr(getattr(schema, "mismatches", None), "__func__", None)
    return bool(grounded) or (check is not None and check is not ToolArgs.mismatches.__func__)


def _schema_chars(tool: BaseTool) -> int:
    from langchain_core.utils.function_calling import convert_to_openai_tool

    return len(json.dumps(convert_to_openai_tool(tool)))


__all__ = ["Scope", "ToolContext", "ToolError", "get_tools", "in_prompt_order"]
