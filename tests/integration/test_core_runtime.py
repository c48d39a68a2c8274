"""The embedded cluster stays on loopback: nothing it starts is reachable from the network."""

from __future__ import annotations

import ipaddress
import os

import psutil
import pytest
import ray

from lumos_ray import runtime

pytestmark = pytest.mark.usefixtures("ray_cluster")


def _embedded_only(info: runtime.RuntimeInfo) -> None:
    if not info.embedded:
        pytest.skip("a cluster given with --ray-address binds where its operator chose")


def test_embedded_cluster_listens_on_loopback_only(ray_cluster: runtime.RuntimeInfo) -> None:
    """Every TCP listener of the cluster's processes (GCS, raylet, agents, workers: all
    descendants of this test process, which started the cluster) is on 127.0.0.1, and
    the node advertises 127.0.0.1. Ray would otherwise turn a loopback node address into
    the machine's external IP and listen on every interface."""
    _embedded_only(ray_cluster)

    @ray.remote(num_cpus=0)
    def ping() -> int:
        return os.getpid()

    ray.get(ping.remote())  # at least one worker is up and listening
    assert {n["NodeManagerAddress"] for n in ray.nodes() if n["Alive"]} == {"127.0.0.1"}

    pids = {p.pid for p in psutil.Process().children(recursive=True)}
    listeners = [
        (c.pid, c.laddr.ip, c.laddr.port)
        for c in psutil.net_connections(kind="tcp")
        if c.status == psutil.CONN_LISTEN and c.pid in pids
    ]
    assert listeners, "found no listening socket of the cluster's processes"
    exposed = [
        (psutil.Process(pid).name(), ip, port)
        for pid, ip, port in listeners
        if not _is_loopback(ip)
    ]
    assert not exposed, f"listening beyond loopback: {exposed}"


def _is_loopback(ip: str) -> bool:
    addr = ipaddress.ip_address(ip)
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return addr.is_loopback
