"""Building the chat model from the CLI options: an OpenAI-compatible endpoint, with bounded waits.

Every call has a timeout and a small number of retries (the openai client backs off on 429 and 5xx), so
an unreachable or overloaded LLM costs seconds, not minutes, and never takes the app down.
"""

from __future__ import annotations

from typing import Any

LLM_TIMEOUT_S = 120.0
LLM_RETRIES = 2


def make_chat_model(
    base_url: str, model: str, api_key: str, *, timeout: float = LLM_TIMEOUT_S, max_retries: int = LLM_RETRIES
) -> Any:
    from langchain_openai import ChatOpenAI

    return ChatOpenAI(
        base_url=base_url,
        model=model,
        api_key=api_key or "not-needed",
        timeout=timeout,
        max_retries=max_retries,
        temperature=0,
    )
