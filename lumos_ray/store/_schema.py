"""The store's tables, as one SQLAlchemy schema for SQLite and PostgreSQL.

Every table's primary key starts with ``tenant_id`` and every query of
:class:`~lumos_ray.store.RunStore` filters by it, so giving tenants their own data is
a filter the store already applies, never a migration. Values are JSON (never pickles,
never code): a row can be read, and trusted, by any tool.

Sequence numbers (events of a run, messages of a thread) are per key, not global: the
key is part of the primary key and the next number is taken inside the writing
transaction (see ``RunStore``), which works the same on both backends.

This module is the schema the code uses *now*; the migrations in ``_migrations/`` are
how a database gets there, and ``tests/unit/test_store_schema.py`` checks the two
agree. Change both together.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    Column,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
)

__all__ = [
    "KEY_LIMITS",
    "TABLES",
    "checkpoints",
    "definitions",
    "events",
    "messages",
    "metadata",
    "runs",
    "working_memory",
]

#: Longest accepted value of each key column; RunStore checks them before writing
#: (SQLite would store longer strings silently, PostgreSQL would fail mid-transaction).
KEY_LIMITS: dict[str, int] = {
    "tenant_id": 64,
    "run_id": 200,
    "workflow": 200,
    "version": 64,
    "kind": 32,
    "name": 200,
    "path": 500,
    "agent": 200,
    "thread_id": 200,
    "owner": 64,
    "status": 16,
    "event_type": 64,
}

# Explicit constraint names: the same on both backends, and never colliding with the
# names a pre-migration database used (PostgreSQL's default ``runs_pkey`` etc.).
metadata = MetaData(
    naming_convention={"pk": "pk_%(table_name)s", "ix": "ix_%(table_name)s_%(column_0_N_name)s"}
)

runs = Table(
    "runs",
    metadata,
    Column("tenant_id", String(64), primary_key=True),
    Column("id", String(200), primary_key=True),
    Column("workflow", String(200), nullable=False),
    Column("version", String(64), nullable=False),  # registered definition it runs
    Column("input", JSON),
    Column("status", String(16), nullable=False),
    Column("output", JSON),
    Column("error", JSON),
    Column("suspended", JSON),  # {step, prompt, schema} while waiting for input
    Column("trace", JSON),  # W3C carrier of the run's span: a resumed run joins its trace
    Column("owner", String(64)),  # runner instance holding the lease while it executes
    Column("heartbeat", Float),  # lease renewal time; stale = the owner died
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    Index(None, "tenant_id", "status"),
    Index(None, "tenant_id", "created_at"),
)

# Registered definitions (workflows today), as data: a version is the content hash of
# the JSON body, so a version never changes meaning. Runs point at (name, version).
definitions = Table(
    "definitions",
    metadata,
    Column("tenant_id", String(64), primary_key=True),
    Column("kind", String(32), primary_key=True),
    Column("name", String(200), primary_key=True),
    Column("version", String(64), primary_key=True),
    Column("body", JSON, nullable=False),
    Column("created_at", Float, nullable=False),
)

checkpoints = Table(
    "checkpoints",
    metadata,
    Column("tenant_id", String(64), primary_key=True),
    Column("run_id", String(200), primary_key=True),
    Column("path", String(500), primary_key=True),
    Column("output", JSON),
    Column("created_at", Float, nullable=False),
)

events = Table(
    "events",
    metadata,
    Column("tenant_id", String(64), primary_key=True),
    Column("run_id", String(200), primary_key=True),
    Column("seq", Integer, primary_key=True, autoincrement=False),  # 1, 2, ... per run
    Column("ts", Float, nullable=False),
    Column("type", String(64), nullable=False),
    Column("data", JSON),
)

messages = Table(
    "messages",
    metadata,
    Column("tenant_id", String(64), primary_key=True),
    Column("agent", String(200), primary_key=True),
    Column("thread_id", String(200), primary_key=True),
    Column("seq", Integer, primary_key=True, autoincrement=False),  # 1, 2, ... per thread
    Column("message", JSON, nullable=False),
)

working_memory = Table(
    "working_memory",
    metadata,
    Column("tenant_id", String(64), primary_key=True),
    Column("agent", String(200), primary_key=True),
    Column("thread_id", String(200), primary_key=True),
    Column("data", JSON, nullable=False),
    Column("updated_at", Float, nullable=False),
)

TABLES = (runs, definitions, checkpoints, events, messages, working_memory)
