"""Ray nodes on this machine, started with Ray's own CLI and stopped by PID.

``ray start`` daemonizes its processes (GCS, raylet, dashboard and agents, log monitor)
and returns; ``ray stop`` would stop EVERY Ray process of the user on the machine,
including other people's clusters and embedded test clusters. So each node gets its
own ``--temp-dir`` and explicit ports, and its processes are found by that temp dir
in their command lines (plus their descendants: the workers), recorded, and stopped
by PID (SIGTERM, then SIGKILL after a grace period). Everything listens on 127.0.0.1
only (Ray's loopback mode, see ``_loopback``).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from lumos_ray.errors import ConnectionFailedError
from lumos_ray.runtime._loopback import LOOPBACK_ENV

__all__ = [
    "NodeProcess",
    "RayNode",
    "free_port",
    "free_ports",
    "node_processes",
    "port_open",
    "start_ray_node",
    "stop_processes",
]

#: Environment variable that marks every process of a node with its temp dir.
MARKER_ENV = "LUMOS_RAY_NODE"
#: Longest temp dir that keeps Ray's unix socket paths under the 107-byte limit.
MAX_TEMP_DIR_CHARS = 40
START_TIMEOUT_S = 180.0


@dataclass(frozen=True)
class NodeProcess:
    """A process identified beyond its PID (a PID can be reused after it exits)."""

    pid: int
    create_time: float
    name: str

    def alive(self) -> psutil.Process | None:
        try:
            p = psutil.Process(self.pid)
            if abs(p.create_time() - self.create_time) < 0.01 and p.is_running():
                return p
        except psutil.Error:
            pass
        return None

    def to_dict(self) -> dict[str, Any]:
        return {"pid": self.pid, "create_time": self.create_time, "name": self.name}

    @classmethod
    def of(cls, p: psutil.Process) -> NodeProcess:
        return cls(pid=p.pid, create_time=p.create_time(), name=p.name())


@dataclass
class RayNode:
    """One ``ray start`` node: where it is and which processes it is."""

    temp_dir: str
    gcs_address: str
    head: bool
    dashboard_url: str | None = None
    processes: list[NodeProcess] = field(default_factory=list)

    def pids(self) -> list[int]:
        return [p.pid for p in self.processes]


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (the OS picks it)."""
    return free_ports(1)[0]


def free_ports(n: int) -> list[int]:
    """``n`` distinct TCP ports free on 127.0.0.1 right now.

    Every socket stays bound until all are picked: ports picked one at a time can
    repeat (the OS may hand back a port just released), and Ray refuses a node whose
    components share a port."""
    socks: list[socket.socket] = []
    try:
        for _ in range(n):
            s = socket.socket()
            socks.append(s)
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


def port_open(host: str, port: int, timeout_s: float = 0.5) -> bool:
    """Whether something accepts TCP connections at host:port (a cheap liveness probe)."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def _marked(p: psutil.Process, temp_dir: str) -> bool:
    try:
        return bool(p.environ().get(MARKER_ENV) == temp_dir)
    except psutil.Error:
        return False


def node_processes(temp_dir: str) -> list[psutil.Process]:
    """Every process of the node whose temp dir is ``temp_dir``: those that name it in
    their command line or carry its marker in their environment, and all their
    descendants (workers, agents)."""
    marker = os.path.realpath(temp_dir)
    found: dict[int, psutil.Process] = {}
    for p in psutil.process_iter(["cmdline"]):
        try:
            cmd = " ".join(p.info.get("cmdline") or [])
        except psutil.Error:
            continue
        if marker in cmd or temp_dir in cmd or _marked(p, marker):
            found[p.pid] = p
    for p in list(found.values()):
        try:
            for child in p.children(recursive=True):
                found.setdefault(child.pid, child)
        except psutil.Error:
            continue
    found.pop(os.getpid(), None)
    return list(found.values())


def start_ray_node(
    temp_dir: str | Path,
    *,
    head: bool,
    address: str | None = None,
    num_cpus: int | None = None,
    resources: dict[str, float] | None = None,
    labels: dict[str, str] | None = None,
    dashboard: bool = True,
    multi_node: bool = False,
    env: dict[str, str] | None = None,
    timeout_s: float = START_TIMEOUT_S,
    attempts: int = 3,
) -> RayNode:
    """``ray start`` a node on 127.0.0.1 with its own temp dir and free ports; the
    processes it started are recorded. ``address``: the head's GCS (worker nodes).
    ``resources`` / ``labels``: custom resources and node labels that placements
    (:class:`lumos_ray.runtime.Placement`) select nodes by.
    ``multi_node``: a head that worker nodes will join (Ray's single-node loopback
    mode refuses them). On a loaded machine the raylet can abort while waiting for
    its dashboard agent (a fixed wait in Ray), and another process can take a picked
    port before Ray binds it; such a start is retried from scratch with new ports."""
    for attempt in range(1, attempts + 1):
        try:
            return _start_once(
                temp_dir,
                head=head,
                address=address,
                num_cpus=num_cpus,
                resources=resources,
                labels=labels,
                dashboard=dashboard,
                multi_node=multi_node,
                env=env,
                timeout_s=timeout_s,
            )
        except ConnectionFailedError as exc:
            if attempt == attempts or not any(m in exc.message for m in _RETRYABLE):
                raise
    raise AssertionError("unreachable")


#: ``ray start`` failures that a fresh attempt (new ports, new processes) can cure.
_RETRYABLE = (
    "timed out during startup",  # the raylet's fixed wait for its agent, on a busy machine
    "same port",  # a picked port was taken by another process before Ray bound it
    "already in use",
)


def _start_once(
    temp_dir: str | Path,
    *,
    head: bool,
    address: str | None = None,
    num_cpus: int | None = None,
    resources: dict[str, float] | None = None,
    labels: dict[str, str] | None = None,
    dashboard: bool = True,
    multi_node: bool = False,
    env: dict[str, str] | None = None,
    timeout_s: float = START_TIMEOUT_S,
) -> RayNode:
    """One ``ray start`` (see :func:`start_ray_node`)."""
    temp = str(Path(temp_dir).resolve())
    if len(temp) > MAX_TEMP_DIR_CHARS:
        raise ConnectionFailedError(
            f"Ray's temp dir {temp!r} is too long ({len(temp)} characters): Ray's unix "
            "sockets under it would exceed the 107-byte path limit.",
            fix=f"Use a LUMOS_HOME (or temp dir) whose path is at most "
            f"{MAX_TEMP_DIR_CHARS - 4} characters long.",
        )
    Path(temp).mkdir(parents=True, exist_ok=True, mode=0o700)
    ports = iter(free_ports(9))
    cmd = [
        str(Path(sys.executable).with_name("ray")),
        "start",
        "--node-ip-address=127.0.0.1",
        f"--temp-dir={temp}",
        f"--node-manager-port={next(ports)}",
        f"--object-manager-port={next(ports)}",
        f"--dashboard-agent-listen-port={next(ports)}",
        f"--dashboard-agent-grpc-port={next(ports)}",
        f"--runtime-env-agent-port={next(ports)}",
        f"--metrics-export-port={next(ports)}",
        # Worker ports from the OS, not Ray's fixed 10002-19999 range that every
        # other cluster on the machine also draws from.
        "--min-worker-port=0",
        "--max-worker-port=0",
        "--disable-usage-stats",
    ]
    dashboard_url = None
    if head:
        port = next(ports)
        cmd += ["--head", f"--port={port}", f"--ray-client-server-port={next(ports)}"]
        if dashboard:
            dport = next(ports)
            cmd += ["--include-dashboard=true", "--dashboard-host=127.0.0.1"]
            cmd += [f"--dashboard-port={dport}"]
            dashboard_url = f"http://127.0.0.1:{dport}"
        else:
            cmd += ["--include-dashboard=false"]
        gcs = f"127.0.0.1:{port}"
    else:
        if not address:
            raise ValueError("a worker node needs the head's address")
        cmd += [f"--address={address}"]
        gcs = address
    if num_cpus is not None:
        cmd += [f"--num-cpus={num_cpus}"]
    if resources:
        cmd += [f"--resources={json.dumps(resources)}"]
    if labels:
        cmd += ["--labels=" + ",".join(f"{k}={v}" for k, v in labels.items())]
    proc_env = {**os.environ, **(env or {})}
    # Every process of the node inherits this marker (workers rename themselves, so
    # their command line does not name the temp dir).
    proc_env[MARKER_ENV] = temp
    # Ray's single-node loopback mode for a head that stays alone; a multi-node
    # cluster's nodes must leave it (Ray refuses to join a node in that mode).
    if head and not multi_node:
        proc_env[LOOPBACK_ENV] = "0"
    else:
        proc_env.pop(LOOPBACK_ENV, None)
    if not head:
        # The head (Ray 2.60's default) requires token auth; a joining node must present
        # the token (~/.ray/auth_token, or RAY_AUTH_TOKEN[_PATH]) and Ray only sends it
        # in token mode.
        proc_env.setdefault("RAY_AUTH_MODE", "token")
    proc_env.pop("RAY_ADDRESS", None)
    try:
        out = subprocess.run(
            cmd, env=proc_env, capture_output=True, text=True, timeout=timeout_s, check=False
        )
    except subprocess.TimeoutExpired:
        stop_processes(node_processes(temp))
        raise ConnectionFailedError(
            f"`ray start` did not finish within {timeout_s:.0f} s",
            fix="The machine is probably overloaded; retry when it is less busy.",
        ) from None
    node = RayNode(temp_dir=temp, gcs_address=gcs, head=head, dashboard_url=dashboard_url)
    node.processes = [NodeProcess.of(p) for p in node_processes(temp)]
    if out.returncode != 0:
        stop_processes(node.processes)
        lines = (out.stderr or out.stdout).strip().splitlines()
        last = lines[-1] if lines else f"exit code {out.returncode}"
        fix = f"See Ray's logs under {temp}/session_latest/logs."
        if "timed out during startup" in last:
            fix = (
                "The machine is probably overloaded: Ray's raylet gives its dashboard agent "
                "a fixed 15 s to start and aborts otherwise. Retry when it is less busy. " + fix
            )
        raise ConnectionFailedError(f"`ray start` failed: {last}", fix=fix)
    return node


def stop_processes(
    procs: Iterable[NodeProcess | psutil.Process], grace_s: float = 10.0
) -> list[int]:
    """SIGTERM each process (and its descendants), SIGKILL what is left after
    ``grace_s``; returns the PIDs that were signalled."""
    targets: dict[int, psutil.Process] = {}
    for item in procs:
        p = item.alive() if isinstance(item, NodeProcess) else item
        if p is None:
            continue
        try:
            targets.setdefault(p.pid, p)
            for child in p.children(recursive=True):
                targets.setdefault(child.pid, child)
        except psutil.Error:
            continue
    targets.pop(os.getpid(), None)
    for p in targets.values():
        try:
            p.send_signal(signal.SIGTERM)
        except psutil.Error:
            pass
    _, alive = psutil.wait_procs(list(targets.values()), timeout=grace_s)
    for p in alive:
        try:
            p.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(alive, timeout=5)
    return sorted(targets)


def wait_for_port(host: str, port: int, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if port_open(host, port):
            return True
        time.sleep(0.2)
    return False
