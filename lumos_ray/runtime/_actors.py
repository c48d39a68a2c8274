"""Actors by name: get, create (race-free), kill.

Names live in the connection's namespace (``LumosSettings.namespace``), passed
explicitly every time: a caller inside a Serve replica or a Ray job runs in another
namespace, and an implicit one would look in the wrong place.
"""

from __future__ import annotations

from typing import Any

from lumos_ray.runtime._cluster import current_settings, ensure_connected

__all__ = ["get_actor", "get_or_create_actor", "kill_actor", "remote_class"]


def remote_class(cls: type, **options: Any) -> Any:
    """``cls`` as a Ray actor class (``ray.remote``), with default ``options``."""
    import ray

    return ray.remote(**options)(cls) if options else ray.remote(cls)


def get_or_create_actor(
    name: str, actor_cls: Any, *args: Any, options: dict[str, Any] | None = None, **kwargs: Any
) -> Any:
    """A named actor of the current namespace, created (detached) if absent.

    ``get_if_exists`` makes concurrent creators race-free. ``actor_cls`` is a Ray actor
    class (``ray.remote(cls)`` / :func:`remote_class`).
    """
    ensure_connected()
    opts = {
        "lifetime": "detached",
        "get_if_exists": True,
        "namespace": current_settings().namespace,
        **(options or {}),
    }
    return actor_cls.options(name=name, **opts).remote(*args, **kwargs)


def get_actor(name: str) -> Any | None:
    """The named actor's handle, or None when no live actor has that name."""
    import ray

    ensure_connected()
    try:
        return ray.get_actor(name, namespace=current_settings().namespace)
    except ValueError:
        return None


def kill_actor(actor: Any, *, no_restart: bool = True) -> bool:
    """Kill an actor given by handle or name; False when a name is not found.

    ``no_restart=False`` lets Ray restart it (if it has ``max_restarts``), which is how a
    crash is simulated.
    """
    import ray

    if isinstance(actor, str):
        handle = get_actor(actor)
        if handle is None:
            return False
        actor = handle
    ray.kill(actor, no_restart=no_restart)
    return True
