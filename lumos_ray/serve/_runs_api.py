"""The runs API: start workflows over HTTP, follow their events (SSE), resume, cancel;
delete finished runs, read and delete agent threads, read the tenant's usage.

A thin layer over the caller's tenant's runner (``_tenant_runs``): the runner actor
does the work, so a client that disconnects loses nothing, and a follower that
reconnects with ``Last-Event-ID`` (or ``?after=``) replays from where it stopped.

Every route acts on the tenant of the caller's key (the replica's own tenant when auth
is off): another tenant's run is not found (404), whatever id is sent. Run ids are made
by the runner unless the caller sends one for an idempotent start, which must match
``RUN_ID_PATTERN``. With the platform on, starts, resumes and cancels are audited, and
anything that adds stored data (a start, replay, fork or schedule) is refused with 429
while the tenant is at its plan's storage limit (``Platform.check_storage``).
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Header, Path, Query, Request
from pydantic import BaseModel, Field
from starlette.responses import StreamingResponse

from lumos_ray.errors import NotFoundError
from lumos_ray.serve._tenant_runs import RUN_ID_PATTERN, TenantRuns, check_run_id, tenant_runs
from lumos_ray.workflows import CheckpointInfo, ScheduleInfo
from lumos_ray.workflows._definition import list_workflows

__all__ = ["router"]

log = logging.getLogger(__name__)

router = APIRouter(tags=["runs"])


class StartRun(BaseModel):
    input: Any = Field(default=None, description="Run input; validated against input_schema.")
    run_id: str | None = Field(
        default=None,
        pattern=RUN_ID_PATTERN,
        description="Optional id for an idempotent start (letters, digits, . _ -; at most "
        "64); the runner makes one otherwise. Ids are scoped to the caller's tenant.",
    )


class ResumeRun(BaseModel):
    input: Any = Field(default=None, description="Input for the suspended step.")


class ReplayRun(BaseModel):
    from_step: str | int = Field(
        description="A checkpoint path (e.g. '2.review') or its index in the run's "
        "checkpoints: that step and everything after it run again."
    )


class ForkRun(ReplayRun):
    outputs: dict[str, Any] | None = Field(
        default=None,
        max_length=1000,
        description="Kept checkpoints to edit: path -> new output.",
    )
    input: Any = Field(default=None, description="A new run input (with new_input).")
    new_input: bool = Field(default=False, description="Use `input` instead of the original's.")


class NewRun(BaseModel):
    id: str
    from_run: str


class CheckpointList(BaseModel):
    object: str = "list"
    data: list[CheckpointInfo]


class CreateSchedule(BaseModel):
    id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,47}$", description="Its name.")
    cron: str | None = Field(default=None, max_length=200, description="5 or 6 fields.")
    every_s: float | None = Field(default=None, ge=1, description="Or a period (seconds).")
    input: Any = None
    catchup: str = Field(default="all", pattern="^(all|latest)$")


class ScheduleList(BaseModel):
    object: str = "list"
    data: list[ScheduleInfo]


class RunOut(BaseModel):
    """A run as the runs API returns it."""

    id: str
    workflow: str
    version: str | None = None
    status: str = Field(description="pending, running, suspended, succeeded, failed, cancelled")
    input: Any = None
    output: Any = None
    error: dict[str, Any] | None = None
    suspended: dict[str, Any] | None = None
    created_at: float
    updated_at: float


class RunList(BaseModel):
    object: str = "list"
    data: list[RunOut]


class WorkflowItem(BaseModel):
    name: str
    source: str


class WorkflowList(BaseModel):
    object: str = "list"
    data: list[WorkflowItem]


class ThreadItem(BaseModel):
    agent: str
    thread_id: str
    messages: int


class ThreadList(BaseModel):
    object: str = "list"
    data: list[ThreadItem]


class ThreadOut(BaseModel):
    agent: str
    thread_id: str
    messages: list[dict[str, Any]]


class Deleted(BaseModel):
    id: str
    object: str
    deleted: bool = True


class UsageOut(BaseModel):
    """The caller's tenant's metered days and this month's quota and storage."""

    tenant: str
    days: list[dict[str, Any]]
    quota: dict[str, Any]


def _run(row: dict[str, Any]) -> RunOut:
    return RunOut.model_validate({k: v for k, v in row.items() if k in RunOut.model_fields})


def _principal(request: Request) -> Any:
    return request.scope.get("state", {}).get("principal")


def _gateway(request: Request) -> Any:
    """The replica's gateway (the front middleware puts it in the request state)."""
    return request.scope["state"]["gateway"]


def _tenant(request: Request) -> str:
    """The caller's tenant (the replica's own when auth is off)."""
    principal = _principal(request)
    return principal.tenant if principal is not None else str(_gateway(request).default_tenant())


def _runs(request: Request) -> TenantRuns:
    """The caller's tenant's runs."""
    return tenant_runs(_tenant(request))


def _store(request: Request) -> Any:
    """The control-plane store seen as the caller's tenant: every statement filters by
    it, so another tenant's run or thread is simply not found."""
    from lumos_ray.store import open_store

    return open_store(tenant_id=_tenant(request))


async def _check_storage(request: Request) -> None:
    """429 (QuotaExceededError) while the caller's tenant is at its storage limit."""
    gw = _gateway(request)
    principal = _principal(request)
    if gw.platform is not None and principal is not None:
        await gw.run_blocking(gw.platform.check_storage, principal.tenant)


async def _audit(request: Request, action: str, run_id: str, detail: dict[str, Any]) -> None:
    """One audit entry for a state change (platform on); a failure to write it is
    logged, not answered: the change already happened."""
    gw = _gateway(request)
    principal = _principal(request)
    if gw.platform is None or principal is None:
        return
    try:
        await gw.run_blocking(
            gw.platform.audit, principal.tenant, principal.actor, action, run_id, detail
        )
    except Exception:
        log.exception("Writing the audit entry %s for %s failed", action, run_id)


@router.get("/v1/workflows")
async def workflows() -> WorkflowList:
    """Workflows this gateway can start (configs/workflows and LUMOS_WORKFLOWS_DIR)."""
    return WorkflowList(
        data=[WorkflowItem(name=n, source=s) for n, s in sorted(list_workflows().items())]
    )


@router.post("/v1/workflows/{name}/runs", status_code=201)
async def start(name: str, body: StartRun, request: Request) -> RunOut:
    """Start a run of workflow ``name``; returns at once with the run."""
    runs = _runs(request)
    await _check_storage(request)
    run_id = await runs.start(name, body.input, body.run_id)
    await _audit(request, "run.started", run_id, {"workflow": name})
    return _run(await runs.get(run_id))


@router.get("/v1/runs")
async def list_runs(
    request: Request,
    status: str | None = Query(default=None, max_length=32),
    limit: int = Query(50, ge=1, le=1000),
) -> RunList:
    """The caller's tenant's runs, newest first."""
    items = await _runs(request).list_runs(status, limit)
    return RunList(data=[_run(r) for r in items])


@router.get("/v1/runs/{run_id}")
async def get(run_id: str, request: Request) -> RunOut:
    return _run(await _runs(request).get(run_id))


@router.get(
    "/v1/runs/{run_id}/events",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {"schema": {"type": "string"}}}}},
)
async def events(
    run_id: str,
    request: Request,
    after: int = Query(0, ge=0, le=2**62, description="Replay events after this sequence."),
    last_event_id: str | None = Header(default=None, max_length=20),
) -> StreamingResponse:
    """Server-sent events: `id` = sequence number, `event` = type, `data` = JSON.

    The stream ends after the run ends or suspends (a final `end` event carries the
    status)."""
    runs = _runs(request)
    await runs.get(run_id)  # 404 before the stream starts, not inside it
    start = int(last_event_id) if last_event_id and last_event_id.isdigit() else after

    async def stream() -> AsyncIterator[bytes]:
        seq = start
        while True:
            items, status = await runs.events(run_id, seq, 5.0)
            for ev in items:
                seq = ev["seq"]
                data = json.dumps(
                    {"seq": ev["seq"], "ts": ev["ts"], "type": ev["type"], **(ev.get("data") or {})}
                )
                yield f"id: {ev['seq']}\nevent: {ev['type']}\ndata: {data}\n\n".encode()
            if not items and status in ("succeeded", "failed", "cancelled", "suspended"):
                break
        yield f"event: end\ndata: {json.dumps({'status': status})}\n\n".encode()

    return StreamingResponse(
        stream(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


@router.post("/v1/runs/{run_id}/resume")
async def resume(run_id: str, request: Request, body: ResumeRun | None = None) -> RunOut:
    row = await _runs(request).resume(run_id, body.input if body else None)
    await _audit(request, "run.resumed", run_id, {})
    return _run(row)


@router.post("/v1/runs/{run_id}/cancel")
async def cancel(run_id: str, request: Request) -> RunOut:
    row = await _runs(request).cancel(run_id)
    await _audit(request, "run.cancelled", run_id, {})
    return _run(row)


@router.get("/v1/runs/{run_id}/checkpoints")
async def checkpoints(run_id: str, request: Request) -> CheckpointList:
    """The run's checkpoints in the order its steps finished (replay and fork points)."""
    rows = await _runs(request).checkpoints(run_id)
    return CheckpointList(data=[CheckpointInfo.model_validate(r) for r in rows])


@router.post("/v1/runs/{run_id}/replay", status_code=201)
async def replay(run_id: str, body: ReplayRun, request: Request) -> NewRun:
    """A new run that keeps the steps finished before ``from_step`` and runs the rest."""
    await _check_storage(request)
    new_id = await _runs(request).fork(run_id, body.from_step, None, None, False)
    await _audit(request, "run.started", new_id, {"replay_of": run_id})
    return NewRun(id=new_id, from_run=run_id)


@router.post("/v1/runs/{run_id}/fork", status_code=201)
async def fork(run_id: str, body: ForkRun, request: Request) -> NewRun:
    """A new run from a checkpoint with edited outputs; the original is untouched."""
    await _check_storage(request)
    new_id = await _runs(request).fork(
        run_id, body.from_step, body.outputs, body.input, body.new_input
    )
    await _audit(request, "run.started", new_id, {"fork_of": run_id})
    return NewRun(id=new_id, from_run=run_id)


@router.post("/v1/workflows/{name}/schedules", status_code=201)
async def create_schedule(name: str, body: CreateSchedule, request: Request) -> ScheduleInfo:
    """Run workflow ``name`` on every tick of ``cron`` or every ``every_s`` seconds."""
    await _check_storage(request)
    row = await _runs(request).add_schedule(
        body.id, name, body.input, body.cron, body.every_s, body.catchup
    )
    return ScheduleInfo.model_validate(row)


@router.get("/v1/schedules")
async def list_schedules(
    request: Request, status: str | None = Query(default=None, pattern="^(active|cancelled)$")
) -> ScheduleList:
    rows = await _runs(request).list_schedules(status)
    return ScheduleList(data=[ScheduleInfo.model_validate(r) for r in rows])


@router.post("/v1/schedules/{schedule_id}/cancel")
async def cancel_schedule(schedule_id: str, request: Request) -> ScheduleInfo:
    return ScheduleInfo.model_validate(await _runs(request).cancel_schedule(schedule_id))


@router.delete("/v1/runs/{run_id}")
async def delete_run(run_id: str, request: Request) -> Deleted:
    """Delete a finished run with its checkpoints and events (frees storage); 409 while
    it is still pending, running or suspended (cancel it first)."""
    check_run_id(run_id)
    await _gateway(request).run_blocking(_store(request).delete_run, run_id)
    await _audit(request, "run.deleted", run_id, {})
    return Deleted(id=run_id, object="run")


@router.get("/v1/threads")
async def list_threads(
    request: Request, agent: str | None = Query(default=None, min_length=1, max_length=200)
) -> ThreadList:
    """The caller's tenant's agent threads that hold messages (at most 1000)."""
    rows = await _gateway(request).run_blocking(_store(request).list_threads, agent, 1000)
    return ThreadList(data=[ThreadItem.model_validate(r) for r in rows])


_AGENT = Path(max_length=200)
_THREAD = Path(max_length=200)


@router.get("/v1/threads/{agent}/{thread_id:path}")
async def get_thread(request: Request, agent: str = _AGENT, thread_id: str = _THREAD) -> ThreadOut:
    """A thread's messages in order (404 for a thread of another tenant)."""
    msgs = await _gateway(request).run_blocking(_store(request).thread_messages, agent, thread_id)
    return ThreadOut(agent=agent, thread_id=thread_id, messages=msgs)


@router.delete("/v1/threads/{agent}/{thread_id:path}")
async def delete_thread(request: Request, agent: str = _AGENT, thread_id: str = _THREAD) -> Deleted:
    """Delete a thread's messages and working memory (frees storage)."""
    await _gateway(request).run_blocking(_store(request).delete_thread, agent, thread_id)
    await _audit(request, "thread.deleted", f"{agent}/{thread_id}", {})
    return Deleted(id=f"{agent}/{thread_id}", object="thread")


@router.get("/v1/usage")
async def usage(
    request: Request,
    since: str | None = Query(default=None, max_length=10, description="YYYY-MM-DD"),
    until: str | None = Query(default=None, max_length=10, description="YYYY-MM-DD"),
) -> UsageOut:
    """The caller's tenant's usage per day, this month's quota use and its storage
    (other tenants' usage is never reachable: there is no parameter to name one)."""
    gw = _gateway(request)
    principal = _principal(request)
    if gw.platform is None or principal is None:
        raise NotFoundError(
            "Usage is metered only when the gateway runs with the platform on.",
            fix="Start the gateway with gateway.platform: true (tenants and keys).",
        )
    data = await gw.run_blocking(
        gw.platform.tenant_usage, principal, None, since=since, until=until
    )
    return UsageOut.model_validate(data)
