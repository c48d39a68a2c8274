"""Client API for workflow runs: start, follow, wait, resume, cancel.

Thin by design: every call goes to the runner actor on the cluster, which owns the
store, so the same calls work against an embedded cluster or a remote one.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from typing import Any

from pydantic import BaseModel

from lumos_ray import tracing
from lumos_ray.errors import LumosError, NotFoundError, RunStateError
from lumos_ray.workflows._definition import Workflow, get_workflow

__all__ = [
    "CheckpointInfo",
    "RunEvent",
    "RunInfo",
    "cancel_run",
    "execute_run",
    "follow_run",
    "fork_run",
    "get_run",
    "get_runner",
    "list_checkpoints",
    "list_runs",
    "replay_run",
    "resume_run",
    "run_workflow",
    "runner_client",
    "start_run",
    "wait_run",
]


class RunInfo(BaseModel):
    id: str
    workflow: str
    version: str | None = None  # the registered definition the run executes
    status: str
    input: Any = None
    output: Any = None
    error: dict[str, Any] | None = None
    suspended: dict[str, Any] | None = None
    created_at: float
    updated_at: float

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> RunInfo:
        return cls.model_validate({k: v for k, v in row.items() if k in cls.model_fields})

    @property
    def done(self) -> bool:
        return self.status in ("succeeded", "failed", "cancelled")


class RunEvent(BaseModel):
    seq: int
    ts: float
    type: str
    data: dict[str, Any] | None = None


def get_runner(tenant: str | None = None) -> Any:
    """The runner actor of ``tenant`` (default: the settings' tenant), created on first
    use (detached, restarted by Ray on failure)."""
    from lumos_ray.runtime import current_settings, get_or_create_actor, remote_class
    from lumos_ray.workflows._runner import Runner, runner_name

    settings = current_settings()
    tenant = tenant or settings.tenant_id
    return get_or_create_actor(
        runner_name(tenant),
        remote_class(Runner),
        not settings.embedded,
        tenant,
        options={
            "num_cpus": 0,
            "max_restarts": -1,
            "max_task_retries": -1,
            "max_concurrency": 10_000,
        },
    )


_ENDED = frozenset({"succeeded", "failed", "cancelled", "suspended"})
_WAIT_S = 5.0  # one long poll; wait_run repeats it


async def _read_store(method: str, *args: Any) -> Any:
    """Reads without a cluster: the embedded default's store is a local file, so
    `lumos runs list/show/events` need not start Ray just to look."""
    import asyncio

    from lumos_ray.store._sql import TERMINAL_STATES, open_store

    store = open_store()
    if method == "get":
        return await asyncio.to_thread(store.get_run, args[0])
    if method == "list":
        return await asyncio.to_thread(store.list_runs, *args)
    if method == "wait":
        deadline = asyncio.get_running_loop().time() + args[1]
        while True:
            row = await asyncio.to_thread(store.get_run, args[0])
            if row["status"] in _ENDED or asyncio.get_running_loop().time() >= deadline:
                return row
            await asyncio.sleep(0.2)
    run_id, after, wait_s = (*args, 0.0)[:3]
    deadline = asyncio.get_running_loop().time() + wait_s
    while True:
        items = await asyncio.to_thread(store.read_events, run_id, after)
        status = (await asyncio.to_thread(store.get_run, run_id))["status"]
        done = status in TERMINAL_STATES or status == "suspended"
        if items or done or asyncio.get_running_loop().time() >= deadline:
            return items, status
        await asyncio.sleep(0.2)


def _reads_locally() -> bool:
    from lumos_ray.runtime import current_settings, is_connected

    return not is_connected() and current_settings().embedded


class _RunnerClient:
    """Typed calls to the runner actor. The actor handle is cached and re-fetched once
    if the actor died for good (e.g. killed without restart), which recreates it.
    Reads on the embedded default go straight to the local store (no cluster needed)."""

    def __init__(self, tenant: str | None = None) -> None:
        self.tenant = tenant  # None: the settings' tenant
        self._runner: Any = None

    async def _invoke(self, call: Callable[[Any], Any]) -> Any:
        from lumos_ray.runtime import is_actor_died, is_remote_task_error, unwrap_error

        for attempt in (1, 2):
            if self._runner is None:
                self._runner = get_runner(self.tenant)
            try:
                return await call(self._runner)
            except Exception as exc:
                if is_remote_task_error(exc) and isinstance(unwrap_error(exc), LumosError):
                    raise unwrap_error(exc) from None
                if is_actor_died(exc):
                    self._runner = None
                    if attempt == 1:
                        continue
                raise
        raise AssertionError("unreachable")

    async def start(
        self,
        name: str,
        version: str | None,
        body: dict[str, Any] | None,
        input: Any,
        run_id: str | None,
        carrier: dict[str, str],
    ) -> str:
        return str(
            await self._invoke(
                lambda r: r.start.remote(name, version, body, input, run_id, carrier)
            )
        )

    async def execute(
        self,
        name: str,
        version: str | None,
        body: dict[str, Any] | None,
        input: Any,
        run_id: str | None,
        carrier: dict[str, str],
        wait_s: float,
    ) -> dict[str, Any]:
        return dict(
            await self._invoke(
                lambda r: r.execute.remote(name, version, body, input, run_id, carrier, wait_s)
            )
        )

    async def get(self, run_id: str) -> dict[str, Any]:
        if self.tenant is None and _reads_locally():
            return dict(await _read_store("get", run_id))
        return dict(await self._invoke(lambda r: r.get.remote(run_id)))

    async def list_runs(self, status: str | None, limit: int) -> list[dict[str, Any]]:
        if self.tenant is None and _reads_locally():
            return list(await _read_store("list", status, limit))
        return list(await self._invoke(lambda r: r.list_runs.remote(status, limit)))

    async def events(
        self, run_id: str, after: int = 0, wait_s: float = 0.0
    ) -> tuple[list[dict[str, Any]], str]:
        """Events after ``after``; waits up to ``wait_s`` for new ones (long poll)."""
        if self.tenant is None and _reads_locally():
            items, status = await _read_store("events", run_id, after, wait_s)
        else:
            items, status = await self._invoke(lambda r: r.events.remote(run_id, after, wait_s))
        return list(items), str(status)

    async def wait(self, run_id: str, wait_s: float) -> dict[str, Any]:
        if self.tenant is None and _reads_locally():
            return dict(await _read_store("wait", run_id, wait_s))
        return dict(await self._invoke(lambda r: r.wait.remote(run_id, wait_s)))

    async def resume(self, run_id: str, input: Any) -> dict[str, Any]:
        return dict(await self._invoke(lambda r: r.resume.remote(run_id, input)))

    async def cancel(self, run_id: str) -> dict[str, Any]:
        return dict(await self._invoke(lambda r: r.cancel.remote(run_id)))

    async def checkpoints(self, run_id: str) -> list[dict[str, Any]]:
        return list(await self._invoke(lambda r: r.checkpoints.remote(run_id)))

    async def fork(
        self,
        run_id: str,
        from_step: str | int,
        outputs: dict[str, Any] | None,
        input: Any,
        new_input: bool,
        carrier: dict[str, str],
    ) -> str:
        return str(
            await self._invoke(
                lambda r: r.fork.remote(run_id, from_step, outputs, input, new_input, carrier)
            )
        )

    async def add_schedule(
        self,
        schedule_id: str,
        name: str,
        version: str | None,
        body: dict[str, Any] | None,
        input: Any,
        cron: str | None,
        every_s: float | None,
        catchup: str,
    ) -> dict[str, Any]:
        return dict(
            await self._invoke(
                lambda r: r.add_schedule.remote(
                    schedule_id, name, version, body, input, cron, every_s, catchup
                )
            )
        )

    async def list_schedules(self, status: str | None) -> list[dict[str, Any]]:
        return list(await self._invoke(lambda r: r.list_schedules.remote(status)))

    async def cancel_schedule(self, schedule_id: str) -> dict[str, Any]:
        return dict(await self._invoke(lambda r: r.cancel_schedule.remote(schedule_id)))


_client = _RunnerClient()
_tenant_clients: dict[str, _RunnerClient] = {}


def runner_client(tenant: str | None = None) -> _RunnerClient:
    """The process's typed client of the runner actor (of ``tenant``: a gateway serves
    many tenants, each with its own runner)."""
    if tenant is None:
        return _client
    found = _tenant_clients.get(tenant)
    if found is None:
        found = _tenant_clients[tenant] = _RunnerClient(tenant)
    return found


# (name, version) pairs this process already registered with the runner: later starts
# send only the reference, not the body.
_registered: set[tuple[str, str]] = set()


# Workflow object -> (the object, its pydantic dump, data form, version). Building the
# data form looks every tool up (a plugin scan of the installed packages: milliseconds
# per tool), so a start of an unchanged Workflow reuses it; "unchanged" = the same
# object with an equal dump (tens of microseconds), so editing a workflow between
# starts still registers the new version.
_data_cache: OrderedDict[int, tuple[Workflow, dict[str, Any], dict[str, Any], str]] = OrderedDict()
_DATA_CACHE_SIZE = 256


def _as_data(wf: Workflow) -> tuple[dict[str, Any], str]:
    from lumos_ray.workflows._serialize import definition_version, workflow_to_data

    dump = wf.model_dump()
    hit = _data_cache.get(id(wf))
    if hit is not None and hit[0] is wf and hit[1] == dump:
        _data_cache.move_to_end(id(wf))
        return hit[2], hit[3]
    body = workflow_to_data(wf)
    version = definition_version(body)
    _data_cache[id(wf)] = (wf, dump, body, version)
    while len(_data_cache) > _DATA_CACHE_SIZE:
        _data_cache.popitem(last=False)
    return body, version


def _resolve(
    workflow: Workflow | str, version: str | None
) -> tuple[str, str | None, dict[str, Any] | None]:
    """(name, version, body to register or None) for a start: a Workflow, a YAML path,
    or a name (registered in this process, found in the workflow dirs, or in the store)."""
    name, version, body, _wf = _resolve_workflow(workflow, version)
    return name, version, body


def _resolve_workflow(
    workflow: Workflow | str, version: str | None
) -> tuple[str, str | None, dict[str, Any] | None, Workflow | None]:
    """:func:`_resolve`, and the Workflow object when this process has it."""
    wf: Workflow | None = workflow if isinstance(workflow, Workflow) else None
    name = workflow.name if isinstance(workflow, Workflow) else workflow
    if wf is None and version is None:
        try:
            wf = get_workflow(name)
        except NotFoundError:
            wf = None  # maybe registered in the store by another client
    body: dict[str, Any] | None = None
    if wf is not None:
        body, version = _as_data(wf)
        name = wf.name
        if version is not None and (name, version) in _registered:
            body = None
    return name, version, body, wf


def _hosted_agent(wf: Workflow | None) -> Any:
    """The agent whose actor can host a run of ``wf`` (None: the runner executes it):
    a workflow of exactly one plain agent step on the run's own thread, of a dedicated
    one-replica agent that does not stream (see ``_runner.hosted_execute``)."""
    from lumos_ray.workflows._definition import AgentStep
    from lumos_ray.workflows._runner import host_owner_fits

    if wf is None or len(wf.steps) != 1:
        return None
    step = wf.steps[0]
    if type(step) is not AgentStep or step.thread or step.when is not None:
        return None
    try:
        spec = wf.agent(step.agent) if isinstance(step.agent, str) else step.agent
    except LumosError:
        return None  # the runner reports it, as for any run
    if spec.stream or spec.replicas != 1 or spec.hosting != "dedicated":
        return None
    return spec if host_owner_fits(spec.name) else None


# Agent spec identity -> (spec, the actor of its one replica), for hosted runs.
_hosts: OrderedDict[int, tuple[Any, Any]] = OrderedDict()


async def _host(spec: Any) -> Any:
    """The agent's actor (created on first use, like a handle's), found once per spec;
    the first time also makes sure the tenant's runner exists: it adopts a hosted run
    whose actor died (a cluster's runner; embedded: ``lumos runs resume``)."""
    hit = _hosts.get(id(spec))
    if hit is not None and hit[0] is spec:
        return hit[1]
    from lumos_ray.actors.agent import AgentHandle

    handle = await asyncio.to_thread(AgentHandle, spec)
    if _client._runner is None:
        _client._runner = await asyncio.to_thread(get_runner, _client.tenant)
    _hosts[id(spec)] = (spec, handle.actor(""))
    while len(_hosts) > 256:
        _hosts.popitem(last=False)
    return handle.actor("")


async def _execute_hosted(
    spec: Any,
    name: str,
    version: str | None,
    body: dict[str, Any] | None,
    input: Any,
    carrier: dict[str, str],
) -> dict[str, Any]:
    """Execute the run in its agent's actor, under an id made here. If the actor dies
    before answering, the run is found by that id: resumed by the runner when its row
    is stored (after its lease lapses), else started there; it runs once either way."""
    import uuid

    from lumos_ray.runtime import is_actor_died, is_remote_task_error, unwrap_error
    from lumos_ray.workflows._runner import hosted_execute

    run_id = f"run-{uuid.uuid4().hex[:16]}"
    actor = await _host(spec)
    try:
        # No retry by Ray on a restarted actor: it would start the run a second time.
        row = await actor.hosted.options(max_task_retries=0).remote(
            hosted_execute, name, version, body, input, run_id, carrier, _WAIT_S
        )
    except Exception as exc:
        if is_remote_task_error(exc) and isinstance(unwrap_error(exc), LumosError):
            raise unwrap_error(exc) from None
        if not is_actor_died(exc):
            raise
        _hosts.pop(id(spec), None)
        return await _after_host_died(name, version, body, input, run_id, carrier)
    return dict(row)


async def _after_host_died(
    name: str,
    version: str | None,
    body: dict[str, Any] | None,
    input: Any,
    run_id: str,
    carrier: dict[str, str],
) -> dict[str, Any]:
    """The run's row after its hosting actor died mid-call (see _execute_hosted)."""
    try:
        row = await _client.get(run_id)
    except NotFoundError:  # never stored: it never ran as far as anyone can tell
        return await _client.execute(name, version, body, input, run_id, carrier, _WAIT_S)
    if row["status"] in ("running", "pending"):
        try:
            row = await _client.resume(run_id, None)
        except RunStateError:
            pass  # a cluster's runner adopted it first: it runs there
    return row


async def start_run(
    workflow: Workflow | str,
    input: Any = None,
    *,
    run_id: str | None = None,
    version: str | None = None,
) -> str:
    """Start a run on the cluster; returns its id once the run is durable.

    ``workflow`` is a Workflow, a YAML path, or a name: a workflow registered in this
    process or found in the workflow dirs, else one registered in the store (its
    newest version, or ``version``). The run records the workflow's name and version
    (a content hash of its definition as data); the definition is registered in the
    store on first use. Runs never store code: see ``workflows/_serialize.py``.
    """
    name, version, body = _resolve(workflow, version)
    run = await _client.start(name, version, body, input, run_id, tracing.inject())
    if version is not None:
        _registered.add((name, version))
    return str(run)


async def execute_run(
    workflow: Workflow | str,
    input: Any = None,
    *,
    run_id: str | None = None,
    version: str | None = None,
    timeout: float | None = None,
) -> RunInfo:
    """Start a run and wait until it ends or suspends: :func:`start_run` then
    :func:`wait_run`, in one call to the runner (the run is exactly as durable; the
    client saves a round trip). A client that dies meanwhile kills nothing: the run
    goes on and ``wait_run``/``get_run`` find it by id (``RunInfo.id``).

    A workflow of one agent step (on the run's own thread, of a dedicated one-replica
    agent that does not stream) executes in that agent's actor instead of the runner:
    the same writes, lease and recovery, one actor hop less (``_runner.hosted_execute``)."""
    name, version, body, wf = _resolve_workflow(workflow, version)
    spec = _hosted_agent(wf) if run_id is None else None

    async def go() -> RunInfo:
        carrier = tracing.inject()
        if spec is not None:
            row = await _execute_hosted(spec, name, version, body, input, carrier)
        else:
            row = await _client.execute(name, version, body, input, run_id, carrier, _WAIT_S)
        if version is not None:
            _registered.add((name, version))
        while row["status"] not in _ENDED:
            row = await _client.wait(row["id"], _WAIT_S)
        return RunInfo.from_row(row)

    return await asyncio.wait_for(go(), timeout)


async def get_run(run_id: str) -> RunInfo:
    return RunInfo.from_row(await _client.get(run_id))


async def list_runs(status: str | None = None, limit: int = 50) -> list[RunInfo]:
    return [RunInfo.from_row(r) for r in await _client.list_runs(status, limit)]


async def follow_run(
    run_id: str, after: int = 0, *, until_suspended: bool = True
) -> AsyncIterator[RunEvent]:
    """Every event of the run from ``after`` on (replays history), live until it ends."""
    while True:
        items, status = await _client.events(run_id, after, 5.0)
        for it in items:
            after = it["seq"]
            yield RunEvent.model_validate(it)
        if not items and (
            status in ("succeeded", "failed", "cancelled")
            or (until_suspended and status == "suspended")
        ):
            return


async def wait_run(run_id: str, timeout: float | None = None) -> RunInfo:
    """Wait until the run ends or suspends.

    One long-poll call to the runner, answered when the run ends (from memory for a
    run it executes; its final write is durable by then), not a read per event."""

    async def go() -> RunInfo:
        while True:
            row = await _client.wait(run_id, _WAIT_S)
            if row["status"] in _ENDED:
                return RunInfo.from_row(row)

    return await asyncio.wait_for(go(), timeout)


async def resume_run(run_id: str, input: Any = None) -> RunInfo:
    """Continue a suspended run with ``input``, or an interrupted/failed one."""
    return RunInfo.from_row(await _client.resume(run_id, input))


async def cancel_run(run_id: str) -> RunInfo:
    return RunInfo.from_row(await _client.cancel(run_id))


class CheckpointInfo(BaseModel):
    """One finished step of a run: ``index`` in the order the steps finished."""

    index: int
    path: str
    output: Any = None
    seq: int | None = None


async def list_checkpoints(run_id: str) -> list[CheckpointInfo]:
    """The run's checkpoints in the order their steps finished (what replay and fork
    can start from)."""
    return [CheckpointInfo.model_validate(c) for c in await _client.checkpoints(run_id)]


async def replay_run(run_id: str, from_step: str | int) -> str:
    """A new run of the same workflow version and input that keeps the checkpoints
    finished before ``from_step`` (a checkpoint path or index) and runs that step and
    everything after again. The original run is untouched; returns the new run's id."""
    return await _client.fork(run_id, from_step, None, None, False, tracing.inject())


_UNSET: Any = object()


async def fork_run(
    run_id: str,
    from_step: str | int,
    *,
    outputs: dict[str, Any] | None = None,
    input: Any = _UNSET,
) -> str:
    """Like :func:`replay_run`, with some kept checkpoints edited (``outputs``: path ->
    new output) and optionally a new ``input``: the new run diverges from the original,
    which is untouched. Returns the new run's id."""
    new_input = input is not _UNSET
    return await _client.fork(
        run_id, from_step, outputs, input if new_input else None, new_input, tracing.inject()
    )


def run_workflow(
    workflow: Workflow | str, input: Any = None, *, timeout: float | None = None
) -> RunInfo:
    """Synchronous convenience: start a run and wait for it to end or suspend."""

    return asyncio.run(execute_run(workflow, input, timeout=timeout))
