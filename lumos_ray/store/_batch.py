"""Group commit for the runner: many runs' writes in one transaction.

A runner executing hundreds of runs at once would otherwise pay one transaction per
run start, per finished step and per status change (on SQLite each takes the one
write lock; on PostgreSQL each is a commit round trip). :class:`GroupCommitter`
queues those writes from any number of runs and commits whatever is queued in ONE
transaction as soon as the previous commit is done: one run alone waits for nothing
(its write starts at once), and under load a commit carries every write that arrived
while the one before it ran. Each caller awaits its own write's durability, so "a
finished step is durable before the next step depends on it" holds per run.

The writes it knows (each is one run's part of a batch):

- :class:`RunCreate`: a new run row (status, lease and trace in the same insert);
- :class:`~lumos_ray.store.CheckpointWrite`: a finished step's checkpoint and the
  events emitted before it (``path=None``: events only), and the step's agent turn
  when the runner saves it (the turn's messages and its checkpoint are durable
  together, and the agent's own write leaves a durable run's critical path);
- :class:`RunUpdate`: a run's status and other fields, plus events written with it.

Event sequence numbers are taken inside the transaction (as ``RunStore`` does) and
returned, so a caller can hand the committed events to live followers with the same
numbers a later store read gives.

This module wraps :class:`~lumos_ray.store.RunStore`, whose transaction and key
helpers it uses (``_write``, ``_lock_keys``, ``_next_seqs``, ``_insert_messages``); keep
them in step. Its statements are driver SQL rendered once per backend
(``_batch_sql``): on a one-step run's final write, SQLAlchemy Core's per-statement
work cost more than the database's.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection

from lumos_ray.errors import InputValidationError
from lumos_ray.store._batch_sql import batch_sql
from lumos_ray.store._schema import checkpoints, events, runs
from lumos_ray.store._writes import (
    _RUN_FIELDS,
    MAX_BATCH,
    CheckpointWrite,
    Event,
    _check,
    _check_events,
)

if TYPE_CHECKING:  # RunStore's module imports this one (save_many is write_batch)
    from lumos_ray.store._store import RunStore

__all__ = ["Committed", "GroupCommitter", "RunCreate", "RunUpdate", "write_batch"]


@dataclass(frozen=True)
class RunCreate:
    """A new run; ``fields`` may set the lease (owner, heartbeat) and trace at once."""

    run_id: str
    workflow: str
    version: str
    input: Any = None
    status: str = "pending"
    fields: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RunUpdate:
    """A run's new status (and other run fields), with the events that go with it."""

    run_id: str
    status: str
    fields: dict[str, Any] = field(default_factory=dict)
    events: Sequence[Event] = field(default_factory=tuple)


Write = RunCreate | RunUpdate | CheckpointWrite


@dataclass(frozen=True)
class Committed:
    """What one write became: ``created`` False for a RunCreate whose id exists (the
    first start stands), ``stored`` False for a checkpoint whose step already had
    one (the first one stands); ``events`` = the (seq, ts, type, data) rows written."""

    created: bool = True
    stored: bool = True
    events: tuple[dict[str, Any], ...] = ()


def check_write(store: RunStore, w: Write) -> None:
    """Validate one write before it joins a batch, so bad input fails its own caller
    instead of the transaction of every run in the batch."""
    _check("run_id", w.run_id)
    if isinstance(w, RunCreate):
        _check("workflow", w.workflow)
        _check("version", w.version)
        store._check_status(w.status)
        _check_fields(w.fields, _CREATE_FIELDS)
    elif isinstance(w, RunUpdate):
        store._check_status(w.status)
        _check_fields(w.fields)
        _check_events(w.events)
    elif isinstance(w, CheckpointWrite):
        if w.path is not None:
            _check("path", w.path)
        _check_events(w.events)
        if w.thread is not None:
            if w.path is None:
                raise InputValidationError(
                    "An agent turn is saved with a step's checkpoint; this write has none.",
                    fix="Give the CheckpointWrite the step's path.",
                )
            store._check_threads([w.thread])
    else:
        raise InputValidationError(
            f"GroupCommitter takes RunCreate, RunUpdate or CheckpointWrite, got "
            f"{type(w).__name__}.",
            fix="Wrap the write in one of those types.",
        )


_CREATE_FIELDS = frozenset({"trace", "owner", "heartbeat"})


def _check_fields(fields: dict[str, Any], allowed: frozenset[str] = _RUN_FIELDS) -> None:
    unknown = set(fields) - allowed
    if unknown:
        raise InputValidationError(
            f"unknown run fields: {', '.join(sorted(unknown))}.",
            fix=f"Pass only: {', '.join(sorted(allowed))}.",
        )


def write_batch(store: RunStore, writes: Sequence[Write]) -> list[Committed]:
    """Apply ``writes`` (already checked) in ONE transaction; one result per write.

    All or nothing, except that a duplicate run id or checkpoint is skipped and
    reported (``created``/``stored`` False) rather than failing the other runs'
    writes. Events keep their order within each write, and the writes of one run keep
    theirs."""
    if len(writes) > MAX_BATCH:
        raise InputValidationError(
            f"{len(writes)} writes in one batch (at most {MAX_BATCH}).", fix="Split it."
        )
    now = time.time()
    tenant = store.tenant_id
    with store._write() as c:
        # 1. New runs (a later write of the same batch may already refer to them).
        # Insert-or-skip with RETURNING: one statement tells which rows are new (no
        # SELECT first); a run id that exists keeps its first run.
        creates = [w for w in writes if isinstance(w, RunCreate)]
        create_rows: dict[str, dict[str, Any]] = {}
        for rc in creates:
            if rc.run_id not in create_rows:
                create_rows[rc.run_id] = {
                    "tenant_id": tenant,
                    "id": rc.run_id,
                    "workflow": rc.workflow,
                    "version": rc.version,
                    "input": rc.input,
                    "status": rc.status,
                    "created_at": now,
                    "updated_at": now,
                    **{k: rc.fields.get(k) for k in _CREATE_FIELDS},
                }
        sql = batch_sql(c)
        new_ids = sql.insert_new(c, runs, ("id",), list(create_rows.values()))
        taken = {r for r in create_rows if (r,) not in new_ids}

        # 2. Events, numbered per run inside the transaction.
        by_run: dict[str, list[Event]] = {}
        for w in writes:
            if isinstance(w, RunUpdate | CheckpointWrite) and w.events:
                by_run.setdefault(w.run_id, []).extend(w.events)
        written = _insert_events(store, c, by_run, now)

        # 3. Checkpoints; a step that has one already keeps it.
        cps = [w for w in writes if isinstance(w, CheckpointWrite) and w.path is not None]
        first: dict[tuple[str, str], CheckpointWrite] = {}
        for cp in cps:
            first.setdefault((cp.run_id, str(cp.path)), cp)
        cp_rows = [
            {
                "tenant_id": tenant,
                "run_id": run_id,
                "path": path,
                "output": cp.output,
                "created_at": now,
            }
            for (run_id, path), cp in first.items()
        ]
        new_cps = sql.insert_new(c, checkpoints, ("run_id", "path"), cp_rows)
        stored = {id(cp) for key, cp in first.items() if key in new_cps}
        # The steps' agent turns, with their checkpoints (and only with a new one).
        turns = [cp.thread for cp in first.values() if cp.thread is not None and id(cp) in stored]
        if turns:
            store._insert_messages(c, turns)

        # 4. Status changes: one executemany per set of columns changed. Two changes
        # of one run in a batch are applied in their order instead.
        ups = [w for w in writes if isinstance(w, RunUpdate)]
        shapes: dict[tuple[str, ...], list[dict[str, Any]]] = {}
        ordered = len({w.run_id for w in ups}) < len(ups)
        for up in ups:
            values = {"status": up.status, "updated_at": now, **up.fields}
            row = {"tenant_id": tenant, "id": up.run_id, **values}
            if ordered:
                sql.update_many(c, runs, tuple(values), _RUN_KEY, [row])
            else:
                shapes.setdefault(tuple(sorted(values)), []).append(row)
        for cols, rows in shapes.items():
            sql.update_many(c, runs, cols, _RUN_KEY, rows)

    # Hand each write its own events back (by position within its run's list).
    cursor = {r: 0 for r in by_run}
    out: list[Committed] = []
    for w in writes:
        evs: tuple[dict[str, Any], ...] = ()
        if isinstance(w, RunUpdate | CheckpointWrite) and w.events:
            i = cursor[w.run_id]
            evs = tuple(written[w.run_id][i : i + len(w.events)])
            cursor[w.run_id] = i + len(w.events)
        out.append(
            Committed(
                created=not isinstance(w, RunCreate) or w.run_id not in taken,
                stored=not isinstance(w, CheckpointWrite) or w.path is None or id(w) in stored,
                events=evs,
            )
        )
    # A duplicate RunCreate inside one batch: only the first one created the run.
    seen: set[str] = set()
    for i, w in enumerate(writes):
        if isinstance(w, RunCreate):
            if w.run_id in seen:
                out[i] = Committed(created=False)
            seen.add(w.run_id)
    return out


_RUN_KEY = ("tenant_id", "id")


def _insert_events(
    store: RunStore, c: Connection, by_run: dict[str, list[Event]], now: float
) -> dict[str, list[dict[str, Any]]]:
    """Insert with per-run sequence numbers taken in this transaction (as RunStore
    does); returns the rows written per run, in order."""
    if not by_run:
        return {}
    store._lock_keys(c, "events", by_run)
    last = store._next_seqs(c, events, "run_id", set(by_run))
    out: dict[str, list[dict[str, Any]]] = {}
    rows = []
    for run_id, items in by_run.items():
        mine = out[run_id] = []
        for i, (kind, data) in enumerate(items, start=1):
            row = {"seq": last[run_id] + i, "ts": now, "type": kind, "data": data}
            mine.append(row)
            rows.append({"tenant_id": store.tenant_id, "run_id": run_id, **row})
    batch_sql(c).insert_many(c, events, rows)
    return out


class GroupCommitter:
    """Queues writes from many runs (one event loop) and commits them in batches.

    :meth:`write` returns once the write is durable. A commit starts as soon as a
    write arrives and none is in flight; writes arriving meanwhile form the next
    batch (at most ``max_batch``). If a batch fails, its writes are retried one by
    one, so a write that cannot be stored fails alone."""

    def __init__(self, store: RunStore, max_batch: int = 1000) -> None:
        if not 1 <= max_batch <= MAX_BATCH:
            raise InputValidationError(
                f"max_batch {max_batch} is out of range (1..{MAX_BATCH}).", fix="Pick less."
            )
        self.store = store
        self.max_batch = max_batch
        self._queue: list[tuple[Write, asyncio.Future[Committed]]] = []
        self._flusher: asyncio.Task[None] | None = None
        #: Commits done and writes they carried (for tests and tuning).
        self.commits = 0
        self.writes = 0

    async def write(self, w: Write) -> Committed:
        """Queue ``w`` and wait until it is committed."""
        return await self.submit(w)

    def submit(self, w: Write) -> asyncio.Future[Committed]:
        """Queue ``w``; the future resolves when it is committed (or fails)."""
        check_write(self.store, w)
        fut: asyncio.Future[Committed] = asyncio.get_running_loop().create_future()
        self._queue.append((w, fut))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.get_running_loop().create_task(self._flush())
        return fut

    async def _flush(self) -> None:
        while self._queue:
            batch = self._queue[: self.max_batch]
            del self._queue[: self.max_batch]
            writes = [w for w, _ in batch]
            try:
                results = await asyncio.to_thread(write_batch, self.store, writes)
            except BaseException as exc:  # every waiter gets the outcome
                if len(batch) == 1 or isinstance(exc, asyncio.CancelledError):
                    for _, f in batch:
                        if not f.done():
                            f.set_exception(exc)
                    if isinstance(exc, asyncio.CancelledError):
                        raise
                    continue
                await self._one_by_one(batch)
                continue
            self.commits += 1
            self.writes += len(batch)
            for (_, f), r in zip(batch, results, strict=True):
                if not f.done():
                    f.set_result(r)

    async def _one_by_one(self, batch: list[tuple[Write, asyncio.Future[Committed]]]) -> None:
        for w, f in batch:
            try:
                (r,) = await asyncio.to_thread(write_batch, self.store, [w])
            except Exception as exc:
                if not f.done():
                    f.set_exception(exc)
            else:
                self.commits += 1
                self.writes += 1
                if not f.done():
                    f.set_result(r)
