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
check goes alone, under heavy load many share a round trip); metering of finished
answers is sent the same way without waiting for it.

Durability: the actor restarts after a crash (counters reloaded from the store); the
increments of at most one flush interval are lost with it (docs/platform.md).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

from lumos_ray.errors import QuotaExceededError
from lumos_ray.serve._ratelimit import TokenBuckets, limiter_actor_name, rate_limit_error

__all__ = ["AdmissionCore", "ClusterAdmission", "LedgerSpec", "LocalAdmission"]

log = logging.getLogger(__name__)

#: (key id, tenant, take a rate-limit token?, amounts to charge or None)
Item = tuple[str, str, bool, dict[str, int] | None]
#: (seconds to wait: 0.0 when the rate limit admits, the quota refusal or None)
Verdict = tuple[float, QuotaExceededError | None]


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
                (wait,) = self.buckets.check([(key_id, tenant)], key_rpm, tenant_rpm)
            err = None
            if not wait and counts and self.ledger is not None:
                err = self.ledger.try_charge(tenant, counts)
            out.append((wait, err))
        return out

    def record(self, items: list[tuple[str, dict[str, int]]]) -> None:
        """Meter what finished answers used (never refused)."""
        if self.ledger is not None:
            for tenant, counts in items:
                self.ledger.record(tenant, counts)

    def flush(self) -> int:
        """Write the ledger's counts to the store now (tests, shutdown)."""
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


class LocalAdmission:
    """Admission in this process (one gateway replica without Ray: unit tests and the
    in-process benchmark). Quota decisions are from memory; the ledger's thread writes
    them to the store every flush interval."""

    def __init__(self, key_rpm: int | None, tenant_rpm: int | None, spec: LedgerSpec | None):
        self.key_rpm, self.tenant_rpm = key_rpm, tenant_rpm
        self.core = AdmissionCore(spec)

    async def admit(
        self, key_id: str, tenant: str, *, rate: bool = True, counts: dict[str, int] | None = None
    ) -> None:
        """QuotaExceededError (429) when a rate limit or the plan's quota refuses."""
        ((wait, err),) = self.core.admit(
            [(key_id, tenant, rate, counts)], self.key_rpm, self.tenant_rpm
        )
        _error(wait, err, self.key_rpm, self.tenant_rpm)

    def record(self, tenant: str, counts: dict[str, int]) -> None:
        self.core.record([(tenant, counts)])

    async def flush(self) -> int:
        return await asyncio.to_thread(self.core.flush)

    def close(self) -> None:
        self.core.close()


class ClusterAdmission:
    """Admission through the app's actor, batched while a call is in flight."""

    def __init__(
        self, app_name: str, key_rpm: int | None, tenant_rpm: int | None, spec: LedgerSpec | None
    ) -> None:
        self.key_rpm, self.tenant_rpm, self.spec = key_rpm, tenant_rpm, spec
        self.name = limiter_actor_name(app_name)
        self._actor: Any = None
        self._pending: list[tuple[Item, asyncio.Future[Verdict]]] = []
        self._sending = False
        self._records: list[tuple[str, dict[str, int]]] = []
        self._recording = False
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

    async def admit(
        self, key_id: str, tenant: str, *, rate: bool = True, counts: dict[str, int] | None = None
    ) -> None:
        """QuotaExceededError (429) when a rate limit or the plan's quota refuses."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Verdict] = loop.create_future()
        self._pending.append(((key_id, tenant, rate, counts), fut))
        if not self._sending:
            self._sending = True
            self._spawn(self._send())
        wait, err = await fut
        _error(wait, err, self.key_rpm, self.tenant_rpm)

    async def _send(self) -> None:
        from lumos_ray.runtime import is_actor_died

        try:
            while self._pending:
                batch, self._pending = self._pending, []
                items = [item for item, _ in batch]
                try:
                    verdicts = await self._handle().admit.remote(
                        items, self.key_rpm, self.tenant_rpm
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
        finally:
            self._sending = False

    def record(self, tenant: str, counts: dict[str, int]) -> None:
        """Queue metering for the actor (sent in batches; the caller does not wait)."""
        self._records.append((tenant, counts))
        if not self._recording:
            self._recording = True
            self._spawn(self._send_records())

    async def _send_records(self) -> None:
        from lumos_ray.runtime import is_actor_died

        try:
            while self._records:
                batch, self._records = self._records, []
                try:
                    await self._handle().record.remote(batch)
                except Exception as exc:  # metering must not fail answers
                    if is_actor_died(exc):
                        self._actor = None
                    log.exception("Sending usage to the admission actor failed")
        finally:
            self._recording = False

    async def flush(self) -> int:
        return int(await self._handle().flush.remote())

    def close(self) -> None:
        return None
