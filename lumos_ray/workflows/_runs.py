"""Client API for workflow runs: start, follow, wait, resume, cancel.

Thin by design: every call goes to the runner actor on the cluster, which owns the
store, so the same calls work against an embedded cluster or a remote one.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import cloudpickle
from pydantic import BaseModel

from lumos_ray import tracing
from lumos_ray.errors import LumosError
from lumos_ray.workflows._definition import Workflow, get_workflow

__all__ = [
    "RunEvent",
    "RunInfo",
    "cancel_run",
    "follow_run",
    "get_run",
    "get_runner",
    "list_runs",
    "resume_run",
    "run_workflow",
    "start_run",
    "wait_run",
]


class RunInfo(BaseModel):
    id: str
    workflow: str
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


def get_runner() -> Any:
    """The runner actor, created on first use (detached, restarted by Ray on failure)."""
    import ray

    from lumos_ray.runtime import current_settings, get_or_create_actor
    from lumos_ray.workflows._runner import RUNNER_NAME, Runner

    return get_or_create_actor(
        RUNNER_NAME,
        ray.remote(Runner),
        not current_settings().embedded,
        options={
            "num_cpus": 0,
            "max_restarts": -1,
            "max_task_retries": -1,
            "max_concurrency": 10_000,
        },
    )


_runner: Any = None
_READS = {"get", "list", "events"}


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
    import ray

    from lumos_ray.runtime import current_settings

    return not ray.is_initialized() and current_settings().embedded


async def _call(method: str, *args: Any, **kwargs: Any) -> Any:
    """Call the runner; the handle is cached, and re-fetched once if the actor died
    for good (e.g. killed without restart), which recreates it."""
    global _runner
    import ray

    if method in _READS and _reads_locally():
        return await _read_store(method, *args)

    for attempt in (1, 2):
        if _runner is None:
            _runner = get_runner()
        try:
            return await getattr(_runner, method).remote(*args, **kwargs)
        except ray.exceptions.RayTaskError as exc:
            cause = getattr(exc, "cause", None)
            if isinstance(cause, LumosError):
                raise cause from None
            raise
        except ray.exceptions.RayActorError:
            _runner = None
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


async def start_run(
    workflow: Workflow | str, input: Any = None, *, run_id: str | None = None
) -> str:
    """Start a run on the cluster; returns its id immediately."""
    wf = workflow if isinstance(workflow, Workflow) else get_workflow(workflow)
    definition = cloudpickle.dumps(wf)
    return await _call("start", definition, input, run_id, tracing.inject())


async def get_run(run_id: str) -> RunInfo:
    return RunInfo.from_row(await _call("get", run_id))


async def list_runs(status: str | None = None, limit: int = 50) -> list[RunInfo]:
    return [RunInfo.from_row(r) for r in await _call("list", status, limit)]


async def follow_run(
    run_id: str, after: int = 0, *, until_suspended: bool = True
) -> AsyncIterator[RunEvent]:
    """Every event of the run from ``after`` on (replays history), live until it ends."""
    while True:
        items, status = await _call("events", run_id, after, 5.0)
        for it in items:
            after = it["seq"]
            yield RunEvent.model_validate(it)
        if not items and (
            status in ("succeeded", "failed", "cancelled")
            or (until_suspended and status == "suspended")
        ):
            return


async def wait_run(run_id: str, timeout: float | None = None) -> RunInfo:
    """Wait until the run ends or suspends."""

    async def go() -> RunInfo:
        async for _ in follow_run(run_id):
            pass
        return await get_run(run_id)

    return await asyncio.wait_for(go(), timeout)


async def resume_run(run_id: str, input: Any = None) -> RunInfo:
    """Continue a suspended run with ``input``, or an interrupted/failed one."""
    return RunInfo.from_row(await _call("resume", run_id, input))


async def cancel_run(run_id: str) -> RunInfo:
    return RunInfo.from_row(await _call("cancel", run_id))


def run_workflow(
    workflow: Workflow | str, input: Any = None, *, timeout: float | None = None
) -> RunInfo:
    """Synchronous convenience: start a run and wait for it to end or suspend."""

    async def go() -> RunInfo:
        return await wait_run(await start_run(workflow, input), timeout)

    return asyncio.run(go())
