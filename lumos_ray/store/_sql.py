"""The run store: runs, step checkpoints, events and agent memory.

SQLAlchemy Core over a database URL: ``sqlite:///path`` by default (WAL, so the
runner and agent actors on the head node share it), any SQLAlchemy URL otherwise
(e.g. ``postgresql+psycopg://...``). Every write is one small statement: a finished
step is one INSERT, an event is one INSERT, so checkpointing stays off the hot path.
Every row carries a tenant id, so tenant isolation is a filter, not a migration.
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any

from sqlalchemy import (
    JSON,
    Column,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    event,
    insert,
    select,
    update,
)
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from lumos_ray.errors import ConfigError, NotFoundError

__all__ = ["TERMINAL_STATES", "RunStore", "open_store"]

TERMINAL_STATES = frozenset({"succeeded", "failed", "cancelled"})

_meta = MetaData()

runs = Table(
    "runs",
    _meta,
    Column("id", String(64), primary_key=True),
    Column("tenant_id", String(64), nullable=False, index=True),
    Column("workflow", String(200), nullable=False),
    Column("version", String(64), nullable=False),  # registered definition it runs
    Column("input", JSON),
    Column("status", String(16), nullable=False, index=True),
    Column("output", JSON),
    Column("error", JSON),
    Column("suspended", JSON),  # {path, prompt, schema} while waiting for input
    Column("trace", JSON),  # W3C carrier of the run's span: a resumed run joins its trace
    Column("owner", String(64)),  # runner instance holding the lease while it executes
    Column("heartbeat", Float),  # lease renewal time; stale = the owner died
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
)

# Registered definitions (workflows today), as data: a version is the content hash of
# the JSON body, so a version never changes meaning. Runs point at (name, version).
definitions = Table(
    "definitions",
    _meta,
    Column("tenant_id", String(64), primary_key=True),
    Column("kind", String(32), primary_key=True),
    Column("name", String(200), primary_key=True),
    Column("version", String(64), primary_key=True),
    Column("body", JSON, nullable=False),
    Column("created_at", Float, nullable=False),
)

checkpoints = Table(
    "checkpoints",
    _meta,
    Column("run_id", String(64), primary_key=True),
    Column("path", String(500), primary_key=True),
    Column("output", JSON),
    Column("created_at", Float, nullable=False),
)

events = Table(
    "events",
    _meta,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("run_id", String(64), nullable=False, index=True),
    Column("ts", Float, nullable=False),
    Column("type", String(64), nullable=False),
    Column("data", JSON),
)

messages = Table(
    "messages",
    _meta,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("tenant_id", String(64), nullable=False),
    Column("agent", String(200), nullable=False),
    Column("thread_id", String(200), nullable=False, index=True),
    Column("message", JSON, nullable=False),
)

working_memory = Table(
    "working_memory",
    _meta,
    Column("tenant_id", String(64), primary_key=True),
    Column("agent", String(200), primary_key=True),
    Column("thread_id", String(200), primary_key=True),
    Column("data", Text, nullable=False),
)


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA busy_timeout=10000")
    cur.close()


class RunStore:
    """Thread-safe access to one database; cheap to construct per process."""

    def __init__(self, url: str, tenant_id: str = "default") -> None:
        self.url = url
        self.tenant_id = tenant_id
        try:
            self._engine: Engine = create_engine(url, future=True)
        except Exception as exc:
            raise ConfigError(
                f"Invalid run store URL {url!r}: {exc}",
                fix="Use sqlite:///ABSOLUTE/PATH.db or a SQLAlchemy database URL "
                "(e.g. postgresql+psycopg://user:pass@host/db) in LUMOS_STORE_URL.",
            ) from None
        if self._engine.dialect.name == "sqlite":
            event.listen(self._engine, "connect", _sqlite_pragmas)
        _meta.create_all(self._engine)
        self._lock = threading.Lock()

    # -- registered definitions -------------------------------------------------
    def put_definition(self, kind: str, name: str, version: str, body: dict[str, Any]) -> bool:
        """Register ``body`` as (kind, name, version); a no-op if it is already there
        (versions are content hashes). Returns True when it was new."""
        try:
            with self._engine.begin() as c:
                c.execute(
                    insert(definitions).values(
                        tenant_id=self.tenant_id,
                        kind=kind,
                        name=name,
                        version=version,
                        body=body,
                        created_at=time.time(),
                    )
                )
        except IntegrityError:
            return False
        return True

    def get_definition(self, kind: str, name: str, version: str | None = None) -> dict[str, Any]:
        """The registered definition (the newest one when ``version`` is None)."""
        q = select(definitions).where(
            definitions.c.tenant_id == self.tenant_id,
            definitions.c.kind == kind,
            definitions.c.name == name,
        )
        if version is not None:
            q = q.where(definitions.c.version == version)
        q = q.order_by(definitions.c.created_at.desc()).limit(1)
        with self._engine.connect() as c:
            row = c.execute(q).first()
        if row is None:
            known = [d["version"] for d in self.list_definitions(kind, name)]
            what = f"{kind} {name!r}" + (f" version {version!r}" if version else "")
            raise NotFoundError(
                f"No registered {what}"
                + (f" (registered versions: {', '.join(known[:10])})." if known else "."),
                fix="Start the run from the workflow itself (a Workflow object or its YAML "
                "file), which registers it, or name a registered version "
                "(`lumos workflows list`).",
            )
        return dict(row._mapping)

    def list_definitions(self, kind: str, name: str | None = None) -> list[dict[str, Any]]:
        """(name, version, created_at) of registered definitions, newest first."""
        q = select(definitions.c.name, definitions.c.version, definitions.c.created_at).where(
            definitions.c.tenant_id == self.tenant_id, definitions.c.kind == kind
        )
        if name is not None:
            q = q.where(definitions.c.name == name)
        with self._engine.connect() as c:
            rows = c.execute(q.order_by(definitions.c.created_at.desc()).limit(1000))
            return [dict(r._mapping) for r in rows]

    # -- runs -------------------------------------------------------------------
    def create_run(
        self, run_id: str, workflow: str, version: str, input: Any, status: str = "pending"
    ) -> None:
        now = time.time()
        with self._engine.begin() as c:
            c.execute(
                insert(runs).values(
                    id=run_id,
                    tenant_id=self.tenant_id,
                    workflow=workflow,
                    version=version,
                    input=input,
                    status=status,
                    created_at=now,
                    updated_at=now,
                )
            )

    def get_run(self, run_id: str) -> dict[str, Any]:
        with self._engine.connect() as c:
            row = c.execute(
                select(runs).where(runs.c.id == run_id, runs.c.tenant_id == self.tenant_id)
            ).first()
        if row is None:
            raise NotFoundError(
                f"No run with id {run_id!r}.", fix="List runs with `lumos runs list`."
            )
        return dict(row._mapping)

    def list_runs(self, status: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
        q = select(runs).where(runs.c.tenant_id == self.tenant_id)
        if status:
            q = q.where(runs.c.status == status)
        q = q.order_by(runs.c.created_at.desc()).limit(limit)
        with self._engine.connect() as c:
            return [dict(r._mapping) for r in c.execute(q)]

    def set_status(self, run_id: str, status: str, **fields: Any) -> None:
        with self._engine.begin() as c:
            c.execute(
                update(runs)
                .where(runs.c.id == run_id)
                .values(status=status, updated_at=time.time(), **fields)
            )

    # -- leases: one runner executes a run at a time ------------------------------
    def claim(self, run_id: str, owner: str, stale_after_s: float) -> bool:
        """Atomically take the run's lease if it is free, ours, or its owner went quiet."""
        now = time.time()
        with self._engine.begin() as c:
            n = c.execute(
                update(runs)
                .where(
                    runs.c.id == run_id,
                    (runs.c.owner.is_(None))
                    | (runs.c.owner == owner)
                    | (runs.c.heartbeat < now - stale_after_s),
                )
                .values(owner=owner, heartbeat=now)
            ).rowcount
        return n == 1

    def renew(self, owner: str, run_ids: list[str]) -> None:
        if not run_ids:
            return
        with self._engine.begin() as c:
            c.execute(
                update(runs)
                .where(runs.c.owner == owner, runs.c.id.in_(run_ids))
                .values(heartbeat=time.time())
            )

    def stale_runs(self, stale_after_s: float) -> list[str]:
        """Runs marked active whose owner stopped renewing its lease."""
        cutoff = time.time() - stale_after_s
        with self._engine.connect() as c:
            return [
                r[0]
                for r in c.execute(
                    select(runs.c.id).where(
                        runs.c.status.in_(["running", "pending"]),
                        runs.c.tenant_id == self.tenant_id,
                        (runs.c.heartbeat.is_(None)) | (runs.c.heartbeat < cutoff),
                    )
                )
            ]

    # -- checkpoints ------------------------------------------------------------
    def save_checkpoint(
        self,
        run_id: str,
        path: str,
        output: Any,
        pending_events: list[tuple[str, dict[str, Any]]] | None = None,
    ) -> None:
        """One transaction: the step's output plus the events emitted before it."""
        now = time.time()
        with self._engine.begin() as c:
            if pending_events:
                c.execute(
                    insert(events),
                    [
                        {"run_id": run_id, "ts": now, "type": t, "data": d}
                        for t, d in pending_events
                    ],
                )
            c.execute(
                insert(checkpoints).values(run_id=run_id, path=path, output=output, created_at=now)
            )

    def load_checkpoints(self, run_id: str) -> dict[str, Any]:
        with self._engine.connect() as c:
            rows = c.execute(
                select(checkpoints.c.path, checkpoints.c.output).where(
                    checkpoints.c.run_id == run_id
                )
            )
            return {r.path: r.output for r in rows}

    # -- events -----------------------------------------------------------------
    def append_events(self, run_id: str, items: list[tuple[str, dict[str, Any]]]) -> None:
        if not items:
            return
        now = time.time()
        with self._engine.begin() as c:
            c.execute(
                insert(events),
                [{"run_id": run_id, "ts": now, "type": t, "data": d} for t, d in items],
            )

    def read_events(self, run_id: str, after: int = 0, limit: int = 1000) -> list[dict[str, Any]]:
        with self._engine.connect() as c:
            rows = c.execute(
                select(events.c.seq, events.c.ts, events.c.type, events.c.data)
                .where(events.c.run_id == run_id, events.c.seq > after)
                .order_by(events.c.seq)
                .limit(limit)
            )
            return [dict(r._mapping) for r in rows]

    # -- agent memory -----------------------------------------------------------
    def append_messages_many(
        self, agent: str, items: list[tuple[str, list[dict[str, Any]]]]
    ) -> None:
        """Several threads' new messages in ONE transaction (group commit)."""
        rows = [
            {"tenant_id": self.tenant_id, "agent": agent, "thread_id": t, "message": m}
            for t, new in items
            for m in new
        ]
        if rows:
            with self._engine.begin() as c:
                c.execute(insert(messages), rows)

    def load_messages_many(
        self, agent: str, thread_ids: list[str]
    ) -> dict[str, list[dict[str, Any]]]:
        out: dict[str, list[dict[str, Any]]] = {t: [] for t in thread_ids}
        with self._engine.connect() as c:
            rows = c.execute(
                select(messages.c.thread_id, messages.c.message)
                .where(
                    messages.c.tenant_id == self.tenant_id,
                    messages.c.agent == agent,
                    messages.c.thread_id.in_(thread_ids),
                )
                .order_by(messages.c.seq)
            )
            for t, m in rows:
                out[t].append(m)
        return out

    def load_working_memory(self, agent: str, thread_id: str) -> dict[str, Any]:
        with self._engine.connect() as c:
            row = c.execute(
                select(working_memory.c.data).where(
                    working_memory.c.tenant_id == self.tenant_id,
                    working_memory.c.agent == agent,
                    working_memory.c.thread_id == thread_id,
                )
            ).first()
        return json.loads(row[0]) if row else {}

    def save_working_memory(self, agent: str, thread_id: str, data: dict[str, Any]) -> None:
        blob = json.dumps(data, default=str)
        key = {"tenant_id": self.tenant_id, "agent": agent, "thread_id": thread_id}
        with self._engine.begin() as c:
            done = c.execute(
                update(working_memory)
                .where(*(getattr(working_memory.c, k) == v for k, v in key.items()))
                .values(data=blob)
            ).rowcount
            if not done:
                c.execute(insert(working_memory).values(**key, data=blob))


_stores: dict[tuple[str, str], RunStore] = {}
_stores_lock = threading.Lock()


def open_store(url: str | None = None, tenant_id: str | None = None) -> RunStore:
    """The process-wide store for ``url`` (default: from settings)."""
    from lumos_ray.runtime import current_settings

    settings = current_settings()
    url = url or settings.resolved_store_url()
    tenant = tenant_id or settings.tenant_id
    with _stores_lock:
        key = (url, tenant)
        if key not in _stores:
            if url.startswith("sqlite:///"):
                from pathlib import Path

                Path(url[len("sqlite:///") :]).parent.mkdir(parents=True, exist_ok=True)
            _stores[key] = RunStore(url, tenant)
        return _stores[key]
