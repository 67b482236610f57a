"""Module-level compiled graphs for `langgraph.json` (LangGraph's dev server and Studio).

They are compiled without a checkpointer: the LangGraph server brings its own persistence. Their
collaborators come from the environment, as the command line would set them: TWINKLE_HOME for the runs,
TWINKLE_LLM_BASE_URL / TWINKLE_LLM_MODEL / TWINKLE_LLM_API_KEY for the model. Apps that embed our graphs
call `build_chat_graph` / `build_monitor_graph` with their own model and checkpointer instead.
"""

from __future__ import annotations

import os

from twinkle_auto.app.cli import DEFAULT_LLM_API_KEY, DEFAULT_LLM_BASE_URL, DEFAULT_LLM_MODEL
from twinkle_auto.app.llm import make_chat_model
from twinkle_auto.connection import Connection
from twinkle_auto.graphs.chat.graph import build_chat_graph
from twinkle_auto.graphs.monitor.graph import build_monitor_graph
from twinkle_auto.tools import get_tools
from twinkle_auto.tools.base import ToolContext

_llm = make_chat_model(
    os.environ.get("TWINKLE_LLM_BASE_URL", DEFAULT_LLM_BASE_URL),
    os.environ.get("TWINKLE_LLM_MODEL", DEFAULT_LLM_MODEL),
    os.environ.get("TWINKLE_LLM_API_KEY", DEFAULT_LLM_API_KEY),
)
_connection = Connection.open()
_ctx = ToolContext(_connection)

chat_graph = build_chat_graph(_llm, get_tools(_ctx), auto_approve=False).compile()
chat_graph.name = "twinkle-auto chat"
monitor_graph = build_monitor_graph(_llm, _connection, policy="off").compile()
monitor_graph.name = "twinkle-auto monitor"
