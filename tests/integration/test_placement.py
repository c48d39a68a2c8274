"""Placement on two Ray nodes on one machine: a head, and a worker node that offers
the custom resource ``site_a`` and carries the label ``zone=a`` (``ray start
--resources/--labels``; each node with its own temp dir and ports, stopped by PID).

A driver process (``_placement_driver.py``) connects to that cluster and starts, from
the project's own config: a RAG collection whose placement selects ``zone=a`` (its
router and both shards must run on the worker node), one with ``strategy: spread``
(its two shards on two different nodes), and an agent that asks for ``site_a``
(``Resources.resources``: on the worker node). Each actor reports, from inside its own
process, the id of the node it runs on.
"""

from __future__ import annotations

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

import pytest

from lumos_ray.runtime._nodes import RayNode, node_processes, start_ray_node, stop_processes
from tests.integration._priority import boosted, restore_priority

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

ROOT = Path(__file__).resolve().parents[2]


def _stop(node: RayNode) -> None:
    stop_processes([*node.processes, *node_processes(node.temp_dir)], grace_s=5)


@pytest.fixture(scope="module")
def placed() -> Iterator[dict[str, Any]]:
    """The two nodes, and what the driver reported about them and its actors."""
    home = tempfile.mkdtemp(prefix="lp-")  # short: Ray's socket paths live under it
    env = {
        "LUMOS_HOME": home,
        "PYTHONPATH": str(ROOT),
        "RAY_AUTH_MODE": "token",
    }
    nodes: list[RayNode] = []
    t0 = time.monotonic()
    try:
        with boosted():
            head = start_ray_node(
                f"{home}/h", head=True, multi_node=True, num_cpus=2, dashboard=False, env=env
            )
        nodes.append(head)
        restore_priority(head.temp_dir)
        with boosted():
            worker = start_ray_node(
                f"{home}/w",
                head=False,
                address=head.gcs_address,
                num_cpus=2,  # 2 workers start at once (Ray starts at most num_cpus at a time)
                resources={"site_a": 1.0},
                labels={"zone": "a"},
                env=env,
            )
        nodes.append(worker)
        restore_priority(worker.temp_dir)
        t_nodes = time.monotonic() - t0
        child_env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "LUMOS_"))}
        proc = subprocess.run(
            [
                sys.executable,
                str(ROOT / "tests" / "integration" / "_placement_driver.py"),
                head.gcs_address,
            ],
            cwd=ROOT,
            env={**child_env, **env},
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert proc.returncode == 0, proc.stderr[-4000:]
        t_driver = time.monotonic() - t0 - t_nodes
        print(f"[placement] nodes up in {t_nodes:.1f} s, driver {t_driver:.1f} s")
        yield json.loads(proc.stdout.strip().splitlines()[-1])
    finally:
        for node in reversed(nodes):
            _stop(node)
        shutil.rmtree(home, ignore_errors=True)


def _labelled(report: dict[str, Any], key: str, value: str) -> str:
    (node,) = [n for n, labels in report["nodes"].items() if labels.get(key) == value]
    return str(node)


def test_rag_router_and_shards_run_on_the_node_their_label_selects(
    placed: dict[str, Any],
) -> None:
    assert len(placed["nodes"]) == 2
    zone_a = _labelled(placed, "zone", "a")
    assert placed["pinned"]["shards"] == [zone_a, zone_a]
    assert placed["pinned"]["router"] == zone_a


def test_spread_places_a_collections_two_shards_on_two_nodes(placed: dict[str, Any]) -> None:
    assert set(placed["spread"]["shards"]) == set(placed["nodes"])


def test_agent_asking_for_a_custom_resource_runs_on_the_node_that_offers_it(
    placed: dict[str, Any],
) -> None:
    assert placed["agent"] == _labelled(placed, "zone", "a")  # the node started with site_a


def test_agent_placed_by_node_label_runs_on_the_labelled_node(placed: dict[str, Any]) -> None:
    assert placed["agent_by_label"] == _labelled(placed, "zone", "a")
