"""`search_models` and `search_datasets`: find exact ModelScope ids, in bounded time.

Why: scripts need full ids (`Qwen/Qwen2.5-7B-Instruct`, `modelscope/gsm8k`), and a guessed id fails only
minutes later, inside a download. These tools ask the hub through the modelscope client (`HubApi`'s
OpenAPI client, GET /openapi/v1/models|datasets?search=…) and return a compact list: id, downloads, task,
last update.

Offline or slow hub: one attempt per request and a 10 s deadline (see `skills.hub`), then a one-line
"ModelScope is not reachable" the model can relay. After such a failure the next calls answer at once
for RETRY_AFTER_FAILURE_S instead of waiting out the deadline again, so a model that retries in a loop
does not freeze the chat.

The payload is read from the OpenAPI client directly rather than through `HubApi.list_repos`, because
`list_repos` turns an answer that is not JSON into an empty page: a broken proxy would then look like
"no such model".
"""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

from langchain_core.tools import BaseTool
from pydantic import Field

from twinkle_auto.skills.hub import (
    HUB_TIMEOUT,
    HubUnavailable,
    call_with_deadline,
    describe,
    hub_api,
    is_unreachable,
)
from twinkle_auto.tools.base import RESULT_BUDGET, ToolArgs, ToolContext, ToolError, compact, make_tool

DEFAULT_LIMIT = 5
MAX_LIMIT = 20
RETRY_AFTER_FAILURE_S = 30.0
"""After 'not reachable', answer the same at once for this long instead of waiting out another deadline."""
_LIST_KEYS = ("items", "list", "data", "results")
_TIME_KEYS = ("last_modified", "LastModified", "last_updated", "LastUpdatedTime", "updated_at", "UpdatedAt")
_TOTAL_KEYS = ("total_count", "TotalCount", "total", "Total")


class SearchArgs(ToolArgs):
    query: str = Field(description="The name or keywords the person gave.")
    limit: int = Field(
        DEFAULT_LIMIT, description=f"How many results, 1-{MAX_LIMIT} (default {DEFAULT_LIMIT})."
    )


def _date(value: Any) -> str | None:
    """A hub timestamp (ISO text, or epoch seconds/milliseconds) as YYYY-MM-DD."""
    if isinstance(value, bool) or value in (None, ""):
        return None
    try:
        if isinstance(value, (int, float)):
            seconds = value / 1000 if value > 1e12 else value
            return dt.datetime.fromtimestamp(seconds, tz=dt.timezone.utc).date().isoformat()
        text = str(value).strip()
        return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).date().isoformat()
    except (ValueError, OverflowError, OSError):
        return str(value)[:10]


def _task(item: dict[str, Any]) -> str | None:
    tasks = item.get("tasks") or item.get("Tasks") or item.get("task") or item.get("Task")
    if isinstance(tasks, (str, int)):
        return str(tasks)
    if isinstance(tasks, list):
        names = [t.get("name") or t.get("Name") if isinstance(t, dict) else t for t in tasks]
        names = [str(n) for n in names if n]
        return ", ".join(names[:2]) or None
    if isinstance(tasks, dict):
        return str(tasks.get("name") or tasks.get("Name") or "") or None
    return None


def _repo_id(item: dict[str, Any]) -> str | None:
    ident = item.get("id") or item.get("Id")
    if isinstance(ident, str) and "/" in ident:
        return ident
    owner = item.get("owner") or item.get("Owner") or item.get("Path") or item.get("namespace")
    name = item.get("name") or item.get("Name")
    if owner and name:
        return f"{owner}/{name}"
    return str(ident) if ident not in (None, "") else None


def _result(item: dict[str, Any]) -> dict[str, Any] | None:
    """One hub entry as {id, downloads, task, updated}; None for an entry without an id."""
    repo_id = _repo_id(item)
    if not repo_id:
        return None
    downloads = item.get("downloads", item.get("Downloads"))
    out: dict[str, Any] = {"id": repo_id}
    if isinstance(downloads, (int, float)) and not isinstance(downloads, bool):
        out["downloads"] = int(downloads)
    task = _task(item)
    if task:
        out["task"] = task
    updated = next((_date(item[k]) for k in _TIME_KEYS if item.get(k) not in (None, "")), None)
    if updated:
        out["updated"] = updated
    return out


def _entries(payload: Any, kind: str) -> tuple[list[dict[str, Any]], int | None]:
    """The entries and total of a search answer; ToolError when it is not the hub's format."""
    if payload is None:
        return [], 0
    if isinstance(payload, (str, bytes)):
        head = " ".join(str(payload[:80] if isinstance(payload, str) else payload[:80]).split())
        raise ToolError(f"ModelScope answered with something that is not JSON ({head!r}); try again later")
    if isinstance(payload, list):
        return [e for e in payload if isinstance(e, dict)], len(payload)
    if not isinstance(payload, dict):
        raise ToolError(f"ModelScope answered with an unexpected {type(payload).__name__}; try again later")
    if payload.get("success") is False or payload.get("Success") is False:
        message = payload.get("message") or payload.get("Message") or "no reason given"
        raise ToolError(f"ModelScope refused the search: {describe(Exception(message))}")
    for key in (kind, kind.capitalize(), *_LIST_KEYS):
        if isinstance(payload.get(key), list):
            entries = [e for e in payload[key] if isinstance(e, dict)]
            total = next((payload[k] for k in _TOTAL_KEYS if isinstance(payload.get(k), int)), None)
            return entries, total
    keys = ", ".join(sorted(map(str, payload))[:8])
    raise ToolError(f"ModelScope's answer has no list of {kind} (keys: {keys}); try again later")


def _fit(answer: dict[str, Any]) -> str:
    """The answer as compact JSON, dropping trailing results (never cutting JSON) to fit the budget."""
    text = compact(answer, budget=10**9)
    while len(text) > RESULT_BUDGET and len(answer["results"]) > 1:
        answer["results"].pop()
        answer["shown"] = len(answer["results"])
        text = compact(answer, budget=10**9)
    return compact(answer)


def make_search_tools(ctx: ToolContext, *, timeout: float = HUB_TIMEOUT) -> list[BaseTool]:
    """search_datasets and search_models for one chat session (the 'not reachable' memory is per session)."""
    del ctx  # the hub is global; the argument keeps the tool-family signature
    down: dict[str, Any] = {"until": 0.0, "reason": ""}

    def _ask(kind: str, query: str, limit: int) -> Any:
        api = hub_api()
        lister = api.openapi.list_models if kind == "models" else api.openapi.list_datasets
        return lister(search=query, page_number=1, page_size=limit)

    def _search(kind: str, query: str, limit: int) -> str:
        query = " ".join(str(query).split())[:200]
        if not query:
            raise ToolError("the query is empty; give a name or keywords")
        try:
            limit = max(1, min(MAX_LIMIT, int(limit)))
        except (TypeError, ValueError):
            limit = DEFAULT_LIMIT
        waited = down["until"] - time.monotonic()
        if waited > 0:
            raise ToolError(
                f"ModelScope is not reachable ({down['reason']}; checked {RETRY_AFTER_FAILURE_S - waited:.0f} s "
                "ago). Do not retry now: tell the user, or ask them for the exact id (owner/name)."
            )
        try:
            payload = call_with_deadline(lambda: _ask(kind, query, limit), timeout, "ModelScope search")
        except HubUnavailable as exc:
            if exc.kind == "missing":
                raise ToolError(f"ModelScope search is unavailable: {exc}") from None
            raise _unreachable(str(exc)) from None
        except Exception as exc:
            if is_unreachable(exc):
                raise _unreachable(describe(exc)) from None
            raise ToolError(f"ModelScope search failed: {describe(exc)}") from None
        entries, total = _entries(payload, kind)
        results = [r for r in (_result(e) for e in entries[:limit]) if r is not None]
        answer: dict[str, Any] = {"query": query, "total": total if total is not None else len(results)}
        answer["results"] = results
        if not results:
            answer["note"] = f"no {kind} found; try fewer or English keywords (e.g. the family name)"
        return _fit(answer)

    def _unreachable(reason: str) -> ToolError:
        down["until"] = time.monotonic() + RETRY_AFTER_FAILURE_S
        down["reason"] = reason
        return ToolError(
            f"ModelScope is not reachable ({reason}). Do not retry now: tell the user, or ask them for "
            "the exact id (owner/name)."
        )

    def search_models(query: str, limit: int = DEFAULT_LIMIT) -> str:
        return _search("models", query, limit)

    def search_datasets(query: str, limit: int = DEFAULT_LIMIT) -> str:
        return _search("datasets", query, limit)

    return [
        make_tool(
            func=search_datasets,
            name="search_datasets",
            description=(
                "Search the ModelScope hub for datasets (data to train on) by name, topic or keywords. "
                "Returns exact ids (owner/name) with downloads, task and last update. Use it instead of "
                "guessing a dataset id."
            ),
            args_schema=SearchArgs,
            reads_only=True,
        ),
        make_tool(
            func=search_models,
            name="search_models",
            description=(
                "Search the ModelScope hub for models (weights to fine-tune) by name or keywords; data is "
                "found with search_datasets. Returns exact ids (owner/name) with downloads, task and last "
                "update. Use it instead of guessing a model id."
            ),
            args_schema=SearchArgs,
            reads_only=True,
        ),
    ]
