"""The Ray cluster under the Twinkle server: our own head (and GPU workers) on 127.0.0.1, or the
cluster a person already runs, joined by address.

Every node we start is a `ray start --block` process in a session of its own: the leader's pid and
create time go to `TWINKLE_HOME/auto/cluster.json`, and stopping means signalling exactly those
sessions. Nothing here runs Ray's global stop command (it kills every Ray process on the machine, a
colleague's included) or looks processes up by name. A cluster we joined is never stopped by us.

Each GPU application gets a worker node whose `CUDA_VISIBLE_DEVICES` is its partition, so the GPUs a
placement group lands on are the ones the plan gave it; the head holds no GPU and hosts the gateway,
the Serve controller and any CPU (mock) app.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psutil

from twinkle_auto.connection.process import child_env, spawn_logged
from twinkle_auto.runtime.format import atomic_write_json, read_json_file
from twinkle_auto.server.paths import CLUSTER_STATE, RAY_DIR, auto_dir
from twinkle_auto.server.plan import Plan

RAY_ENV = {
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",  # keeps node and driver addresses on 127.0.0.1
    "RAY_AUTH_MODE": "disabled",  # else `ray status` and the Twinkle launcher fail with InvalidAuthToken
    "RAY_USAGE_STATS_ENABLED": "0",
}
READY_LINE = "Ray runtime started."
NODE_START_TIMEOUT_S = 90.0
STOP_GRACE_S = 20.0
JOIN_PROBE_S = 5.0
"""Seconds to wait for a joined cluster's GCS port to accept a connection."""
HEAD_MIN_CPUS = 8
"""Logical CPUs of the head: Serve's controller, proxy and replicas plus Twinkle's CPU groups need 8."""
SOCKET_BUDGET = 107 - 64
"""AF_UNIX paths are at most 107 bytes; Ray appends ~64 (`/session_<date>_<pid>/sockets/plasma_store`)."""


class ClusterError(RuntimeError):
    """Starting, joining or stopping the cluster failed; `str(exc)` is one line."""


@dataclass(frozen=True)
class NodeSpec:
    role: str
    num_gpus: int
    cuda_visible_devices: str
    num_cpus: int


@dataclass
class NodeProc:
    role: str
    pid: int
    create_time: float
    temp_dir: str
    num_gpus: int
    cuda_visible_devices: str
    log: str


@dataclass
class Cluster:
    address: str
    owned: bool
    nodes: list[NodeProc] = field(default_factory=list)
    temp_root: str | None = None
    started_at: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Cluster:
        nodes = [NodeProc(**n) for n in data.get("nodes") or []]
        return cls(
            address=str(data["address"]),
            owned=bool(data.get("owned")),
            nodes=nodes,
            temp_root=data.get("temp_root"),
            started_at=data.get("started_at"),
        )


# ------------------------------------------------------------------------------------------ helpers
def ray_env(base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment every Ray process we start (and the Twinkle launcher) needs, minus our secrets."""
    env = child_env(base=os.environ if base is None else base)
    env.update(RAY_ENV)
    return env


def ray_available() -> bool:
    return importlib.util.find_spec("ray") is not None


def free_port(host: str = "127.0.0.1") -> int:
    return free_ports(1, host)[0]


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """`count` distinct free ports, all held open until every one is chosen.

    Picking them one at a time (bind, read, close) can hand the same port out twice, since a closed
    port is free again at once; Ray then refuses to start ("port … is used by other components").
    """
    held: list[socket.socket] = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            held.append(s)
            s.bind((host, 0))
        return [int(s.getsockname()[1]) for s in held]
    finally:
        for s in held:
            s.close()


NODE_PORTS = (
    "--metrics-export-port",
    "--dashboard-agent-grpc-port",
    "--runtime-env-agent-port",
    "--dashboard-agent-listen-port",
)
"""`ray start` flags of ports Ray's start-up script would otherwise pick itself, one at a time."""
HEAD_PORTS = ("--port", "--ray-client-server-port")
"""The head's GCS and Ray Client ports, besides NODE_PORTS."""


def node_specs(plan: Plan, *, head_cpus: int | None = None) -> list[NodeSpec]:
    """Head (CPU only) plus one worker per GPU app, largest first, each seeing only its partition."""
    cpus = head_cpus or max(HEAD_MIN_CPUS, os.cpu_count() or 1)
    specs = [NodeSpec("head", 0, "", cpus)]
    for app in plan.gpu_apps:
        devices = ",".join(str(i) for i in app.gpus)
        # Twinkle's GPU bundle takes half a node's CPUs; the rest is for the app's own actors.
        specs.append(NodeSpec(app.name, app.gpu_count, devices, max(4, 4 * app.gpu_count)))
    return specs


def _temp_root(home: Path) -> tuple[Path, Path | None]:
    """Ray's temp dir: TWINKLE_HOME/auto/ray if its socket paths fit, else a short dir in /tmp
    (linked from TWINKLE_HOME/auto/ray so a person still finds the logs)."""
    preferred = auto_dir(home) / RAY_DIR
    if len(str(preferred)) + len("/worker-9") <= SOCKET_BUDGET:
        if preferred.is_symlink():  # left by an earlier run whose path did not fit
            preferred.unlink()
        preferred.mkdir(parents=True, exist_ok=True)
        return preferred, None
    short = Path(tempfile.mkdtemp(prefix="tw-ray-", dir="/tmp"))
    if preferred.is_symlink() or preferred.exists():
        if preferred.is_symlink() or preferred.is_file():
            preferred.unlink()
        else:
            shutil.rmtree(preferred, ignore_errors=True)
    try:
        preferred.symlink_to(short, target_is_directory=True)
    except OSError:
        pass
    return short, short


def _tail(path: Path, n: int = 15) -> str:
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return ""
    return "\n".join(lines[-n:])


def _last_error_line(path: Path) -> str:
    lines = _tail(path, 40).splitlines()
    for line in reversed(lines):
        if "Error" in line or "error" in line or "Exception" in line:
            return line.strip()[:300]
    return (lines[-1].strip()[:300] if lines else "no output") or "no output"


# ------------------------------------------------------------------------------------- process control
def session_members(leader: int, leader_ctime: float | None = None) -> list[psutil.Process]:
    """Every live process in the session our `ray start` leader created (workers included: the
    raylet forks them without a new session). Processes older than the leader cannot be ours."""
    members = []
    for proc in psutil.process_iter(["pid", "create_time"]):
        try:
            if os.getsid(proc.pid) != leader:
                continue
        except (ProcessLookupError, PermissionError, OSError):
            continue
        ctime = proc.info.get("create_time")
        if leader_ctime is not None and ctime is not None and ctime + 1.0 < leader_ctime:
            continue
        try:
            if proc.status() == psutil.STATUS_ZOMBIE and proc.pid != leader:
                continue
        except psutil.Error:
            continue
        members.append(proc)
    return members


def is_our_process(pid: int, create_time: float | None) -> bool:
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
        return create_time is None or abs(proc.create_time() - create_time) <= 1.0
    except psutil.Error:
        return False


def stop_session(leader: int, leader_ctime: float | None, *, grace: float = STOP_GRACE_S) -> list[int]:
    """SIGTERM the leader (if it is still the process we started), wait, then SIGKILL what is left of
    its session. Returns the pids that were signalled."""
    signalled: list[int] = []
    if is_our_process(leader, leader_ctime):
        try:
            os.kill(leader, signal.SIGTERM)
            signalled.append(leader)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        _reap(leader)
        if not session_members(leader, leader_ctime):
            return signalled
        time.sleep(0.1)
    for proc in session_members(leader, leader_ctime):
        try:
            proc.kill()
            signalled.append(proc.pid)
        except psutil.Error:
            pass
    psutil.wait_procs(session_members(leader, leader_ctime), timeout=5)
    _reap(leader)
    return signalled


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except (ChildProcessError, OSError):
        pass


# --------------------------------------------------------------------------------------- start / stop
def _start_node(
    spec: NodeSpec,
    *,
    head: bool,
    address: str | None,
    temp_dir: Path,
    log_path: Path,
    host: str,
    ports: dict[str, int],
    object_store_mb: int | None = None,
) -> NodeProc:
    module = "ray.scripts.scripts" if head else "twinkle_auto.server._ray_worker"
    cmd = [sys.executable, "-m", module, "start", "--block", "--disable-usage-stats"]
    cmd += [f"--node-ip-address={host}", f"--temp-dir={temp_dir}"]
    cmd += [f"--num-gpus={spec.num_gpus}", f"--num-cpus={spec.num_cpus}"]
    # Fixed default ports (10001, 52365, …) would collide with any other Ray on this machine, and ports
    # Ray picks for itself can equal one we picked: every port is either bound by the raylet itself (0)
    # or one of the cluster's distinct ports chosen together in start_cluster.
    cmd += ["--node-manager-port=0", "--object-manager-port=0", "--min-worker-port=0", "--max-worker-port=0"]
    cmd += [f"{flag}={port}" for flag, port in ports.items()]
    if object_store_mb:
        cmd.append(f"--object-store-memory={int(object_store_mb) * 1024 * 1024}")
    if head:
        cmd += ["--head", "--include-dashboard=false"]
    else:
        cmd.append(f"--address={address}")
    env = ray_env()
    # Serve is shut down by the launcher before we stop nodes: SIGTERM should tear down at once, not
    # "drain for up to 30 s" waiting on leases nobody will return.
    env["RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S"] = "0"
    env["CUDA_VISIBLE_DEVICES"] = spec.cuda_visible_devices
    env["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"  # so CUDA's numbering is nvidia-smi's
    env.pop("RAY_ADDRESS", None)
    temp_dir.mkdir(parents=True, exist_ok=True)
    # Ray's workers (the Serve replicas among them) inherit the node's working directory and write relative
    # paths there (the Twinkle server's `outputs/` checkpoints): keep them in our state folder, not in
    # whatever directory the person started the assistant from.
    child, created = spawn_logged(
        cmd, log_path=log_path, marker=f"ray node {spec.role}", env=env, cwd=temp_dir.parent
    )
    ctime = created if created is not None else time.time()
    return NodeProc(
        spec.role, child.pid, ctime, str(temp_dir), spec.num_gpus, spec.cuda_visible_devices, str(log_path)
    )


def _wait_node(node: NodeProc, timeout: float) -> None:
    log = Path(node.log)
    deadline = time.monotonic() + timeout
    offset = 0
    try:
        offset = log.read_text(errors="replace").rfind(f"ray node {node.role} at")
    except OSError:
        offset = 0
    while time.monotonic() < deadline:
        try:
            text = log.read_text(encoding="utf-8", errors="replace")
        except OSError:
            text = ""
        if READY_LINE in text[max(0, offset) :]:
            return
        if not is_our_process(node.pid, node.create_time):
            _reap(node.pid)
            raise ClusterError(f"ray node {node.role!r} exited during start-up: {_last_error_line(log)}")
        time.sleep(0.2)
    raise ClusterError(f"ray node {node.role!r} not up within {timeout:.0f}s (log: {log})")


def start_cluster(
    home: str | Path | None,
    specs: list[NodeSpec],
    *,
    host: str = "127.0.0.1",
    timeout: float = NODE_START_TIMEOUT_S,
    object_store_mb: int | None = None,
) -> Cluster:
    """Start our head and workers (in that order); on any failure stop what was started and raise."""
    if not ray_available():
        raise ClusterError(
            "Ray is not installed; install the server extra: pip install 'twinkle-auto[server]'"
        )
    if not specs or specs[0].role != "head":
        raise ValueError("the first node spec must be the head")
    base = auto_dir(home)
    root, short = _temp_root(base.parent)
    # Every node's ports at once, so no two of them (nor two nodes started side by side) share one.
    flags = [(i, flag) for i in range(len(specs)) for flag in NODE_PORTS + (HEAD_PORTS if i == 0 else ())]
    ports: list[dict[str, int]] = [{} for _ in specs]
    for (i, flag), port in zip(flags, free_ports(len(flags), host), strict=True):
        ports[i][flag] = port
    address = f"{host}:{ports[0]['--port']}"
    cluster = Cluster(address, True, [], str(short) if short else str(root), time.time())
    try:
        # The head first (workers need its address), then every worker at once: they start in parallel.
        for i, spec in enumerate(specs):
            node = _start_node(
                spec,
                head=i == 0,
                address=None if i == 0 else address,
                temp_dir=root / ("head" if i == 0 else f"worker-{i}"),
                log_path=base / f"ray-{'head' if i == 0 else f'worker-{i}'}.log",
                host=host,
                ports=ports[i],
                object_store_mb=object_store_mb,
            )
            cluster.nodes.append(node)
            save_cluster(home, cluster)
            if i == 0:
                _wait_node(node, timeout)
        for node in cluster.nodes[1:]:
            _wait_node(node, timeout)
    except BaseException:
        stop_cluster(home, cluster)
        raise
    return cluster


def probe_gcs(address: str, *, timeout: float = JOIN_PROBE_S, advice: str = "") -> None:
    """Raise a one-line ClusterError unless something accepts a connection at `address` (host:port).

    Why: Ray retries an absent GCS for minutes; saying so before anything is launched or queried turns
    a start timeout into a message the person can act on.
    """
    host, _, port = address.rpartition(":")
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ClusterError(f"ray address {address!r} must be host:port, with a port of 1-65535")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as exc:
        raise ClusterError(
            f"no Ray cluster answers at {address} ({exc.strerror or exc}); start it with "
            f"`ray start --head --port {port}`{' ' + advice if advice else ''}"
        ) from None


def join_cluster(home: str | Path | None, address: str) -> Cluster:
    """Record a cluster the person runs (multi-node setups): used, reported, never stopped by us."""
    address = address.strip()
    if address.startswith("ray://"):
        raise ClusterError("join by the GCS address (host:port, as `ray start --head` prints), not ray://")
    if ":" not in address:
        raise ClusterError(f"ray address {address!r} must be host:port")
    probe_gcs(address, advice="or leave ray_address out to let us start our own")
    cluster = Cluster(address, False, [], None, time.time())
    save_cluster(home, cluster)
    return cluster


def stop_cluster(home: str | Path | None, cluster: Cluster, *, grace: float = STOP_GRACE_S) -> list[int]:
    """Stop the nodes we started (workers first, head last), by recorded pid; forget a joined one."""
    signalled: list[int] = []
    if cluster.owned:
        for node in reversed(cluster.nodes[1:]):
            signalled += stop_session(node.pid, node.create_time, grace=grace)
        if cluster.nodes:
            signalled += stop_session(cluster.nodes[0].pid, cluster.nodes[0].create_time, grace=grace)
        if cluster.temp_root and Path(cluster.temp_root).is_dir():
            shutil.rmtree(cluster.temp_root, ignore_errors=True)
    clear_cluster(home)
    return signalled


def cluster_processes(cluster: Cluster) -> list[psutil.Process]:
    """Every live process of the nodes we started (empty for a joined cluster)."""
    if not cluster.owned:
        return []
    procs: list[psutil.Process] = []
    for node in cluster.nodes:
        procs += session_members(node.pid, node.create_time)
    return procs


# ----------------------------------------------------------------------------------------------- state
def cluster_file(home: str | Path | None) -> Path:
    return auto_dir(home) / CLUSTER_STATE


def save_cluster(home: str | Path | None, cluster: Cluster) -> None:
    atomic_write_json(cluster_file(home), cluster.as_dict())


def load_cluster(home: str | Path | None) -> Cluster | None:
    path = cluster_file(home)
    if not path.exists():
        return None
    try:
        return Cluster.from_dict(read_json_file(path))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def clear_cluster(home: str | Path | None) -> None:
    try:
        cluster_file(home).unlink()
    except FileNotFoundError:
        pass


# ----------------------------------------------------------------------------------------------- query
_QUERY_SCRIPT = r"""
import json, logging, sys
import ray
ray.init(address=sys.argv[1], logging_level=logging.ERROR, log_to_driver=False, configure_logging=False)
nodes = [
    {"node_id": n["NodeID"][:12], "ip": n["NodeManagerAddress"], "alive": n["Alive"],
     "resources": {k: v for k, v in n["Resources"].items() if not k.startswith("node:")},
     "socket": n.get("RayletSocketName", "")}
    for n in ray.nodes()
]
print("@@" + json.dumps({"nodes": nodes, "total": ray.cluster_resources(), "available": ray.available_resources()}))
"""


_PLACEMENT_GROUP = re.compile(r"_group_(?:\d+_)?[0-9a-f]{16,}$")
"""Ray's per-placement-group resources ("CPU_group_0_<id>", "bundle_group_<id>"): one of each per
deployment replica, so a Serve app of three replicas added twelve keys (1,900 characters for the model to
read) to the four that say what the cluster has."""


def _bookkeeping(resource: str) -> bool:
    """Whether a resource name is Ray's own accounting (per node, per placement group), not capacity."""
    return resource.startswith("node:") or bool(_PLACEMENT_GROUP.search(resource))


def query_cluster(address: str, *, timeout: float = 45.0) -> dict[str, Any]:
    """Nodes and resources of a running cluster, asked from a short-lived driver in a subprocess (so
    this process never becomes a Ray driver and keeps no Ray threads)."""
    if not ray_available():
        raise ClusterError(
            "Ray is not installed; install the server extra: pip install 'twinkle-auto[server]'"
        )
    probe_gcs(address, timeout=3)
    env = ray_env()
    env.pop("RAY_ADDRESS", None)
    try:
        proc = subprocess.run(
            [sys.executable, "-c", _QUERY_SCRIPT, address],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        raise ClusterError(f"Ray cluster at {address} did not answer within {timeout:.0f}s") from None
    for line in proc.stdout.splitlines():
        if line.startswith("@@"):
            data = json.loads(line[2:])
            for key in ("total", "available"):
                data[key] = {k: v for k, v in data[key].items() if not _bookkeeping(k)}
            return data
    detail = [ln for ln in (proc.stderr or "").splitlines() if ln.strip()]
    raise ClusterError(f"cannot reach Ray at {address}: {(detail[-1] if detail else 'no answer')[:300]}")
