"""The real local LLM for tests: a session fixture that fetches the pinned GGUF and serves it on 127.0.0.1.

Why a fixture module of its own: loading the model costs ~3 s and 2 GB of RAM, so one server is shared by
every `llm`-marked test of a session, and the plain functions here let the benchmark start the same
server the same way. tests/conftest.py registers it (`pytest_plugins`); tests just ask for `local_llm`.

Settings (environment):
  TWINKLE_LLM_MODELS    model cache folder (default: the repo's .models/, gitignored)
  TWINKLE_TEST_LLM_URL  use an already running OpenAI-compatible server (`.../v1`) instead of starting one
  TWINKLE_LLM_THREADS   llama.cpp threads that generate (default: see default_threads); the prompt is
                        always read with every core (LocalLLMServer.n_batch_threads says why)
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil
import pytest

from twinkle_auto.app.local_llm import DEFAULT_VARIANT, LocalLLMServer, fetch_model, serve

ROOT = Path(__file__).resolve().parents[1]
MODELS_DIR = Path(os.environ.get("TWINKLE_LLM_MODELS") or ROOT / ".models")


def default_threads() -> int:
    """Generating threads: every core on an idle machine; fewer when other processes keep cores busy now.

    llama.cpp's threads meet at a barrier after every layer, so one thread descheduled by a busy neighbour
    stalls the others: measured on 2 cores with a load of ~4, one thread generated 2.5x faster than two.
    Measured over half a second, not from the load average, which still counts the tests that just ran.
    Always one core fewer under pytest-xdist was tried (2026-12-02): the LLM group is the last to finish
    in `make test`, with the other worker idle by then, and the llm_chat subset took 562 s instead of 286.
    """
    if os.environ.get("TWINKLE_LLM_THREADS"):
        return max(1, int(os.environ["TWINKLE_LLM_THREADS"]))
    cores = os.cpu_count() or 2
    busy = psutil.cpu_percent(interval=0.5) / 100.0 * cores
    return cores if busy < 0.5 else max(1, cores - round(busy))


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
    with serve(ensure_model(), n_threads=default_threads(), log_path=log_path) as server:
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
