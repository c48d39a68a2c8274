"""Actor names and snapshot paths of a collection: one place, so every client,
router and shard derives the same ones. The tenant is part of every name and path, so
two tenants' collections of the same name never share an actor or a file."""

from __future__ import annotations

import re
from pathlib import Path

from lumos_ray.errors import InputValidationError
from lumos_ray.rag._snapshot_store import is_uri, join

__all__ = [
    "check_names",
    "collection_dir",
    "registry_dir",
    "router_actor_name",
    "shard_actor_name",
    "shard_dir",
]


#: A collection or tenant name as it may appear in a path or an actor name (the same
#: rule as ``CollectionConfig``): no separators, no ``..``, so nothing can leave its
#: tenant's folder.
_SAFE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")


def check_names(name: object, tenant: object) -> None:
    """InputValidationError unless ``name`` and ``tenant`` are plain names: a name with
    ``/`` or ``..`` would reach another tenant's registry entry, files or actors."""
    for kind, value in (("collection name", name), ("tenant", tenant)):
        if not isinstance(value, str) or not _SAFE.match(value):
            raise InputValidationError(
                f"Invalid RAG {kind} {str(value)[:80]!r}: 1-63 characters of a-z, 0-9, "
                "'-' or '_', starting with a letter or digit.",
                fix=f"Pass a plain {kind} such as 'docs'.",
            )


def _base(name: str, tenant: str) -> str:
    return f"lumos-rag-{name}@{tenant}"


def router_actor_name(name: str, tenant: str) -> str:
    return f"{_base(name, tenant)}.router"


def shard_actor_name(name: str, tenant: str, shard: int) -> str:
    return f"{_base(name, tenant)}.shard-{shard}"


def collection_dir(name: str, tenant: str, home: str, snapshot_dir: str | None = None) -> str:
    """Snapshot root: ``<snapshot_dir>/<tenant>/<name>`` for a configured directory or
    URI (``s3://bucket/prefix/<tenant>/<name>``), else ``<home>/rag/<tenant>/<name>``.

    A collection always lives in a sub-folder of its own, named by tenant and name, so
    several collections (and tenants) can share one ``snapshot_dir`` and dropping one
    never touches another's files, or files that were in the folder before."""
    if snapshot_dir and is_uri(snapshot_dir):
        while snapshot_dir.endswith("/") and not snapshot_dir.endswith("://"):
            snapshot_dir = snapshot_dir[:-1]
        return join(join(snapshot_dir, tenant), name)
    if snapshot_dir:
        return str(Path(snapshot_dir).expanduser().resolve() / tenant / name)
    return str(Path(home).expanduser().resolve() / "rag" / tenant / name)


def registry_dir(tenant: str, home: str) -> str:
    """Where a tenant's collections are registered by name (one small JSON file each,
    naming the snapshot root), so a collection in a custom ``snapshot_dir`` is found by
    name alone. ``_registry`` cannot be a collection name (names start with a letter or
    digit)."""
    return str(Path(home).expanduser().resolve() / "rag" / tenant / "_registry")


def shard_dir(root: str, shard: int) -> str:
    return join(root, f"shard-{shard}")
