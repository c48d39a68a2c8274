"""Registered workflow definitions, read from the control-plane store.

Registration happens when a run starts (``start_run`` registers the definition under
its content-hash version); these reads let a user see what is registered and what a
version contains, without a cluster (the store is reachable from the client: a local
SQLite file or a PostgreSQL URL).
"""

from __future__ import annotations

import asyncio
from typing import Any

__all__ = ["get_registered_workflow", "list_registered_workflows"]


async def list_registered_workflows(name: str | None = None) -> list[dict[str, Any]]:
    """``[{name, version, created_at}]`` newest first (all names, or one)."""
    from lumos_ray.store import open_store

    store = open_store()
    return await asyncio.to_thread(store.list_definitions, "workflow", name)


async def get_registered_workflow(name: str, version: str | None = None) -> dict[str, Any]:
    """``{name, version, created_at, body}``: the stored definition (newest if no version);
    an unknown name or version is a NotFoundError listing what is registered."""
    from lumos_ray.store import open_store

    store = open_store()
    row = await asyncio.to_thread(store.get_definition, "workflow", name, version)
    return {k: row[k] for k in ("name", "version", "created_at", "body")}
