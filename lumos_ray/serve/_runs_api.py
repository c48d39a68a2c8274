"""The runs API: start workflows over HTTP, follow their events (SSE), resume, cancel.

A thin layer over ``lumos_ray.workflows._runs``: the runner actor does the work, so a
client that disconnects loses nothing, and a follower that reconnects with
``Last-Event-ID`` (or ``?after=``) replays from where it stopped.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Header, Query
from pydantic import BaseModel, Field
from starlette.responses import StreamingResponse

from lumos_ray.workflows import _runs as runs
from lumos_ray.workflows._definition import get_workflow, list_workflows

__all__ = ["router"]

router = APIRouter(tags=["runs"])


class StartRun(BaseModel):
    input: Any = Field(default=None, description="Run input; validated against input_schema.")
    run_id: str | None = Field(default=None, description="Optional id (idempotent start).")


class ResumeRun(BaseModel):
    input: Any = Field(default=None, description="Input for the suspended step.")


@router.get("/v1/workflows")
async def workflows() -> dict[str, Any]:
    """Workflows this gateway can start (configs/workflows and LUMOS_WORKFLOWS_DIR)."""
    return {
        "object": "list",
        "data": [{"name": n, "source": s} for n, s in sorted(list_workflows().items())],
    }


@router.post("/v1/workflows/{name}/runs", status_code=201)
async def start(name: str, body: StartRun) -> dict[str, Any]:
    """Start a run of workflow ``name``; returns at once with the run (pending)."""
    wf = get_workflow(name)
    run_id = await runs.start_run(wf, body.input, run_id=body.run_id)
    return (await runs.get_run(run_id)).model_dump()


@router.get("/v1/runs")
async def list_runs(status: str | None = None, limit: int = Query(50, ge=1, le=1000)) -> dict:
    items = await runs.list_runs(status, limit)
    return {"object": "list", "data": [r.model_dump() for r in items]}


@router.get("/v1/runs/{run_id}")
async def get(run_id: str) -> dict[str, Any]:
    return (await runs.get_run(run_id)).model_dump()


@router.get("/v1/runs/{run_id}/events")
async def events(
    run_id: str,
    after: int = Query(0, ge=0, description="Replay events after this sequence number."),
    last_event_id: str | None = Header(default=None),
) -> StreamingResponse:
    """Server-sent events: `id` = sequence number, `event` = type, `data` = JSON.

    The stream ends after the run ends or suspends (a final `end` event carries the
    status)."""
    await runs.get_run(run_id)  # 404 before the stream starts, not inside it
    start = int(last_event_id) if last_event_id and last_event_id.isdigit() else after

    async def stream() -> AsyncIterator[bytes]:
        async for ev in runs.follow_run(run_id, start):
            data = json.dumps({"seq": ev.seq, "ts": ev.ts, "type": ev.type, **(ev.data or {})})
            yield f"id: {ev.seq}\nevent: {ev.type}\ndata: {data}\n\n".encode()
        info = await runs.get_run(run_id)
        yield f"event: end\ndata: {json.dumps({'status': info.status})}\n\n".encode()

    return StreamingResponse(
        stream(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


@router.post("/v1/runs/{run_id}/resume")
async def resume(run_id: str, body: ResumeRun | None = None) -> dict[str, Any]:
    return (await runs.resume_run(run_id, body.input if body else None)).model_dump()


@router.post("/v1/runs/{run_id}/cancel")
async def cancel(run_id: str) -> dict[str, Any]:
    return (await runs.cancel_run(run_id)).model_dump()
