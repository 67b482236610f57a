"""The server pipeline end to end: GPUs → plan → config → Ray → launch → health, and shutdown.

`start` is idempotent (a healthy server we started, asked for again, is reused) and exclusive (a file
lock under TWINKLE_HOME/auto refuses a second start while one is starting, from this process or
another). Whatever fails part-way is undone before the error is raised: no Ray node or launcher is
left behind by a start that did not finish. What we started is recorded in `server.json` and
`cluster.json`, so a restarted assistant can still report on it and shut it down — by pid, only ours.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psutil

from twinkle_auto.runtime.format import atomic_write_json, read_json_file
from twinkle_auto.server import cluster as ray_cluster
from twinkle_auto.server import config as server_config
from twinkle_auto.server import health, launch
from twinkle_auto.server.gpus import GPU, GPUReport, detect_gpus
from twinkle_auto.server.paths import SERVER_CONFIG, SERVER_LOG, SERVER_STATE, START_LOCK, auto_dir
from twinkle_auto.server.plan import (
    MOCK_MODEL_ID,
    Plan,
    PlanError,
    SamplerRequest,
    check_backend,
    plan_allocation,
)

try:
    import fcntl
except ImportError:  # pragma: no cover - POSIX only
    fcntl = None  # type: ignore[assignment]

STARTING = "starting"
RUNNING = "running"


class ServerError(RuntimeError):
    """A refusal or failure of the server pipeline; `str(exc)` is one line, `log_tail` the evidence."""

    def __init__(self, message: str, log_tail: str = "") -> None:
        super().__init__(message)
        self.log_tail = log_tail


class ServerBusyError(ServerError):
    """Another start holds the lock."""


@dataclass
class StartRequest:
    """What `start_server` was asked for; two requests with equal `key()` describe the same server."""

    model_id: str | None = None
    backend: str = "transformers"
    train_gpus: int | None = None
    samplers: list[SamplerRequest] = field(default_factory=list)
    port: int = 8000
    host: str = "127.0.0.1"
    ray_address: str | None = None

    def resolved_model_id(self) -> str | None:
        return self.model_id or (MOCK_MODEL_ID if self.backend == "mock" else None)

    def key(self) -> dict[str, Any]:
        return {
            "model_id": self.resolved_model_id(),
            "backend": self.backend,
            "train_gpus": self.train_gpus,
            "samplers": [asdict(s) for s in self.samplers],
            "port": self.port,
            "ray_address": self.ray_address,
        }


class ServerManager:
    """Starts, reports on and stops the one Twinkle server of a TWINKLE_HOME."""

    def __init__(
        self,
        home: str | Path | None = None,
        *,
        server_command: Sequence[str] | None = None,
        detect: Callable[[], GPUReport] = detect_gpus,
        ready_timeout: float | None = None,
        head_cpus: int | None = None,
        object_store_mb: int | None = None,
        launcher_grace: float = launch.STOP_GRACE_S,
    ) -> None:
        self.home = Path(home).expanduser() if home else None
        self.server_command = list(server_command) if server_command else None
        self.detect = detect
        self.ready_timeout = ready_timeout
        self.head_cpus = head_cpus
        self.object_store_mb = object_store_mb
        self.launcher_grace = launcher_grace
        self._server: launch.LaunchedServer | None = None

    # ------------------------------------------------------------------------------------------ files
    @property
    def auto(self) -> Path:
        return auto_dir(self.home)

    @property
    def state_path(self) -> Path:
        return self.auto / SERVER_STATE

    @property
    def log_path(self) -> Path:
        return self.auto / SERVER_LOG

    @property
    def config_path(self) -> Path:
        return self.auto / SERVER_CONFIG

    def load_state(self) -> dict[str, Any] | None:
        try:
            return read_json_file(self.state_path)
        except (OSError, ValueError):
            return None

    def _save_state(self, state: dict[str, Any]) -> None:
        atomic_write_json(self.state_path, state)

    def _clear_state(self) -> None:
        try:
            self.state_path.unlink()
        except FileNotFoundError:
            pass

    @contextmanager
    def _exclusive(self, verb: str) -> Iterator[None]:
        """Hold the start lock; a second holder is refused at once (never queued behind a 30 s start)."""
        fd = os.open(self.auto / START_LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            if fcntl is not None:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    state = self.load_state() or {}
                    since = state.get("started_at")
                    when = time.strftime(" (since %H:%M:%S)", time.localtime(since)) if since else ""
                    raise ServerBusyError(
                        f"cannot {verb}: a server start is already in progress{when}; "
                        "wait for it to finish, then try again"
                    ) from None
            yield
        finally:
            os.close(fd)  # closing releases the flock

    # ---------------------------------------------------------------------------------------- handles
    def _launched(self, state: dict[str, Any]) -> launch.LaunchedServer | None:
        pid, ctime = state.get("pid"), state.get("create_time")
        if not isinstance(pid, int):
            return None
        if self._server is not None and self._server.pid == pid:
            return self._server
        return launch.LaunchedServer(pid, float(ctime or 0.0), str(self.log_path), str(self.config_path))

    def _launcher_alive(self, state: dict[str, Any]) -> bool:
        server = self._launched(state)
        return server is not None and server.exit_code() is None

    # ------------------------------------------------------------------------------------------ start
    def start(self, request: StartRequest) -> dict[str, Any]:
        """Start (or reuse) the server; returns a compact description, raises ServerError/PlanError."""
        with self._exclusive("start the server"):
            reused = self._reuse_or_clean(request)
            if reused is not None:
                return reused
            return self._start_fresh(request)

    def _reuse_or_clean(self, request: StartRequest) -> dict[str, Any] | None:
        state = self.load_state()
        if state and self._launcher_alive(state):
            url = state.get("url", "")
            if state.get("status") == RUNNING and health.twinkle_healthz(url):
                if state.get("request") == request.key():
                    return {**self._describe(state), "status": "already_running"}
                raise ServerError(
                    f"a server we started is already running at {url} with model "
                    f"{state.get('model_id')!r} (backend {state.get('backend')}); "
                    "call shutdown_server first to start a different one"
                )
            if state.get("status") == RUNNING:
                raise ServerError(
                    f"a server we started (pid {state.get('pid')}) is running at {url} but does not answer "
                    "health checks; call shutdown_server, then start again"
                )
        # Leftovers of a start or server that died (or of an assistant killed mid-start): clear them.
        self._teardown(state)
        return None

    def _start_fresh(self, request: StartRequest) -> dict[str, Any]:
        check_backend(request.backend)
        if not 1 <= int(request.port) <= 65535:
            raise PlanError(f"port must be 1-65535 (got {request.port})")
        url = f"http://{request.host}:{request.port}"
        plan = self._plan(request)  # refusals about the request itself come first
        self._refuse_busy_port(request.host, request.port, url)
        if self.server_command is None and not launch.twinkle_available():
            raise ServerError(
                "twinkle-kit is not installed (no module twinkle.server); "
                "install the server extra: pip install 'twinkle-auto[server]'"
            )
        if request.ray_address is None and not ray_cluster.ray_available():
            raise ServerError(
                "Ray is not installed; install the server extra: pip install 'twinkle-auto[server]'"
            )
        config = server_config.build_server_config(plan, port=request.port, host=request.host)
        server_config.validate_config(config)
        server_config.write_server_config(config, self.config_path)

        started = time.time()
        state: dict[str, Any] = {
            "status": STARTING,
            "url": url,
            "host": request.host,
            "port": request.port,
            "model_id": plan.model.model_id,
            "backend": plan.backend,
            "request": request.key(),
            "plan": plan.as_dict(),
            "config_path": str(self.config_path),
            "log_path": str(self.log_path),
            "started_at": started,
            "starter_pid": os.getpid(),
        }
        self._save_state(state)
        cluster: ray_cluster.Cluster | None = None
        try:
            if request.ray_address:
                cluster = ray_cluster.join_cluster(self.home, request.ray_address)
            else:
                specs = ray_cluster.node_specs(plan, head_cpus=self.head_cpus)
                cluster = ray_cluster.start_cluster(
                    self.home, specs, host=request.host, object_store_mb=self.object_store_mb
                )
            state.update(
                ray_address=cluster.address,
                cluster_owned=cluster.owned,
                ray_s=round(time.time() - started, 1),
            )
            self._save_state(state)
            env = {"CUDA_VISIBLE_DEVICES": ""}  # the launcher is a driver: it needs no GPU
            log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
            server = launch.launch_server(
                self.config_path,
                ray_address=cluster.address,
                log_path=self.log_path,
                command=self.server_command,
                env=env,
            )
            self._server = server
            state.update(pid=server.pid, create_time=server.create_time)
            self._save_state(state)
            timeout = self.ready_timeout or health.ready_timeout(plan.backend, len(plan.samplers))
            probe = health.wait_ready(
                url,
                expected_models=server_config.supported_models(plan),
                apps=server_config.app_routes(plan),
                exit_code=server.exit_code,
                log_path=self.log_path,
                timeout=timeout,
                log_offset=log_offset,
            )
        except BaseException as exc:
            self._teardown(self.load_state() or state)
            if isinstance(exc, health.ServerStartError):
                raise ServerError(str(exc), exc.log_tail) from None
            if isinstance(exc, (ray_cluster.ClusterError, launch.LaunchError)):
                raise ServerError(str(exc)) from None
            raise
        state.update(status=RUNNING, ready_s=round(time.time() - started, 1), models=list(probe.models))
        self._save_state(state)
        return {**self._describe(state), "status": "started"}

    def _refuse_busy_port(self, host: str, port: int, url: str) -> None:
        if not launch.port_in_use(host, port):
            return
        if health.twinkle_healthz(url):
            raise ServerError(
                f"port {port} already serves a Twinkle server that twinkle-auto did not start; "
                f"use it (TWINKLE_SERVER_URL={url}) or pick another port"
            )
        owner = launch.port_owner(port)
        who = f" by {owner}" if owner else ""
        raise ServerError(f"port {port} on {host} is in use{who}; pick another port")

    def _plan(self, request: StartRequest) -> Plan:
        gpus: Sequence[GPU]
        reason: str | None
        if request.backend == "mock":
            gpus, reason = (), None
        elif request.ray_address:
            info = ray_cluster.query_cluster(request.ray_address)
            count = int(info.get("available", {}).get("GPU", 0))
            gpus = [GPU(i, "ray GPU", None, None, None) for i in range(count)]
            reason = None if count else f"the Ray cluster at {request.ray_address} has no free GPU"
        else:
            report = self.detect()
            gpus, reason = report.gpus, report.reason
        return plan_allocation(
            gpus,
            model_id=request.resolved_model_id(),
            backend=request.backend,
            train_gpus=request.train_gpus,
            samplers=request.samplers,
            no_gpu_reason=reason,
        )

    # --------------------------------------------------------------------------------------- shutdown
    def shutdown(self) -> dict[str, Any]:
        """Stop what we started: SIGTERM the launcher, then our Ray nodes; recorded state cleared."""
        with self._exclusive("shut the server down"):
            state = self.load_state()
            cluster = ray_cluster.load_cluster(self.home)
            if state is None and cluster is None:
                return {"status": "not_running", "note": "no server started by twinkle-auto is recorded"}
            url = (state or {}).get("url")
            signalled = self._teardown(state)
            left = [p.pid for p in self.processes(state, cluster)]
            result: dict[str, Any] = {"status": "stopped", "url": url, "signalled": len(signalled)}
            if cluster is not None and not cluster.owned:
                result["ray"] = f"joined cluster {cluster.address} left running (not ours)"
            elif cluster is not None:
                result["ray"] = f"stopped {len(cluster.nodes)} Ray node(s) we started"
            if left:
                result["still_alive"] = left
            return result

    def _teardown(self, state: dict[str, Any] | None) -> list[int]:
        signalled: list[int] = []
        server = self._launched(state) if state else None
        if server is not None:
            signalled += launch.stop_server_process(server, grace=self.launcher_grace)
        self._server = None
        cluster = ray_cluster.load_cluster(self.home)
        if cluster is not None:
            signalled += ray_cluster.stop_cluster(self.home, cluster)
        self._clear_state()
        return signalled

    # ---------------------------------------------------------------------------------------- queries
    def processes(
        self, state: dict[str, Any] | None = None, cluster: ray_cluster.Cluster | None = None
    ) -> list[psutil.Process]:
        """Every live process we started for the server (launcher session and our Ray nodes)."""
        state = state if state is not None else self.load_state()
        cluster = cluster if cluster is not None else ray_cluster.load_cluster(self.home)
        procs: list[psutil.Process] = []
        if state and isinstance(state.get("pid"), int):
            procs += ray_cluster.session_members(state["pid"], state.get("create_time"))
        if cluster is not None:
            procs += ray_cluster.cluster_processes(cluster)
        return procs

    def _describe(self, state: dict[str, Any]) -> dict[str, Any]:
        plan = state.get("plan") or {}
        out: dict[str, Any] = {
            "url": state.get("url"),
            "model_id": state.get("model_id"),
            "backend": state.get("backend"),
            "gpus": {"model": (plan.get("model") or {}).get("gpus", [])},
            "samplers": [
                {k: s.get(k) for k in ("model_id", "gpus", "engine", "tp", "dp")}
                for s in plan.get("samplers", [])
            ],
            "ray": {"address": state.get("ray_address"), "ours": state.get("cluster_owned")},
            "pid": state.get("pid"),
            "ready_in_s": state.get("ready_s"),
            "config": state.get("config_path"),
            "log": state.get("log_path"),
        }
        if plan.get("notes"):
            out["notes"] = plan["notes"]
        return out

    def status(self) -> dict[str, Any]:
        """Whether a server we started is running and answering, without changing anything."""
        state = self.load_state()
        if not state:
            return {"running": False}
        alive = self._launcher_alive(state)
        healthy = alive and health.twinkle_healthz(state.get("url", ""))
        return {
            **self._describe(state),
            "state": state.get("status"),
            "launcher_alive": alive,
            "healthy": healthy,
        }

    def cluster_info(self, *, query_ray: bool = True) -> dict[str, Any]:
        """GPUs on this machine, the Ray cluster we use (nodes, resources) and the server."""
        report = self.detect()
        info: dict[str, Any] = {"gpus": _compact_gpus(report), "server": _server_facts(self.status())}
        cluster = ray_cluster.load_cluster(self.home)
        if cluster is None:
            info["ray"] = None
            return info
        nodes = [
            {
                "role": n.role,
                "pid": n.pid,
                "gpus": n.num_gpus,
                "cuda_visible_devices": n.cuda_visible_devices,
                "alive": ray_cluster.is_our_process(n.pid, n.create_time),
            }
            for n in cluster.nodes
        ]
        ray_info: dict[str, Any] = {"address": cluster.address, "ours": cluster.owned, "nodes": nodes}
        if query_ray:
            try:
                q = ray_cluster.query_cluster(cluster.address)
                ray_info["total"] = _round(q.get("total", {}))
                ray_info["available"] = _round(q.get("available", {}))
            except ray_cluster.ClusterError as exc:
                ray_info["error"] = str(exc)
        info["ray"] = ray_info
        return info

    def server_url(self, url: str | None = None) -> str | None:
        if url:
            return url.rstrip("/")
        state = self.load_state()
        if state and state.get("url"):
            return str(state["url"])
        env = os.environ.get("TWINKLE_SERVER_URL")
        return env.rstrip("/") if env else None

    def list_models(self, url: str | None = None) -> dict[str, Any]:
        base = self.server_url(url)
        if not base:
            raise ServerError("no Twinkle server is running; call start_server first (or give its url)")
        models = health.supported_models(base)
        if models is None:
            raise ServerError(f"no Twinkle server answers at {base}; call start_server first")
        return {"url": base, "supported_models": models}


def _round(resources: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in resources.items():
        if key in ("memory", "object_store_memory") and isinstance(value, (int, float)):
            out[f"{key}_gb"] = round(value / 2**30, 1)
        elif isinstance(value, (int, float)):
            out[key] = round(value, 2)
    return out


SERVER_FACTS = ("running", "url", "model_id", "backend", "gpus", "samplers", "state", "healthy")
"""What cluster_info says of the server: whether it is up, where, and what runs on which GPUs. Its
files, pid and launch notes are server_status's (cluster_info repeated them, and the Ray section)."""


def _server_facts(status: dict[str, Any]) -> dict[str, Any]:
    return {k: status[k] for k in SERVER_FACTS if k in status}


def _compact_gpus(report: GPUReport) -> dict[str, Any]:
    data: dict[str, Any] = {"count": len(report.gpus), "free": [g.index for g in report.free]}
    if report.busy:
        data["busy"] = [g.index for g in report.busy]
    if report.gpus:
        names = sorted({g.name for g in report.gpus})
        data["models"] = names
        data["memory_total_mb"] = [g.memory_total_mb for g in report.gpus]
    if report.reason:
        data["reason"] = report.reason
    if report.visible_devices is not None:
        data["cuda_visible_devices"] = report.visible_devices
    return data
