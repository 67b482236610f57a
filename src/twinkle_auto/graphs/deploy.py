"""Module-level compiled graphs for `langgraph.json` (LangGraph's dev server and Studio).

They are compiled without a checkpointer: the LangGraph server brings its own persistence. Their
collaborators come from the environment, as the command line would set them: TWINKLE_HOME for the runs,
TWINKLE_LLM_BASE_URL / TWINKLE_LLM_MODEL / TWINKLE_LLM_API_KEY for the model. Apps that embed our graphs
call `build_chat_graph` / `build_monitor_graph` with their own model and checkpointer instead.

No session state is shared between threads: the selected run and chart view are each thread's graph
state, and the chat graph's context (connection, server manager) is made per invocation when the
caller passes none (`context_of`), never one object for every thread.
"""

from __future__ import annotations

import os

from twinkle_auto.app.cli import DEFAULT_LLM_API_KEY, DEFAULT_LLM_BASE_URL, DEFAULT_LLM_MODEL
from twinkle_auto.app.llm import make_chat_model
from twinkle_auto.connection import Connection
from twinkle_auto.graphs.chat.graph import build_chat_graph
from twinkle_auto.graphs.monitor.graph import build_monitor_graph
from twinkle_auto.tools import get_tools

_llm = make_chat_model(
    os.environ.get("TWINKLE_LLM_BASE_URL", DEFAULT_LLM_BASE_URL),
    os.environ.get("TWINKLE_LLM_MODEL", DEFAULT_LLM_MODEL),
    os.environ.get("TWINKLE_LLM_API_KEY", DEFAULT_LLM_API_KEY),
)

chat_graph = build_chat_graph(_llm, get_tools(), auto_approve=False).compile()
chat_graph.name = "twinkle-auto chat"
monitor_graph = build_monitor_graph(_llm, Connection.open(), policy="off").compile()
monitor_graph.name = "twinkle-auto monitor"
