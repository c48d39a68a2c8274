"""Actor names and snapshot paths of a collection: one place, so every client,
router and shard derives the same ones. The tenant is part of every name and path, so
two tenants' collections of the same name never share an actor or a file."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["collection_dir", "router_actor_name", "shard_actor_name", "shard_dir"]


def _base(name: str, tenant: str) -> str:
    return f"lumos-rag-{name}@{tenant}"


def router_actor_name(name: str, tenant: str) -> str:
    return f"{_base(name, tenant)}.router"


def shard_actor_name(name: str, tenant: str, shard: int) -> str:
    return f"{_base(name, tenant)}.shard-{shard}"


def collection_dir(name: str, tenant: str, home: str, snapshot_dir: str | None = None) -> str:
    """Snapshot root: the configured directory, else <home>/rag/<tenant>/<name>."""
    if snapshot_dir:
        return str(Path(snapshot_dir).expanduser().resolve())
    return str(Path(home).expanduser().resolve() / "rag" / tenant / name)


def shard_dir(root: str, shard: int) -> str:
    return os.path.join(root, f"shard-{shard}")
