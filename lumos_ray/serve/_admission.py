"""Admission: rate limits per key and tenant plus the plan's monthly quota, in ONE
place per Serve app, so several gateway replicas share one budget.

Why one actor: each gateway replica is its own process, so buckets or counters kept
in a replica let N replicas admit N times the limit, and charging the quota in the
store on every request (one SQLite write transaction each, writers serialised) made
the gateway 600-2,800x slower. The app's admission actor (named
``<app>-ratelimit``) holds the token buckets and a
:class:`~lumos_ray.platform.QuotaLedger` (this month's counters in memory, written to
the store in one transaction per flush interval). A replica sends the checks that
arrive while one call is in flight as ONE batch (no timer: under light load each
check goes alone, under heavy load many share a round trip). Metering of finished
answers is summed per tenant in the replica and sent every ``METER_S`` seconds without
waiting for it: one call per interval instead of one per answer at moderate load.

Leases: a round trip to the actor per request costs more than everything else the
gateway does for a cheap route, so with each admitted call the actor may LEND the
replica a share of what is left: up to ``LEASE_MAX`` calls of that key (rate-limit
tokens taken from the key's and the tenant's buckets, the calls held in the ledger)
for ``LEASE_S`` seconds. The replica admits those calls locally and settles the lease
(how many it used) when it runs out or expires; unused tokens and calls go back. A
share is at most 1/(2 x active replicas) of what is left and is not lent below
``LEASE_MIN``: near a limit every call asks the actor, so no replica can admit past a
limit, and a lease that a replica never uses costs the others little. A replica that
dies holding a lease: its calls count as made once the lease is ``LEASE_GRACE_S`` past
its end (never under-counted).

Durability: the actor restarts after a crash (counters reloaded from the store); the
increments of at most one flush interval are lost with it (docs/platform.md).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
import uuid
from dataclasses import dataclass
from typing import Any

from lumos_ray.errors import QuotaExceededError
from lumos_ray.serve._ratelimit import TokenBuckets, limiter_actor_name, rate_limit_error

__all__ = [
    "LEASE_IDLE_S",
    "LEASE_MAX",
    "LEASE_MIN",
    "LEASE_S",
    "METER_S",
    "AdmissionCore",
    "ClusterAdmission",
    "LedgerSpec",
    "LocalAdmission",
]

log = logging.getLogger(__name__)

#: (key id, tenant, take a rate-limit token?, amounts to charge or None)
Item = tuple[str, str, bool, dict[str, int] | None]
#: (seconds to wait: 0.0 when the rate limit admits, the quota refusal or None)
Verdict = tuple[float, QuotaExceededError | None]
#: (lease id, calls lent, seconds it lasts)
Lease = tuple[int, int, float]
#: an Item plus what to lend: NO_LEASE, ADMIT_AND_LEASE, or LEASE_ONLY (a replica
#: renewing a lease before it runs out: no call is admitted with it)
LeaseItem = tuple[str, str, bool, dict[str, int] | None, int]
NO_LEASE, ADMIT_AND_LEASE, LEASE_ONLY = 0, 1, 2
#: + whether a refused call should ask again soon (leases of its key/tenant are out)
LeaseVerdict = tuple[float, QuotaExceededError | None, Lease | None, bool]

#: Most calls one lease covers (a busy replica's next lease is asked for when half
#: of this one is left, so a round trip slowed by load does not stall its calls).
LEASE_MAX = 1024
#: A share smaller than this is not lent: the call-by-call path keeps limits exact.
LEASE_MIN = 4
#: How long a replica may use a lease.
LEASE_S = 1.0
#: A lease not used for this long goes back (so calls elsewhere are not refused
#: while it sits idle). Why not shorter: at a few dozen calls a second the gaps
#: between calls often exceed 50 ms, and each early return cost a settle and a
#: round trip for the next call (about one actor call per seven requests at 30/s).
LEASE_IDLE_S = 0.25
#: Seconds a replica sums metering before sending it to the actor (one call per
#: interval; :meth:`ClusterAdmission.flush` and a replica's shutdown send it at once).
METER_S = 0.5
#: After this long past its end, an unsettled lease counts as used (its replica died).
LEASE_GRACE_S = 10.0
#: A replica that asked within this many seconds counts as active (for the share).
_ACTIVE_S = 10.0


@dataclass
class _Grant:
    key_id: str
    tenant: str
    calls: int
    buckets: list[tuple[str, int]]  # (bucket, rpm) the tokens came from
    held: bool  # calls held in the ledger (quota)
    ends: float  # monotonic, actor's clock


@dataclass(frozen=True)
class LedgerSpec:
    """What the admission actor needs to open the platform's store (picklable)."""

    store_url: str | None
    plans: Any  # lumos_ray.platform.Plans
    flush_s: float


class AdmissionCore:
    """Buckets + quota ledger: the admission arithmetic, in the actor or a process."""

    def __init__(self, spec: LedgerSpec | None) -> None:
        self.buckets = TokenBuckets()
        self.ledger: Any = None
        if spec is not None:
            from lumos_ray.platform import Platform, QuotaLedger

            platform = Platform(spec.store_url, plans=spec.plans)
            self.ledger = QuotaLedger(platform, flush_s=spec.flush_s).start()
        self.grants: dict[int, _Grant] = {}
        self._ids = itertools.count(1)
        self._seen: dict[str, float] = {}  # replica -> last asked

    def check(
        self, items: list[tuple[str, str]], key_rpm: int | None, tenant_rpm: int | None
    ) -> list[float]:
        """Rate limits only (the pre-quota protocol; kept for old replicas)."""
        return self.buckets.check(items, key_rpm, tenant_rpm)

    def admit(
        self, items: list[Item], key_rpm: int | None, tenant_rpm: int | None
    ) -> list[Verdict]:
        """Per item: the rate limit (when asked), then the quota charge (when given).
        A request the rate limit refuses is not charged."""
        out: list[Verdict] = []
        for key_id, tenant, rate, counts in items:
            wait = 0.0
            if rate and (key_rpm or tenant_rpm):
                wait = self.buckets.check_one(key_id, tenant, key_rpm, tenant_rpm)
            err = None
            if not wait and counts and self.ledger is not None:
                err = self.ledger.try_charge(tenant, counts)
            out.append((wait, err))
        return out

    def admit_lease(
        self,
        items: list[LeaseItem],
        key_rpm: int | None,
        tenant_rpm: int | None,
        replica: str,
    ) -> list[LeaseVerdict]:
        """:meth:`admit`, and for an admitted call that may lease, a share of what is
        left for its key (one lease per key per batch)."""
        now = time.monotonic()
        self._seen[replica] = now
        self._expire(now)
        active = sum(1 for t in self._seen.values() if now - t < _ACTIVE_S)
        share = 2 * max(1, active)
        lent: set[tuple[str, str]] = set()
        out: list[LeaseVerdict] = []
        for key_id, tenant, rate, counts, lease in items:
            wait, err = 0.0, None
            if lease != LEASE_ONLY:
                ((wait, err),) = self.admit([(key_id, tenant, rate, counts)], key_rpm, tenant_rpm)
            grant = None
            if lease and not wait and err is None and (key_id, tenant) not in lent:
                grant = self._lend(key_id, tenant, rate, counts, key_rpm, tenant_rpm, share, now)
                if grant is not None:
                    lent.add((key_id, tenant))
            # Refused while some of what is left is lent out: those leases come back
            # within LEASE_IDLE_S when idle, so the caller asks again instead of
            # seeing a limit that is not really reached.
            again = bool((wait or err is not None) and self._lent_to(key_id, tenant))
            out.append((wait, err, grant, again))
        return out

    def _lent_to(self, key_id: str, tenant: str) -> bool:
        return any(g.tenant == tenant or g.key_id == key_id for g in self.grants.values())

    def _lend(
        self,
        key_id: str,
        tenant: str,
        rate: bool,
        counts: dict[str, int] | None,
        key_rpm: int | None,
        tenant_rpm: int | None,
        share: int,
        now: float,
    ) -> Lease | None:
        n = LEASE_MAX
        buckets: list[tuple[str, int]] = []
        if rate:
            for name, rpm in (("k:" + key_id, key_rpm), ("t:" + tenant, tenant_rpm)):
                if rpm:
                    buckets.append((name, rpm))
                    n = min(n, int(self.buckets.available(name, rpm, now)) // share)
        held = counts is not None and self.ledger is not None
        if held:
            room = self.ledger.request_headroom(tenant)
            if room is not None:
                n = min(n, room // share)
        if n < LEASE_MIN:
            return None
        for name, rpm in buckets:
            self.buckets.take_many(name, n, rpm, now)
        if held:
            self.ledger.hold(tenant, n)
        lease_id = next(self._ids)
        self.grants[lease_id] = _Grant(key_id, tenant, n, buckets, held, now + LEASE_S)
        return (lease_id, n, LEASE_S)

    def settle(self, items: list[tuple[int, int]]) -> None:
        """End leases: (lease id, calls used). Used calls are counted (quota and
        metering); unused tokens go back to their buckets and unused calls are free."""
        now = time.monotonic()
        for lease_id, used in items:
            g = self.grants.pop(lease_id, None)
            if g is None:
                continue  # already counted as used when it expired unsettled
            used = max(0, min(int(used), g.calls))
            for name, rpm in g.buckets:
                self.buckets.give_back(name, g.calls - used, rpm, now)
            if g.held:
                self.ledger.settle(g.tenant, g.calls, used)

    def _expire(self, now: float) -> None:
        """Leases LEASE_GRACE_S past their end were never settled (their replica died):
        count them as fully used rather than lose what was admitted under them."""
        late = [i for i, g in self.grants.items() if now > g.ends + LEASE_GRACE_S]
        for lease_id in late:
            g = self.grants.pop(lease_id)
            log.warning("Lease %s of %s calls was not settled; counted as used", lease_id, g.calls)
            if g.held:
                self.ledger.settle(g.tenant, g.calls, g.calls)

    def record(self, items: list[tuple[str, dict[str, int]]]) -> None:
        """Meter what finished answers used (never refused)."""
        if self.ledger is not None:
            for tenant, counts in items:
                self.ledger.record(tenant, counts)

    def flush(self, final: bool = False) -> int:
        """Write the ledger's counts to the store now (tests, shutdown). ``final``: the
        app's replicas are gone, so leases they did not settle count as used now."""
        self._expire(float("inf") if final else time.monotonic())
        return 0 if self.ledger is None else int(self.ledger.flush())

    def close(self) -> None:
        if self.ledger is not None:
            self.ledger.close()


class AdmissionActor(AdmissionCore):
    """The app's admission state (a named Ray actor, one per Serve app)."""


def _error(wait: float, err: QuotaExceededError | None, key_rpm: Any, tenant_rpm: Any) -> None:
    if wait:
        raise rate_limit_error(wait, key_rpm, tenant_rpm)
    if err is not None:
        raise err


@dataclass
class _Credit:
    """A lease as the replica holds it."""

    lease_id: int
    left: int
    used: int
    ends: float  # monotonic, this replica's clock
    last: float  # when a call last used it
    calls: int  # lent
    renew_at: float  # monotonic: past this, the next call asks for the next lease
    renewing: bool = False


#: The one charge a lease covers: a single request.
_ONE_REQUEST = {"requests": 1}

#: (key id, tenant, rate limited?, quota charged?) -> the replica's lease for it
_CreditKey = tuple[str, str, bool, bool]


class ClusterAdmission:
    """Admission through the app's actor, batched while a call is in flight; calls of
    a key that holds a lease are admitted here without a round trip."""

    def __init__(
        self, app_name: str, key_rpm: int | None, tenant_rpm: int | None, spec: LedgerSpec | None
    ) -> None:
        self.key_rpm, self.tenant_rpm, self.spec = key_rpm, tenant_rpm, spec
        self.name = limiter_actor_name(app_name)
        self.replica = uuid.uuid4().hex[:12]
        self._actor: Any = None
        self._pending: list[tuple[LeaseItem, asyncio.Future[LeaseVerdict]]] = []
        self._sending = False
        self._credits: dict[_CreditKey, _Credit] = {}
        # actor method -> items waiting to be sent (metering, lease settlements)
        self._outbox: dict[str, list[Any]] = {"record": [], "settle": []}
        self._posting: set[str] = set()
        # tenant -> metering summed since the last send (see record)
        self._meter: dict[str, dict[str, int]] = {}
        self._meter_timer: asyncio.TimerHandle | None = None
        self._meter_loop: asyncio.AbstractEventLoop | None = None
        self._tasks: set[asyncio.Task[None]] = set()  # strong refs until done

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _handle(self) -> Any:
        if self._actor is None:
            from lumos_ray.runtime import get_or_create_actor, remote_class

            self._actor = get_or_create_actor(
                self.name,
                remote_class(AdmissionActor),
                self.spec,
                options={"num_cpus": 0, "max_restarts": -1, "max_task_retries": -1},
            )
        return self._actor

    def admit_now(
        self, key_id: str, tenant: str, *, rate: bool = True, counts: dict[str, int] | None = None
    ) -> bool:
        """Admit one call from a lease this replica holds (True), with no round trip
        and nothing to await; False: :meth:`admit` must ask the actor. Why apart: on a
        cheap route an ``await`` per request, even one that never suspends, is a
        measurable share of what the platform adds."""
        if counts is not None and counts != _ONE_REQUEST:
            return False  # only plain calls (one request, or rate limit only) lease
        ck: _CreditKey = (key_id, tenant, rate, counts is not None)
        credit = self._credits.get(ck)
        if credit is None:
            return False
        now = time.monotonic()
        if credit.left <= 0 or now >= credit.ends:
            self._end(ck, credit)
            return False
        credit.left -= 1
        credit.used += 1
        credit.last = now
        if not credit.left:
            self._end(ck, credit)
        elif not credit.renewing and (credit.left * 2 <= credit.calls or now >= credit.renew_at):
            # Ask for the next lease before this one runs out, so busy keys never
            # wait for the actor.
            credit.renewing = True
            self._spawn(self._renew(ck, (key_id, tenant, rate, counts, LEASE_ONLY)))
        return True

    async def admit(
        self, key_id: str, tenant: str, *, rate: bool = True, counts: dict[str, int] | None = None
    ) -> None:
        """QuotaExceededError (429) when a rate limit or the plan's quota refuses."""
        if self.admit_now(key_id, tenant, rate=rate, counts=counts):
            return
        leasable = counts is None or counts == _ONE_REQUEST
        ck: _CreditKey = (key_id, tenant, rate, counts is not None)
        item: LeaseItem = (key_id, tenant, rate, counts, ADMIT_AND_LEASE if leasable else NO_LEASE)
        give_up = time.monotonic() + LEASE_S + 1.0
        while True:
            wait, err, lease, again = await self._ask(item)
            if lease is not None:
                self._take(ck, lease)
            if not again or time.monotonic() > give_up:
                break
            await asyncio.sleep(2 * LEASE_IDLE_S)  # leases out there come back; ask again
        _error(wait, err, self.key_rpm, self.tenant_rpm)

    async def _ask(self, item: LeaseItem) -> LeaseVerdict:
        fut: asyncio.Future[LeaseVerdict] = asyncio.get_running_loop().create_future()
        self._pending.append((item, fut))
        if not self._sending:
            self._sending = True
            self._spawn(self._send())
        return await fut

    async def _renew(self, ck: _CreditKey, item: LeaseItem) -> None:
        try:
            _, _, lease, _ = await self._ask(item)
        except Exception:  # the next call that finds no lease asks the actor itself
            log.warning("Renewing an admission lease failed", exc_info=True)
            return
        if lease is not None:
            self._take(ck, lease)

    def _take(self, ck: _CreditKey, lease: Lease) -> None:
        lease_id, calls, seconds = lease
        old = self._credits.get(ck)
        if old is not None:  # two batches both lent this key: keep one
            self._end(ck, old)
        now = time.monotonic()
        credit = _Credit(lease_id, calls, 0, now + seconds, now, calls, now + seconds / 2)
        self._credits[ck] = credit
        asyncio.get_running_loop().call_later(LEASE_IDLE_S, self._expire, ck, credit)

    def _expire(self, ck: _CreditKey, credit: _Credit) -> None:
        """Give a lease back when it ran out of time or sat idle for LEASE_IDLE_S."""
        if self._credits.get(ck) is not credit:
            return
        now = time.monotonic()
        if now >= credit.ends or now - credit.last >= LEASE_IDLE_S:
            self._end(ck, credit)
        else:
            delay = min(credit.ends - now, credit.last + LEASE_IDLE_S - now)
            asyncio.get_running_loop().call_later(max(delay, 0.001), self._expire, ck, credit)

    def _end(self, ck: _CreditKey, credit: _Credit) -> None:
        """Stop using a lease and tell the actor how much of it was used (batched)."""
        if self._credits.get(ck) is credit:
            del self._credits[ck]
        credit.left = 0
        self._post("settle", (credit.lease_id, credit.used))

    def _post(self, method: str, item: Any) -> None:
        """Queue ``item`` for the actor's ``method``; the caller does not wait. Items
        that arrive while one call is in flight go together in the next."""
        self._outbox[method].append(item)
        if method not in self._posting:
            self._posting.add(method)
            self._spawn(self._drain(method))

    async def _drain(self, method: str) -> None:
        from lumos_ray.runtime import is_actor_died

        try:
            while self._outbox[method]:
                batch, self._outbox[method] = self._outbox[method], []
                try:
                    await getattr(self._handle(), method).remote(batch)
                except Exception as exc:
                    # Never fails an answer: lost metering, or a lease the actor counts
                    # as used once it is LEASE_GRACE_S past its end.
                    if is_actor_died(exc):
                        self._actor = None
                    log.exception("Sending %s to the admission actor failed", method)
        finally:
            self._posting.discard(method)

    async def _send(self) -> None:
        from lumos_ray.runtime import is_actor_died

        try:
            while self._pending:
                batch, self._pending = self._pending, []
                items = [item for item, _ in batch]
                try:
                    verdicts = await self._handle().admit_lease.remote(
                        items, self.key_rpm, self.tenant_rpm, self.replica
                    )
                except Exception as exc:
                    if is_actor_died(exc):
                        self._actor = None
                    for _, fut in batch:
                        if not fut.done():
                            fut.set_exception(exc)
                    continue
                for (_, fut), verdict in zip(batch, verdicts, strict=True):
                    if not fut.done():
                        fut.set_result(verdict)
                    elif verdict[2] is not None:  # the caller went away: give it back
                        self._post("settle", (verdict[2][0], 0))
        finally:
            self._sending = False

    def record(self, tenant: str, counts: dict[str, int]) -> None:
        """Add metering for the actor: summed per tenant and sent every ``METER_S``
        seconds (the caller does not wait)."""
        summed = self._meter.setdefault(tenant, {})
        for k, n in counts.items():
            summed[k] = summed.get(k, 0) + n
        loop = asyncio.get_running_loop()
        if self._meter_timer is None or self._meter_loop is not loop:
            self._meter_loop = loop  # a timer of a loop that is gone never fires
            self._meter_timer = loop.call_later(METER_S, self._send_meter)

    def _pop_meter(self) -> list[tuple[str, dict[str, int]]]:
        """The summed metering, taken (its timer stopped)."""
        if self._meter_timer is not None:
            self._meter_timer.cancel()
            self._meter_timer = None
        meter, self._meter = self._meter, {}
        return list(meter.items())

    def _send_meter(self) -> None:
        """Queue the summed metering for the actor's ``record``."""
        for item in self._pop_meter():
            self._post("record", item)

    def _take_outbox(self) -> dict[str, list[Any]]:
        """Settle every lease and take what is queued for the actor, summed metering
        included (to be sent by the caller; no event loop needed)."""
        for credit in self._credits.values():
            credit.left = 0
            self._outbox["settle"].append((credit.lease_id, credit.used))
        self._credits.clear()
        self._outbox["record"].extend(self._pop_meter())
        out = {m: items for m, items in self._outbox.items() if items}
        self._outbox = {m: [] for m in self._outbox}
        return out

    async def hand_over(self) -> None:
        """Settle this replica's leases and send its metering now (a replica that
        stops: what it admitted and metered is not left for the grace period)."""
        for method, batch in self._take_outbox().items():
            await getattr(self._handle(), method).remote(batch)

    async def flush(self) -> int:
        """:meth:`hand_over`, then write the actor's counts to the store."""
        await self.hand_over()
        return int(await self._handle().flush.remote())

    def close(self) -> None:
        return None


class _InProcessMethod:
    """One method of an in-process :class:`AdmissionCore`, awaited like an actor's."""

    def __init__(self, fn: Any, threaded: bool) -> None:
        self.fn, self.threaded = fn, threaded

    async def remote(self, *args: Any) -> Any:
        if self.threaded:  # a store write: keep it off the event loop
            return await asyncio.to_thread(self.fn, *args)
        return self.fn(*args)


class _InProcessCore:
    """An :class:`AdmissionCore` in this process, shaped like its actor's handle."""

    def __init__(self, core: AdmissionCore) -> None:
        self.core = core

    def __getattr__(self, name: str) -> _InProcessMethod:
        return _InProcessMethod(getattr(self.core, name), threaded=name == "flush")


class LocalAdmission(ClusterAdmission):
    """Admission in this process (one gateway without Ray: unit tests, the in-process
    benchmark): the same leases as a replica of a cluster, lent by a core that lives
    here instead of in the app's actor. Why leases here too: admitting from a lease is
    a counter decrement, where charging the buckets and the quota ledger on every
    request was most of what the platform added to a cheap route."""

    def __init__(self, key_rpm: int | None, tenant_rpm: int | None, spec: LedgerSpec | None):
        super().__init__("in-process", key_rpm, tenant_rpm, spec)
        self.core = AdmissionCore(spec)
        self._local = _InProcessCore(self.core)

    def _handle(self) -> Any:
        return self._local

    def close(self) -> None:
        """Settle this gateway's leases, hand over queued metering, then write what
        is left and stop the ledger's flush thread (no event loop needed)."""
        for method, batch in self._take_outbox().items():
            getattr(self.core, method)(batch)
        self.core.close()
