"""Two Ray nodes on one machine (`ray start --head` + `ray start --address`, each with
its own temp dir and ports, stopped by PID), the run store on a real PostgreSQL server.

A durable workflow's steps are placed on the worker node by its custom resource; the
worker node is killed (SIGKILL, every one of its processes) while a step runs there; a
replacement node with the same resource joins, and the run finishes with every step
checkpointed once and no finished step executed again (an effect file counts each
execution). `lumos submit` and `lumos finetune submit` then run as Ray jobs on the
same cluster through its Jobs API.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import pytest

from lumos_ray.runtime._nodes import RayNode, node_processes, start_ray_node, stop_processes
from tests.integration._priority import boosted, restore_priority

pytestmark = [pytest.mark.slow, pytest.mark.timeout(2400)]

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
WORKER_RESOURCE = {"worker_node": 1.0}
STEP_SLEEP_S = 60.0  # step b runs this long on the worker: the kill lands inside it
WAIT_S = 600.0


@dataclass
class TwoNodes:
    home: str
    env: dict[str, str]
    head: RayNode
    workers: list[RayNode] = field(default_factory=list)

    def add_worker(self) -> RayNode:
        i = len(self.workers) + 1
        with boosted():
            node = start_ray_node(
                f"{self.home}/w{i}",
                head=False,
                address=self.head.gcs_address,
                num_cpus=1,
                resources=WORKER_RESOURCE,
                env=self.env,
            )
        restore_priority(node.temp_dir)
        self.workers.append(node)
        return node


def _stop(node: RayNode) -> None:
    stop_processes([*node.processes, *node_processes(node.temp_dir)], grace_s=5)


@pytest.fixture(scope="module")
def two_nodes(request: pytest.FixtureRequest) -> Iterator[TwoNodes]:
    server = request.getfixturevalue("postgres_server")
    home = tempfile.mkdtemp(prefix="l2-")  # short: Ray's socket paths live under it
    env = {
        "LUMOS_HOME": home,
        "LUMOS_STORE_URL": server.create_database("lumos_two_nodes"),
        "PYTHONPATH": str(ROOT),  # the workers import tests.integration._cluster_steps
        "RAY_AUTH_MODE": "token",
    }
    with boosted():
        head = start_ray_node(f"{home}/h", head=True, multi_node=True, num_cpus=2, env=env)
    restore_priority(head.temp_dir)
    cluster = TwoNodes(home=home, env=env, head=head)
    try:
        cluster.add_worker()
        yield cluster
    finally:
        for node in [*cluster.workers, head]:
            _stop(node)
        shutil.rmtree(home, ignore_errors=True)


def _child_env(cluster: TwoNodes) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "LUMOS_"))}
    return {**env, **cluster.env}


def _effects(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _wait_for(pred: Any, what: str, timeout_s: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not pred():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.5)


def _kill_node(node: RayNode) -> list[int]:
    """A crash: SIGKILL every process of the node at once (no graceful shutdown)."""
    procs = node_processes(node.temp_dir)
    for p in procs:
        try:
            p.send_signal(signal.SIGKILL)
        except psutil.Error:
            pass
    psutil.wait_procs(procs, timeout=10)
    return [p.pid for p in procs]


def test_run_finishes_after_the_worker_node_dies_mid_step(two_nodes: TwoNodes) -> None:
    cluster = two_nodes
    first = cluster.workers[-1]
    log = Path(cluster.home) / "effects.jsonl"
    driver = subprocess.Popen(
        [
            sys.executable,
            str(ROOT / "tests" / "integration" / "_cluster_driver.py"),
            cluster.head.gcs_address,
            str(log),
            str(STEP_SLEEP_S),
        ],
        cwd=ROOT,
        env=_child_env(cluster),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _wait_for(
            lambda: any(e["step"] == "b" and e["event"] == "start" for e in _effects(log)),
            "step b to start on the worker node",
        )
        started = [e for e in _effects(log) if e["event"] == "start"]
        assert {e["step"]: e["node"] for e in started} == {
            "a": first.temp_dir,
            "b": first.temp_dir,
        }
        killed = _kill_node(first)
        assert killed and not node_processes(first.temp_dir)
        replacement = cluster.add_worker()
        out, err = driver.communicate(timeout=WAIT_S)
    finally:
        if driver.poll() is None:
            driver.kill()
    assert driver.returncode == 0, err[-4000:]
    result = json.loads(out.strip().splitlines()[-1])
    assert result["status"] == "succeeded", result
    effects = _effects(log)
    done = [(e["step"], e["node"]) for e in effects if e["event"] == "done"]
    # Every step finished exactly once; b's finished run is the one on the replacement.
    assert done == [
        ("a", first.temp_dir),
        ("b", replacement.temp_dir),
        ("c", done[2][1]),
    ], effects
    starts = [e["step"] for e in effects if e["event"] == "start"]
    # a (finished and checkpointed before the kill) never ran again; b ran again only
    # because its first execution died with the node before it finished.
    assert starts == ["a", "b", "b", "c"], effects
    assert result["checkpoints"] == ["0.a", "1.b", "2.c"], result  # one per step
    assert result["output"]["b"]["node"] == replacement.temp_dir


def _lumos(cluster: TwoNodes, *args: str) -> Any:
    proc = subprocess.run(
        [str(BIN / "lumos"), *args, "--json"],
        cwd=ROOT,
        env=_child_env(cluster),
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert proc.returncode == 0, f"lumos {args}: {proc.stdout}\n{proc.stderr[-3000:]}"
    return json.loads(proc.stdout)


def test_lumos_submit_and_finetune_submit_run_on_the_two_node_cluster(
    two_nodes: TwoNodes, tmp_path: Path
) -> None:
    from lumos_ray.finetune._demo import write_color_dataset
    from lumos_ray.models import tiny_model_path

    cluster = two_nodes
    jobs = cluster.head.dashboard_url
    assert jobs is not None
    wf = tmp_path / "sum.yaml"
    wf.write_text(
        "name: two-node-sum\nsteps:\n"
        "  - {id: total, tool: calculator, args: {expression: '40 + 2'}}\n"
    )
    res = _lumos(cluster, "submit", str(wf), "--address", jobs, "--wait")
    assert res["status"] == "SUCCEEDED", res
    assert "42" in json.dumps(res["result"]), res

    data = write_color_dataset(tmp_path / "colors.jsonl", 24)
    job = tmp_path / "job.yaml"
    job.write_text(
        f"""
name: two-node-tiny
base_model: {tiny_model_path()}
dataset: {{path: {data.name}}}
training: {{max_steps: 4, batch_size: 4, seq_len: 32, eval_every_steps: 4}}
scaling: {{num_workers: 1, cpus_per_worker: 1}}
checkpoint: {{every_steps: 4, keep: 1}}
output: {{storage_dir: runs, registry_dir: registry, adapter_name: two-node-tiny}}
"""
    )
    ft = _lumos(cluster, "finetune", "submit", str(job), "--address", jobs, "--wait")
    assert ft["status"] == "SUCCEEDED", ft
    assert ft["metrics"]["step"] == 4
