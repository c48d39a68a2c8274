"""Scheduled runs, fired by the tenant's runner.

A schedule is a row in the store (workflow name and version, input, a cron expression
or a period, ``next_fire``). The runner keeps the active ones in memory (reloaded
every few seconds, so a schedule added through another runner is seen), sleeps until
the earliest tick, and fires it:

1. the tick's run is started with an id derived from the schedule and the tick
   (``SCHEDULE.TICK_MS``): starting the same tick again is a retry that finds the run;
2. ``next_fire`` moves on by compare-and-set.

A runner that dies between 1 and 2 fires the tick again when it comes back, which
finds the run of step 1: a tick never makes two runs. Ticks missed while no runner was
up fire on its return (``catchup="all"``, at most :data:`MAX_CATCHUP` of the newest) or
only the newest of them (``catchup="latest"``).
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import time
from typing import TYPE_CHECKING, Any

from lumos_ray.errors import InputValidationError
from lumos_ray.store import ScheduleStore

if TYPE_CHECKING:
    from lumos_ray.workflows._runner import Runner

__all__ = [
    "CATCHUP",
    "MAX_CATCHUP",
    "MIN_EVERY_S",
    "Scheduler",
    "check_schedule",
    "first_tick",
    "tick_run_id",
    "ticks_due",
]

log = logging.getLogger(__name__)

MAX_CATCHUP = 100  # missed ticks fired on return, newest first kept
MIN_EVERY_S = 1.0  # shortest period (and the finest cron resolution: seconds)
RELOAD_S = 5.0  # how stale the in-memory view of the store's schedules may get
CATCHUP = ("all", "latest")
# Short enough that a tick's run id (ID.TICK_MS) stays a valid run id everywhere (64).
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,47}$")


def check_schedule(schedule_id: str, cron: str | None, every_s: float | None, catchup: str) -> None:
    """Refuse a schedule that could not fire as asked, saying how to fix it."""
    if not isinstance(schedule_id, str) or not _ID.match(schedule_id):
        raise InputValidationError(
            f"schedule id {str(schedule_id)[:80]!r} is not valid.",
            fix="Use 1-48 characters: letters, digits, '_', '.', '-' (starting with a "
            "letter or digit).",
        )
    if (cron is None) == (every_s is None):
        raise InputValidationError(
            "a schedule needs exactly one of cron= or every_s=.",
            fix="Pass cron='*/5 * * * *' (or 6 fields, seconds last) or every_s=60.",
        )
    if every_s is not None and (
        not isinstance(every_s, int | float) or not math.isfinite(every_s) or every_s < MIN_EVERY_S
    ):
        raise InputValidationError(
            f"every_s={every_s!r} is not a period of at least {MIN_EVERY_S} s.",
            fix=f"Pass a number of seconds >= {MIN_EVERY_S}.",
        )
    if cron is not None:
        from croniter import croniter

        if not isinstance(cron, str) or len(cron) > 200 or not croniter.is_valid(cron):
            raise InputValidationError(
                f"cron expression {str(cron)[:80]!r} is not valid.",
                fix="Use 5 fields (minute hour day month weekday) or 6 with seconds last, "
                "e.g. '*/5 * * * *' or '* * * * * */10'.",
            )
    if catchup not in CATCHUP:
        raise InputValidationError(
            f"catchup={catchup!r} is not one of {', '.join(CATCHUP)}.",
            fix="'all' fires every missed tick on return (newest 100), 'latest' only the newest.",
        )


def _next_cron(cron: str, after: float) -> float:
    from croniter import CroniterBadDateError, croniter

    try:
        return float(croniter(cron, after).get_next(float))
    except CroniterBadDateError:
        raise InputValidationError(
            f"cron expression {cron!r} never fires.", fix="Check its day and month fields."
        ) from None


def first_tick(cron: str | None, every_s: float | None, now: float) -> float:
    """The first tick strictly after ``now``."""
    if every_s is not None:
        return now + every_s
    assert cron is not None
    return _next_cron(cron, now)


def ticks_due(s: dict[str, Any], now: float) -> tuple[list[float], float]:
    """(ticks at or before ``now`` from ``next_fire`` on, newest :data:`MAX_CATCHUP`;
    the first tick after ``now``)."""
    t = float(s["next_fire"])
    every = s.get("every_s")
    if every:
        n = int((now - t) // every) + 1 if now >= t else 0
        first = max(0, n - MAX_CATCHUP)
        return [t + k * every for k in range(first, n)], t + n * every
    due: list[float] = []
    while t <= now:
        due.append(t)
        if len(due) > MAX_CATCHUP:
            del due[0]
        t = _next_cron(s["cron"], t)
    return due, t


def tick_run_id(schedule_id: str, tick: float) -> str:
    """The run of one tick: the same id however often the tick is fired."""
    return f"{schedule_id}.{round(tick * 1000)}"


class Scheduler:
    """Fires the tenant's schedules from inside its runner."""

    def __init__(self, runner: Runner) -> None:
        self.runner = runner
        self.db = ScheduleStore(runner.store)
        self._active: dict[str, dict[str, Any]] = {}
        self._loaded_at = 0.0
        self._wake = asyncio.Event()

    def changed(self) -> None:
        """A schedule was added or cancelled here: reload and re-plan now."""
        self._loaded_at = 0.0
        self._wake.set()

    async def run_forever(self) -> None:
        while True:
            try:
                delay = await self._pass()
            except Exception:  # a store hiccup must not stop the schedules
                log.exception("scheduler pass failed; retrying")
                delay = 1.0
            try:
                await asyncio.wait_for(self._wake.wait(), delay)
            except TimeoutError:
                pass
            self._wake.clear()

    async def _pass(self) -> float:
        """Fire what is due; returns how long to sleep."""
        now = time.time()
        if now - self._loaded_at >= RELOAD_S:
            rows = await asyncio.to_thread(self.db.list, "active")
            self._active = {r["id"]: r for r in rows}
            self._loaded_at = now
        for s in list(self._active.values()):
            if s["next_fire"] <= now:
                await self._fire(s, now)
        soonest = min((s["next_fire"] for s in self._active.values()), default=math.inf)
        return max(0.0, min(soonest - time.time(), RELOAD_S - (time.time() - self._loaded_at)))

    async def _fire(self, s: dict[str, Any], now: float) -> None:
        ticks, after = ticks_due(s, now)
        if s["catchup"] == "latest":
            ticks = ticks[-1:]
        for tick in ticks:
            try:
                await self.runner._begin(
                    s["workflow"], s["version"], None, s["input"], tick_run_id(s["id"], tick), None
                )
            except Exception:  # e.g. its input no longer validates: the tick is skipped
                log.exception("schedule %s: tick %s could not start", s["id"], tick)
        moved = await asyncio.to_thread(self.db.advance, s["id"], s["next_fire"], after, len(ticks))
        if moved:
            s["next_fire"] = after
            s["fired"] += len(ticks)
        else:  # cancelled, or advanced by another runner: re-read
            self._active.pop(s["id"], None)
            self._loaded_at = 0.0
