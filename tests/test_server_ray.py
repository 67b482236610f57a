"""A real Ray cluster with declared GPUs (marker `ray`): partitions land as planned, and stopping ours
leaves any other Ray on the machine alone. Every cluster a test starts is stopped by pid in teardown.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from stubs.server_helpers import alive, fake_server_cmd, free_port

from twinkle_auto.server import cluster as rc
from twinkle_auto.server.gpus import GPU
from twinkle_auto.server.manager import ServerError, ServerManager, StartRequest
from twinkle_auto.server.plan import SamplerRequest, plan_allocation

pytestmark = [
    pytest.mark.ray,
    pytest.mark.slow,
    pytest.mark.skipif(
        importlib.util.find_spec("ray") is None, reason="ray not installed (pip install 'ray[serve]')"
    ),
]

DRIVER = textwrap.dedent(
    """
    import json, os, sys, logging
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
    ray.init(address=sys.argv[1], logging_level=logging.ERROR, log_to_driver=False)

    @ray.remote
    def visible():
        return os.environ.get("CUDA_VISIBLE_DEVICES")

    out = {}
    for node in ray.nodes():
        gpus = int(node["Resources"].get("GPU", 0))
        where = NodeAffinitySchedulingStrategy(node["NodeID"], soft=False)
        task = visible.options(num_gpus=gpus, num_cpus=0, scheduling_strategy=where)
        role = node["RayletSocketName"].split("/session_")[0].rsplit("/", 1)[-1]
        out[role] = ray.get(task.remote(), timeout=120)
    out["GPU"] = ray.cluster_resources().get("GPU", 0)
    print("@@" + json.dumps(out))
    """
)


@pytest.fixture
def foreign_ray() -> Iterator[tuple[int, float]]:
    """Someone else's Ray head on this machine, started the way a person would (`ray start --head`)."""
    temp = tempfile.mkdtemp(prefix="tw-foreign-", dir="/tmp")
    log = open(Path(temp) / "head.log", "wb")  # noqa: SIM115 - closed in teardown
    cmd = [sys.executable, "-m", "ray.scripts.scripts", "start", "--head", "--block", f"--temp-dir={temp}"]
    cmd += [f"--port={free_port()}", f"--ray-client-server-port={free_port()}", "--include-dashboard=false"]
    cmd += [f"--dashboard-agent-listen-port={free_port()}", "--num-cpus=1", "--object-store-memory=100000000"]
    cmd += ["--node-ip-address=127.0.0.1", "--disable-usage-stats"]
    proc = subprocess.Popen(
        cmd, stdout=log, stderr=subprocess.STDOUT, env=rc.ray_env(), start_new_session=True
    )
    ctime = rc.psutil.Process(proc.pid).create_time()
    deadline = time.monotonic() + 90
    while rc.READY_LINE not in (Path(temp) / "head.log").read_text(errors="replace"):
        assert proc.poll() is None and time.monotonic() < deadline, (Path(temp) / "head.log").read_text()
        time.sleep(0.2)
    yield proc.pid, ctime
    rc.stop_session(proc.pid, ctime, grace=15)
    proc.wait(10)
    log.close()
    subprocess.run(["rm", "-rf", temp], check=False)


def test_partitions_land_as_planned_and_other_ray_survives(
    home: Path, foreign_ray: tuple[int, float]
) -> None:
    gpus = [GPU(i, "H100", 81559, 0, 0) for i in range(4)]
    plan = plan_allocation(gpus, model_id="m", train_gpus=3, samplers=[SamplerRequest("s", gpus=1)])
    specs = rc.node_specs(plan, head_cpus=2)
    assert [(s.num_gpus, s.cuda_visible_devices) for s in specs] == [(0, ""), (3, "0,1,2"), (1, "3")]
    t0 = time.monotonic()
    cluster = rc.start_cluster(home, specs, object_store_mb=100)
    started_s = time.monotonic() - t0
    try:
        assert rc.load_cluster(home).address == cluster.address  # recorded in cluster.json
        out = subprocess.run(
            [sys.executable, "-c", DRIVER, cluster.address],
            capture_output=True,
            text=True,
            timeout=240,
            env=rc.ray_env(),
        )
        line = next((ln for ln in out.stdout.splitlines() if ln.startswith("@@")), None)
        assert line, out.stderr[-3000:]
        seen = json.loads(line[2:])
        assert seen["GPU"] == 4
        # Each node's tasks see only its partition (Ray may list the ids in any order).
        assert sorted(seen["worker-1"].split(",")) == ["0", "1", "2"] and seen["worker-2"] == "3"
        info = rc.query_cluster(cluster.address)
        assert sorted(n["resources"].get("GPU", 0) for n in info["nodes"]) == [0, 1, 3]
    finally:
        ours = [p.pid for p in rc.cluster_processes(cluster)]
        t1 = time.monotonic()
        rc.stop_cluster(home, cluster)
        stopped_s = time.monotonic() - t1
    assert alive(ours) == []
    assert rc.load_cluster(home) is None
    leader, ctime = foreign_ray
    assert rc.is_our_process(leader, ctime), "the other Ray head must survive our shutdown"
    assert len(rc.session_members(leader, ctime)) >= 3  # its gcs_server and raylet too
    print(f"\n3-node cluster: start {started_s:.1f}s, stop {stopped_s:.1f}s")


def test_pipeline_on_a_real_head_cleans_up_after_a_dying_server(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    recorded: list[int] = []
    save = rc.save_cluster

    def spy(h: object, cluster: rc.Cluster) -> None:
        recorded.extend(n.pid for n in cluster.nodes)
        save(h, cluster)

    monkeypatch.setattr(rc, "save_cluster", spy)
    mgr = ServerManager(
        home, server_command=fake_server_cmd(), head_cpus=2, object_store_mb=100, ready_timeout=60
    )
    monkeypatch.setenv("FAKE_MODE", "die")
    monkeypatch.setenv("FAKE_DELAY", "1")
    try:
        with pytest.raises(ServerError, match="exited during start-up"):
            mgr.start(StartRequest(backend="mock", port=free_port()))
        assert recorded and alive(recorded) == [] and mgr.processes() == []

        monkeypatch.setenv("FAKE_MODE", "ok")
        out = mgr.start(StartRequest(backend="mock", port=free_port()))
        assert out["status"] == "started" and out["ray"]["ours"] is True
        launcher_and_nodes = [p.pid for p in mgr.processes()]
        assert os.getsid(launcher_and_nodes[0]) == launcher_and_nodes[0]
        assert mgr.shutdown()["status"] == "stopped"
        assert alive(launcher_and_nodes) == []
    finally:
        mgr.shutdown()
