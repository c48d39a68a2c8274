"""The one place that decides how this process reaches Ray.

Embedded default: a local Ray cluster started in-process, in its own temp dir, bound
to 127.0.0.1, with no dashboard. Otherwise connect to ``--address`` /
``LUMOS_RAY_ADDRESS`` (``auto`` or ``ray://host:port``). With no address given, a
cluster started by ``lumos up`` from the same ``LUMOS_HOME`` (recorded in
``$LUMOS_HOME/cluster.json``, see ``_local_cluster``) is used when it answers;
``local`` forces the embedded cluster. Nothing else in lumos_ray
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

from lumos_ray._files import private_dir
from lumos_ray.config import LumosSettings
from lumos_ray.errors import ConnectionFailedError
from lumos_ray.runtime._loopback import (
    LOOPBACK_ENV,
    host_of,
    is_loopback_host,
    loopback_mode,
    resolve_auto_address,
    route_ip,
    spawned_with_loopback_env,
    warn_not_loopback,
)
from lumos_ray.runtime._worker_bytecode import worker_bytecode_env

__all__ = [
    "RuntimeInfo",
    "available_resources",
    "cluster_resources",
    "connect",
    "current_settings",
    "ensure_connected",
    "is_connected",
    "jobs_auth_headers",
    "shutdown",
]

_lock = threading.Lock()
_settings: LumosSettings | None = None
_info: RuntimeInfo | None = None
#: Set when a `lumos up` cluster was chosen after this process had imported ray without
#: RAY_AUTH_MODE (Ray then never sends the token): the connect error says so.
_auth_mode_too_late = False


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
    if _info is None:
        # Before Ray is imported: Ray reads RAY_AUTH_MODE once (see _with_local_cluster).
        _with_local_cluster(
            settings
            or LumosSettings.from_env(address=address, namespace=namespace, num_cpus=num_cpus)
        )
    import ray

    with _lock:
        if _info is not None and ray.is_initialized():
            return _info
        settings = settings or LumosSettings.from_env(
            address=address, namespace=namespace, num_cpus=num_cpus
        )
        private_dir(settings.home)  # LUMOS_HOME holds the store, logs, results: 0700
        settings, local_up = _with_local_cluster(settings)
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
                    # A `lumos up` cluster is on this machine: its workers import the
                    # user's modules from here, as an embedded cluster's do.
                    kwargs["runtime_env"] = {
                        "env_vars": {k: v for k, v in env.items() if local_up or k != "PYTHONPATH"}
                    }
                ctx = _init_by_address(ray, settings, kwargs)
        except ConnectionFailedError:
            raise
        except ConnectionError as exc:
            if local_up and _auth_mode_too_late:
                raise ConnectionFailedError(
                    f"Could not connect to the `lumos up` cluster at {settings.address!r}: {exc}",
                    fix="It requires token auth, and Ray reads RAY_AUTH_MODE once, when it is "
                    "first imported; this process imported ray before connecting. Set "
                    "RAY_AUTH_MODE=token in the environment, or import lumos_ray before ray.",
                ) from None
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


def _with_local_cluster(settings: LumosSettings) -> tuple[LumosSettings, bool]:
    """The settings aimed at this home's ``lumos up`` cluster when no address was
    given and it answers (and whether so); unchanged otherwise. Such a cluster needs
    Ray's token auth mode in this process, which Ray reads when it is first imported:
    a process that imported ``ray`` before connecting must set ``RAY_AUTH_MODE=token``
    itself."""
    if settings.address is not None or os.environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR"):
        return settings, False
    from lumos_ray.runtime._up_state import local_cluster_address, use_token_auth

    global _auth_mode_too_late
    address = local_cluster_address(settings.home)
    if address is None:
        return settings, False
    if "ray" in sys.modules and not os.environ.get("RAY_AUTH_MODE"):
        _auth_mode_too_late = True
    use_token_auth()
    return settings.model_copy(update={"address": address}), True


def _init_by_address(ray: Any, settings: LumosSettings, kwargs: dict[str, Any]) -> Any:
    """``ray.init`` to an existing cluster. ``auto`` is resolved here (as Ray documents
    it) so the host is known: a cluster on 127.0.0.1 needs this process in Ray's
    loopback mode (see ``_loopback``); any other address, in that mode, needs this
    node's real IP passed explicitly."""
    address = settings.address or "auto"
    if address.startswith("ray://"):
        return ray.init(
            address=address,
            namespace=settings.namespace,
            log_to_driver=bool(os.environ.get("LUMOS_DEBUG")),
            **kwargs,
        )
    if address == "auto":
        address = resolve_auto_address() or "auto"
    loopback = loopback_mode()
    if address != "auto" and not is_loopback_host(address) and loopback:
        kwargs = {**kwargs, "_node_ip_address": route_ip(host_of(address))}
    try:
        return ray.init(
            address=address,
            namespace=settings.namespace,
            log_to_driver=bool(os.environ.get("LUMOS_DEBUG")),
            **kwargs,
        )
    except Exception as exc:
        if address != "auto" and is_loopback_host(address) and not loopback:
            raise ConnectionFailedError(
                f"Could not connect to Ray at {address!r}: {exc}",
                fix=f"A loopback-only cluster (such as lumos's embedded one) needs Ray's "
                f"loopback mode in this process: import lumos_ray.runtime before ray, or set "
                f"{LOOPBACK_ENV}=0 in the environment.",
            ) from None
        raise


def _start_embedded(settings: LumosSettings, env: dict[str, str]) -> tuple[str, Any]:
    """Start the in-process cluster; on a loaded machine the raylet can miss Ray's
    30 s registration window, so a timed-out start is retried from scratch."""
    import ray

    attempts = 3
    for attempt in range(1, attempts + 1):
        temp_dir = tempfile.mkdtemp(prefix="lumos-ray-")
        atexit.register(shutil.rmtree, temp_dir, ignore_errors=True)
        try:
            loopback = loopback_mode()
            if not loopback:
                warn_not_loopback()
            node_ip: dict[str, Any] = {"_node_ip_address": "127.0.0.1"} if loopback else {}
            with (
                spawned_with_loopback_env(loopback),
                # Workers keep compiled bytecode (see _worker_bytecode): a new actor's
                # process then starts in under a second instead of ~2 s.
                _spawned_with_env({**env, **worker_bytecode_env(settings.home)}),
                _quiet_token_notice(),
            ):
                ctx = ray.init(
                    address="local",
                    namespace=settings.namespace,
                    num_cpus=settings.num_cpus,
                    include_dashboard=False,
                    _temp_dir=temp_dir,
                    log_to_driver=bool(os.environ.get("LUMOS_DEBUG")),
                    configure_logging=False,
                    **node_ip,
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


@contextlib.contextmanager
def _spawned_with_env(env: dict[str, str]) -> Iterator[None]:
    """The embedded cluster's processes (GCS, raylet, and through the raylet every
    worker) inherit ``env``: the settings reach the workers without a job-level
    ``runtime_env``. Why not a runtime_env: with one, Ray starts every actor's worker
    through the runtime-env agent instead of taking a prestarted one from its pool,
    which made a new actor take ~4 s instead of ~1 s on this machine
    (benchmarks/agent_density.py). The driver's own environment is restored after."""
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


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


def is_connected() -> bool:
    """Whether this process holds a Ray connection (without starting one)."""
    import ray

    return bool(ray.is_initialized())


def ensure_connected() -> None:
    """Connect with the current settings unless already connected (cheap when so)."""
    if not is_connected():
        connect()


def cluster_resources() -> dict[str, float]:
    """Total resources of the cluster (``{"CPU": 8.0, "GPU": 0.0, ...}``)."""
    import ray

    ensure_connected()
    return {k: float(v) for k, v in ray.cluster_resources().items()}


def available_resources() -> dict[str, float]:
    """Resources free right now (a snapshot: it changes as tasks start and end)."""
    import ray

    ensure_connected()
    return {k: float(v) for k, v in ray.available_resources().items()}


def shutdown() -> None:
    """Disconnect (and stop the embedded cluster if this process started it)."""
    global _info
    import ray

    with _lock:
        if ray.is_initialized():
            ray.shutdown()
        _info = None
