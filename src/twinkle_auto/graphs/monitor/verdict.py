"""The LLM's verdict on a run: its schema, one structured call, and how far the rules let it go."""

from __future__ import annotations

import json
from typing import Any, Literal

from langchain_core.language_models import BaseChatModel
from pydantic import BaseModel, Field


class Verdict(BaseModel):
    """The LLM's structured verdict (requested without tools)."""

    decision: Literal["LGTM", "WARNING", "FIX"] = Field(description="LGTM, WARNING or FIX")
    diagnosis: str = Field(
        description="one or two sentences: what is wrong, the evidence, what to do",
        max_length=400,  # a small model otherwise rambles into its token cap and the JSON never closes
    )


def _parse_verdict(text: str) -> Verdict:
    start, end = text.find("{"), text.rfind("}")
    if start < 0 or end <= start:
        raise ValueError("the LLM answered without a JSON verdict")
    return Verdict.model_validate(json.loads(text[start : end + 1]))


def ask_verdict(llm: BaseChatModel, messages: list[Any]) -> Verdict:
    """One call: structured output (json_schema) where the model supports it, else JSON read from text.

    `include_raw` keeps the raw answer, so a model that ignores the schema is parsed from its text
    instead of being asked twice.
    """
    try:
        structured = llm.with_structured_output(Verdict, method="json_schema", include_raw=True)
    except (NotImplementedError, ValueError, TypeError, AttributeError):
        return _parse_verdict(str(llm.invoke(messages).content))
    result = structured.invoke(messages)
    parsed = result.get("parsed") if isinstance(result, dict) else result
    if isinstance(parsed, Verdict):
        return parsed
    if isinstance(parsed, dict):
        return Verdict.model_validate(parsed)
    raw = result.get("raw") if isinstance(result, dict) else None
    return _parse_verdict(str(getattr(raw, "content", "") or ""))


def constrain(llm_decision: str, rules_decision: str, findings: list[dict[str, Any]]) -> str:
    """The LLM explains and may soften; it cannot invent a FIX the rules did not see.

    FIX needs a code-error traceback from a dead process (a rewrite cannot fix hardware or a live run);
    a run the rules found healthy stays LGTM, since a 1.5B model's judgement of numbers is weak.
    """
    has_code_error = any(f.get("kind") == "CODE_ERROR" for f in findings)
    if llm_decision == "FIX" and not has_code_error:
        return rules_decision
    if rules_decision == "LGTM":
        return "LGTM"
    return llm_decision


def short_error(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return f"{type(exc).__name__}: {text[:160]}"
