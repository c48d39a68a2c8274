"""Actor names and snapshot paths of a collection: one place, so every client,
router and shard derives the same ones. The tenant is part of every name and path, so
two tenants' collections of the same name never share an actor or a file."""

from __future__ import annotations

from pathlib import Path

from lumos_ray.rag._snapshot_store import is_uri, join

__all__ = ["collection_dir", "router_actor_name", "shard_actor_name", "shard_dir"]


def _base(name: str, tenant: str) -> str:
    return f"lumos-rag-{name}@{tenant}"


def router_actor_name(name: str, tenant: str) -> str:
    return f"{_base(name, tenant)}.router"


def shard_actor_name(name: str, tenant: str, shard: int) -> str:
    return f"{_base(name, tenant)}.shard-{shard}"


def collection_dir(name: str, tenant: str, home: str, snapshot_dir: str | None = None) -> str:
    """Snapshot root: the configured directory or URI (``s3://bucket/prefix``, kept as
    given), else <home>/rag/<tenant>/<name>."""
    if snapshot_dir and is_uri(snapshot_dir):
        while snapshot_dir.endswith("/") and not snapshot_dir.endswith("://"):
            snapshot_dir = snapshot_dir[:-1]
        return snapshot_dir
    if snapshot_dir:
        return str(Path(snapshot_dir).expanduser().resolve())
    return str(Path(home).expanduser().resolve() / "rag" / tenant / name)


def shard_dir(root: str, shard: int) -> str:
    return join(root, f"shard-{shard}")
