"""How many bytes one tenant's rows hold in the store: the database part of the
platform's storage measurement (``lumos_ray.platform``).

Measured by scanning, never by a counter kept on every write: runs, steps and agent
turns write the store on their hot path, and one more row update per transaction
would both slow them and serialise all of a tenant's writers on that row; a scan is
also right after deletes and after any writer that a counter would have missed. The
scan is one aggregate query per table over the tenant's primary-key range (every
key starts with ``tenant_id``), run by the database; callers bound how often it runs.

What is counted: the text of every JSON and string column (octets, as the database
stores them as text) plus 8 bytes per number column, per row. It is the payload the
tenant put there, not the database's own page and index overhead (which depends on
the backend and on other tenants' rows).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, BigInteger, Float, Integer, String, Table, cast, func, select
from sqlalchemy.types import LargeBinary, Text

from lumos_ray.store._database import Database
from lumos_ray.store._schema import (
    checkpoints,
    definitions,
    events,
    messages,
    runs,
    schedules,
    working_memory,
)

__all__ = ["TENANT_DATA_TABLES", "tenant_bytes"]

#: The tables whose rows are the tenant's own data (what a storage limit counts):
#: runs and their checkpoints and events, agent threads (messages, working memory),
#: registered definitions, schedules. Platform bookkeeping (keys, usage, audit) is not.
TENANT_DATA_TABLES: tuple[Table, ...] = (
    runs,
    checkpoints,
    events,
    messages,
    working_memory,
    definitions,
    schedules,
)


def _octets(backend: str, column: Any) -> Any:
    if backend == "postgresql":
        return func.coalesce(func.octet_length(cast(column, Text)), 0)
    # SQLite stores JSON as text; length() of a BLOB counts bytes, of TEXT characters.
    return func.coalesce(func.length(cast(column, LargeBinary)), 0)


def _row_bytes(backend: str, table: Table) -> Any:
    parts = []
    numbers = 0
    for col in table.columns:
        if isinstance(col.type, JSON | String):
            parts.append(_octets(backend, col))
        elif isinstance(col.type, Integer | BigInteger | Float):
            numbers += 1
    expr = parts[0]
    for p in parts[1:]:
        expr = expr + p
    return expr + numbers * 8


def tenant_bytes(db: Database, tenant: str) -> dict[str, int]:
    """Bytes of ``tenant``'s rows per table (see :data:`TENANT_DATA_TABLES`)."""
    out: dict[str, int] = {}
    with db.read() as c:
        for table in TENANT_DATA_TABLES:
            total = c.execute(
                select(func.coalesce(func.sum(_row_bytes(db.backend, table)), 0)).where(
                    table.c.tenant_id == tenant
                )
            ).scalar()
            out[table.name] = int(total or 0)
    return out
