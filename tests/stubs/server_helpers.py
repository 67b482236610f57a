"""Helpers shared by the tests/test_server_*.py files (a stub nvidia-smi, free ports, pid checks)."""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

import psutil
import pytest

STUBS = Path(__file__).resolve().parent
FAKE_SERVER = STUBS / "fake_twinkle_server.py"


def use_stub_smi(
    monkeypatch: pytest.MonkeyPatch, gpus: int = 0, busy: str = "", fail: str = "", visible: str | None = None
) -> None:
    """Put tests/stubs first on PATH so `nvidia-smi` is the stub, configured through the environment."""
    monkeypatch.setenv("PATH", f"{STUBS}{os.pathsep}{os.environ.get('PATH', '')}")
    monkeypatch.setenv("STUB_GPUS", str(gpus))
    monkeypatch.setenv("STUB_BUSY", busy)
    monkeypatch.setenv("STUB_FAIL", fail)
    if visible is None:
        monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    else:
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)


def no_smi(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A PATH with no nvidia-smi at all (only the Python that runs the tests)."""
    bin_dir = tmp_path / "bin-no-smi"
    bin_dir.mkdir(exist_ok=True)
    monkeypatch.setenv("PATH", str(bin_dir))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def fake_server_cmd() -> list[str]:
    return [sys.executable, str(FAKE_SERVER)]


def alive(pids: list[int]) -> list[int]:
    """The pids that still name a running (non-zombie) process."""
    out = []
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                out.append(pid)
        except psutil.Error:
            pass
    return out
