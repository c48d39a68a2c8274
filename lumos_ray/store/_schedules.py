"""Schedules in the store: rows of the ``schedules`` table, read and written for one
tenant (the store's).

The one subtle write is :meth:`ScheduleStore.advance`: a compare-and-set of
``next_fire``, so of two runners that fire the same tick only one moves the schedule
on (the other finds the row changed and reloads); a tick's run id is derived from the
tick, so even the run both created is one run.
"""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import func, insert, select, update

from lumos_ray.errors import NotFoundError, RunStateError
from lumos_ray.store._schema import schedules
from lumos_ray.store._store import RunStore, _check

__all__ = ["MAX_SCHEDULES", "ScheduleStore"]

#: Schedules per tenant (active and cancelled rows kept for history count alike).
MAX_SCHEDULES = 1000

_FIELDS = (
    "id",
    "workflow",
    "version",
    "input",
    "cron",
    "every_s",
    "catchup",
    "status",
    "next_fire",
    "fired",
    "created_at",
    "updated_at",
)


def _row(r: Any) -> dict[str, Any]:
    return {k: getattr(r, k) for k in _FIELDS}


class ScheduleStore:
    """The schedules of ``store``'s tenant."""

    def __init__(self, store: RunStore) -> None:
        self.store = store
        self.tenant = store.tenant_id

    def create(
        self,
        schedule_id: str,
        workflow: str,
        version: str,
        input: Any,
        *,
        cron: str | None,
        every_s: float | None,
        catchup: str,
        next_fire: float,
    ) -> dict[str, Any]:
        """A new active schedule; an id in use is refused (cancel it, or pick another)."""
        _check("run_id", schedule_id)
        _check("workflow", workflow)
        _check("version", version)
        now = time.time()
        row = {
            "tenant_id": self.tenant,
            "id": schedule_id,
            "workflow": workflow,
            "version": version,
            "input": input,
            "cron": cron,
            "every_s": every_s,
            "catchup": catchup,
            "status": "active",
            "next_fire": next_fire,
            "fired": 0,
            "created_at": now,
            "updated_at": now,
        }
        with self.store._write() as c:
            n = c.execute(
                select(func.count())
                .select_from(schedules)
                .where(schedules.c.tenant_id == self.tenant)
            ).scalar_one()
            if n >= MAX_SCHEDULES:
                raise RunStateError(
                    f"tenant {self.tenant!r} has {n} schedules (at most {MAX_SCHEDULES}).",
                    fix="Delete schedules you no longer need (`lumos schedules cancel ID`).",
                )
            taken = c.execute(
                select(schedules.c.id).where(
                    schedules.c.tenant_id == self.tenant, schedules.c.id == schedule_id
                )
            ).first()
            if taken is not None:
                raise RunStateError(
                    f"schedule {schedule_id!r} already exists.",
                    fix="Pick another id, or cancel the existing schedule first.",
                )
            c.execute(insert(schedules), [row])
        return {k: row[k] for k in _FIELDS}

    def get(self, schedule_id: str) -> dict[str, Any]:
        with self.store._read() as c:
            r = c.execute(
                select(schedules).where(
                    schedules.c.tenant_id == self.tenant, schedules.c.id == schedule_id
                )
            ).first()
        if r is None:
            raise NotFoundError(
                f"schedule {schedule_id!r} does not exist.",
                fix="List schedules with `lumos schedules list`.",
            )
        return _row(r)

    def list(self, status: str | None = None) -> list[dict[str, Any]]:
        stmt = select(schedules).where(schedules.c.tenant_id == self.tenant)
        if status is not None:
            stmt = stmt.where(schedules.c.status == status)
        with self.store._read() as c:
            rows = c.execute(stmt.order_by(schedules.c.created_at).limit(MAX_SCHEDULES))
            return [_row(r) for r in rows]

    def advance(self, schedule_id: str, expected: float, next_fire: float, fired: int) -> bool:
        """Move an active schedule from tick ``expected`` to ``next_fire`` (having fired
        ``fired`` more ticks); False when another writer moved it first or it was
        cancelled."""
        with self.store._write() as c:
            res = c.execute(
                update(schedules)
                .where(
                    schedules.c.tenant_id == self.tenant,
                    schedules.c.id == schedule_id,
                    schedules.c.status == "active",
                    schedules.c.next_fire == expected,
                )
                .values(
                    next_fire=next_fire,
                    fired=schedules.c.fired + fired,
                    updated_at=time.time(),
                )
            )
            return bool(res.rowcount == 1)

    def cancel(self, schedule_id: str) -> dict[str, Any]:
        self.get(schedule_id)  # NotFoundError names the fix
        with self.store._write() as c:
            c.execute(
                update(schedules)
                .where(schedules.c.tenant_id == self.tenant, schedules.c.id == schedule_id)
                .values(status="cancelled", updated_at=time.time())
            )
        return self.get(schedule_id)
