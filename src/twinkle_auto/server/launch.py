"""Launching `python -m twinkle.server launch --config …` and stopping it again.

The launcher is a Ray driver that deploys the Serve apps and then waits for SIGTERM, on which it shuts
Serve down (~8 s). It runs in a session of its own, with its output appended to
`TWINKLE_HOME/auto/server.log`, and is stopped by its recorded pid, never by name.
"""

from __future__ import annotations

import errno
import importlib.util
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import psutil

from twinkle_auto.connection.process import spawn_logged
from twinkle_auto.server.cluster import ray_env, stop_session

STOP_GRACE_S = 30.0
"""SIGTERM → serve.shutdown() takes ~8 s here; a loaded GPU box gets more before SIGKILL."""


class LaunchError(RuntimeError):
    """The server could not be launched; `str(exc)` is one line."""


@dataclass
class LaunchedServer:
    pid: int
    create_time: float
    log_path: str
    config_path: str
    popen: subprocess.Popen[bytes] | None = None

    def exit_code(self) -> int | None:
        """The launcher's exit code once it has exited (reaping it when it is our child), else None."""
        if self.popen is not None:
            return self.popen.poll()
        try:
            proc = psutil.Process(self.pid)
            if abs(proc.create_time() - self.create_time) > 1.0:
                return -1
            if proc.status() == psutil.STATUS_ZOMBIE:
                return -1
            return None
        except psutil.NoSuchProcess:
            return -1
        except psutil.Error:
            return None


def twinkle_available() -> bool:
    try:
        return importlib.util.find_spec("twinkle.server") is not None
    except (ImportError, ValueError):
        return False


SERVER_PROGRAM = [sys.executable, "-m", "twinkle.server"]


def server_command(config_path: str | Path, program: Sequence[str] | None = None) -> list[str]:
    """`<program> launch --config <path>`; `program` replaces `python -m twinkle.server` (tests)."""
    return [*(program or SERVER_PROGRAM), "launch", "--config", str(config_path)]


def port_in_use(host: str, port: int) -> bool:
    """True when `host:port` cannot be bound (Serve's proxy would fail later, with a worse message)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            return exc.errno in (errno.EADDRINUSE, errno.EACCES)
    return False


def port_owner(port: int) -> str | None:
    """`pid 1234 (python3)` for the process listening on the port, when the system lets us see it."""
    try:
        conns = psutil.net_connections(kind="tcp")
    except (psutil.Error, OSError):
        return None
    for conn in conns:
        if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port and conn.pid:
            try:
                name = psutil.Process(conn.pid).name()
            except psutil.Error:
                name = "?"
            return f"pid {conn.pid} ({name})"
    return None


def launch_server(
    config_path: str | Path,
    *,
    ray_address: str,
    log_path: str | Path,
    command: Sequence[str] | None = None,
    env: Mapping[str, str] | None = None,
) -> LaunchedServer:
    """Start the launcher against `ray_address` (explicit: `address='auto'` would join any cluster)."""
    cmd = server_command(config_path, command)
    if command is None and not twinkle_available():
        raise LaunchError(
            "twinkle-kit is not installed (no module twinkle.server); "
            "install the server extra: pip install 'twinkle-auto[server]'"
        )
    child_env = ray_env()
    child_env.update(env or {})
    child_env["RAY_ADDRESS"] = ray_address
    child_env["PYTHONUNBUFFERED"] = "1"
    log_path = Path(log_path)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    try:
        child, created = spawn_logged(
            cmd,
            log_path=log_path,
            marker=f"launch {' '.join(cmd[1:])}",
            env=child_env,
            cwd=Path(config_path).parent,
        )
    except OSError as exc:
        raise LaunchError(f"cannot start the Twinkle server: {exc.strerror or exc}") from None
    ctime = created if created is not None else time.time()
    return LaunchedServer(child.pid, ctime, str(log_path), str(config_path), child)


def stop_server_process(server: LaunchedServer, *, grace: float = STOP_GRACE_S) -> list[int]:
    """SIGTERM the launcher (Serve shuts down), SIGKILL its session after `grace`; pids signalled."""
    signalled = stop_session(server.pid, server.create_time, grace=grace)
    if server.popen is not None:
        try:
            server.popen.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
    return signalled
