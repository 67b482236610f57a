"""Model and dataset references: a local path, a ModelScope id, or a model a Twinkle server serves.

Why check at all: a wrong id otherwise fails minutes later inside a download, in a training process the
person is no longer watching. Why never block: the chat waits for this, and the hub may be offline, so
each question has a deadline (see `skills.hub`), an unreachable hub is remembered for a while, and an id
that could not be checked is used as given with a note saying so.
"""

from __future__ import annotations

import json
import re
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from twinkle_auto.recipes.base import RecipeError

HUB_CHECK_TIMEOUT = 8.0
"""Seconds one hub question may take before the id is used unverified."""
SERVER_CHECK_TIMEOUT = 3.0
"""Seconds to ask a Twinkle server which models it serves (it answers in milliseconds when up)."""
RETRY_AFTER_FAILURE_S = 30.0
"""After the hub did not answer, later checks skip it for this long (a render checks model and data)."""

DATA_SUFFIXES = (".jsonl", ".json", ".parquet")
"""Local dataset files the rendered scripts can read."""
HUB_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")
SERVED_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_./-]*$")
_HUB_PREFIX = "ms://"

Kind = Literal["model", "dataset"]
Source = Literal["local", "modelscope", "unverified", "server"]


@dataclass(frozen=True)
class Resolved:
    """A reference as the script will use it, and how it was established."""

    value: str
    """An absolute local path, a hub id (owner/name), or the name the server serves."""
    source: Source
    note: str | None = None


_down: dict[str, Any] = {"until": 0.0, "reason": ""}
_down_lock = threading.Lock()


def _looks_like_path(ref: str) -> bool:
    return (
        ref.startswith(("/", "~", "./", "../", ".\\"))
        or ref.lower().endswith(DATA_SUFFIXES)
        or ref.count("/") > 1
        or "\\" in ref
    )


def _local(ref: str, kind: Kind) -> Resolved | None:
    """The reference as an existing local path, or None when it names no file or folder here."""
    if ref.startswith(_HUB_PREFIX):
        return None
    path = Path(ref).expanduser()
    try:
        exists = path.exists()
    except OSError:
        exists = False
    if not exists:
        if _looks_like_path(ref):
            raise RecipeError(
                f"{kind} path {ref!r} does not exist (give an existing path or an owner/name id)"
            )
        return None
    path = path.resolve()
    if kind == "model":
        if not path.is_dir():
            raise RecipeError(
                f"model path {str(path)!r} is a file; give the model's folder (with config.json)"
            )
        if not (path / "config.json").is_file():
            raise RecipeError(
                f"model folder {str(path)!r} has no config.json; is it a Hugging Face model folder?"
            )
        return Resolved(str(path), "local")
    if path.is_dir():
        files = sorted(p.name for p in path.iterdir() if p.suffix.lower() in DATA_SUFFIXES)
        hint = f" (it holds {', '.join(files[:3])})" if files else ""
        raise RecipeError(
            f"dataset path {str(path)!r} is a folder; give one .jsonl/.json/.parquet file{hint}"
        )
    if path.suffix.lower() not in DATA_SUFFIXES:
        raise RecipeError(
            f"dataset file {path.name!r} is not .jsonl, .json or .parquet; convert it or give a hub id"
        )
    if path.stat().st_size == 0:
        raise RecipeError(f"dataset file {str(path)!r} is empty")
    return Resolved(str(path), "local")


def _hub_search(kind: Kind, name: str, timeout: float) -> list[tuple[str, int]]:
    """(id, downloads) the hub lists for a search on `name`; raises HubUnavailable/other on failure."""
    from twinkle_auto.skills.hub import call_with_deadline, hub_api

    def _ask() -> Any:
        api = hub_api(request_timeout=max(1.0, timeout - 1.0))
        lister = api.openapi.list_models if kind == "model" else api.openapi.list_datasets
        return lister(search=name, page_number=1, page_size=20)

    payload = call_with_deadline(_ask, timeout, "ModelScope")
    if isinstance(payload, (str, bytes)):
        raise ConnectionError("ModelScope answered with something that is not JSON")
    entries: list[Any] = []
    if isinstance(payload, dict):
        for key in (f"{kind}s", f"{kind.capitalize()}s", "items", "list", "data"):
            if isinstance(payload.get(key), list):
                entries = payload[key]
                break
        else:
            if payload.get("success") is False:
                raise ConnectionError(str(payload.get("message") or "ModelScope refused the search"))
    elif isinstance(payload, list):
        entries = payload
    found = []
    for entry in entries:
        if not isinstance(entry, dict):
            continue
        ident = entry.get("id") or entry.get("Id")
        if not (isinstance(ident, str) and "/" in ident):
            owner = entry.get("owner") or entry.get("Owner") or entry.get("namespace")
            nm = entry.get("name") or entry.get("Name")
            ident = f"{owner}/{nm}" if owner and nm else None
        downloads = entry.get("downloads", entry.get("Downloads"))
        if ident:
            found.append((str(ident), int(downloads) if isinstance(downloads, (int, float)) else 0))
    return found


def _hub(ref: str, kind: Kind, timeout: float) -> Resolved:
    """An owner/name id checked on ModelScope (or used as given, with a note, when the hub cannot answer).

    A bare name ("gsm8k") is looked up: the most downloaded entry with exactly that name wins, and the
    note says which; without the hub a bare name is an error, since guessing the owner would be wrong.
    """
    repo_id = ref[len(_HUB_PREFIX) :] if ref.startswith(_HUB_PREFIX) else ref
    bare = "/" not in repo_id and bool(SERVED_NAME_RE.match(repo_id))
    if not (bare or HUB_ID_RE.match(repo_id)):
        raise RecipeError(
            f"{kind} {ref!r} is neither an existing local path nor a ModelScope id of the form owner/name"
        )
    with _down_lock:
        waited = _down["until"] - time.monotonic()
        reason = _down["reason"]
    if waited > 0:
        return _not_checked(kind, repo_id, bare, reason)
    from twinkle_auto.skills.hub import HubUnavailable, describe, is_unreachable

    try:
        found = _hub_search(kind, repo_id.split("/")[-1], timeout)
    except HubUnavailable as exc:
        if exc.kind != "missing":
            _remember_down(str(exc))
        return _not_checked(kind, repo_id, bare, str(exc))
    except Exception as exc:
        reason = describe(exc)
        if is_unreachable(exc):
            _remember_down(reason)
            reason = f"offline: {reason}"
        return _not_checked(kind, repo_id, bare, reason)
    if bare:
        same = sorted(
            (f for f in found if f[0].split("/")[-1].lower() == repo_id.lower()), key=lambda f: -f[1]
        )
        if same:
            ident = same[0][0]
            others = f" (the most downloaded of {len(same)} with that name)" if len(same) > 1 else ""
            return Resolved(ident, "modelscope", f"{kind} {repo_id} is {ident} on ModelScope{others}")
    else:
        for ident, _ in found:
            if ident.lower() == repo_id.lower():
                return Resolved(ident, "modelscope", f"{kind} {ident} found on ModelScope")
    close = ", ".join(ident for ident, _ in found[:3])
    hint = f" (similar: {close})" if close else ""
    raise RecipeError(
        f"ModelScope has no {kind} {repo_id!r}{hint}; search_{kind}s finds exact ids, or give a local path"
    )


def _not_checked(kind: Kind, repo_id: str, bare: bool, reason: str) -> Resolved:
    if bare:
        raise RecipeError(
            f"{kind} {repo_id!r} needs its owner (owner/name, e.g. modelscope/gsm8k): ModelScope could not "
            f"be asked to look it up ({reason})"
        )
    return Resolved(repo_id, "unverified", _unverified(kind, repo_id, reason))


def _remember_down(reason: str) -> None:
    with _down_lock:
        _down["until"] = time.monotonic() + RETRY_AFTER_FAILURE_S
        _down["reason"] = reason


def _unverified(kind: Kind, repo_id: str, reason: str) -> str:
    return f"could not verify {kind} {repo_id} on ModelScope ({reason}); using it as given"


def _clean(ref: Any, kind: Kind) -> str:
    if not isinstance(ref, str) or not ref.strip():
        raise RecipeError(f"{kind} is empty; give a local path or a ModelScope id (owner/name)")
    text = ref.strip()
    if "\n" in text or "\x00" in text or len(text) > 1000:
        raise RecipeError(f"{kind} must be one path or id on one line")
    return text


def resolve_model(ref: str, *, timeout: float = HUB_CHECK_TIMEOUT) -> Resolved:
    """A model for a local training script: an existing folder with config.json, or a ModelScope id.

    Raises RecipeError for a path that does not exist and for an id the hub answers it does not have.
    """
    text = _clean(ref, "model")
    return _local(text, "model") or _hub(text, "model", timeout)


def resolve_dataset(ref: str, *, timeout: float = HUB_CHECK_TIMEOUT) -> Resolved:
    """A dataset: an existing .jsonl/.json/.parquet file (made absolute), or a ModelScope dataset id."""
    text = _clean(ref, "dataset")
    return _local(text, "dataset") or _hub(text, "dataset", timeout)


_REPLICA_HEADER = "x-twinkle-replica-id"
"""Set by every Twinkle app replica: an answer without it came from the gateway, not from that app."""
_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
"""No proxy: the server is on this machine or its network, and a proxy would answer for it."""


def _api(server_url: str) -> str:
    return server_url.rstrip("/").removesuffix("/api/v1") + "/api/v1"


def served_models(server_url: str, timeout: float = SERVER_CHECK_TIMEOUT) -> list[str] | None:
    """The model names a Twinkle server says it serves, or None when it does not answer in time."""
    url = _api(server_url) + "/get_server_capabilities"
    try:
        with _opener.open(url, timeout=timeout) as resp:
            payload = json.loads(resp.read(1_000_000).decode("utf-8", "replace"))
    except (OSError, ValueError, urllib.error.URLError):
        return None
    models = payload.get("supported_models") if isinstance(payload, dict) else None
    if not isinstance(models, list):
        return None
    names = []
    for entry in models:
        name = entry.get("model_name") if isinstance(entry, dict) else entry
        if isinstance(name, str) and name:
            names.append(name)
    return names


def resolve_served_model(ref: str, server_url: str, *, timeout: float = SERVER_CHECK_TIMEOUT) -> Resolved:
    """A model for a Twinkle-client script: the server trains it, so the server's list is the authority.

    A server that does not answer yet (it is often started right after) leaves the name unchecked, with
    a note; one that answers without the model is an error naming what it does serve.
    """
    text = _clean(ref, "model")
    name = text[len(_HUB_PREFIX) :] if text.startswith(_HUB_PREFIX) else text
    if not SERVED_NAME_RE.match(name):
        raise RecipeError(f"model {text!r} is not a model name (e.g. Qwen/Qwen3.5-4B or mock-model)")
    served = served_models(server_url, timeout)
    if served is None:
        return Resolved(
            name,
            "unverified",
            f"the Twinkle server at {server_url} did not answer, so model {name} is unchecked; "
            "start the server (start_server) before this run",
        )
    for served_name in served:
        if served_name.lower() == name.lower():
            return Resolved(served_name, "server", f"model {served_name} is served at {server_url}")
    tails = [n for n in served if n.split("/")[-1].lower() == name.split("/")[-1].lower()]
    if len(tails) == 1:  # "Qwen3.5-4B" for the served "Qwen/Qwen3.5-4B"
        return Resolved(tails[0], "server", f"model {name} is {tails[0]}, served at {server_url}")
    listed = ", ".join(served[:5]) or "nothing"
    raise RecipeError(f"the Twinkle server at {server_url} serves {listed}, not {name!r}; pick one of those")


def has_sampler(server_url: str, model: str, timeout: float = SERVER_CHECK_TIMEOUT) -> bool | None:
    """Whether the server runs a sampler app for `model` (the route the Twinkle client samples from).

    None when the server does not answer; False when it answers but no sampler replica does.
    """
    url = f"{_api(server_url)}/sampler/{model}/healthz"
    try:
        with _opener.open(url, timeout=timeout) as resp:
            headers = {k.lower() for k in resp.headers}
    except urllib.error.HTTPError as exc:
        headers = {k.lower() for k in exc.headers}
    except (OSError, ValueError, urllib.error.URLError):
        return None
    return _REPLICA_HEADER in headers
