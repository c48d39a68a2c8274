"""Scheduled runs from Python: create, list, cancel (the runner fires them; see
``_scheduler.py`` for what "never twice for one tick" rests on)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from lumos_ray.workflows._definition import Workflow
from lumos_ray.workflows._runs import _registered, _resolve, runner_client
from lumos_ray.workflows._scheduler import check_schedule, tick_run_id

__all__ = [
    "ScheduleInfo",
    "cancel_schedule",
    "create_schedule",
    "list_schedules",
    "tick_run_id",
]


class ScheduleInfo(BaseModel):
    id: str
    workflow: str
    version: str
    input: Any = None
    cron: str | None = None
    every_s: float | None = None
    catchup: str
    status: str
    next_fire: float
    fired: int
    created_at: float
    updated_at: float


async def create_schedule(
    workflow: Workflow | str,
    *,
    schedule_id: str,
    cron: str | None = None,
    every_s: float | None = None,
    input: Any = None,
    catchup: str = "all",
    version: str | None = None,
) -> ScheduleInfo:
    """Run ``workflow`` with ``input`` on every tick of ``cron`` (5 fields, or 6 with
    seconds last) or every ``every_s`` seconds (at least 1), durably: the schedule
    lives in the store and its tenant's runner fires it, after a restart too.

    Each tick starts one run, with id ``SCHEDULE_ID.TICK_MS`` (:func:`tick_run_id`), and
    never two. Ticks missed while no runner was up fire when one is back: all of them
    (``catchup="all"``, the newest 100) or only the newest (``"latest"``). The version
    is pinned when the schedule is made: re-registering the workflow does not change
    what the schedule runs (make a new schedule for that)."""
    check_schedule(schedule_id, cron, every_s, catchup)
    name, version, body = _resolve(workflow, version)
    row = await runner_client().add_schedule(
        schedule_id, name, version, body, input, cron, every_s, catchup
    )
    _registered.add((row["workflow"], row["version"]))
    return ScheduleInfo.model_validate(row)


async def list_schedules(status: str | None = None) -> list[ScheduleInfo]:
    """The tenant's schedules (``status``: "active" or "cancelled" to filter)."""
    return [ScheduleInfo.model_validate(r) for r in await runner_client().list_schedules(status)]


async def cancel_schedule(schedule_id: str) -> ScheduleInfo:
    """Stop the schedule: no tick fires after this returns (runs already started go on)."""
    return ScheduleInfo.model_validate(await runner_client().cancel_schedule(schedule_id))
