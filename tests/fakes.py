"""A small hand-written fake chat model for graph unit tests (the wire protocol is tested elsewhere)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.runnables import Runnable
from pydantic import Field

Response = str | AIMessage | BaseException | Callable[[list[BaseMessage]], Any]


class ScriptedChatModel(BaseChatModel):
    """Answers from a script, in order; records every prompt it was sent.

    A response is a string, an AIMessage (tool calls included), an exception to raise (an unreachable
    server), or a callable of the messages. When the script runs out, `default` answers.
    """

    responses: list[Any] = Field(default_factory=list)
    default: Any = "ok"
    calls: list[list[BaseMessage]] = Field(default_factory=list)
    bound_tools: list[Any] = Field(default_factory=list)
    offered: list[list[str]] = Field(default_factory=list)
    """Per call, the names of the tools it was called with (none: called without tools)."""
    choices: list[Any] = Field(default_factory=list)
    """Per call, the tool_choice it was bound with (None: the server's default, "auto")."""

    @property
    def _llm_type(self) -> str:
        return "scripted-fake"

    def _generate(
        self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kw: Any
    ) -> ChatResult:
        self.calls.append(list(messages))
        self.offered.append(list(kw.get("tools") or []))
        self.choices.append(kw.get("tool_choice"))
        response = self.responses.pop(0) if self.responses else self.default
        if callable(response) and not isinstance(response, BaseMessage):
            response = response(messages)
        if isinstance(response, BaseException):
            raise response
        message = response if isinstance(response, AIMessage) else AIMessage(content=str(response))
        return ChatResult(generations=[ChatGeneration(message=message)])

    def bind_tools(self, tools: Sequence[Any], **kwargs: Any) -> Runnable[Any, Any]:
        """This model with the tools' names passed to each call (recorded in `offered`), as a real
        binding passes their schemas; `bound_tools` is the last binding, for tests that read it."""
        self.bound_tools = list(tools)
        choice = {"tool_choice": kwargs["tool_choice"]} if "tool_choice" in kwargs else {}
        return self.bind(tools=[getattr(t, "name", str(t)) for t in tools], **choice)
