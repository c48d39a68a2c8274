"""The control-plane store: runs, registered definitions, step checkpoints, events,
agent threads and working memory; tenants, keys, usage and audit as the platform adds
them.

SQLAlchemy over a database URL: SQLite embedded by default, PostgreSQL (psycopg 3)
for clusters, one schema with Alembic migrations applied when a store opens. Every
table is keyed by tenant and every query filters by the store's tenant. It stores data
only: never pickled code, never secrets. See docs/store.md.
"""

from __future__ import annotations

from lumos_ray.store._bytes import TENANT_DATA_TABLES, tenant_bytes
from lumos_ray.store._database import Database, open_database
from lumos_ray.store._engine import EncodedJSON, encode_json
from lumos_ray.store._errors import StoreError
from lumos_ray.store._schedules import MAX_SCHEDULES, ScheduleStore
from lumos_ray.store._schema import (
    agent_slots,
    api_keys,
    audit_heads,
    audit_log,
    quota_usage,
    tenants,
    usage_daily,
    users,
)
from lumos_ray.store._store import (
    MAX_BATCH,
    MAX_READ,
    RUN_STATES,
    TERMINAL_STATES,
    CheckpointWrite,
    RunStore,
    ThreadMessages,
    open_store,
)
from lumos_ray.store._url import CONNECT_TIMEOUT_S, mask_url

__all__ = [
    "CONNECT_TIMEOUT_S",
    "MAX_BATCH",
    "MAX_READ",
    "MAX_SCHEDULES",
    "RUN_STATES",
    "TENANT_DATA_TABLES",
    "TERMINAL_STATES",
    "CheckpointWrite",
    "Database",
    "EncodedJSON",
    "RunStore",
    "ScheduleStore",
    "StoreError",
    "ThreadMessages",
    "agent_slots",
    "api_keys",
    "audit_heads",
    "audit_log",
    "encode_json",
    "mask_url",
    "open_database",
    "open_store",
    "quota_usage",
    "tenant_bytes",
    "tenants",
    "usage_daily",
    "users",
]
