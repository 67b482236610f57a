"""twinkle-auto: control, watch and repair ML fine-tuning runs from a terminal chat.

The public API, for notebooks and apps that embed our graphs and tools (imported lazily, so that
`import twinkle_auto.runtime` in a training script pulls in nothing but the standard library):

- `build_chat_graph(llm, tools, ...)`, `compile_chat_graph(...)`: the chat agent (uncompiled / compiled).
- `build_monitor_graph(llm, connection, ...)`, `compile_monitor_graph(...)`: the training monitor.
- `get_tools(ctx)`, `ToolContext`: the agent's tools over a `Connection`.
- `Connection`, `RunStore`, `RunController`: the run folders and their processes.
- `TrainingRuntime`: what a training script calls.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "build_chat_graph": "twinkle_auto.graphs.chat.graph",
    "compile_chat_graph": "twinkle_auto.graphs.chat.graph",
    "build_monitor_graph": "twinkle_auto.graphs.monitor.graph",
    "compile_monitor_graph": "twinkle_auto.graphs.monitor.graph",
    "get_tools": "twinkle_auto.tools",
    "ToolContext": "twinkle_auto.tools.base",
    "Connection": "twinkle_auto.connection",
    "RunStore": "twinkle_auto.connection.store",
    "RunController": "twinkle_auto.connection.control",
    "TrainingRuntime": "twinkle_auto.runtime.training",
}

__all__ = [
    "Connection",
    "RunController",
    "RunStore",
    "ToolContext",
    "TrainingRuntime",
    "__version__",
    "build_chat_graph",
    "build_monitor_graph",
    "compile_chat_graph",
    "compile_monitor_graph",
    "get_tools",
]

if TYPE_CHECKING:
    from twinkle_auto.connection import Connection
    from twinkle_auto.connection.control import RunController
    from twinkle_auto.connection.store import RunStore
    from twinkle_auto.graphs.chat.graph import build_chat_graph, compile_chat_graph
    from twinkle_auto.graphs.monitor.graph import build_monitor_graph, compile_monitor_graph
    from twinkle_auto.runtime.training import TrainingRuntime
    from twinkle_auto.tools import get_tools
    from twinkle_auto.tools.base import ToolContext


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'twinkle_auto' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value
