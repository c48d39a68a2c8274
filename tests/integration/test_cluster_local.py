"""`lumos up` starts a persistent local cluster that later commands use; `lumos down`
leaves no Ray process behind (checked by PID: the recorded processes, and any process
that names the cluster's temp dir). The CLI runs as separate processes, as a user runs
it; the end-to-end time of a RAG query against the up cluster is printed (not asserted)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from lumos_ray.runtime._nodes import node_processes
from tests.integration._priority import boosted, restore_priority

LUMOS = str(Path(sys.executable).with_name("lumos"))


def _lumos(home: str, *args: str, timeout: float = 600, boost: bool = False) -> dict[str, Any]:
    env = {**os.environ, "LUMOS_HOME": home}
    for var in ("LUMOS_RAY_ADDRESS", "RAY_ADDRESS", "LUMOS_STORE_URL"):
        env.pop(var, None)
    with boosted() if boost else contextlib.nullcontext():
        out = subprocess.run(
            [LUMOS, *args, "--json"], env=env, capture_output=True, text=True, timeout=timeout
        )
    assert out.returncode == 0, f"lumos {' '.join(args)} failed:\n{out.stdout}\n{out.stderr}"
    return json.loads(out.stdout)


def _alive(proc: dict[str, Any]) -> bool:
    try:
        p = psutil.Process(int(proc["pid"]))
        return abs(p.create_time() - float(proc["create_time"])) < 0.01 and p.is_running()
    except psutil.Error:
        return False


def _naming(temp_dir: str) -> list[int]:
    found = []
    for p in psutil.process_iter(["cmdline"]):
        try:
            if temp_dir in " ".join(p.info.get("cmdline") or []):
                found.append(p.pid)
        except psutil.Error:
            continue
    return found


@pytest.fixture(scope="module")
def up_home() -> Iterator[str]:
    """A short LUMOS_HOME (Ray's socket paths live under its temp dir)."""
    home = tempfile.mkdtemp(prefix="lu-")
    yield home
    # Whatever the test did, nothing of this cluster survives it.
    from lumos_ray.runtime import cluster_down

    cluster_down(home)
    shutil.rmtree(home, ignore_errors=True)


def test_up_cli_commands_use_it_and_down_leaves_no_ray_process(up_home: str) -> None:
    # No dashboard: fewer processes to start on a loaded machine (the Jobs API is
    # exercised on the two-node cluster in test_cluster_multinode.py).
    state = _lumos(up_home, "up", "--num-cpus", "2", "--no-dashboard", boost=True)
    restore_priority(state["temp_dir"])
    assert state["already_running"] is False
    assert state["address"].startswith("127.0.0.1:")
    assert Path(up_home, "cluster.json").is_file()
    recorded = state["processes"]
    assert recorded and all(_alive(p) for p in recorded)
    # Loopback only: every listening socket of the cluster's processes is on 127.0.0.1.
    listening = set()
    for p in node_processes(state["temp_dir"]):
        with contextlib.suppress(psutil.Error):
            listening |= {
                c.laddr.ip for c in p.net_connections(kind="inet") if c.status == "LISTEN"
            }
    assert listening and listening <= {"127.0.0.1", "::ffff:127.0.0.1"}, listening
    # A second `up` finds it rather than starting another.
    assert _lumos(up_home, "up")["already_running"] is True

    status = _lumos(up_home, "status")
    assert status["running"] is True and status["address"] == state["address"]
    assert len(status["nodes"]) == 1 and status["nodes"][0]["alive"]
    assert status["resources"]["CPU"] == 2.0

    docs = Path(up_home, "docs")
    docs.mkdir()
    (docs / "ray.md").write_text("Ray schedules actors and tasks across the nodes of a cluster.")
    (docs / "flower.md").write_text("Flower runs federated learning rounds across sites.")
    _lumos(up_home, "rag", "ingest", str(docs), "--collection", "ops")
    timings = []
    for _ in range(3):
        t0 = time.perf_counter()
        res = _lumos(up_home, "rag", "query", "Which system schedules actors?", "-c", "ops")
        timings.append(time.perf_counter() - t0)
    hits = res["hits"] if isinstance(res, dict) else res
    assert any("ray.md" in json.dumps(h) for h in hits), res
    print(f"\nlumos rag query end-to-end against `lumos up`: {[round(t, 2) for t in timings]} s")

    # The commands ran on the up cluster: its RAG actors live there now, and a
    # plain lumos_ray.connect() (no address) attaches to it.
    probe = subprocess.run(
        [
            sys.executable,
            "-c",
            "import json, lumos_ray; info = lumos_ray.connect(); import ray; "
            "names = [a['name'] for a in ray.util.list_named_actors(all_namespaces=True)]; "
            "print(json.dumps({'embedded': info.embedded, 'names': names}))",
        ],
        env={**os.environ, "LUMOS_HOME": up_home},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert probe.returncode == 0, probe.stderr
    seen = json.loads(probe.stdout.strip().splitlines()[-1])
    assert seen["embedded"] is False
    assert any("rag" in n for n in seen["names"]), seen

    down = _lumos(up_home, "down")
    assert down["stopped"] is True and down["left"] == []
    assert not [p["pid"] for p in recorded if _alive(p)]
    assert _naming(state["temp_dir"]) == []
    assert not Path(up_home, "cluster.json").exists()
    assert _lumos(up_home, "down")["stopped"] is False
