"""Tenant-keyed schema; imports a store written before migrations existed.

Creates the six tables with ``tenant_id`` first in every primary key, per-run event
and per-thread message sequence numbers, and JSON values only.

A database from a release before migrations (tables but no version table) is
converted in place, in the same transaction: its tables are renamed ``legacy_*``,
their rows copied into the new tables, and the legacy tables dropped. What changes:

- ``runs.definition`` (a cloudpickled Workflow: code, possibly with secrets) is
  dropped, never unpickled. Finished runs keep their input, output, error and events.
  A run that had not finished cannot be resumed without its definition, so it is
  marked ``failed`` with an error saying so; start it again from the workflow.
- checkpoints and events get the tenant of their run (``default`` when the run row
  is gone); event and message sequence numbers keep their old values (still
  increasing per run / thread), so a client's ``after`` cursor stays valid.
- working memory (JSON text) becomes a JSON value.

Revision ID: 0001_tenant_keyed
Revises:
Create Date: 2026-12-02
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0001_tenant_keyed"
down_revision = None
branch_labels = None
depends_on = None

_LEGACY = ("runs", "definitions", "checkpoints", "events", "messages", "working_memory")
_TERMINAL = ("succeeded", "failed", "cancelled")
_CHUNK = 500
# The tenant of rows whose owner cannot be found (events of federated metrics).
_DEFAULT_TENANT = "default"


def _tables() -> dict[str, sa.Table]:
    """The schema at this revision (a frozen copy: later edits of _schema.py must not
    change what this migration creates)."""
    m = sa.MetaData()
    t = {
        "runs": sa.Table(
            "runs",
            m,
            sa.Column("tenant_id", sa.String(64), nullable=False),
            sa.Column("id", sa.String(200), nullable=False),
            sa.Column("workflow", sa.String(200), nullable=False),
            sa.Column("version", sa.String(64), nullable=False),
            sa.Column("input", sa.JSON),
            sa.Column("status", sa.String(16), nullable=False),
            sa.Column("output", sa.JSON),
            sa.Column("error", sa.JSON),
            sa.Column("suspended", sa.JSON),
            sa.Column("trace", sa.JSON),
            sa.Column("owner", sa.String(64)),
            sa.Column("heartbeat", sa.Float),
            sa.Column("created_at", sa.Float, nullable=False),
            sa.Column("updated_at", sa.Float, nullable=False),
            sa.PrimaryKeyConstraint("tenant_id", "id", name="pk_runs"),
            sa.Index("ix_runs_tenant_id_status", "tenant_id", "status"),
            sa.Index("ix_runs_tenant_id_created_at", "tenant_id", "created_at"),
        ),
        "definitions": sa.Table(
            "definitions",
            m,
            sa.Column("tenant_id", sa.String(64), nullable=False),
            sa.Column("kind", sa.String(32), nullable=False),
            sa.Column("name", sa.String(200), nullable=False),
            sa.Column("version", sa.String(64), nullable=False),
            sa.Column("body", sa.JSON, nullable=False),
            sa.Column("created_at", sa.Float, nullable=False),
            sa.PrimaryKeyConstraint("tenant_id", "kind", "name", "version", name="pk_definitions"),
        ),
        "checkpoints": sa.Table(
            "checkpoints",
            m,
            sa.Column("tenant_id", sa.String(64), nullable=False),
            sa.Column("run_id", sa.String(200), nullable=False),
            sa.Column("path", sa.String(500), nullable=False),
            sa.Column("output", sa.JSON),
            sa.Column("created_at", sa.Float, nullable=False),
            sa.PrimaryKeyConstraint("tenant_id", "run_id", "path", name="pk_checkpoints"),
        ),
        "events": sa.Table(
            "events",
            m,
            sa.Column("tenant_id", sa.String(64), nullable=False),
            sa.Column("run_id", sa.String(200), nullable=False),
            sa.Column("seq", sa.Integer, nullable=False, autoincrement=False),
            sa.Column("ts", sa.Float, nullable=False),
            sa.Column("type", sa.String(64), nullable=False),
            sa.Column("data", sa.JSON),
            sa.PrimaryKeyConstraint("tenant_id", "run_id", "seq", name="pk_events"),
        ),
        "messages": sa.Table(
            "messages",
            m,
            sa.Column("tenant_id", sa.String(64), nullable=False),
            sa.Column("agent", sa.String(200), nullable=False),
            sa.Column("thread_id", sa.String(200), nullable=False),
            sa.Column("seq", sa.Integer, nullable=False, autoincrement=False),
            sa.Column("message", sa.JSON, nullable=False),
            sa.PrimaryKeyConstraint("tenant_id", "agent", "thread_id", "seq", name="pk_messages"),
        ),
        "working_memory": sa.Table(
            "working_memory",
            m,
            sa.Column("tenant_id", sa.String(64), nullable=False),
            sa.Column("agent", sa.String(200), nullable=False),
            sa.Column("thread_id", sa.String(200), nullable=False),
            sa.Column("data", sa.JSON, nullable=False),
            sa.Column("updated_at", sa.Float, nullable=False),
            sa.PrimaryKeyConstraint("tenant_id", "agent", "thread_id", name="pk_working_memory"),
        ),
    }
    return t


def upgrade() -> None:
    bind = op.get_bind()
    present = set(sa.inspect(bind).get_table_names())
    legacy = [name for name in _LEGACY if name in present]
    for name in legacy:
        op.rename_table(name, f"legacy_{name}")
    tables = _tables()
    for table in tables.values():
        table.create(bind)
    if legacy:
        _import_legacy(bind, tables, legacy)
        for name in legacy:
            op.drop_table(f"legacy_{name}")


def downgrade() -> None:
    for name in reversed(_LEGACY):
        op.drop_table(name)


# -- import of a pre-migration store ---------------------------------------------------


def _rows(bind: sa.Connection, name: str, order: str) -> Iterator[dict[str, Any]]:
    """The legacy table's rows in chunks (bounded memory for a big store)."""
    offset = 0
    while True:
        chunk = (
            bind.execute(
                sa.text(f"SELECT * FROM legacy_{name} ORDER BY {order} LIMIT :n OFFSET :o"),
                {"n": _CHUNK, "o": offset},
            )
            .mappings()
            .all()
        )
        yield from (dict(r) for r in chunk)
        if len(chunk) < _CHUNK:
            return
        offset += _CHUNK


def _json(bind: sa.Connection, value: Any) -> Any:
    """A legacy JSON column's value as Python data. Read with plain SQL, SQLite gives
    the stored text; PostgreSQL's driver has already parsed its json type."""
    if value is None or bind.dialect.name != "sqlite" or not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except ValueError:
        return value


def _insert(bind: sa.Connection, table: sa.Table, rows: list[dict[str, Any]]) -> None:
    if rows:
        bind.execute(sa.insert(table), rows)


def _import_legacy(bind: sa.Connection, tables: dict[str, sa.Table], legacy: list[str]) -> None:
    owners: dict[str, str] = {}  # run id -> tenant
    if "runs" in legacy:
        batch: list[dict[str, Any]] = []
        for r in _rows(bind, "runs", "id"):
            tenant = r.get("tenant_id") or _DEFAULT_TENANT
            owners[r["id"]] = tenant
            row = {
                "tenant_id": tenant,
                "id": r["id"],
                "workflow": r["workflow"],
                "version": r.get("version") or "legacy-unversioned",
                "status": r["status"],
                "owner": r.get("owner"),
                "heartbeat": r.get("heartbeat"),
                "created_at": r["created_at"],
                "updated_at": r["updated_at"],
            }
            for col in ("input", "output", "error", "suspended", "trace"):
                row[col] = _json(bind, r.get(col))
            if "version" not in r and r["status"] not in _TERMINAL:
                row.update(
                    status="failed",
                    owner=None,
                    suspended=None,
                    updated_at=time.time(),
                    error={
                        "code": "LUMOS-E011",
                        "type": "RunStateError",
                        "message": "This run was started by a release that stored the "
                        "workflow as pickled code; the store no longer keeps code, so it "
                        "cannot be resumed.",
                        "fix": "Start the run again from the workflow (its Python object "
                        "or YAML file).",
                    },
                )
            batch.append(row)
            if len(batch) >= _CHUNK:
                _insert(bind, tables["runs"], batch)
                batch = []
        _insert(bind, tables["runs"], batch)
    if "definitions" in legacy:
        batch = [
            {
                **r,
                "tenant_id": r.get("tenant_id") or _DEFAULT_TENANT,
                "body": _json(bind, r["body"]),
            }
            for r in _rows(bind, "definitions", "tenant_id, kind, name, version")
        ]
        _insert(bind, tables["definitions"], batch)
    if "checkpoints" in legacy:
        batch = []
        for r in _rows(bind, "checkpoints", "run_id, path"):
            batch.append(
                {
                    "tenant_id": r.get("tenant_id") or owners.get(r["run_id"], _DEFAULT_TENANT),
                    "run_id": r["run_id"],
                    "path": r["path"],
                    "output": _json(bind, r.get("output")),
                    "created_at": r["created_at"],
                }
            )
            if len(batch) >= _CHUNK:
                _insert(bind, tables["checkpoints"], batch)
                batch = []
        _insert(bind, tables["checkpoints"], batch)
    if "events" in legacy:
        batch = []
        for r in _rows(bind, "events", "seq"):
            batch.append(
                {
                    "tenant_id": r.get("tenant_id") or owners.get(r["run_id"], _DEFAULT_TENANT),
                    "run_id": r["run_id"],
                    "seq": r["seq"],
                    "ts": r["ts"],
                    "type": r["type"],
                    "data": _json(bind, r.get("data")),
                }
            )
            if len(batch) >= _CHUNK:
                _insert(bind, tables["events"], batch)
                batch = []
        _insert(bind, tables["events"], batch)
    if "messages" in legacy:
        batch = []
        for r in _rows(bind, "messages", "seq"):
            batch.append(
                {
                    "tenant_id": r.get("tenant_id") or _DEFAULT_TENANT,
                    "agent": r["agent"],
                    "thread_id": r["thread_id"],
                    "seq": r["seq"],
                    "message": _json(bind, r["message"]),
                }
            )
            if len(batch) >= _CHUNK:
                _insert(bind, tables["messages"], batch)
                batch = []
        _insert(bind, tables["messages"], batch)
    if "working_memory" in legacy:
        now = time.time()
        batch = []
        for r in _rows(bind, "working_memory", "tenant_id, agent, thread_id"):
            data = r["data"]
            if isinstance(data, str):  # stored as JSON text on both backends
                try:
                    data = json.loads(data)
                except ValueError:
                    data = {"text": data}
            batch.append(
                {
                    "tenant_id": r.get("tenant_id") or _DEFAULT_TENANT,
                    "agent": r["agent"],
                    "thread_id": r["thread_id"],
                    "data": data,
                    "updated_at": now,
                }
            )
            if len(batch) >= _CHUNK:
                _insert(bind, tables["working_memory"], batch)
                batch = []
        _insert(bind, tables["working_memory"], batch)
