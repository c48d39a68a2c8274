"""The runner: a detached async actor that owns run execution on the cluster.

Clients only submit and follow; the work lives here, so a client can die and the run
goes on. On (re)start the runner reads the store and carries on with every run left
``running`` or ``pending`` (Ray restarts it after a crash; with an embedded cluster
``lumos runs resume`` starts a new one): both are the same code path.

The hot path is short: many runs execute concurrently on one event loop; their store
writes (run creation, step checkpoints with the events before them, status changes)
go through one :class:`~lumos_ray.store._batch.GroupCommitter`, so a commit carries
every write that arrived while the previous one ran, and each run awaits only its own
write's durability (a finished step is durable before the next step depends on it).
Followers of a run executing here get its committed events and final row from memory
(a long poll wakes on the commit); the store is read only for history and for runs
this runner does not execute.
"""

from __future__ import annotations

import asyncio
import bisect
import time
import uuid
from collections import OrderedDict
from typing import Any

from lumos_ray import tracing
from lumos_ray.errors import RunStateError, WorkflowDefinitionError
from lumos_ray.store import (
    TERMINAL_STATES,
    CheckpointWrite,
    ThreadMessages,
    encode_json,
    open_store,
)
from lumos_ray.store._batch import Committed, GroupCommitter, RunCreate, RunUpdate, Write
from lumos_ray.store._schema import KEY_LIMITS
from lumos_ray.workflows._definition import Workflow
from lumos_ray.workflows._engine import Engine, Suspend, validate_json
from lumos_ray.workflows._forks import ordered_checkpoints, plan_fork
from lumos_ray.workflows._scheduler import Scheduler, check_schedule, first_tick
from lumos_ray.workflows._serialize import definition_version, workflow_from_data
from lumos_ray.workflows._storage_gate import StorageGate

__all__ = ["RUNNER_NAME", "Runner", "runner_name"]

RUNNER_NAME = "lumos-runner"  # one runner per tenant: runner_name(tenant)


def runner_name(tenant: str) -> str:
    """The runner actor of ``tenant``: it reads and writes only that tenant's runs."""
    return f"{RUNNER_NAME}@{tenant}"


_FLUSH_S = 0.02  # events alone wait this long for company (a checkpoint, more events)
# A run executed while its caller waits (execute) has its row written with the run's
# first write, or after this long, whichever comes first (see Runner._begin).
_ROW_S = _FLUSH_S
HEARTBEAT_S = 2.0  # lease renewal period
STALE_S = 10.0  # a lease not renewed for this long belongs to a dead runner
_KEEP_EVENTS = 1000  # newest committed events per live run kept in memory for followers
_KEEP_ENDED = 1000  # ended runs whose row and newest events stay in memory
_KEEP_ENDED_EVENTS = 100  # events kept per ended run (older ones: from the store)
_ENDED = TERMINAL_STATES | {"suspended"}
# A run executed elsewhere (another runner, or its agent's actor: hosted_execute) is
# followed from the store: re-read this often while a follower or waiter waits.
_POLL_S = 0.25

Event = tuple[str, dict[str, Any]]


class _Live:
    """A run this runner executes (or just ended): its row as last committed and its
    newest committed events, so followers and waiters need no store read.

    ``base``: events with ``seq <= base`` are only in the store (None until the
    first commit of a resumed run tells where the store's numbering stands)."""

    __slots__ = ("base", "changed", "ended", "events", "row", "row_written")

    def __init__(self, row: dict[str, Any], base: int | None) -> None:
        self.row = row
        self.base = base
        #: The commit of the run's row when it was created here (None: it was not).
        self.row_written: asyncio.Future[Committed] | None = None
        self.events: list[dict[str, Any]] = []
        self.changed = asyncio.Event()
        self.ended = asyncio.Event()

    def publish(self, events: tuple[dict[str, Any], ...], fields: dict[str, Any]) -> None:
        if events:
            if self.base is None:
                self.base = events[0]["seq"] - 1
            self.events.extend(events)
            self.trim(_KEEP_EVENTS)
        if fields:
            self.row.update(fields)
        self.changed.set()
        self.changed = asyncio.Event()

    def trim(self, keep: int) -> None:
        """Keep the newest ``keep`` events; older ones are read from the store."""
        if len(self.events) > keep:
            drop = len(self.events) - keep
            self.base = self.events[drop - 1]["seq"]
            del self.events[:drop]

    def after(self, seq: int) -> list[dict[str, Any]]:
        i = bisect.bisect_right([e["seq"] for e in self.events], seq)
        return self.events[i:]


class _RunEvents:
    """Buffers a run's events: they go with its next checkpoint or status change, or
    on their own after ``_FLUSH_S``."""

    def __init__(self, runner: Runner, run_id: str) -> None:
        self.runner, self.run_id = runner, run_id
        self.buf: list[Event] = []
        self._scheduled = False

    def emit(self, kind: str, data: dict[str, Any]) -> None:
        self.buf.append((kind, {**data, "t": time.time()}))
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_later(
                _FLUSH_S, lambda: asyncio.ensure_future(self.flush())
            )

    def take(self) -> list[Event]:
        items, self.buf = self.buf, []
        self._scheduled = False
        return items

    async def flush(self) -> None:
        items = self.take()
        if items:
            await self.runner._commit(CheckpointWrite(self.run_id, None, None, items))


def _update(
    run_id: str, status: str, events: list[Event] | None, fields: dict[str, Any]
) -> RunUpdate:
    if status in _ENDED:
        fields = {**fields, "owner": None}  # release the lease
    return RunUpdate(run_id, status, fields, tuple(events or ()))


class Runner:
    """``auto_recover``: adopt runs whose owner died (a cluster's runner). An embedded
    cluster's runner adopts only what it is asked to resume, so two local processes
    sharing a store never take each other's live runs.

    ``owner``: the lease id to write in the rows of runs executed here (default: a
    new ``runner-...``); ``schedules``: fire the tenant's schedules (off for a runner
    hosted in an agent's actor, which only executes the runs it is handed)."""

    def __init__(
        self,
        auto_recover: bool = True,
        tenant: str | None = None,
        *,
        owner: str | None = None,
        schedules: bool = True,
    ) -> None:
        tracing.setup_tracing()
        self.id = owner or f"runner-{uuid.uuid4().hex[:12]}"
        self.auto_recover = auto_recover
        self._schedules = schedules
        #: See Engine's ``local``: the agent whose turns run in this process, if any.
        self.local: Any = None
        self.store = open_store(tenant_id=tenant)
        self.committer = GroupCommitter(self.store)
        #: New runs (start, fork, schedule ticks) are refused at the plan's storage limit.
        self.storage = StorageGate(self.store.tenant_id)
        self.tasks: dict[str, asyncio.Task[None]] = {}
        self._changed: dict[str, asyncio.Event] = {}
        self._keeper: asyncio.Task[None] | None = None
        self._definitions: dict[tuple[str, str], Workflow] = {}
        self._live: dict[str, _Live] = {}
        # Rows of runs started by execute() not yet queued: (the write, its timer).
        self._unwritten: dict[str, tuple[RunCreate, asyncio.TimerHandle]] = {}
        self._ended: OrderedDict[str, _Live] = OrderedDict()
        # Agent handles shared by all runs (keyed by spec identity: cached definitions
        # hand every run the same spec objects), so a turn costs no actor lookup.
        self._agents: OrderedDict[int, tuple[Any, Any]] = OrderedDict()
        self.scheduler = Scheduler(self)
        self._scheduling: asyncio.Task[None] | None = None
        try:  # as a Ray async actor, __init__ runs on the actor's loop: come back to
            # work (leases, orphans, schedules) after a restart without waiting for a call
            asyncio.get_running_loop().call_soon(lambda: asyncio.ensure_future(self._recover()))
        except RuntimeError:
            pass  # constructed outside a loop (tests): the first call starts them

    # -- lifecycle ----------------------------------------------------------------
    async def _recover(self) -> None:
        """Start the lease keeper once; it renews our leases and adopts orphans."""
        if self._keeper is None:
            loop = asyncio.get_running_loop()
            self._keeper = loop.create_task(self._keep_leases())
            if self._schedules:
                self._scheduling = loop.create_task(self.scheduler.run_forever())
            if self.auto_recover:
                await self._adopt_orphans()

    async def _adopt_orphans(self) -> None:
        for run_id in await asyncio.to_thread(self.store.stale_runs, STALE_S):
            if run_id not in self.tasks and await self._claim(run_id):
                self._launch(run_id)

    async def _keep_leases(self) -> None:
        while True:
            await asyncio.sleep(HEARTBEAT_S)
            try:
                await asyncio.to_thread(self.store.renew, self.id, list(self.tasks))
                if self.auto_recover:
                    await self._adopt_orphans()
            except Exception:  # a transient store error must not stop renewals
                continue

    async def _claim(self, run_id: str) -> bool:
        return await asyncio.to_thread(self.store.claim, run_id, self.id, STALE_S)

    def _launch(self, run_id: str, row: dict[str, Any] | None = None) -> None:
        """Execute a run whose lease we hold (``row``: a run just created here)."""
        if run_id in self.tasks:
            return
        self._ended.pop(run_id, None)
        if row is not None:
            self._live[run_id] = _Live(row, base=0)
        task = asyncio.get_running_loop().create_task(self._execute(run_id, row))
        self.tasks[run_id] = task
        task.add_done_callback(lambda _t: self._finished(run_id))

    def _finished(self, run_id: str) -> None:
        self.tasks.pop(run_id, None)
        live = self._live.pop(run_id, None)
        if live is not None:
            live.ended.set()
            live.changed.set()
            live.trim(_KEEP_ENDED_EVENTS)
            self._ended[run_id] = live
            while len(self._ended) > _KEEP_ENDED:
                self._ended.popitem(last=False)

    def _notify(self, run_id: str) -> None:
        ev = self._changed.pop(run_id, None)
        if ev is not None:
            ev.set()

    def _submit(self, w: Write) -> asyncio.Future[Committed]:
        """Queue ``w`` for the next group commit; once durable, its events (and a
        status change) go to the run's followers in memory."""
        if self._unwritten and w.run_id in self._unwritten:
            self._write_row(w.run_id)  # the row goes first (same batch or an earlier one)
        fut = self.committer.submit(w)
        # A done-callback, not code after an await: callbacks run in commit order, so
        # followers see a run's events in order however the writers get scheduled.
        fut.add_done_callback(lambda f: self._committed(w, f))
        return fut

    def _write_row(self, run_id: str) -> None:
        """Queue the row of a run started by execute() (at its first write, or when
        ``_ROW_S`` passed). If it cannot be stored, the run is cancelled; its caller
        gets the error (:meth:`_row_durable`)."""
        pending = self._unwritten.pop(run_id, None)
        if pending is None:
            return
        create, timer = pending
        timer.cancel()
        fut: asyncio.Future[Committed]
        try:
            fut = self.committer.submit(create)
        except Exception as exc:  # refused before queueing: the same outcome as a failed commit
            fut = asyncio.get_running_loop().create_future()
            fut.set_exception(exc)
        live = self._live.get(run_id) or self._ended.get(run_id)
        if live is not None:
            live.row_written = fut

        def failed(f: asyncio.Future[Committed]) -> None:
            if not f.cancelled() and f.exception() is not None:
                task = self.tasks.get(run_id)
                if task is not None:
                    task.cancel()

        fut.add_done_callback(failed)

    async def _row_durable(self, run_id: str) -> None:
        """Return once the row of a run created here is stored; raise why it is not."""
        self._write_row(run_id)
        live = self._known(run_id)
        if live is not None and live.row_written is not None:
            await asyncio.shield(live.row_written)

    async def _commit(self, w: Write) -> Committed:
        # Shielded: a run cancelled mid-write still publishes what was written.
        return await asyncio.shield(self._submit(w))

    def _committed(self, w: Write, fut: asyncio.Future[Committed]) -> None:
        if fut.cancelled() or fut.exception() is not None:
            return
        live = self._live.get(w.run_id)
        if live is not None:
            fields: dict[str, Any] = {}
            if isinstance(w, RunUpdate):
                fields = {"status": w.status, "updated_at": time.time(), **w.fields}
            live.publish(fut.result().events, fields)
        self._notify(w.run_id)

    async def _set(
        self, run_id: str, status: str, events: list[Event] | None = None, **fields: Any
    ) -> None:
        await self._commit(_update(run_id, status, events, fields))

    async def _definition(self, name: str, version: str | None) -> tuple[Workflow, str]:
        """The registered workflow (parsed once per version: versions never change)."""
        if version is not None and (name, version) in self._definitions:
            return self._definitions[(name, version)], version
        row = await asyncio.to_thread(self.store.get_definition, "workflow", name, version)
        version = row["version"]
        wf = self._definitions.get((name, version))
        if wf is None:
            wf = self._definitions[(name, version)] = workflow_from_data(row["body"])
        return wf, version

    async def _register(
        self, name: str, version: str | None, body: dict[str, Any] | None
    ) -> tuple[Workflow, str]:
        """The workflow (name, version), registering ``body`` as that version first."""
        if body is not None:
            if definition_version(body) != version or body.get("name") != name:
                raise WorkflowDefinitionError(
                    f"the definition sent for {name!r} does not hash to version {version!r}",
                    fix="Start runs through lumos_ray.start_run, which computes the version.",
                )
            if (name, version) not in self._definitions:
                wf = workflow_from_data(body)  # validate (and import refs) before storing
                await asyncio.to_thread(self.store.put_definition, "workflow", name, version, body)
                self._definitions[(name, version)] = wf
        return await self._definition(name, version)

    async def _execute(self, run_id: str, row: dict[str, Any] | None) -> None:
        """Run (or resume) a run. ``row`` given: created just now by :meth:`start`, so
        it has no checkpoints and its row is known; otherwise both come from the store."""
        fresh = row is not None
        if row is None:
            row = await asyncio.to_thread(self.store.get_run, run_id)
            done = await asyncio.to_thread(self.store.load_checkpoints, run_id)
            self._live[run_id] = _Live(row, base=None)
        else:
            done = {}
        wf, _ = await self._definition(row["workflow"], row["version"])
        events = _RunEvents(self, run_id)

        # Checkpoints are queued, not awaited, when a step finishes: the engine awaits
        # `durable` before the next step starts, and the run's final write commits in
        # the same transaction as the last checkpoint or after it (the committer keeps
        # order), so a one-step run costs one commit less and nothing starts on top
        # of a step that is not durable yet.
        pending: list[asyncio.Future[Committed]] = []

        async def record(path: str, value: Any, thread: ThreadMessages | None = None) -> None:
            pending.append(
                self._submit(CheckpointWrite(run_id, path, value, events.take(), thread))
            )

        async def durable() -> None:
            while pending:
                futs = pending[:]
                pending.clear()
                await asyncio.gather(*(asyncio.shield(f) for f in futs))

        async def finish(status: str, **fields: Any) -> None:
            """The run's last write, with every checkpoint queued before it."""
            last = self._submit(_update(run_id, status, events.take(), fields))
            try:
                await durable()
            except Exception as exc:
                await asyncio.gather(asyncio.shield(last), return_exceptions=True)
                if status not in ("succeeded", "suspended"):
                    return  # it failed or was cancelled anyway
                # A finished step could not be stored: the run did not succeed.
                from lumos_ray.workflows._engine import _error_dict

                err = _error_dict(exc, "")
                await self._set(run_id, "failed", [("run_failed", {"error": err})], error=err)
                return
            try:
                await asyncio.shield(last)
            except Exception as exc:
                # The final write itself was refused (e.g. an output the store cannot
                # keep): the run must end, failed with the reason, never stay "running".
                if status == "failed":
                    raise
                from lumos_ray.workflows._engine import _error_dict

                err = _error_dict(exc, "")
                await self._set(run_id, "failed", [("run_failed", {"error": err})], error=err)

        parent = row.get("trace") or None
        with tracing.span("workflow.run", parent, run_id=run_id, workflow=wf.name) as sp:
            end: dict[str, Any] = {}
            if not parent:
                carrier = tracing.inject()
                if carrier:  # goes with the run's next status change
                    end["trace"] = carrier
            if row["status"] != "running":
                await self._set(run_id, "running", **end)
                end = {}
            events.emit("run_resumed" if done else "run_started", {"workflow": wf.name})
            engine = Engine(
                run_id,
                wf,
                done,
                record,
                events.emit,
                agents=self._agents,
                fresh=fresh,
                durable=durable,
                tenant=self.store.tenant_id,
                local=self.local,
            )
            try:
                output = await engine.run(row["input"])
            except Suspend as s:
                events.emit("run_suspended", {"step": s.path, "prompt": s.prompt})
                await finish(
                    "suspended",
                    suspended={"step": s.path, "prompt": s.prompt, "schema": s.schema},
                    **end,
                )
                return
            except asyncio.CancelledError:
                events.emit("run_cancelled", {})
                await finish("cancelled", **end)
                return
            except Exception as exc:
                from lumos_ray.workflows._engine import _error_dict

                err = _error_dict(exc, "")
                sp.set_attribute("error", err["message"][:500])
                events.emit("run_failed", {"error": err})
                await finish("failed", error=err, **end)
                return
            events.emit("run_finished", {})
            await finish("succeeded", output=output, error=None, **end)

    # -- API (called by clients) -------------------------------------------------
    async def start(
        self,
        name: str,
        version: str | None,
        body: dict[str, Any] | None,
        input: Any,
        run_id: str | None = None,
        carrier: Any = None,
    ) -> str:
        """Start a run of workflow ``name`` at ``version`` (the newest registered one
        when None). A ``body`` registers that version first (idempotent).

        One write: the run row, created ``running`` with our lease and the caller's
        trace (the run span becomes a child of the client's), group-committed with
        other runs' writes; the run id is returned once it is durable."""
        return await self._begin(name, version, body, input, run_id, carrier)

    async def execute(
        self,
        name: str,
        version: str | None,
        body: dict[str, Any] | None,
        input: Any,
        run_id: str | None = None,
        carrier: Any = None,
        wait_s: float = 0.0,
        new_id: bool = False,
    ) -> dict[str, Any]:
        """:meth:`start` and :meth:`wait` in one call (one client round trip less,
        which is most of what one run at a time pays over an agent call): the run's
        row once it ends or suspends, or after ``wait_s`` (then follow with wait).

        A run id made here goes to the caller only with this answer, so its row need
        not be stored before the run starts: it is written with the run's first write
        (a run that ends within ``_ROW_S`` commits once, row and final write together)
        or after ``_ROW_S`` (a longer run is listed as running by then), and the
        answer is sent only once the row and the run's last write are stored.
        ``new_id``: ``run_id`` was just made by the caller for this run (unique, never
        a retry), so it is handled like an id made here."""
        run_id = await self._begin(
            name, version, body, input, run_id, carrier, defer_row=True, new_id=new_id
        )
        row = await self.wait(run_id, wait_s)
        await self._row_durable(run_id)
        return row

    async def _begin(
        self,
        name: str,
        version: str | None,
        body: dict[str, Any] | None,
        input: Any,
        run_id: str | None,
        carrier: Any,
        *,
        defer_row: bool = False,
        new_id: bool = False,
    ) -> str:
        """Register (when ``body``), validate, create and launch a run.

        A run id we make cannot exist yet, so the run's first step starts while its
        creation commits (the committer keeps order: the row is durable before any
        checkpoint of the run); the id is returned only once the row is durable, and
        if it cannot be stored the run is cancelled and the error raised. A caller's
        own id may be a retry of an earlier start, so it is created first.
        ``defer_row`` (execute, with an id we make): the row is queued later, see
        :meth:`execute`; the caller must await :meth:`_row_durable` before handing
        the id out."""
        await self._recover()
        await self.storage.check()
        wf, version = await self._register(name, version, body)
        validate_json(input, wf.input_schema, f"input of workflow {wf.name!r}")
        ours = run_id is None or new_id
        run_id = run_id or f"run-{uuid.uuid4().hex[:16]}"
        now = time.time()
        fields = {"trace": carrier or None, "owner": self.id, "heartbeat": now}
        # Encoded once, here: an input the store would refuse fails this call before any
        # step runs (a deferred row is written only later), and the commit reuses it.
        stored_input = encode_json(input, f"the input of workflow {wf.name!r}")
        create_write = RunCreate(run_id, wf.name, version, stored_input, "running", fields)
        row = {
            "tenant_id": self.store.tenant_id,
            "id": run_id,
            "workflow": wf.name,
            "version": version,
            "input": input,
            "status": "running",
            "output": None,
            "error": None,
            "suspended": None,
            "created_at": now,
            "updated_at": now,
            **fields,
        }
        if ours:
            # Launched before the row is queued (nothing of the run can reach the
            # committer before it: the task runs only once this coroutine yields), so
            # the run's first step is sent off before the row's commit starts in its
            # thread, instead of waiting for the GIL behind it.
            self._launch(run_id, row)
            if defer_row:
                timer = asyncio.get_running_loop().call_later(_ROW_S, self._write_row, run_id)
                self._unwritten[run_id] = (create_write, timer)
                return run_id
            try:
                await asyncio.shield(self.committer.submit(create_write))
            except BaseException:
                task = self.tasks.get(run_id)
                if task is not None:
                    task.cancel()
                raise
            return run_id
        created = await asyncio.shield(self.committer.submit(create_write))
        if not created.created:
            # Same id again (a client retrying its start): the first start wins.
            existing = await asyncio.to_thread(self.store.get_run, run_id)
            if existing["workflow"] != wf.name:
                raise RunStateError(
                    f"run id {run_id!r} is already used by a run of {existing['workflow']!r}"
                )
            return run_id
        self._launch(run_id, row)
        return run_id

    async def get(self, run_id: str) -> dict[str, Any]:
        await self._recover()
        return await asyncio.to_thread(self.store.get_run, run_id)

    async def list_runs(self, status: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
        await self._recover()
        return await asyncio.to_thread(self.store.list_runs, status, limit)

    def _known(self, run_id: str) -> _Live | None:
        return self._live.get(run_id) or self._ended.get(run_id)

    async def events(
        self, run_id: str, after: int = 0, wait_s: float = 0.0
    ) -> tuple[list[dict[str, Any]], str]:
        """Events after ``after``; waits up to ``wait_s`` for new ones (long poll).

        A run executing here (or just ended) is served from memory once ``after``
        reaches what memory holds; older history and other runs come from the store."""
        await self._recover()
        deadline = time.monotonic() + wait_s
        while True:
            left = deadline - time.monotonic()
            live = self._known(run_id)
            if live is not None and live.base is not None and after >= live.base:
                items = live.after(after)
                status = live.row["status"]
                if items or live.ended.is_set() or left <= 0:
                    return items, status
                waiter = live.changed
            else:
                waiter = self._changed.setdefault(run_id, asyncio.Event())
                items = await asyncio.to_thread(self.store.read_events, run_id, after)
                run = await asyncio.to_thread(self.store.get_run, run_id)
                left = deadline - time.monotonic()
                if items or run["status"] in _ENDED or left <= 0:
                    return items, run["status"]
                left = min(left, _POLL_S)  # it may be executing elsewhere: read again
            try:
                await asyncio.wait_for(waiter.wait(), left)
            except TimeoutError:
                pass

    async def wait(self, run_id: str, wait_s: float = 0.0) -> dict[str, Any]:
        """The run's row once it ends or suspends, or after ``wait_s`` (long poll).

        A run executing here answers from memory when it ends (its final write is
        durable by then); other runs are read from the store."""
        await self._recover()
        live = self._known(run_id)
        if live is not None:
            if not live.ended.is_set():
                try:
                    await asyncio.wait_for(asyncio.shield(live.ended.wait()), wait_s)
                except TimeoutError:
                    pass
            return dict(live.row)
        deadline = time.monotonic() + wait_s
        while True:
            waiter = self._changed.setdefault(run_id, asyncio.Event())
            run = await asyncio.to_thread(self.store.get_run, run_id)
            left = deadline - time.monotonic()
            if run["status"] in _ENDED or left <= 0:
                return run
            if self._known(run_id) is not None:
                # It started executing here while we read (a resume launched it): wait
                # on it in memory, not return its "running" row at once.
                return await self.wait(run_id, left)
            try:  # it may be executing elsewhere: read again soon
                await asyncio.wait_for(waiter.wait(), min(left, _POLL_S))
            except TimeoutError:
                pass

    async def resume(self, run_id: str, input: Any = None) -> dict[str, Any]:
        await self._recover()
        self._ended.pop(run_id, None)  # its remembered row is about to change
        run = await asyncio.to_thread(self.store.get_run, run_id)
        status = run["status"]
        if status == "suspended":
            pending = run["suspended"] or {}
            validate_json(input, pending.get("schema"), f"input for step {pending.get('step')!r}")
            await asyncio.to_thread(
                self.store.save_checkpoint,
                run_id,
                pending["step"],
                input,
                [("input_received", {"step": pending["step"], "t": time.time()})],
            )
            await self._wait_for_lease(run_id)
            await self._set(run_id, "running", suspended=None)
        elif status in ("running", "pending", "failed"):
            if run_id in self.tasks:
                raise RunStateError(f"run {run_id} is already running")
            if input is not None:
                raise RunStateError(f"run {run_id} is {status}, not waiting for input")
            await self._wait_for_lease(run_id)
            await self._set(run_id, "running", error=None)
        else:
            raise RunStateError(
                f"run {run_id} is {status}; only suspended, failed or interrupted runs resume"
            )
        self._launch(run_id)
        return await asyncio.to_thread(self.store.get_run, run_id)

    async def _wait_for_lease(self, run_id: str) -> None:
        """Take the run over once its previous owner's lease lapses (it died)."""
        deadline = time.monotonic() + STALE_S + 2 * HEARTBEAT_S
        while not await self._claim(run_id):
            if time.monotonic() > deadline:
                raise RunStateError(
                    f"run {run_id} is being executed by another live runner",
                    fix="Wait for it to finish, or cancel it with `lumos runs cancel`.",
                )
            await asyncio.sleep(0.5)

    async def cancel(self, run_id: str) -> dict[str, Any]:
        await self._recover()
        run = await asyncio.to_thread(self.store.get_run, run_id)
        if run["status"] in TERMINAL_STATES:
            raise RunStateError(f"run {run_id} already ended ({run['status']})")
        task = self.tasks.get(run_id)
        if task is not None:
            task.cancel()
            await asyncio.wait([task], timeout=30)
        elif await self._cancel_at_host(run):
            pass  # its agent's actor executes it: cancelled there, which writes the end
        else:
            self._ended.pop(run_id, None)
            await self._set(
                run_id, "cancelled", [("run_cancelled", {"t": time.time()})], suspended=None
            )
        return await asyncio.to_thread(self.store.get_run, run_id)

    async def _cancel_at_host(self, run: dict[str, Any]) -> bool:
        """Cancel a run its agent's actor executes (see :func:`hosted_execute`); False
        when no live actor of that name executes it (then it is cancelled in the store,
        like a run whose runner died)."""
        from lumos_ray.runtime import await_ref, get_actor, is_actor_died

        agent = host_of(run.get("owner"))
        if agent is None:
            return False
        from lumos_ray.actors._agent_actor import actor_name

        actor = await asyncio.to_thread(get_actor, actor_name(agent, 0, self.store.tenant_id))
        if actor is None:
            return False
        try:
            return bool(await await_ref(actor.hosted.remote(hosted_cancel, run["id"])))
        except Exception as exc:
            if is_actor_died(exc):
                return False
            raise

    # -- time travel ---------------------------------------------------------------
    async def checkpoints(self, run_id: str) -> list[dict[str, Any]]:
        """The run's checkpoints in the order their steps finished."""
        await self._recover()
        await asyncio.to_thread(self.store.get_run, run_id)  # NotFoundError for a bad id
        return await asyncio.to_thread(ordered_checkpoints, self.store, run_id)

    async def fork(
        self,
        run_id: str,
        from_step: str | int,
        outputs: dict[str, Any] | None = None,
        input: Any = None,
        new_input: bool = False,
        carrier: Any = None,
    ) -> str:
        """A new run of ``run_id``'s workflow version that starts with the checkpoints
        finished before ``from_step`` (``outputs`` edits some of them) and runs the
        rest; the original run is not touched. ``new_input``: use ``input`` instead of
        the original's."""
        await self._recover()
        await self.storage.check()
        src = await asyncio.to_thread(self.store.get_run, run_id)
        cps = await asyncio.to_thread(ordered_checkpoints, self.store, run_id)
        kept = plan_fork(cps, from_step, outputs)
        wf, version = await self._definition(src["workflow"], src["version"])
        run_input = input if new_input else src["input"]
        validate_json(run_input, wf.input_schema, f"input of workflow {wf.name!r}")
        new_id = f"run-{uuid.uuid4().hex[:16]}"
        fields = {"trace": carrier or None, "owner": self.id, "heartbeat": time.time()}
        writes: list[Write] = [RunCreate(new_id, wf.name, version, run_input, "running", fields)]
        origin = {
            "from_run": run_id,
            "from_step": from_step,
            "kept": len(kept),
            "edited": sorted(outputs or {}),
            "t": time.time(),
        }
        writes.append(CheckpointWrite(new_id, None, None, [("run_forked", origin)]))
        # Each kept checkpoint goes with a step_restored event: the new run's history
        # orders its checkpoints like the original's (see _forks.ordered_checkpoints).
        writes += [
            CheckpointWrite(new_id, path, value, [("step_restored", {"step": path})])
            for path, value in kept.items()
        ]
        await asyncio.gather(*(asyncio.shield(self.committer.submit(w)) for w in writes))
        self._launch(new_id)
        return new_id

    # -- schedules -----------------------------------------------------------------
    async def add_schedule(
        self,
        schedule_id: str,
        name: str,
        version: str | None,
        body: dict[str, Any] | None,
        input: Any,
        cron: str | None = None,
        every_s: float | None = None,
        catchup: str = "all",
    ) -> dict[str, Any]:
        """Start ``name`` at ``version`` on every tick of ``cron`` or every ``every_s``
        seconds, with ``input`` (validated now, against the version it will run)."""
        await self._recover()
        check_schedule(schedule_id, cron, every_s, catchup)
        wf, version = await self._register(name, version, body)
        validate_json(input, wf.input_schema, f"input of workflow {wf.name!r}")
        row = await asyncio.to_thread(
            self.scheduler.db.create,
            schedule_id,
            wf.name,
            version,
            input,
            cron=cron,
            every_s=every_s,
            catchup=catchup,
            next_fire=first_tick(cron, every_s, time.time()),
        )
        self.scheduler.changed()
        return row

    async def list_schedules(self, status: str | None = None) -> list[dict[str, Any]]:
        await self._recover()
        return await asyncio.to_thread(self.scheduler.db.list, status)

    async def cancel_schedule(self, schedule_id: str) -> dict[str, Any]:
        """No tick fires after this returns (runs already started go on)."""
        await self._recover()
        row = await asyncio.to_thread(self.scheduler.db.cancel, schedule_id)
        self.scheduler.changed()
        return row

    async def ping(self) -> int:
        await self._recover()
        import os

        return os.getpid()


# -- runs hosted by their agent's actor ------------------------------------------------
#
# A run whose workflow is one agent step executes in that agent's actor (the client
# calls the actor, not this runner: one actor hop less, which is most of what a
# durable run paid over the agent called directly). The actor holds a Runner of its
# own (no schedules, no adoption of other runs), whose engine calls the agent's turn
# in-process; everything else is the runner's code: the same lease in the run's row
# (owner ``agent:<agent name>#<id>``, renewed while it runs), the same group-committed
# writes (row, checkpoint with the agent's turn, events, status: one commit for a short
# run), the same answer-once-durable rule. So the guarantees are the runner's: a run
# whose actor dies keeps a lease that lapses, and the tenant's runner adopts it (a
# cluster) or ``lumos runs resume`` resumes it (embedded); followers and ``wait_run``
# read it from the store through the runner; ``cancel_run`` reaches the actor through
# the runner (:meth:`Runner._cancel_at_host`); it is listed like any run.

_HOST_PREFIX = "agent:"


def host_owner_fits(agent: str) -> bool:
    """Whether ``agent``'s hosted lease id fits the owner column (long names are not
    hosted: their runs go to the runner)."""
    return len(f"{_HOST_PREFIX}{agent}#") + 12 <= KEY_LIMITS["owner"]


def host_of(owner: str | None) -> str | None:
    """The agent whose actor holds lease ``owner``, if it is a hosted run's."""
    if owner and owner.startswith(_HOST_PREFIX) and "#" in owner:
        return owner[len(_HOST_PREFIX) :].rsplit("#", 1)[0]
    return None


class _LocalAgent:
    """Engine ``local``: the hosting actor's turn function for its own agent's steps
    (its spec handed to the actor first when the step's differs, as a handle's
    ``ensure_current`` would: once per spec object)."""

    def __init__(self, actor: Any) -> None:
        self.actor = actor
        self._applied: OrderedDict[int, Any] = OrderedDict()

    async def __call__(self, spec: Any) -> Any:
        from lumos_ray.actors._agent_actor import spec_fingerprint

        a = self.actor
        if spec.name != a.spec.name or spec.replicas != 1 or spec.hosting == "shared":
            return None
        if self._applied.get(id(spec)) is not spec:
            fingerprint = spec_fingerprint(spec)
            if fingerprint != a.fingerprint:
                await a.reconfigure(spec, fingerprint)
            self._applied[id(spec)] = spec
            while len(self._applied) > 64:
                self._applied.popitem(last=False)
        return a.run


def _hosted_runner(actor: Any) -> Runner:
    """The runner of the runs hosted by agent actor ``actor`` (made on first use)."""
    runner: Runner | None = actor.hosted_state.get("runner")
    if runner is None:
        owner = f"{_HOST_PREFIX}{actor.spec.name}#{uuid.uuid4().hex[:12]}"
        runner = Runner(auto_recover=False, tenant=actor.tenant, owner=owner, schedules=False)
        runner.local = _LocalAgent(actor)
        actor.hosted_state["runner"] = runner
    return runner


async def hosted_execute(
    actor: Any,
    name: str,
    version: str | None,
    body: dict[str, Any] | None,
    input: Any,
    run_id: str,
    carrier: Any,
    wait_s: float,
) -> dict[str, Any]:
    """:meth:`Runner.execute` of a one-agent-step run, inside that agent's actor
    (``AgentActor.hosted(hosted_execute, ...)``). ``run_id``: made by the client for
    this call (sent with no retry: if the actor dies, the client looks the run up by
    this id and resumes it, or starts it on the runner if its row was never stored)."""
    return await _hosted_runner(actor).execute(
        name, version, body, input, run_id, carrier, wait_s, new_id=True
    )


async def hosted_cancel(actor: Any, run_id: str) -> bool:
    """Cancel run ``run_id`` if this actor executes it; False if it does not."""
    runner: Runner | None = actor.hosted_state.get("runner")
    if runner is None or run_id not in runner.tasks:
        return False
    await runner.cancel(run_id)
    return True


async def hosted_run_ids(actor: Any) -> dict[str, list[str]]:
    """Ids of the runs this agent actor's hosted runner executes now ("running") and
    executed ("ended", the newest it keeps): ``AgentActor.hosted(hosted_run_ids)``."""
    runner: Runner | None = actor.hosted_state.get("runner")
    if runner is None:
        return {"running": [], "ended": []}
    return {"running": list(runner.tasks), "ended": list(runner._ended)}
