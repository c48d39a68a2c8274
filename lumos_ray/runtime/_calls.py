"""Results of remote calls: await, get, cancel, and Ray's error wrappers unwrapped.

Callers outside the seam hold Ray object refs (from actor method calls or tasks)
without importing ``ray``: these helpers are the only operations they need.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

__all__ = [
    "RemoteFunction",
    "await_ref",
    "cancel_ref",
    "get_refs",
    "is_actor_died",
    "is_remote_task_error",
    "pickle_by_value",
    "remote_function",
    "unwrap_error",
]


def pickle_by_value(module_name: str) -> None:
    """Send the functions and classes of the imported module ``module_name`` by value
    (their code) in every Ray call from this process, instead of by import path.

    ``lumos dev`` needs it: a long-lived agent actor that received a tool by path would
    run the copy it imported first, however often the file changes; by value, the new
    code travels with the spec that :meth:`AgentActor.reconfigure` takes in place (the
    actor, its threads and its running turns stay). Registered in Ray's pickler and in
    cloudpickle (which hashes agent specs), so both see the code."""
    import sys

    import cloudpickle
    import ray.cloudpickle

    module = sys.modules[module_name]
    for pickler in (ray.cloudpickle, cloudpickle):
        if module_name not in pickler.list_registry_pickle_by_value():
            pickler.register_pickle_by_value(module)


def _exceptions() -> Any:
    import ray.exceptions

    return ray.exceptions


def unwrap_error(exc: BaseException) -> BaseException:
    """The exception a remote call really raised (Ray wraps it in RayTaskError)."""
    cause = getattr(exc, "cause", None)
    if isinstance(cause, BaseException) and is_remote_task_error(exc):
        return cause
    return exc


def is_remote_task_error(exc: BaseException) -> bool:
    """The remote function or actor method raised."""
    return isinstance(exc, _exceptions().RayTaskError)


def is_actor_died(exc: BaseException) -> bool:
    """The actor is gone (killed, crashed without restarts left, or unreachable)."""
    return isinstance(exc, _exceptions().RayActorError)


def is_task_ref(ref: Any) -> bool:
    """Refs of tasks can be force-cancelled (their worker killed); actor calls cannot."""
    try:
        return bool(ref.task_id().actor_id().is_nil())
    except Exception:
        return False


def cancel_ref(ref: Any, *, force: bool | None = None) -> None:
    """Cancel the work behind ``ref``; by default tasks are force-cancelled (their
    worker is killed: a stuck tool cannot ignore it) and actor calls interrupted."""
    import ray

    ray.cancel(ref, force=is_task_ref(ref) if force is None else force)


async def await_ref(ref: Any) -> Any:
    """Await a ref from any event loop (also one Ray did not start)."""
    return await asyncio.wrap_future(ref.future())


def put_object(value: Any) -> Any:
    """Store ``value`` once in the object store; its ref travels cheaply in calls and is
    fetched (deserialised by Ray) only by a receiver that awaits it."""
    import ray

    return ray.put(value)


def get_refs(refs: Any, timeout_s: float | None = None) -> Any:
    """Block for one ref or a list of refs (sync callers only, never an event loop)."""
    import ray

    return ray.get(refs, timeout=timeout_s)


class RemoteFunction:
    """A module-level function as a Ray task, registered with Ray on first use (not at
    import, so importing the module never imports Ray). ``.options(...).remote(...)``
    and ``.remote(...)`` as with ``ray.remote``."""

    def __init__(self, fn: Callable[..., Any], options: dict[str, Any]) -> None:
        self._fn, self._options = fn, options
        self._remote: Any = None
        self._lock = threading.Lock()

    def _get(self) -> Any:
        with self._lock:
            if self._remote is None:
                import ray

                self._remote = (
                    ray.remote(**self._options)(self._fn) if self._options else ray.remote(self._fn)
                )
            return self._remote

    def options(self, **options: Any) -> Any:
        return self._get().options(**options)

    def remote(self, *args: Any, **kwargs: Any) -> Any:
        return self._get().remote(*args, **kwargs)


def remote_function(fn: Callable[..., Any] | None = None, **options: Any) -> Any:
    """Decorator: ``@remote_function`` or ``@remote_function(num_cpus=0.1)``."""
    if fn is None:
        return lambda f: RemoteFunction(f, options)
    return RemoteFunction(fn, options)
