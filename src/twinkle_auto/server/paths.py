"""Where the server pipeline keeps its files: all under `TWINKLE_HOME/auto/`, never in a run folder.

One place for the names, so that a restarted assistant (or a second one) finds the state, the lock, the
config and the log that an earlier one wrote.
"""

from __future__ import annotations

from pathlib import Path

from twinkle_auto.connection.store import RunStore

SERVER_STATE = "server.json"
"""What we started: launcher pid, URL, plan; written when a start begins, removed by shutdown."""
CLUSTER_STATE = "cluster.json"
"""The Ray nodes we started (leader pid + create time each) or the address of a cluster we joined."""
SERVER_CONFIG = "server_config.yaml"
SERVER_LOG = "server.log"
START_LOCK = "server.lock"
RAY_DIR = "ray"


def auto_dir(home: str | Path | None = None) -> Path:
    """`TWINKLE_HOME/auto`, created on demand (the run store's own notion of it)."""
    path = RunStore(home).auto_dir()
    path.mkdir(parents=True, exist_ok=True)
    return path
