"""Plan quotas and metering in memory, written to the store in batches.

Why: :meth:`Platform.charge` is one write transaction per call, and SQLite runs
writers one at a time, so a gateway charging every request queues its requests behind
each other (hundreds of ms at 16-64 concurrent clients). A ``QuotaLedger`` keeps this
month's counters per tenant in memory (loaded from the store on first use), refuses an
over-quota charge from memory, and writes the increments (quota and daily metering)
in ONE transaction per flush interval and on :meth:`close`.

Exactness: the ledger is exact for everything that goes through it. The gateway
keeps ONE ledger per Serve app, in the app's admission actor, so all its replicas
share it. Other writers (a runner's direct ``Platform.charge``/``record_usage``) are
seen at the next flush that writes (it returns the stored totals of what it touched)
or, for a tenant with nothing to write, within ``refresh_s`` (an idle flush re-reads
the stored totals at most that often).

Durability: a crash of the process holding the ledger loses at most the increments
of one flush interval (``flush_s``); what was admitted in it is then not counted.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from lumos_ray.errors import QuotaExceededError
from lumos_ray.platform import _usage
from lumos_ray.platform._platform import Platform

__all__ = ["DEFAULT_FLUSH_S", "DEFAULT_REFRESH_S", "QuotaLedger"]

log = logging.getLogger(__name__)

#: Seconds between flushes: at most this much metering is lost if the process dies.
DEFAULT_FLUSH_S = 0.5
#: Seconds between re-reads of the stored month totals when there is nothing to write.
#: Why not every flush: the re-read is a query from the flush thread, which takes the
#: GIL from the process's event loop (~12 ms of CPU per query with a gateway busy,
#: every 0.5 s); other writers' direct charges are rare and may show 5 s later.
DEFAULT_REFRESH_S = 5.0
#: [counters, agent_seconds, storage gauge or None] of one (tenant, day)
_Meter = list[Any]
_SORTED_METRICS = tuple(sorted(_usage.QUOTA_METRICS))


def _limited(plan: Any) -> tuple[tuple[str, int], ...]:
    """(metric, limit) of each quota metric ``plan`` limits, in a fixed order;
    remembered per plan object (plans are frozen)."""
    hit = _LIMITED.get(id(plan))
    if hit is None or hit[0] is not plan:
        limits = tuple(
            (m, int(limit))
            for m in _SORTED_METRICS
            if (limit := getattr(plan, _usage.QUOTA_METRICS[m])) is not None
        )
        if len(_LIMITED) > 1024:  # plans configs reloaded many times
            _LIMITED.clear()
        hit = _LIMITED[id(plan)] = (plan, limits)
    return hit[1]


_LIMITED: dict[int, tuple[Any, tuple[tuple[str, int], ...]]] = {}


class QuotaLedger:
    """Monthly quota counters and daily metering of one Platform's store, in memory.

    Thread-safe. ``start()`` runs a daemon thread that flushes every ``flush_s``
    seconds and re-reads the stored totals every ``refresh_s`` seconds when a flush has
    nothing to write; without it, call :meth:`flush` yourself. :meth:`close` flushes a
    last time and stops the thread."""

    def __init__(
        self,
        platform: Platform,
        *,
        flush_s: float = DEFAULT_FLUSH_S,
        refresh_s: float = DEFAULT_REFRESH_S,
    ) -> None:
        if not flush_s > 0:
            raise ValueError(f"flush_s must be > 0 (got {flush_s!r})")
        if not refresh_s > 0:
            raise ValueError(f"refresh_s must be > 0 (got {refresh_s!r})")
        self.platform = platform
        self.flush_s = float(flush_s)
        self.refresh_s = float(refresh_s)
        self._next_refresh = 0.0  # time.monotonic() of the flush thread's next re-read
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()  # one flush at a time
        # (tenant, period) -> metric -> stored total as last read (with our flushes)
        self._base: dict[tuple[str, str], dict[str, int]] = {}
        # (tenant, period) -> metric -> increments not yet written / being written
        self._pending: dict[tuple[str, str], dict[str, int]] = {}
        self._inflight: dict[tuple[str, str], dict[str, int]] = {}
        # (tenant, day) -> (counters, agent_seconds, storage gauge), not yet written
        self._meter: dict[tuple[str, str], _Meter] = {}
        # tenant -> API calls lent out (see hold): counted as used, never written
        self._held: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- counting ---------------------------------------------------------------------
    def _used(self, key: tuple[str, str]) -> dict[str, int]:
        """This month's use as the ledger sees it (caller holds the lock)."""
        base = self._base.get(key)
        if base is None:
            tenant, period = key
            base = self._base[key] = _usage.month_usage(self.platform._db, tenant, period)
        pend = self._pending.get(key, {})
        infl = self._inflight.get(key, {})
        used = {m: base[m] + pend.get(m, 0) + infl.get(m, 0) for m in _usage.QUOTA_METRICS}
        used["requests"] += self._held.get(key[0], 0)
        return used

    def _add(
        self,
        tenant: str,
        now: float,
        counts: dict[str, int],
        agent_seconds: float = 0.0,
        storage_bytes: int | None = None,
        amounts: dict[str, int] | None = None,
    ) -> None:
        """Add to the pending increments (caller holds the lock). Mutates in place:
        this runs once per gateway request. ``amounts``: ``quota_amounts(counts)``
        when the caller has it already."""
        day, month = _usage.day_and_month(now)
        pend = self._pending.get((tenant, month))
        if pend is None:
            pend = self._pending[(tenant, month)] = dict.fromkeys(_usage.QUOTA_METRICS, 0)
        for metric, n in (amounts or _usage.quota_amounts(counts)).items():
            pend[metric] += n
        entry = self._meter.get((tenant, day))
        if entry is None:
            entry = self._meter[(tenant, day)] = [dict.fromkeys(_usage.COUNTERS, 0), 0.0, None]
        metered = entry[0]
        for k, n in counts.items():
            if k in metered:
                metered[k] += int(n)
        entry[1] += float(agent_seconds)
        if storage_bytes is not None:
            entry[2] = storage_bytes

    def charge(self, tenant: str, counts: dict[str, int]) -> None:
        """Like :meth:`Platform.charge` (QuotaExceededError and nothing counted when
        over the limit), decided from memory. ``counts``: checked amounts."""
        plan_name, limits = self.platform._plan_of(tenant)
        checks = _limited(limits)
        now = time.time()
        amounts = _usage.quota_amounts(counts)
        with self._lock:
            if checks:  # an unlimited plan needs no totals (this runs per request)
                used = self._used((tenant, _usage.day_and_month(now)[1]))
                for metric, limit in checks:
                    n = amounts[metric]
                    # n == 0 still refuses a metric already at its limit (tokens used up).
                    if not (used[metric] + n <= limit if n else used[metric] < limit):
                        raise _usage.quota_error(tenant, plan_name, metric, limit, now)
            self._add(tenant, now, counts, amounts=amounts)

    def request_headroom(self, tenant: str) -> int | None:
        """API calls ``tenant`` may still make this month, from memory (held calls
        count as made): None when its plan has no call limit, 0 when any quota metric
        is used up. The gateway's admission actor lends replicas a share of it."""
        _, limits = self.platform._plan_of(tenant)
        with self._lock:
            used = self._used((tenant, _usage.month_of(time.time())))
        for metric in _SORTED_METRICS:
            limit = getattr(limits, _usage.QUOTA_METRICS[metric])
            if limit is not None and used[metric] >= limit:
                return 0
        calls = limits.api_calls_per_month
        return None if calls is None else max(0, int(calls) - used["requests"])

    def hold(self, tenant: str, calls: int) -> None:
        """Set ``calls`` API calls aside for ``tenant`` (a gateway replica's lease):
        they count as used for every later decision but are not written until
        :meth:`settle` says how many were made. The caller checked the headroom."""
        with self._lock:
            self._held[tenant] = self._held.get(tenant, 0) + int(calls)

    def settle(self, tenant: str, held: int, used: int) -> None:
        """End a hold of ``held`` calls of which ``used`` were made: those are counted
        (quota and metering) like charges, the rest are free again."""
        with self._lock:
            left = self._held.get(tenant, 0) - int(held)
            if left > 0:
                self._held[tenant] = left
            else:
                self._held.pop(tenant, None)
            if used:
                self._add(tenant, time.time(), {"requests": int(used)})

    def try_charge(self, tenant: str, counts: dict[str, int]) -> QuotaExceededError | None:
        """:meth:`charge`, returning the refusal instead of raising (for batches)."""
        try:
            self.charge(tenant, counts)
        except QuotaExceededError as err:
            return err
        return None

    def record(
        self,
        tenant: str,
        counts: dict[str, int],
        agent_seconds: float = 0.0,
        storage_bytes: int | None = None,
    ) -> None:
        """Like :meth:`Platform.record_usage` (never refused; counts towards the quota)."""
        with self._lock:
            self._add(tenant, time.time(), counts, agent_seconds, storage_bytes)

    def quota_used(self, tenant: str) -> dict[str, int]:
        """This month's use of ``tenant`` including what is not flushed yet."""
        with self._lock:
            return self._used((tenant, _usage.month_of(time.time())))

    # -- writing ----------------------------------------------------------------------
    def flush(self, refresh: bool = True) -> int:
        """Write everything counted so far in one transaction; returns how many
        (tenant, period/day) rows it touched. A write reads back the stored totals of
        the tenants it wrote; with ``refresh`` the other tenants' totals are re-read
        too (what other writers charged them). On a store error the increments stay
        pending (retried by the next flush) and the error is raised."""
        with self._flush_lock:
            with self._lock:
                quota, self._pending = self._pending, {}
                meter, self._meter = self._meter, {}
                self._inflight = quota
            if not quota and not meter:
                if refresh:
                    self._refresh()
                return 0
            try:
                totals = _usage.flush_batch(self.platform._db, quota, meter)
            except BaseException:
                with self._lock:
                    for key, amounts in quota.items():
                        pend = self._pending.setdefault(key, dict.fromkeys(amounts, 0))
                        for m, n in amounts.items():
                            pend[m] = pend.get(m, 0) + n
                    for day, (counts, secs, gauge) in meter.items():
                        newer = self._meter.get(day)
                        if newer is not None:
                            c2, s2, g2 = newer
                            counts = {k: counts.get(k, 0) + c2.get(k, 0) for k in _usage.COUNTERS}
                            secs, gauge = secs + s2, g2 if g2 is not None else gauge
                        self._meter[day] = [counts, secs, gauge]
                    self._inflight = {}
                raise
            with self._lock:
                self._base.update(totals)  # stored totals include what was in flight
                self._inflight = {}
                # Months that are over and fully written are no longer needed.
                current = _usage.day_and_month(time.time())[1]
                for key in [k for k in self._base if k[1] < current and k not in self._pending]:
                    del self._base[key]
            if refresh:
                self._refresh(skip={tenant for tenant, _ in totals})
            return len(quota) + len(meter)

    def _refresh(self, skip: set[str] | frozenset[str] = frozenset()) -> None:
        """Re-read this month's stored totals of the tenants known here, but ``skip``
        (one query), so what other writers charged directly shows here too. Called
        with the flush lock held: nothing is in flight."""
        period = _usage.day_and_month(time.time())[1]
        with self._lock:
            tenants = [t for (t, p) in self._base if p == period and t not in skip]
        if not tenants:
            return
        totals = _usage.month_totals(self.platform._db, period, tenants)
        with self._lock:
            for tenant, used in totals.items():
                self._base[(tenant, period)] = used

    def tick(self, now: float) -> int:
        """One flush of the flush thread at ``now`` (``time.monotonic()``): the stored
        totals are re-read only when ``refresh_s`` has passed since the last re-read."""
        refresh = now >= self._next_refresh
        if refresh:
            self._next_refresh = now + self.refresh_s
        return self.flush(refresh=refresh)

    def _loop(self) -> None:
        while not self._stop.wait(self.flush_s):
            try:
                self.tick(time.monotonic())
            except Exception:
                log.exception("Flushing quota and metering counts failed; retrying")

    def start(self) -> QuotaLedger:
        """Flush every ``flush_s`` seconds in a daemon thread (idempotent)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="lumos-ledger", daemon=True)
            self._thread.start()
        return self

    def close(self) -> None:
        """Stop the flush thread and write what is left."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        self.flush()
