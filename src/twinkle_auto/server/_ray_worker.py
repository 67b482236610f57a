"""`ray start` for a worker node on this machine's loopback address (run as `python -m …`).

Why this exists: several Ray nodes on one machine, each with its own CUDA_VISIBLE_DEVICES partition,
is how GPU apps get disjoint GPUs (Twinkle's placement bundle also takes half a node's CPUs, so two GPU
apps cannot share one node). Ray 2.x lets a worker node join only when RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER
is on, and that same switch makes Ray rewrite 127.0.0.1 into the machine's network address, which puts
the cluster on the network. Here the switch is on for the join check alone, while addresses keep the
loopback behaviour they have with the switch off: the node, like the head, lives on 127.0.0.1.
Processes the node spawns inherit RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 and need no patch.
"""

from __future__ import annotations

import sys


def main() -> None:
    from ray._private import ray_constants, services, worker
    from ray._raylet import get_localhost_ip

    def loopback_node_ip(address: str | None = None) -> str:
        if worker._global_node is not None:
            return worker._global_node.node_ip_address
        return get_localhost_ip()

    ray_constants.ENABLE_RAY_CLUSTER = True
    services.get_node_ip_address = loopback_node_ip
    from ray.scripts.scripts import main as ray_main

    sys.argv[0] = "ray"
    ray_main()


if __name__ == "__main__":
    main()
