"""The pieces of `lumos up` / `lumos down` that need no Ray: the address file and how
connect() honours it, process discovery and stop by PID (on real processes), and the
errors for what cannot work. The cluster itself: tests/integration/test_cluster_local.py."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from click.testing import CliRunner

from lumos_ray.errors import ConfigError, ConnectionFailedError
from lumos_ray.runtime import cluster_down, cluster_status, local_cluster_address
from lumos_ray.runtime._nodes import (
    MARKER_ENV,
    NodeProcess,
    RayNode,
    free_ports,
    node_processes,
    start_ray_node,
    stop_processes,
)


@pytest.fixture
def listener() -> Iterator[int]:
    """A real TCP listener on 127.0.0.1 standing in for a GCS port."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen()
    yield int(s.getsockname()[1])
    s.close()


def _record(home: Path, port: int) -> None:
    state = {"address": f"127.0.0.1:{port}", "temp_dir": str(home / "ray"), "processes": []}
    (home / "cluster.json").write_text(json.dumps(state))


def test_no_file_means_no_local_cluster(tmp_path: Path) -> None:
    assert local_cluster_address(tmp_path) is None
    down = cluster_down(tmp_path)
    assert down["stopped"] is False and "cluster.json" in down["reason"]
    with pytest.raises(ConfigError) as err:
        cluster_status(tmp_path)
    assert "lumos up" in err.value.fix


def test_address_file_is_used_only_while_the_cluster_answers(tmp_path: Path, listener: int) -> None:
    _record(tmp_path, listener)
    assert local_cluster_address(tmp_path) == f"127.0.0.1:{listener}"
    with socket.socket() as s:  # a port nobody listens on: a stale file
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    _record(tmp_path, dead)
    assert local_cluster_address(tmp_path) is None


def test_connect_settings_follow_the_file_unless_an_address_is_given(
    tmp_path: Path, listener: int
) -> None:
    # In a fresh process: the check switches Ray to token auth (RAY_AUTH_MODE) before
    # Ray is imported, as connect() does; in this test process, which imports Ray, that
    # would leave Ray's cached auth mode and the clusters later tests start disagreeing.
    _record(tmp_path, listener)
    code = f"""
import os
os.environ.pop("RAY_AUTH_MODE", None)
os.environ.pop("RAY_JOB_CONFIG_JSON_ENV_VAR", None)
from lumos_ray.config import LumosSettings
from lumos_ray.runtime._cluster import _with_local_cluster
settings, local = _with_local_cluster(LumosSettings(home={str(tmp_path)!r}))
assert local and settings.address == "127.0.0.1:{listener}" and not settings.embedded
assert os.environ["RAY_AUTH_MODE"] == "token"
for explicit in ("local", "auto", "ray://10.0.0.1:10001"):
    same, local = _with_local_cluster(LumosSettings(home={str(tmp_path)!r}, address=explicit))
    assert not local and same.address == explicit, (explicit, same.address)
print("ok")
"""
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stderr[-2000:]


def test_node_processes_finds_marked_processes_and_their_children_and_stops_them(
    tmp_path: Path,
) -> None:
    temp = str(tmp_path)
    code = "import subprocess, sys, time; subprocess.Popen(['sleep', '300']); time.sleep(300)"
    parent = subprocess.Popen([sys.executable, "-c", code], env={**os.environ, MARKER_ENV: temp})
    try:
        deadline = time.monotonic() + 30
        while len(node_processes(temp)) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        found = node_processes(temp)
        child_pids = [c.pid for c in psutil.Process(parent.pid).children()]
        assert {p.pid for p in found} == {parent.pid, *child_pids} and child_pids
        recorded = [NodeProcess.of(psutil.Process(parent.pid))]
        stopped = stop_processes(recorded, grace_s=5)
        assert set(stopped) == {parent.pid, *child_pids}
        assert node_processes(temp) == []
        assert recorded[0].alive() is None
    finally:
        if parent.poll() is None:
            parent.kill()


def test_a_recorded_pid_reused_by_another_process_is_not_signalled() -> None:
    me = psutil.Process(os.getpid())
    impostor = NodeProcess(pid=me.pid, create_time=me.create_time() - 100.0, name="raylet")
    assert impostor.alive() is None
    assert stop_processes([impostor], grace_s=1) == []


def test_a_temp_dir_too_long_for_rays_sockets_is_refused_before_anything_starts(
    tmp_path: Path,
) -> None:
    long_dir = tmp_path / ("x" * 60)
    with pytest.raises(ConnectionFailedError) as err:
        start_ray_node(long_dir, head=True)
    assert "too long" in err.value.message and "LUMOS_HOME" in err.value.fix
    assert not long_dir.exists()


def test_cli_lists_up_down_status() -> None:
    from lumos_ray.cli import _load_commands, cli

    _load_commands()
    out = CliRunner().invoke(cli, ["--help"]).output
    for name in ("up", "down", "status"):
        assert f"  {name} " in out, out


def test_free_ports_are_distinct_and_bindable() -> None:
    """All of a node's ports come from one pass with every socket held, so none repeats
    (separate picks could, and Ray then refuses the node)."""
    for _ in range(20):
        ports = free_ports(9)
        assert len(set(ports)) == 9
    for port in ports:
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))


@pytest.mark.parametrize(
    "message",
    [
        "If you allocate ports, please make sure the same port is not used by multiple components.",
        "Address already in use",
        "The raylet timed out during startup",
    ],
)
def test_a_start_lost_to_a_port_race_or_a_slow_agent_is_retried(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, message: str
) -> None:
    import lumos_ray.runtime._nodes as nodes

    calls: list[int] = []

    def once(*_: object, **__: object) -> RayNode:
        calls.append(1)
        if len(calls) == 1:
            raise ConnectionFailedError(f"`ray start` failed: {message}")
        return RayNode(temp_dir=str(tmp_path), gcs_address="127.0.0.1:1", head=True)

    monkeypatch.setattr(nodes, "_start_once", once)
    assert start_ray_node(tmp_path, head=True).gcs_address == "127.0.0.1:1"
    assert len(calls) == 2


def test_other_start_failures_are_not_retried(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import lumos_ray.runtime._nodes as nodes

    calls: list[int] = []

    def once(*_: object, **__: object) -> RayNode:
        calls.append(1)
        raise ConnectionFailedError("`ray start` failed: invalid resource spec")

    monkeypatch.setattr(nodes, "_start_once", once)
    with pytest.raises(ConnectionFailedError, match="invalid resource"):
        start_ray_node(tmp_path, head=True)
    assert len(calls) == 1
