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
    BigInteger,
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
    "PLATFORM_TABLES",
    "RUN_TABLES",
    "SCHEDULE_TABLES",
    "TABLES",
    "agent_slots",
    "api_keys",
    "audit_heads",
    "audit_log",
    "checkpoints",
    "definitions",
    "events",
    "messages",
    "metadata",
    "quota_usage",
    "runs",
    "schedules",
    "tenants",
    "usage_daily",
    "users",
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
    "turn_id": 64,
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
    # Set on a turn's first message: the id its caller gave the turn (a retried turn
    # finds it and is answered from here, not run again).
    Column("turn_id", String(64)),
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

RUN_TABLES = (runs, definitions, checkpoints, events, messages, working_memory)

# Scheduled runs: a workflow (name, version) started on a cron expression or a fixed
# period. ``next_fire`` is the next tick not yet fired; the runner advances it with a
# compare-and-set, and a tick's run id is derived from the tick, so a tick fires once
# however many times it is attempted (restarts, two runners).
schedules = Table(
    "schedules",
    metadata,
    Column("tenant_id", String(64), primary_key=True),
    Column("id", String(200), primary_key=True),
    Column("workflow", String(200), nullable=False),
    Column("version", String(64), nullable=False),
    Column("input", JSON),
    Column("cron", String(200)),  # a cron expression (5 fields, or 6 with seconds last)
    Column("every_s", Float),  # or a fixed period
    Column("catchup", String(16), nullable=False),  # missed ticks: "all" or "latest"
    Column("status", String(16), nullable=False),  # active | cancelled
    Column("next_fire", Float, nullable=False),
    Column("fired", BigInteger, nullable=False),  # ticks fired so far
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    Index(None, "tenant_id", "status", "next_fire"),
)
SCHEDULE_TABLES = (schedules,)

# -- the platform (lumos_ray.platform): tenants, keys, metering, agent slots, audit ------
# Tenant first in every key here too. Nothing secret is stored: an API key's secret is
# kept only as a hash (``secret_hash``); the key id is in clear so a key can be found.

tenants = Table(
    "tenants",
    metadata,
    Column("tenant_id", String(64), primary_key=True),
    Column("plan", String(32), nullable=False),  # a plan name from the plans config
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
)

users = Table(
    "users",
    metadata,
    Column("tenant_id", String(64), primary_key=True),
    Column("name", String(200), primary_key=True),
    Column("role", String(16), nullable=False),
    Column("created_at", Float, nullable=False),
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("tenant_id", String(64), primary_key=True),
    Column("key_id", String(32), primary_key=True),
    Column("secret_hash", String(64), nullable=False),  # sha256 hex of key id + secret
    Column("role", String(16), nullable=False),
    Column("name", String(200)),
    Column("user_name", String(200)),  # the user it was made for, if any
    Column("created_at", Float, nullable=False),
    Column("expires_at", Float),
    Column("revoked_at", Float),
    # A presented key names only its key id: ids are unique across tenants.
    Index(None, "key_id", unique=True),
)

# Metering per tenant and UTC day; counters grow with atomic upserts
# (``SET n = n + excluded.n``), never read-modify-write in Python.
usage_daily = Table(
    "usage_daily",
    metadata,
    Column("tenant_id", String(64), primary_key=True),
    Column("day", String(10), primary_key=True),  # YYYY-MM-DD (UTC)
    Column("requests", BigInteger, nullable=False),
    Column("prompt_tokens", BigInteger, nullable=False),
    Column("completion_tokens", BigInteger, nullable=False),
    Column("embedding_inputs", BigInteger, nullable=False),
    Column("agent_seconds", Float, nullable=False),
    Column("storage_bytes", BigInteger),  # a gauge: the last value reported that day
    Column("updated_at", Float, nullable=False),
)

# What counts against a plan's monthly limits: one row per tenant, month and metric,
# charged with a conditional UPDATE (``used + n <= limit``) so concurrent gateways
# never overshoot.
quota_usage = Table(
    "quota_usage",
    metadata,
    Column("tenant_id", String(64), primary_key=True),
    Column("period", String(7), primary_key=True),  # YYYY-MM (UTC)
    Column("metric", String(32), primary_key=True),
    Column("used", BigInteger, nullable=False),
)

# Leases on a tenant's concurrent-agent allowance, cluster-wide: a row per running
# agent, renewed by its holder; an expired row is free again.
agent_slots = Table(
    "agent_slots",
    metadata,
    Column("tenant_id", String(64), primary_key=True),
    Column("slot_id", String(32), primary_key=True),
    Column("holder", String(200)),
    Column("acquired_at", Float, nullable=False),
    Column("expires_at", Float, nullable=False),
    Index(None, "tenant_id", "expires_at"),
)

# Append-only and hash-chained per tenant: row ``seq`` stores the hash of row seq-1
# (``prev_hash``) and the hash of its own content chained to it (``hash``).
audit_log = Table(
    "audit_log",
    metadata,
    Column("tenant_id", String(64), primary_key=True),
    Column("seq", Integer, primary_key=True, autoincrement=False),  # 1, 2, ... per tenant
    Column("ts", Float, nullable=False),
    Column("actor", String(200), nullable=False),
    Column("action", String(64), nullable=False),
    Column("target", String(500), nullable=False),
    Column("detail", JSON),
    Column("prev_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False),
)

# The last entry of each tenant's chain, written in the same transaction as the entry:
# deleting the newest rows (which leaves a valid shorter chain) shows as a mismatch.
audit_heads = Table(
    "audit_heads",
    metadata,
    Column("tenant_id", String(64), primary_key=True),
    Column("seq", Integer, nullable=False),
    Column("hash", String(64), nullable=False),
)

PLATFORM_TABLES = (
    tenants,
    users,
    api_keys,
    usage_daily,
    quota_usage,
    agent_slots,
    audit_log,
    audit_heads,
)
TABLES = RUN_TABLES + SCHEDULE_TABLES + PLATFORM_TABLES
