"""RunStore: runs, registered definitions, checkpoints, events, agent memory.

One class over SQLAlchemy Core for both backends (``sqlite:////ABS/PATH.db`` by
default, ``postgresql+psycopg://...`` for clusters). A store instance is bound to one
tenant and every statement it runs filters by that tenant, reads and writes alike: two
stores with different tenants on one database cannot see or change each other's rows.
Opening a store connects (so a wrong URL fails here, not in the middle of a run) and
upgrades its schema to this release's (see ``_migrate``).

Writes are small and few per step: a finished step is one transaction holding its
checkpoint and the events emitted before it; :meth:`RunStore.save_many` writes many
runs' steps in one transaction (group commit). Values are JSON only; nothing is
pickled and nothing here ever stores a secret.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Connection,
    Table,
    and_,
    delete,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite

from lumos_ray._files import private_dir
from lumos_ray.errors import InputValidationError, NotFoundError, RunStateError
from lumos_ray.store import _migrate
from lumos_ray.store._batch import check_write, write_batch
from lumos_ray.store._batch_sql import batch_sql
from lumos_ray.store._engine import connect_error, guard, make_engines
from lumos_ray.store._errors import StoreError
from lumos_ray.store._schema import (
    checkpoints,
    definitions,
    events,
    messages,
    runs,
    working_memory,
)
from lumos_ray.store._url import CONNECT_TIMEOUT_S, StoreURL, parse_store_url
from lumos_ray.store._writes import (
    _RUN_FIELDS,
    MAX_BATCH,
    CheckpointWrite,
    Event,
    ThreadMessages,
    _check,
    _check_events,
)

__all__ = [
    "MAX_BATCH",
    "MAX_READ",
    "RUN_STATES",
    "TERMINAL_STATES",
    "CheckpointWrite",
    "RunStore",
    "ThreadMessages",
    "open_store",
]

TERMINAL_STATES = frozenset({"succeeded", "failed", "cancelled"})
RUN_STATES = frozenset({"pending", "running", "suspended", *TERMINAL_STATES})
#: Most rows one read returns (MAX_BATCH: most items one batched write takes).
MAX_READ = 10_000
_IN_CHUNK = 500  # ids per IN (...) clause
_TENANT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@-]*$")


def _check_tenant(tenant_id: Any) -> str:
    _check("tenant_id", tenant_id)
    if not _TENANT_RE.match(tenant_id):
        raise InputValidationError(
            f"Invalid tenant id {tenant_id!r}: use letters, digits and . _ : @ - "
            "(starting with a letter or digit).",
            fix="Set LUMOS_TENANT (or LumosSettings.tenant_id) to a plain identifier.",
        )
    return tenant_id


def _check_limit(limit: Any, bound: int = MAX_READ) -> int:
    if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= bound:
        raise InputValidationError(
            f"Invalid limit {limit!r}: must be an integer from 1 to {bound}.",
            fix="Page through results with a smaller limit (and `after` for events).",
        )
    return limit


def _chunks(ids: Sequence[str]) -> Iterator[Sequence[str]]:
    for i in range(0, len(ids), _IN_CHUNK):
        yield ids[i : i + _IN_CHUNK]


# Serialise writers of the same sequences on PostgreSQL (see RunStore._lock_keys).
_PG_LOCK_SQL = (
    "SELECT count(pg_advisory_xact_lock(h)) FROM (SELECT DISTINCT "
    "hashtextextended(k, 0) AS h FROM unnest(CAST(%s AS text[])) AS k ORDER BY h) AS s"
)


class RunStore:
    """Thread-safe access to one database for one tenant; cheap to share per process.

    ``RunStore(url, tenant_id)`` connects, upgrades the schema, and raises a
    :class:`~lumos_ray.store.StoreError` naming the URL (password masked) and the fix
    when the database cannot be reached within ``connect_timeout_s``.
    """

    def __init__(
        self,
        url: str,
        tenant_id: str = "default",
        *,
        connect_timeout_s: float = CONNECT_TIMEOUT_S,
    ) -> None:
        self.tenant_id = _check_tenant(tenant_id)
        self._target: StoreURL = parse_store_url(url)
        #: The URL as it may be shown (password masked).
        self.url = self._target.masked
        self.backend = self._target.backend
        self._engine, self._reader = make_engines(self._target, connect_timeout_s)
        self._owns_engine = True
        try:
            _migrate.upgrade(self._engine, self.url, self._target.sqlite_path)
        except StoreError:
            self._engine.dispose()
            raise
        except Exception as exc:
            self._engine.dispose()
            raise connect_error(exc, self._target) from None

    def for_tenant(self, tenant_id: str) -> RunStore:
        """The same database seen as ``tenant_id`` (shares this store's connections)."""
        other = object.__new__(RunStore)
        other.__dict__.update(self.__dict__)
        other.tenant_id = _check_tenant(tenant_id)
        other._owns_engine = False
        return other

    def close(self) -> None:
        """Release the connections (stores from :func:`open_store` live as long as the
        process; close the ones you construct yourself)."""
        if self._owns_engine:
            self._engine.dispose()

    def __repr__(self) -> str:
        return f"RunStore({self.url!r}, tenant_id={self.tenant_id!r})"

    # -- connections ------------------------------------------------------------
    @contextmanager
    def _write(self) -> Iterator[Connection]:
        """One write transaction (SQLite: takes the write lock up front)."""
        with guard(self._target), self._engine.connect() as c:
            c.execution_options(lumos_write=True)
            with c.begin():
                yield c

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        with guard(self._target), self._reader.connect() as c:
            yield c

    def _lock_keys(self, c: Connection, scope: str, keys: Iterable[str]) -> None:
        """PostgreSQL: serialise writers of the same sequences (run events, thread
        messages) for this transaction, taking locks in one global order so two
        group commits never deadlock. SQLite's write lock already serialises."""
        if self.backend != "postgresql":
            return
        names = sorted({f"{scope}\x1f{self.tenant_id}\x1f{k}" for k in keys})
        if names:  # driver SQL: on every group commit (see _batch_sql)
            c.exec_driver_sql(_PG_LOCK_SQL, (names,))

    def _next_seqs(
        self, c: Connection, table: Table, key_col: str, keys: set[str], **where: str
    ) -> dict[str, int]:
        """The last sequence number in use per key (0 when none), inside the write."""
        return batch_sql(c).max_seqs(c, table, key_col, self.tenant_id, keys, where)

    def _insert_events(self, c: Connection, by_run: dict[str, list[Event]], now: float) -> None:
        by_run = {r: e for r, e in by_run.items() if e}
        if not by_run:
            return
        self._lock_keys(c, "events", by_run)
        last = self._next_seqs(c, events, "run_id", set(by_run))
        rows = [
            {
                "tenant_id": self.tenant_id,
                "run_id": run_id,
                "seq": last[run_id] + i,
                "ts": now,
                "type": kind,
                "data": data,
            }
            for run_id, items in by_run.items()
            for i, (kind, data) in enumerate(items, start=1)
        ]
        batch_sql(c).insert_many(c, events, rows)

    def _upsert(self) -> Any:
        return postgresql.insert if self.backend == "postgresql" else sqlite.insert

    # -- registered definitions -------------------------------------------------
    def put_definition(self, kind: str, name: str, version: str, body: dict[str, Any]) -> bool:
        """Register ``body`` as (kind, name, version); a no-op if it is already there
        (versions are content hashes). Returns True when it was new."""
        row = {
            "tenant_id": self.tenant_id,
            "kind": _check("kind", kind),
            "name": _check("name", name),
            "version": _check("version", version),
            "body": body,
            "created_at": time.time(),
        }
        if not isinstance(body, dict):
            raise InputValidationError(
                f"Definition body of {name!r} is {type(body).__name__}, not a JSON object.",
                fix="Register the definition's data (a dict), e.g. workflow_to_data(wf).",
            )
        stmt = (
            self._upsert()(definitions)
            .values(**row)
            .on_conflict_do_nothing()
            .returning(definitions.c.version)  # rowcount is not portable here
        )
        with self._write() as c:
            return c.execute(stmt).first() is not None

    def get_definition(self, kind: str, name: str, version: str | None = None) -> dict[str, Any]:
        """The registered definition (the newest one when ``version`` is None)."""
        q = select(definitions).where(
            definitions.c.tenant_id == self.tenant_id,
            definitions.c.kind == _check("kind", kind),
            definitions.c.name == _check("name", name),
        )
        if version is not None:
            q = q.where(definitions.c.version == _check("version", version))
        q = q.order_by(definitions.c.created_at.desc()).limit(1)
        with self._read() as c:
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
            definitions.c.tenant_id == self.tenant_id, definitions.c.kind == _check("kind", kind)
        )
        if name is not None:
            q = q.where(definitions.c.name == _check("name", name))
        with self._read() as c:
            rows = c.execute(q.order_by(definitions.c.created_at.desc()).limit(1000))
            return [dict(r._mapping) for r in rows]

    # -- runs -------------------------------------------------------------------
    def create_run(
        self, run_id: str, workflow: str, version: str, input: Any, status: str = "pending"
    ) -> None:
        """Insert a new run. An id this tenant already uses raises SQLAlchemy's
        ``IntegrityError`` (the runner treats it as a client retrying its start)."""
        now = time.time()
        row = {
            "tenant_id": self.tenant_id,
            "id": _check("run_id", run_id),
            "workflow": _check("workflow", workflow),
            "version": _check("version", version),
            "input": input,
            "status": self._check_status(status),
            "created_at": now,
            "updated_at": now,
        }
        with self._write() as c:
            c.execute(insert(runs).values(**row))

    def get_run(self, run_id: str) -> dict[str, Any]:
        with self._read() as c:
            row = c.execute(
                select(runs).where(runs.c.tenant_id == self.tenant_id, runs.c.id == run_id)
            ).first()
        if row is None:
            raise NotFoundError(
                f"No run with id {str(run_id)[:200]!r}.", fix="List runs with `lumos runs list`."
            )
        return dict(row._mapping)

    def list_runs(self, status: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
        """This tenant's runs, newest first (``status`` filters)."""
        q = select(runs).where(runs.c.tenant_id == self.tenant_id)
        if status:
            q = q.where(runs.c.status == self._check_status(status))
        q = q.order_by(runs.c.created_at.desc()).limit(_check_limit(limit))
        with self._read() as c:
            return [dict(r._mapping) for r in c.execute(q)]

    def runs_page(
        self,
        *,
        status: str | None = None,
        workflow: str | None = None,
        since: float | None = None,
        until: float | None = None,
        after: tuple[float, str] | None = None,
        limit: int = 500,
        newest_first: bool = False,
    ) -> list[dict[str, Any]]:
        """This tenant's runs oldest first by (created_at, id), filtered; pass the last
        row's (created_at, id) as ``after`` for the next page, so a reader of a large
        store (the dataset export) holds one page at a time. ``newest_first``: the
        other way round (the dashboard's list; ``after`` then pages to older runs)."""
        q = select(runs).where(runs.c.tenant_id == self.tenant_id)
        if status:
            q = q.where(runs.c.status == self._check_status(status))
        if workflow:
            q = q.where(runs.c.workflow == _check("workflow", workflow))
        if since is not None:
            q = q.where(runs.c.created_at >= float(since))
        if until is not None:
            q = q.where(runs.c.created_at < float(until))
        if after is not None:
            t, rid = float(after[0]), str(after[1])
            if newest_first:
                q = q.where(
                    or_(runs.c.created_at < t, and_(runs.c.created_at == t, runs.c.id < rid))
                )
            else:
                q = q.where(
                    or_(runs.c.created_at > t, and_(runs.c.created_at == t, runs.c.id > rid))
                )
        if newest_first:
            q = q.order_by(runs.c.created_at.desc(), runs.c.id.desc())
        else:
            q = q.order_by(runs.c.created_at, runs.c.id)
        q = q.limit(_check_limit(limit))
        with self._read() as c:
            return [dict(r._mapping) for r in c.execute(q)]

    @staticmethod
    def _check_status(status: Any) -> str:
        if status not in RUN_STATES:
            raise InputValidationError(
                f"Invalid run status {str(status)[:40]!r}.",
                fix=f"Use one of: {', '.join(sorted(RUN_STATES))}.",
            )
        return str(status)

    def set_status(self, run_id: str, status: str, **fields: Any) -> None:
        """Set a run's status and any of its other fields (output, error, suspended,
        trace, owner, heartbeat, ...). A run of another tenant is left untouched."""
        unknown = set(fields) - _RUN_FIELDS
        if unknown:
            raise InputValidationError(
                f"set_status got unknown run fields: {', '.join(sorted(unknown))}.",
                fix=f"Pass only: {', '.join(sorted(_RUN_FIELDS))}.",
            )
        values = {"status": self._check_status(status), "updated_at": time.time(), **fields}
        with self._write() as c:
            c.execute(
                update(runs)
                .where(runs.c.tenant_id == self.tenant_id, runs.c.id == run_id)
                .values(**values)
            )

    def delete_run(self, run_id: str) -> None:
        """Delete a finished run with its checkpoints and events (to free storage).

        NotFoundError when this tenant has no such run (another tenant's run is not
        found either); RunStateError while it is pending, running or suspended
        (cancel it first): a runner may still be writing it."""
        with self._write() as c:
            status = c.execute(
                select(runs.c.status).where(runs.c.tenant_id == self.tenant_id, runs.c.id == run_id)
            ).scalar()
            if status is None:
                raise NotFoundError(
                    f"No run with id {str(run_id)[:200]!r}.",
                    fix="List runs with `lumos runs list`.",
                )
            if status not in TERMINAL_STATES:
                raise RunStateError(
                    f"Run {run_id!r} is {status}; only a finished run can be deleted.",
                    fix=f"Cancel it first (`lumos runs cancel {run_id}`).",
                )
            for table, col in ((events, events.c.run_id), (checkpoints, checkpoints.c.run_id)):
                c.execute(delete(table).where(table.c.tenant_id == self.tenant_id, col == run_id))
            c.execute(delete(runs).where(runs.c.tenant_id == self.tenant_id, runs.c.id == run_id))

    # -- leases: one runner executes a run at a time ------------------------------
    def claim(self, run_id: str, owner: str, stale_after_s: float) -> bool:
        """Atomically take the run's lease if it is free, ours, or its owner went quiet."""
        _check("owner", owner)
        now = time.time()
        with self._write() as c:
            n = c.execute(
                update(runs)
                .where(
                    runs.c.tenant_id == self.tenant_id,
                    runs.c.id == run_id,
                    (runs.c.owner.is_(None))
                    | (runs.c.owner == owner)
                    | (runs.c.heartbeat < now - stale_after_s),
                )
                .values(owner=owner, heartbeat=now)
            ).rowcount
        return n == 1

    def renew(self, owner: str, run_ids: list[str]) -> None:
        """Renew ``owner``'s leases on ``run_ids`` (the ones it still holds)."""
        if not run_ids:
            return
        now = time.time()
        with self._write() as c:
            for part in _chunks(list(run_ids)):
                c.execute(
                    update(runs)
                    .where(
                        runs.c.tenant_id == self.tenant_id,
                        runs.c.owner == owner,
                        runs.c.id.in_(part),
                    )
                    .values(heartbeat=now)
                )

    def stale_runs(self, stale_after_s: float) -> list[str]:
        """Runs marked active whose owner stopped renewing its lease."""
        cutoff = time.time() - stale_after_s
        with self._read() as c:
            return [
                r[0]
                for r in c.execute(
                    select(runs.c.id)
                    .where(
                        runs.c.tenant_id == self.tenant_id,
                        runs.c.status.in_(["running", "pending"]),
                        (runs.c.heartbeat.is_(None)) | (runs.c.heartbeat < cutoff),
                    )
                    .limit(MAX_READ)
                )
            ]

    # -- checkpoints ------------------------------------------------------------
    def save_checkpoint(
        self,
        run_id: str,
        path: str,
        output: Any,
        pending_events: list[Event] | None = None,
    ) -> None:
        """One transaction: the step's output plus the events emitted before it. A
        second checkpoint for the same step raises SQLAlchemy's ``IntegrityError``
        (the first one stands)."""
        _check("run_id", run_id)
        _check("path", path)
        evs = _check_events(pending_events or ())
        now = time.time()
        with self._write() as c:
            self._insert_events(c, {run_id: evs}, now)
            c.execute(
                insert(checkpoints).values(
                    tenant_id=self.tenant_id,
                    run_id=run_id,
                    path=path,
                    output=output,
                    created_at=now,
                )
            )

    def save_many(self, items: Sequence[CheckpointWrite]) -> list[tuple[str, str]]:
        """Group commit: several runs' checkpoints and events in ONE transaction.

        For a caller that finishes many steps at once: one transaction (one fsync on
        SQLite, one commit round trip on PostgreSQL) instead of one per step. Events
        keep their order within each item, and items of the same run keep theirs.
        All or nothing, except that a checkpoint whose step already has one is skipped
        (the first one stands; its events are still written), so one run's replayed
        step cannot fail the other runs' writes. Returns the skipped (run_id, path)s.

        The runner's own write path (``_batch.write_batch``) does the work, checks
        included, so the two cannot drift apart: one implementation of a checkpoint
        write and of the agent turn saved with it.
        """
        if len(items) > MAX_BATCH:
            raise InputValidationError(
                f"{len(items)} items in one save_many (at most {MAX_BATCH}).",
                fix="Split the batch.",
            )
        for it in items:
            if not isinstance(it, CheckpointWrite):
                raise InputValidationError(
                    f"save_many takes CheckpointWrite items, got {type(it).__name__}.",
                    fix="Wrap each write: CheckpointWrite(run_id, path, output, events).",
                )
            check_write(self, it)
        if not items:
            return []
        done = write_batch(self, items)
        return sorted(
            {(it.run_id, str(it.path)) for it, r in zip(items, done, strict=True) if not r.stored}
        )

    def load_checkpoints(self, run_id: str) -> dict[str, Any]:
        """path -> output of every finished step of the run."""
        with self._read() as c:
            rows = c.execute(
                select(checkpoints.c.path, checkpoints.c.output).where(
                    checkpoints.c.tenant_id == self.tenant_id, checkpoints.c.run_id == run_id
                )
            )
            return {r.path: r.output for r in rows}

    # -- events -----------------------------------------------------------------
    def append_events(self, run_id: str, items: list[Event]) -> None:
        """Append events to the run's log; their seq numbers continue the run's."""
        _check("run_id", run_id)
        evs = _check_events(items)
        if not evs:
            return
        with self._write() as c:
            self._insert_events(c, {run_id: evs}, time.time())

    def read_events(
        self, run_id: str, after: int = 0, limit: int = 1000, *, type: str | None = None
    ) -> list[dict[str, Any]]:
        """The run's events with ``seq > after``, in order (seq, ts, type, data);
        ``type`` keeps only events of that type (e.g. a run's ``score`` events)."""
        kind = [events.c.type == _check("event_type", type)] if type is not None else []
        with self._read() as c:
            rows = c.execute(
                select(events.c.seq, events.c.ts, events.c.type, events.c.data)
                .where(
                    events.c.tenant_id == self.tenant_id,
                    events.c.run_id == run_id,
                    events.c.seq > int(after),
                    *kind,
                )
                .order_by(events.c.seq)
                .limit(_check_limit(limit))
            )
            return [dict(r._mapping) for r in rows]

    def event_logs(self, prefix: str, limit: int = 100) -> list[dict[str, Any]]:
        """This tenant's event logs whose run id starts with ``prefix``, most recently
        written first: ``{"run_id", "first_ts", "last_ts", "events"}``. Why: federated
        runs keep events under ``federated:<name>`` without a runs row (the dashboard
        lists them). SQLite: a range on the key (its BINARY collation orders by code
        point, and the range uses the index). PostgreSQL: ``LIKE 'prefix%'`` with the
        prefix's wildcards escaped, because a database created with a language
        collation (en_US.UTF-8, the usual default) orders strings ignoring punctuation,
        so ``run_id < 'federated;'`` would leave out every ``federated:...``."""
        _check("run_id", prefix)
        if self.backend == "postgresql":
            match = events.c.run_id.startswith(prefix, autoescape=True)
        else:
            upper = prefix[:-1] + chr(ord(prefix[-1]) + 1)
            match = (events.c.run_id >= prefix) & (events.c.run_id < upper)
        last = func.max(events.c.ts)
        query = (
            select(
                events.c.run_id,
                func.min(events.c.ts).label("first_ts"),
                last.label("last_ts"),
                func.count().label("events"),
            )
            .where(
                events.c.tenant_id == self.tenant_id,
                match,
            )
            .group_by(events.c.run_id)
            .order_by(last.desc(), events.c.run_id)
            .limit(_check_limit(limit))
        )
        with self._read() as c:
            return [dict(r._mapping) for r in c.execute(query)]

    # -- agent memory -----------------------------------------------------------
    def append_messages_many(
        self,
        agent: str,
        items: list[tuple[str, list[dict[str, Any]]]]
        | list[tuple[str, list[dict[str, Any]], str | None]],
    ) -> None:
        """Several threads' new messages in ONE transaction (group commit). An item
        ``(thread_id, messages, turn_id)`` marks its first message with the turn's id
        (see :meth:`load_threads`)."""
        turns = [
            ThreadMessages(agent, item[0], item[1], item[2] if len(item) > 2 else None)
            for item in items
        ]
        self._check_threads(turns)
        if not any(t.messages for t in turns):
            return
        with self._write() as c:
            self._insert_messages(c, turns)

    def _check_threads(self, turns: Sequence[ThreadMessages]) -> None:
        """Keys, turn ids and the batch bound of agent turns about to be appended."""
        for t in turns:
            _check("agent", t.agent)
            _check("thread_id", t.thread_id)
            if t.turn_id is not None:
                _check("turn_id", t.turn_id)
        if sum(len(t.messages) for t in turns) > MAX_BATCH:
            raise InputValidationError(
                f"More than {MAX_BATCH} messages in one write.", fix="Write smaller batches."
            )

    def _insert_messages(self, c: Connection, turns: Sequence[ThreadMessages]) -> None:
        """Append checked turns inside the caller's transaction, numbered per thread."""
        by_agent: dict[str, dict[str, list[tuple[dict[str, Any], str | None]]]] = {}
        for t in turns:
            rows_of = by_agent.setdefault(t.agent, {}).setdefault(t.thread_id, [])
            rows_of.extend((m, t.turn_id if i == 0 else None) for i, m in enumerate(t.messages))
        for agent, by_thread in sorted(by_agent.items()):  # one lock order: no deadlock
            by_thread = {t: m for t, m in by_thread.items() if m}
            if not by_thread:
                continue
            self._lock_keys(c, f"messages\x1f{agent}", by_thread)
            last = self._next_seqs(c, messages, "thread_id", set(by_thread), agent=agent)
            rows = [
                {
                    "tenant_id": self.tenant_id,
                    "agent": agent,
                    "thread_id": t,
                    "seq": last[t] + i,
                    "message": m,
                    "turn_id": turn,
                }
                for t, new in by_thread.items()
                for i, (m, turn) in enumerate(new, start=1)
            ]
            batch_sql(c).insert_many(c, messages, rows)

    def load_threads(
        self, agent: str, thread_ids: list[str]
    ) -> dict[str, tuple[list[dict[str, Any]], dict[str, int]]]:
        """thread id -> (its messages in order, turn id -> index of the turn's first
        message), for each of ``thread_ids``."""
        out: dict[str, tuple[list[dict[str, Any]], dict[str, int]]] = {
            t: ([], {}) for t in thread_ids
        }
        with self._read() as c:
            for part in _chunks(list(out)):
                rows = c.execute(
                    select(messages.c.thread_id, messages.c.message, messages.c.turn_id)
                    .where(
                        messages.c.tenant_id == self.tenant_id,
                        messages.c.agent == agent,
                        messages.c.thread_id.in_(part),
                    )
                    .order_by(messages.c.thread_id, messages.c.seq)
                ).tuples()
                for t, m, turn in rows:
                    msgs, turns = out[str(t)]
                    if turn is not None:
                        turns[str(turn)] = len(msgs)
                    msgs.append(m)
        return out

    def load_messages_many(
        self, agent: str, thread_ids: list[str]
    ) -> dict[str, list[dict[str, Any]]]:
        """thread id -> its messages in order, for each of ``thread_ids``."""
        return {t: msgs for t, (msgs, _) in self.load_threads(agent, thread_ids).items()}

    def load_working_memory(self, agent: str, thread_id: str) -> dict[str, Any]:
        with self._read() as c:
            row = c.execute(
                select(working_memory.c.data).where(
                    working_memory.c.tenant_id == self.tenant_id,
                    working_memory.c.agent == agent,
                    working_memory.c.thread_id == thread_id,
                )
            ).first()
        return dict(row[0]) if row and isinstance(row[0], dict) else {}

    def save_working_memory(self, agent: str, thread_id: str, data: dict[str, Any]) -> None:
        """Replace the thread's working memory (a JSON object)."""
        if not isinstance(data, dict):
            raise InputValidationError(
                f"Working memory must be a JSON object, got {type(data).__name__}.",
                fix="Pass a dict.",
            )
        row = {
            "tenant_id": self.tenant_id,
            "agent": _check("agent", agent),
            "thread_id": _check("thread_id", thread_id),
            "data": data,
            "updated_at": time.time(),
        }
        stmt = self._upsert()(working_memory).values(**row)
        stmt = stmt.on_conflict_do_update(
            index_elements=["tenant_id", "agent", "thread_id"],
            set_={"data": stmt.excluded.data, "updated_at": stmt.excluded.updated_at},
        )
        with self._write() as c:
            c.execute(stmt)

    # -- threads: list, read, delete ------------------------------------------------
    def list_threads(
        self, agent: str | None = None, limit: int = 1000, *, prefix: str | None = None
    ) -> list[dict[str, Any]]:
        """This tenant's agent threads that hold messages: (agent, thread_id, messages),
        by agent and thread id (``agent`` filters; ``prefix`` keeps thread ids that
        start with it, e.g. ``RUN_ID/`` for the threads of one workflow run)."""
        q = select(messages.c.agent, messages.c.thread_id, func.count().label("messages")).where(
            messages.c.tenant_id == self.tenant_id
        )
        if agent is not None:
            q = q.where(messages.c.agent == _check("agent", agent))
        if prefix:
            q = q.where(messages.c.thread_id.startswith(prefix, autoescape=True))
        q = (
            q.group_by(messages.c.agent, messages.c.thread_id)
            .order_by(messages.c.agent, messages.c.thread_id)
            .limit(_check_limit(limit))
        )
        with self._read() as c:
            return [dict(r._mapping) for r in c.execute(q)]

    def thread_messages(self, agent: str, thread_id: str) -> list[dict[str, Any]]:
        """The thread's messages in order; NotFoundError when this tenant has no such
        thread (neither messages nor working memory), whoever else may have one."""
        _check("agent", agent)
        _check("thread_id", thread_id)
        found = self.load_messages_many(agent, [thread_id])[thread_id]
        if not found and not self._has_notes(agent, thread_id):
            raise _no_thread(agent, thread_id)
        return found

    def _has_notes(self, agent: str, thread_id: str) -> bool:
        with self._read() as c:
            return (
                c.execute(
                    select(working_memory.c.thread_id).where(
                        working_memory.c.tenant_id == self.tenant_id,
                        working_memory.c.agent == agent,
                        working_memory.c.thread_id == thread_id,
                    )
                ).first()
                is not None
            )

    def delete_thread(self, agent: str, thread_id: str) -> int:
        """Delete the thread's messages and working memory (to free storage, or to
        forget); returns how many rows went. NotFoundError when there is no such
        thread of this tenant. A running agent that cached the thread keeps its copy
        until its actor restarts."""
        _check("agent", agent)
        _check("thread_id", thread_id)
        n = 0
        with self._write() as c:
            for table in (messages, working_memory):
                n += c.execute(
                    delete(table).where(
                        table.c.tenant_id == self.tenant_id,
                        table.c.agent == agent,
                        table.c.thread_id == thread_id,
                    )
                ).rowcount
        if n == 0:
            raise _no_thread(agent, thread_id)
        return n


def _no_thread(agent: str, thread_id: str) -> NotFoundError:
    return NotFoundError(
        f"No thread {thread_id[:200]!r} of agent {agent[:200]!r}.",
        fix="List threads with RunStore.list_threads() (GET /v1/threads over HTTP).",
    )


_stores: dict[tuple[str, str], RunStore] = {}
_stores_lock = threading.Lock()


def open_store(url: str | None = None, tenant_id: str | None = None) -> RunStore:
    """The process-wide store for ``url`` and ``tenant_id`` (default: from settings).

    One connection pool per URL, shared by every tenant's store. A store that cannot
    be opened raises a StoreError each time it is asked for (nothing is cached)."""
    from lumos_ray.runtime import current_settings

    settings = current_settings()
    url = url or settings.resolved_store_url()
    tenant = tenant_id or settings.tenant_id
    with _stores_lock:
        key = (url, tenant)
        if key in _stores:
            return _stores[key]
        base = next((s for (u, _), s in _stores.items() if u == url), None)
        if base is not None:
            store = base.for_tenant(tenant)
        else:
            target = parse_store_url(url)
            if target.sqlite_path is not None:
                _make_parent(target.sqlite_path, target.masked)
            store = RunStore(url, tenant)
        _stores[key] = store
        return store


def _make_parent(path: Path, masked: str) -> None:
    try:
        private_dir(path.parent, tighten_existing=False)  # new directories 0700
    except OSError as exc:
        raise StoreError(
            f"Cannot create the directory of the run store {masked}: {exc.strerror}.",
            fix="Set LUMOS_HOME (or LUMOS_STORE_URL) to a writable location.",
        ) from None
