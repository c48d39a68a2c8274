"""The one seam to Ray core: connect/start a cluster, actors by name, remote tasks,
cancel/kill, and Ray Jobs (submit, follow, stop, structured results).

Everything else in lumos_ray reaches Ray through this package (see
``tests/unit/test_layout.py`` for the short allowlist of modules that may import
``ray`` themselves, each with its reason). No private Ray module is used here.
"""

from __future__ import annotations

from lumos_ray.runtime._loopback import LOOPBACK_ENV, request_loopback_mode

# Before anything imports ray: Ray reads its loopback switch once, at import.
request_loopback_mode()

from lumos_ray.runtime._actors import (  # noqa: E402
    get_actor,
    get_or_create_actor,
    kill_actor,
    remote_class,
)
from lumos_ray.runtime._calls import (  # noqa: E402
    RemoteFunction,
    await_ref,
    cancel_ref,
    get_refs,
    is_actor_died,
    is_remote_task_error,
    pickle_by_value,
    put_object,
    remote_function,
    unwrap_error,
)
from lumos_ray.runtime._cluster import (  # noqa: E402
    RuntimeInfo,
    available_resources,
    cluster_resources,
    connect,
    current_settings,
    ensure_connected,
    is_connected,
    jobs_auth_headers,
    shutdown,
)
from lumos_ray.runtime._jobs import (  # noqa: E402
    FileResultStore,
    JobInfo,
    JobLauncher,
    ResultStore,
    error_from_dict,
    jobs_address,
)
from lumos_ray.runtime._local_cluster import (  # noqa: E402
    cluster_down,
    cluster_status,
    cluster_up,
)
from lumos_ray.runtime._placement import Placement, merge_actor_options  # noqa: E402
from lumos_ray.runtime._tasks import TaskHandle, TaskOptions, submit_task  # noqa: E402
from lumos_ray.runtime._up_state import local_cluster_address, read_cluster_state  # noqa: E402

__all__ = [
    "LOOPBACK_ENV",
    "FileResultStore",
    "JobInfo",
    "JobLauncher",
    "Placement",
    "RemoteFunction",
    "ResultStore",
    "RuntimeInfo",
    "TaskHandle",
    "TaskOptions",
    "available_resources",
    "await_ref",
    "cancel_ref",
    "cluster_down",
    "cluster_resources",
    "cluster_status",
    "cluster_up",
    "connect",
    "current_settings",
    "ensure_connected",
    "error_from_dict",
    "get_actor",
    "get_or_create_actor",
    "get_refs",
    "is_actor_died",
    "is_connected",
    "is_remote_task_error",
    "jobs_address",
    "jobs_auth_headers",
    "kill_actor",
    "local_cluster_address",
    "merge_actor_options",
    "pickle_by_value",
    "put_object",
    "read_cluster_state",
    "remote_class",
    "remote_function",
    "shutdown",
    "submit_task",
    "unwrap_error",
]
