"""A persistent local Ray cluster: ``lumos up`` / ``lumos down`` / ``lumos status``.

Without it every ``lumos`` command starts and stops an embedded cluster (seconds to
tens of seconds each, and detached services such as the RAG shards reload every
time). ``up`` starts one head node with Ray's CLI (loopback only, token auth as Ray
2.60 enables by default, its own temp dir, explicit ports) and records it in
``$LUMOS_HOME/cluster.json`` (0600): address, dashboard (Jobs API) URL, temp dir and
the PIDs of its processes. :func:`lumos_ray.runtime.connect` reads that file when no
address is given, so later commands and ``lumos_ray.connect()`` attach to it. ``down``
stops it by PID (the recorded processes, every process naming its temp dir, and their
descendants), never with ``ray stop``, which would stop every Ray cluster of the user.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from lumos_ray._files import private_dir, write_private_text
from lumos_ray.errors import ConfigError
from lumos_ray.runtime._nodes import (
    MAX_TEMP_DIR_CHARS,
    NodeProcess,
    node_processes,
    start_ray_node,
    stop_processes,
)
from lumos_ray.runtime._up_state import (
    home_dir,
    local_cluster_address,
    read_cluster_state,
    state_path,
    use_token_auth,
)
from lumos_ray.runtime._worker_bytecode import worker_bytecode_env

__all__ = ["cluster_down", "cluster_status", "cluster_up"]


def _temp_dir(home: Path) -> str:
    """``$LUMOS_HOME/ray`` when short enough for Ray's socket paths, else a fresh
    directory under the system temp dir (recorded, and removed by ``down``)."""
    candidate = home / "ray"
    if len(str(candidate)) <= MAX_TEMP_DIR_CHARS:
        candidate.mkdir(parents=True, exist_ok=True, mode=0o700)
        return str(candidate)
    return tempfile.mkdtemp(prefix="lumos-up-")


def cluster_up(
    home: str | Path | None = None, *, num_cpus: int | None = None, dashboard: bool = True
) -> dict[str, Any]:
    """Start the local cluster (or return the running one: ``already_running``)."""
    root = home_dir(home)
    private_dir(root)
    state = read_cluster_state(root)
    if state and local_cluster_address(root):
        return {**state, "already_running": True}
    if state:  # stale: its processes are gone or unreachable; clear what is left
        cluster_down(root)
    temp = _temp_dir(root)
    paths = [os.getcwd(), *[p for p in sys.path if p and os.path.isdir(p)]]
    t0 = time.monotonic()
    node = start_ray_node(
        temp,
        head=True,
        num_cpus=num_cpus,
        dashboard=dashboard,
        # Workers import the user's modules (function steps, tools) as an embedded
        # cluster's do: from the directory `lumos up` ran in.
        # Its workers keep compiled bytecode under the home (_worker_bytecode).
        env={"PYTHONPATH": os.pathsep.join(dict.fromkeys(paths)), **worker_bytecode_env(root)},
    )
    state = {
        "address": node.gcs_address,
        "dashboard_url": node.dashboard_url,
        "temp_dir": node.temp_dir,
        "processes": [p.to_dict() for p in node.processes],
        "started_at": time.time(),
        "start_s": round(time.monotonic() - t0, 2),
        "auth": "token",
        "home": str(root),
    }
    write_private_text(state_path(root), json.dumps(state, indent=2))
    return {**state, "already_running": False}


def cluster_down(home: str | Path | None = None, *, grace_s: float = 10.0) -> dict[str, Any]:
    """Stop the cluster by PID; returns what was stopped and what is left (should be
    nothing: ``left`` lists PIDs still alive afterwards)."""
    root = home_dir(home)
    state = read_cluster_state(root)
    if not state:
        return {"stopped": False, "reason": f"no cluster recorded in {state_path(root)}"}
    recorded = [
        NodeProcess(int(p["pid"]), float(p["create_time"]), str(p.get("name", "")))
        for p in state.get("processes", [])
    ]
    temp = str(state.get("temp_dir") or "")
    current = node_processes(temp) if temp else []
    signalled = stop_processes([*recorded, *current], grace_s=grace_s)
    left = [p.pid for p in node_processes(temp)] if temp else []
    if not left:
        state_path(root).unlink(missing_ok=True)
        if temp:
            shutil.rmtree(temp, ignore_errors=True)
    return {"stopped": True, "address": state["address"], "pids": signalled, "left": left}


def cluster_status(home: str | Path | None = None) -> dict[str, Any]:
    """The recorded cluster, whether it answers, and (when it does) its nodes and
    resources as Ray reports them (this process connects to it to ask)."""
    root = home_dir(home)
    state = read_cluster_state(root)
    if not state:
        raise ConfigError(
            f"No local cluster is recorded in {state_path(root)}.",
            fix="Start one with `lumos up` (commands without it use an embedded cluster).",
        )
    out: dict[str, Any] = {
        "address": state["address"],
        "dashboard_url": state.get("dashboard_url"),
        "temp_dir": state.get("temp_dir"),
        "pids": [p["pid"] for p in state.get("processes", [])],
        "running": local_cluster_address(root) is not None,
    }
    if not out["running"]:
        out["nodes"] = []
        return out
    use_token_auth()  # before Ray is imported: Ray reads the mode once
    import ray

    from lumos_ray.runtime._cluster import connect

    connect(address=state["address"])
    out["nodes"] = [
        {
            "node_id": n["NodeID"],
            "alive": bool(n["Alive"]),
            "address": n.get("NodeManagerAddress"),
            "resources": {k: float(v) for k, v in (n.get("Resources") or {}).items()},
            # What placements select nodes by (Ray's own ray.io/* labels left out).
            "labels": {
                k: str(v)
                for k, v in (n.get("Labels") or {}).items()
                if not str(k).startswith("ray.io/")
            },
        }
        for n in ray.nodes()
    ]
    out["resources"] = {k: float(v) for k, v in ray.cluster_resources().items()}
    out["available"] = {k: float(v) for k, v in ray.available_resources().items()}
    return out
