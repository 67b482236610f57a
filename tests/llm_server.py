"""The real local LLM for tests: a session fixture that fetches the pinned GGUF and serves it on 127.0.0.1.

Why a fixture module of its own: loading the model costs ~3 s and 2 GB of RAM, so one server is shared by
every `llm`-marked test of a session, and the plain functions here let the benchmark start the same
server the same way. Tests use it with `from llm_server import local_llm  # noqa: F401`.

Settings (environment):
  TWINKLE_LLM_MODELS    model cache folder (default: the repo's .models/, gitignored)
  TWINKLE_TEST_LLM_URL  use an already running OpenAI-compatible server (`.../v1`) instead of starting one
  TWINKLE_LLM_THREADS   llama.cpp threads (default: every core; fewer helps on a box shared with other jobs)
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from twinkle_auto.app.local_llm import DEFAULT_VARIANT, LocalLLMServer, fetch_model, serve

ROOT = Path(__file__).resolve().parents[1]
MODELS_DIR = Path(os.environ.get("TWINKLE_LLM_MODELS") or ROOT / ".models")
LLM_THREADS = int(os.environ.get("TWINKLE_LLM_THREADS") or os.cpu_count() or 2)


def xllamacpp_missing() -> str | None:
    """Why the real LLM cannot run here, or None when it can."""
    if os.environ.get("TWINKLE_TEST_LLM_URL"):
        return None
    if importlib.util.find_spec("xllamacpp") is None:
        return "xllamacpp is not installed (pip install -e '.[llm]')"
    return None


def ensure_model(variant: str = DEFAULT_VARIANT) -> Path:
    """The verified GGUF in the cache folder, fetched on first use (~20 s, then instant)."""
    return fetch_model(MODELS_DIR, variant)


@contextmanager
def running_llm(log_path: Path | None = None) -> Iterator[str]:
    """The base URL (ending in /v1) of a served local model, stopped on exit."""
    external = os.environ.get("TWINKLE_TEST_LLM_URL")
    if external:
        yield external.rstrip("/")
        return
    server: LocalLLMServer
    with serve(ensure_model(), n_threads=LLM_THREADS, log_path=log_path) as server:
        yield server.base_url


@pytest.fixture(scope="session")
def local_llm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Base URL of the session's local LLM server, for `ChatOpenAI(base_url=local_llm, ...)`."""
    reason = xllamacpp_missing()
    if reason:
        pytest.skip(reason)
    log_path = tmp_path_factory.mktemp("llm") / "llama-server.log"
    with running_llm(log_path) as url:
        yield url
