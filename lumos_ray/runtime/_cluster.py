"""The one place that decides how this process reaches Ray.

Embedded default: a local Ray cluster started in-process, in its own temp dir, bound
to 127.0.0.1, with no dashboard. Otherwise connect to ``--address`` /
``LUMOS_RAY_ADDRESS`` (``auto`` or ``ray://host:port``). Nothing else in lumos_ray
calls ``ray.init``: everything asks this module for a connection or a named actor.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import shutil
import sys
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from lumos_ray.config import LumosSettings
from lumos_ray.errors import ConnectionFailedError

__all__ = [
    "RuntimeInfo",
    "connect",
    "current_settings",
    "get_or_create_actor",
    "jobs_auth_headers",
    "shutdown",
]

_lock = threading.Lock()
_settings: LumosSettings | None = None
_info: RuntimeInfo | None = None


@dataclass(frozen=True)
class RuntimeInfo:
    address: str
    namespace: str
    embedded: bool
    temp_dir: str | None


def current_settings() -> LumosSettings:
    """Settings of the active connection (or from the environment if none yet)."""
    return _settings or LumosSettings.from_env()


def _worker_env(settings: LumosSettings) -> dict[str, str]:
    env = settings.to_env()
    # Workers of an embedded cluster import the user's modules (function steps,
    # tools) from the driver's working directory, as the driver does.
    paths = [os.getcwd(), *[p for p in sys.path if p and os.path.isdir(p)]]
    if os.environ.get("PYTHONPATH"):
        paths.append(os.environ["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    # Cluster-side services (the gateway's runs API) find workflows by name here.
    dirs = [d for d in os.environ.get("LUMOS_WORKFLOWS_DIR", "").split(os.pathsep) if d]
    if os.path.isdir("configs/workflows"):
        dirs.append(os.path.abspath("configs/workflows"))
    if dirs:
        env["LUMOS_WORKFLOWS_DIR"] = os.pathsep.join(dict.fromkeys(dirs))
    return env


def connect(
    address: str | None = None,
    *,
    namespace: str | None = None,
    settings: LumosSettings | None = None,
    num_cpus: int | None = None,
) -> RuntimeInfo:
    """Connect once per process; later calls return the existing connection."""
    global _settings, _info
    import ray

    with _lock:
        if _info is not None and ray.is_initialized():
            return _info
        settings = settings or LumosSettings.from_env(
            address=address, namespace=namespace, num_cpus=num_cpus
        )
        os.makedirs(os.path.expanduser(settings.home), exist_ok=True)
        env = _worker_env(settings)
        if ray.is_initialized():
            # Someone (a test fixture, a Ray job entrypoint) already connected.
            ctx = ray.get_runtime_context()
            _info = RuntimeInfo(
                address=ray.get_runtime_context().gcs_address,
                namespace=ctx.namespace,
                embedded=settings.embedded,
                temp_dir=None,
            )
            _settings = settings
            return _info
        try:
            if settings.embedded:
                temp_dir, ctx = _start_embedded(settings, env)
            else:
                temp_dir = None
                kwargs: dict[str, Any] = {}
                if not os.environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR"):
                    # Inside a Ray job the job's runtime_env (working_dir, env vars) already
                    # applies to every worker; passing another would replace it.
                    kwargs["runtime_env"] = {
                        "env_vars": {k: v for k, v in env.items() if k != "PYTHONPATH"}
                    }
                loopback = _loopback_only() if _is_loopback(settings.address) else None
                with loopback or contextlib.nullcontext():
                    ctx = ray.init(
                        address=settings.address,
                        namespace=settings.namespace,
                        log_to_driver=bool(os.environ.get("LUMOS_DEBUG")),
                        **kwargs,
                    )
        except ConnectionError as exc:
            raise ConnectionFailedError(
                f"Could not connect to Ray at {settings.address!r}: {exc}"
            ) from None
        except Exception as exc:  # ray raises several types for bad addresses
            if settings.embedded:
                raise
            raise ConnectionFailedError(
                f"Could not connect to Ray at {settings.address!r}: {exc}"
            ) from None
        _settings = settings
        _info = RuntimeInfo(
            address=getattr(ctx, "address_info", {}).get("gcs_address", settings.address or ""),
            namespace=settings.namespace,
            embedded=settings.embedded,
            temp_dir=temp_dir,
        )
        return _info


def _start_embedded(settings: LumosSettings, env: dict[str, str]) -> tuple[str, Any]:
    """Start the in-process cluster; on a loaded machine the raylet can miss Ray's
    30 s registration window, so a timed-out start is retried from scratch."""
    import ray

    attempts = 3
    for attempt in range(1, attempts + 1):
        temp_dir = tempfile.mkdtemp(prefix="lumos-ray-")
        atexit.register(shutil.rmtree, temp_dir, ignore_errors=True)
        try:
            with _loopback_only(), _quiet_token_notice():
                ctx = ray.init(
                    address="local",
                    namespace=settings.namespace,
                    num_cpus=settings.num_cpus,
                    include_dashboard=False,
                    _temp_dir=temp_dir,
                    _node_ip_address="127.0.0.1",
                    runtime_env={"env_vars": env},
                    log_to_driver=bool(os.environ.get("LUMOS_DEBUG")),
                    configure_logging=False,
                )
            return temp_dir, ctx
        except Exception as exc:
            if "timed out during startup" not in str(exc):
                raise
            ray.shutdown()
            if attempt == attempts:
                raise ConnectionFailedError(
                    f"The embedded Ray cluster did not start ({attempts} tries): {exc}",
                    fix="The machine is probably overloaded (Ray gives its raylet 30 s to "
                    "register). Retry when it is less busy, or connect to a running cluster "
                    "with --address.",
                ) from None
    raise AssertionError("unreachable")


#: Ray's switch for single-node, loopback-only clusters (its macOS/Windows default).
LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


@contextlib.contextmanager
def _loopback_only() -> Iterator[None]:
    """Make the embedded cluster listen on 127.0.0.1 only.

    ``ray.init(_node_ip_address="127.0.0.1")`` alone is not enough: Ray turns a loopback
    node address into the machine's external IP, and its GCS, raylet and workers then
    listen on every interface. Ray keeps a node on loopback only when clusters are
    disabled (its macOS/Windows mode), read from ``LOOPBACK_ENV`` at import time. So
    for the start only, the flag is set in the environment (inherited by the GCS,
    raylet, agents and through them every worker) and in the already-imported
    constant, then both are restored, so a later ``--address`` connection in this
    process still resolves the real node IP.
    """
    from ray._private import ray_constants

    old_env = os.environ.get(LOOPBACK_ENV)
    old_flag = ray_constants.ENABLE_RAY_CLUSTER
    os.environ[LOOPBACK_ENV] = "0"
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = old_flag
        if old_env is None:
            os.environ.pop(LOOPBACK_ENV, None)
        else:
            os.environ[LOOPBACK_ENV] = old_env


def _is_loopback(address: str | None) -> bool:
    """Whether ``address`` (``auto`` included) names a cluster on 127.0.0.1, such as an
    embedded one: connecting to it needs the same loopback mode, or Ray rewrites the
    address to the machine's external IP, where nothing listens."""
    if not address or address.startswith("ray://"):
        return False
    if address == "auto":
        from ray._private.services import get_ray_address_from_environment

        try:
            address = get_ray_address_from_environment("auto", None)
        except Exception:  # no cluster found: ray.init reports it properly
            return False
        if not address:
            return False
    host = address.rsplit(":", 1)[0].strip("[]")
    return host in ("127.0.0.1", "localhost", "::1")


class _DropTokenNotice(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Token authentication is enabled for this")


@contextlib.contextmanager
def _quiet_token_notice() -> Iterator[None]:
    """Ray enables token auth for every new local cluster (and generates the token) and
    says so on stderr each time: noise on every `lumos` command for an embedded cluster
    that is loopback-only anyway. Only that notice is dropped; auth stays on."""
    log = logging.getLogger("ray._private.authentication.authentication_token_setup")
    notice = _DropTokenNotice()
    log.addFilter(notice)
    try:
        yield
    finally:
        log.removeFilter(notice)


def get_or_create_actor(
    name: str, actor_cls: Any, *args: Any, options: dict[str, Any] | None = None, **kwargs: Any
) -> Any:
    """A named actor of the current namespace, created (detached) if absent.

    ``get_if_exists`` makes concurrent creators race-free.
    """
    import ray

    if not ray.is_initialized():
        connect()
    opts = {
        "lifetime": "detached",
        "get_if_exists": True,
        # Explicit: a caller inside a Serve replica or a job lives in another namespace.
        "namespace": current_settings().namespace,
        **(options or {}),
    }
    return actor_cls.options(name=name, **opts).remote(*args, **kwargs)


def jobs_auth_headers() -> dict[str, str]:
    """Headers for the Ray Jobs API. Ray 2.60 clusters use token auth by default; when
    the user has not configured Ray's own client auth (RAY_AUTH_MODE), send the local
    token, so a `ray start --head` cluster on this machine works out of the box."""
    from pathlib import Path

    if os.environ.get("RAY_AUTH_MODE"):
        return {}
    token = os.environ.get("RAY_AUTH_TOKEN")
    if not token:
        path = Path(os.environ.get("RAY_AUTH_TOKEN_PATH") or Path.home() / ".ray" / "auth_token")
        try:
            token = path.read_text().strip()
        except OSError:
            return {}
    return {"Authorization": f"Bearer {token}"} if token else {}


def shutdown() -> None:
    """Disconnect (and stop the embedded cluster if this process started it)."""
    global _info
    import ray

    with _lock:
        if ray.is_initialized():
            ray.shutdown()
        _info = None
