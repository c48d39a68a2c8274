"""The runner: a detached async actor that owns run execution on the cluster.

Clients only submit and follow; the work lives here, so a client can die and the run
goes on. On (re)start the runner reads the store and carries on with every run left
``running`` or ``pending`` (Ray restarts it after a crash; with an embedded cluster
``lumos runs resume`` starts a new one): both are the same code path.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

from sqlalchemy.exc import IntegrityError

from lumos_ray import tracing
from lumos_ray.errors import RunStateError, WorkflowDefinitionError
from lumos_ray.store._sql import TERMINAL_STATES, open_store
from lumos_ray.workflows._definition import Workflow
from lumos_ray.workflows._engine import Engine, Suspend, validate_json
from lumos_ray.workflows._serialize import definition_version, workflow_from_data

__all__ = ["RUNNER_NAME", "Runner"]

RUNNER_NAME = "lumos-runner"
_FLUSH_S = 0.02
HEARTBEAT_S = 2.0  # lease renewal period
STALE_S = 10.0  # a lease not renewed for this long belongs to a dead runner


class _RunEvents:
    """Buffers a run's events and flushes them in small batches (or with a checkpoint)."""

    def __init__(self, runner: Runner, run_id: str) -> None:
        self.runner, self.run_id = runner, run_id
        self.buf: list[tuple[str, dict[str, Any]]] = []
        self._scheduled = False

    def emit(self, kind: str, data: dict[str, Any]) -> None:
        self.buf.append((kind, {**data, "t": time.time()}))
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_later(
                _FLUSH_S, lambda: asyncio.ensure_future(self.flush())
            )

    def take(self) -> list[tuple[str, dict[str, Any]]]:
        items, self.buf = self.buf, []
        self._scheduled = False
        return items

    async def flush(self) -> None:
        items = self.take()
        if items:
            await asyncio.to_thread(self.runner.store.append_events, self.run_id, items)
            self.runner._notify(self.run_id)


class Runner:
    """``auto_recover``: adopt runs whose owner died (a cluster's runner). An embedded
    cluster's runner adopts only what it is asked to resume, so two local processes
    sharing a store never take each other's live runs."""

    def __init__(self, auto_recover: bool = True) -> None:
        tracing.setup_tracing()
        self.id = f"runner-{uuid.uuid4().hex[:12]}"
        self.auto_recover = auto_recover
        self.store = open_store()
        self.tasks: dict[str, asyncio.Task[None]] = {}
        self._changed: dict[str, asyncio.Event] = {}
        self._keeper: asyncio.Task[None] | None = None
        self._definitions: dict[tuple[str, str], Workflow] = {}

    # -- lifecycle ----------------------------------------------------------------
    async def _recover(self) -> None:
        """Start the lease keeper once; it renews our leases and adopts orphans."""
        if self._keeper is None:
            self._keeper = asyncio.get_running_loop().create_task(self._keep_leases())
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

    def _launch(self, run_id: str) -> None:
        """Execute a run whose lease we hold."""
        if run_id in self.tasks:
            return
        task = asyncio.get_running_loop().create_task(self._execute(run_id))
        self.tasks[run_id] = task
        task.add_done_callback(lambda _t: self.tasks.pop(run_id, None))

    def _notify(self, run_id: str) -> None:
        ev = self._changed.pop(run_id, None)
        if ev is not None:
            ev.set()

    async def _set(self, run_id: str, status: str, **fields: Any) -> None:
        if status in TERMINAL_STATES or status == "suspended":
            fields["owner"] = None  # release the lease
        await asyncio.to_thread(self.store.set_status, run_id, status, **fields)
        self._notify(run_id)

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

    async def _execute(self, run_id: str) -> None:
        row = await asyncio.to_thread(self.store.get_run, run_id)
        wf, _ = await self._definition(row["workflow"], row["version"])
        done = await asyncio.to_thread(self.store.load_checkpoints, run_id)
        events = _RunEvents(self, run_id)

        async def record(path: str, value: Any) -> None:
            await asyncio.to_thread(self.store.save_checkpoint, run_id, path, value, events.take())
            self._notify(run_id)

        parent = row.get("trace") or None
        with tracing.span("workflow.run", parent, run_id=run_id, workflow=wf.name) as sp:
            if not parent:
                await self._set(run_id, "running", trace=tracing.inject())
            else:
                await self._set(run_id, "running")
            events.emit("run_resumed" if done else "run_started", {"workflow": wf.name})
            try:
                output = await Engine(run_id, wf, done, record, events.emit).run(row["input"])
            except Suspend as s:
                events.emit("run_suspended", {"step": s.path, "prompt": s.prompt})
                await events.flush()
                await self._set(
                    run_id,
                    "suspended",
                    suspended={"step": s.path, "prompt": s.prompt, "schema": s.schema},
                )
                return
            except asyncio.CancelledError:
                events.emit("run_cancelled", {})
                await events.flush()
                await self._set(run_id, "cancelled")
                return
            except Exception as exc:
                from lumos_ray.workflows._engine import _error_dict

                err = _error_dict(exc, "")
                sp.set_attribute("error", err["message"][:500])
                events.emit("run_failed", {"error": err})
                await events.flush()
                await self._set(run_id, "failed", error=err)
                return
            events.emit("run_finished", {})
            await events.flush()
            await self._set(run_id, "succeeded", output=output, error=None)

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
        when None). A ``body`` registers that version first (idempotent)."""
        await self._recover()
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
        wf, version = await self._definition(name, version)
        validate_json(input, wf.input_schema, f"input of workflow {wf.name!r}")
        run_id = run_id or f"run-{uuid.uuid4().hex[:16]}"
        try:
            await asyncio.to_thread(self.store.create_run, run_id, wf.name, version, input)
        except IntegrityError:
            # Same id again (a client retrying its start): the first start wins.
            existing = await asyncio.to_thread(self.store.get_run, run_id)
            if existing["workflow"] != wf.name:
                raise RunStateError(
                    f"run id {run_id!r} is already used by a run of {existing['workflow']!r}"
                ) from None
            return run_id
        # Join the caller's trace (the run span becomes a child of the client's) and
        # take the lease in the same write.
        await asyncio.to_thread(
            self.store.set_status,
            run_id,
            "pending",
            trace=carrier or None,
            owner=self.id,
            heartbeat=time.time(),
        )
        self._launch(run_id)
        return run_id

    async def get(self, run_id: str) -> dict[str, Any]:
        await self._recover()
        return await asyncio.to_thread(self.store.get_run, run_id)

    async def list(self, status: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
        await self._recover()
        return await asyncio.to_thread(self.store.list_runs, status, limit)

    async def events(
        self, run_id: str, after: int = 0, wait_s: float = 0.0
    ) -> tuple[list[dict[str, Any]], str]:
        """Events after ``after``; waits up to ``wait_s`` for new ones (long poll)."""
        await self._recover()
        deadline = time.monotonic() + wait_s
        while True:
            ev = self._changed.setdefault(run_id, asyncio.Event())
            items = await asyncio.to_thread(self.store.read_events, run_id, after)
            run = await asyncio.to_thread(self.store.get_run, run_id)
            left = deadline - time.monotonic()
            if (
                items
                or run["status"] in TERMINAL_STATES
                or run["status"] == "suspended"
                or left <= 0
            ):
                return items, run["status"]
            try:
                await asyncio.wait_for(ev.wait(), left)
            except TimeoutError:
                pass

    async def resume(self, run_id: str, input: Any = None) -> dict[str, Any]:
        await self._recover()
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
        else:
            await asyncio.to_thread(
                self.store.append_events, run_id, [("run_cancelled", {"t": time.time()})]
            )
            await self._set(run_id, "cancelled", suspended=None)
        return await asyncio.to_thread(self.store.get_run, run_id)

    async def ping(self) -> int:
        await self._recover()
        import os

        return os.getpid()
