"""Loopback-only clusters without Ray's private modules.

Ray keeps a node on 127.0.0.1 only in its single-node mode (its macOS/Windows
default), switched by the documented environment variable ``LOOPBACK_ENV`` and read
once, when ``ray`` is first imported. Passing ``_node_ip_address="127.0.0.1"`` alone is
not enough: otherwise Ray turns a loopback node address into the machine's external
IP and listens there.

So the seam asks for that mode before Ray is imported (``import lumos_ray.runtime``
sets the variable when ``ray`` is not imported yet and the user has not set it), and
probes, through the public ``ray.util.get_node_ip_address()``, whether this process
got it. In that mode a connection to a cluster on another address passes the node's
real IP (the source address of a route to the cluster) explicitly, so multi-node
clusters still work. A process that imported ``ray`` before ``lumos_ray.runtime`` runs
an embedded cluster the way Ray normally does (on the node's IP), with a warning that
names the fix.
"""

from __future__ import annotations

import contextlib
import os
import socket
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path

__all__ = [
    "LOOPBACK_ENV",
    "is_loopback_host",
    "loopback_mode",
    "request_loopback_mode",
    "resolve_auto_address",
    "route_ip",
    "spawned_with_loopback_env",
    "warn_not_loopback",
]

#: Ray's switch for single-node, loopback-only clusters (its macOS/Windows default).
LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
_LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


def request_loopback_mode() -> None:
    """Ask for Ray's loopback mode if Ray is not imported yet (else it is too late)."""
    if "ray" not in sys.modules:
        os.environ.setdefault(LOOPBACK_ENV, "0")


def loopback_mode() -> bool:
    """Whether Ray in this process keeps nodes on 127.0.0.1 (probe before ray.init)."""
    import ray.util

    return ray.util.get_node_ip_address() in _LOCAL_HOSTS


@contextlib.contextmanager
def spawned_with_loopback_env(enabled: bool) -> Iterator[None]:
    """Processes started inside (GCS, raylet, and through them every worker) inherit
    the loopback switch; restored afterwards."""
    if not enabled:
        yield
        return
    old = os.environ.get(LOOPBACK_ENV)
    os.environ[LOOPBACK_ENV] = "0"
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(LOOPBACK_ENV, None)
        else:
            os.environ[LOOPBACK_ENV] = old


def warn_not_loopback() -> None:
    warnings.warn(
        "ray was imported before lumos_ray.runtime, so the embedded Ray cluster listens on "
        f"this machine's network address, not only on 127.0.0.1. Import lumos_ray.runtime "
        f"first, or set {LOOPBACK_ENV}=0 in the environment.",
        RuntimeWarning,
        stacklevel=3,
    )


def resolve_auto_address() -> str | None:
    """What Ray's documented ``auto`` means, read from the same public places: the
    ``RAY_ADDRESS`` variable, else the address ``ray start`` wrote to
    ``$RAY_TMPDIR/ray/ray_current_cluster`` (``/tmp`` by default). None if neither."""
    if env := os.environ.get("RAY_ADDRESS"):
        return env if env != "auto" else None
    path = Path(os.environ.get("RAY_TMPDIR") or "/tmp") / "ray" / "ray_current_cluster"
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return text.splitlines()[0].strip() if text else None


def host_of(address: str) -> str:
    """``host`` of ``host:port`` (brackets of an IPv6 literal removed)."""
    return address.rsplit(":", 1)[0].strip("[]") if ":" in address else address


def is_loopback_host(address: str) -> bool:
    return host_of(address) in _LOCAL_HOSTS


def route_ip(host: str) -> str:
    """This machine's address on the route to ``host`` (a UDP connect sends nothing)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect((host, 9))
            return str(s.getsockname()[0])
        except OSError:
            return socket.gethostbyname(socket.gethostname())
