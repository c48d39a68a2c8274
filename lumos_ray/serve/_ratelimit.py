"""Request rate limits per API key and per tenant, counted cluster-wide.

Why an actor: each gateway replica is its own process, so buckets kept in a replica
let N replicas admit N times the limit. One named actor per Serve app holds every
bucket; replicas reach it through ``lumos_ray.runtime``. To keep that off the latency
path, a replica sends the checks that arrive while one call is in flight as ONE
batch (no timer: under light load each check goes alone, under heavy load many share
a round trip). The bucket arithmetic (:class:`TokenBuckets`) is plain Python, used by
the actor and, in a process without Ray (unit tests), directly.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from lumos_ray.errors import QuotaExceededError

__all__ = [
    "ClusterRateLimit",
    "LocalRateLimit",
    "RateLimiterActor",
    "TokenBuckets",
    "limiter_actor_name",
]

#: Buckets per limiter (keys and tenants together); the least recently refilled half
#: is dropped above it (a full bucket and a missing one are the same thing).
_MAX_BUCKETS = 100_000


class TokenBuckets:
    """Token buckets: ``rpm`` requests per minute, bursts up to ``rpm``."""

    def __init__(self) -> None:
        self._buckets: dict[str, tuple[float, float]] = {}

    def take(self, name: str, rpm: int, now: float) -> float:
        """Take one token from bucket ``name``: 0.0 when allowed, else the seconds
        until a token will be there (nothing is taken)."""
        rate = rpm / 60.0
        tokens, last = self._buckets.get(name, (float(rpm), now))
        tokens = min(float(rpm), tokens + (now - last) * rate)
        if tokens < 1.0:
            self._buckets[name] = (tokens, now)
            return (1.0 - tokens) / rate
        self._buckets[name] = (tokens - 1.0, now)
        if len(self._buckets) > _MAX_BUCKETS:
            oldest = sorted(self._buckets.items(), key=lambda kv: kv[1][1])
            for k, _ in oldest[: _MAX_BUCKETS // 2]:
                del self._buckets[k]
        return 0.0

    def check(
        self, items: list[tuple[str, str]], key_rpm: int | None, tenant_rpm: int | None
    ) -> list[float]:
        """For each (key id, tenant): 0.0 (admitted, one token taken from each of its
        buckets) or the seconds to wait. A request refused by its tenant's bucket
        gives its key's token back, so a refused request costs nothing."""
        now = time.monotonic()
        out = []
        for key_id, tenant in items:
            wait = self.take("k:" + key_id, key_rpm, now) if key_rpm else 0.0
            if not wait and tenant_rpm:
                wait = self.take("t:" + tenant, tenant_rpm, now)
                if wait and key_rpm:
                    tokens, last = self._buckets["k:" + key_id]
                    self._buckets["k:" + key_id] = (tokens + 1.0, last)
            out.append(wait)
        return out


class RateLimiterActor:
    """The cluster's buckets (a named Ray actor, one per Serve app)."""

    def __init__(self) -> None:
        self.buckets = TokenBuckets()

    def check(
        self, items: list[tuple[str, str]], key_rpm: int | None, tenant_rpm: int | None
    ) -> list[float]:
        return self.buckets.check(items, key_rpm, tenant_rpm)


def limiter_actor_name(app_name: str) -> str:
    # "lumos-serve" prefix: a service that lives as long as the app.
    return f"{app_name}-ratelimit"


def _refuse(wait: float, key_rpm: int | None, tenant_rpm: int | None) -> QuotaExceededError:
    retry = max(1, int(wait + 0.999))
    limits = []
    if key_rpm:
        limits.append(f"{key_rpm}/minute per key")
    if tenant_rpm:
        limits.append(f"{tenant_rpm}/minute per tenant")
    return QuotaExceededError(
        f"Rate limit exceeded ({', '.join(limits)}); retry in {retry} s.",
        fix="Wait for the Retry-After seconds, or ask for a higher limit.",
        retry_after_s=retry,
    )


class LocalRateLimit:
    """The buckets in this process (one gateway replica without Ray: unit tests)."""

    def __init__(self, key_rpm: int | None, tenant_rpm: int | None) -> None:
        self.key_rpm, self.tenant_rpm = key_rpm, tenant_rpm
        self.buckets = TokenBuckets()

    async def check(self, key_id: str, tenant: str) -> None:
        (wait,) = self.buckets.check([(key_id, tenant)], self.key_rpm, self.tenant_rpm)
        if wait:
            raise _refuse(wait, self.key_rpm, self.tenant_rpm)


class ClusterRateLimit:
    """Checks against the app's limiter actor, batched while a call is in flight."""

    def __init__(self, app_name: str, key_rpm: int | None, tenant_rpm: int | None) -> None:
        self.key_rpm, self.tenant_rpm = key_rpm, tenant_rpm
        self.name = limiter_actor_name(app_name)
        self._actor: Any = None
        self._pending: list[tuple[tuple[str, str], asyncio.Future[float]]] = []
        self._sending = False

    def _handle(self) -> Any:
        if self._actor is None:
            from lumos_ray.runtime import get_or_create_actor, remote_class

            self._actor = get_or_create_actor(
                self.name,
                remote_class(RateLimiterActor),
                options={"num_cpus": 0, "max_restarts": -1, "max_task_retries": -1},
            )
        return self._actor

    async def check(self, key_id: str, tenant: str) -> None:
        fut: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self._pending.append(((key_id, tenant), fut))
        if not self._sending:
            self._sending = True
            asyncio.get_running_loop().create_task(self._send())
        wait = await fut
        if wait:
            raise _refuse(wait, self.key_rpm, self.tenant_rpm)

    async def _send(self) -> None:
        from lumos_ray.runtime import is_actor_died

        try:
            while self._pending:
                batch, self._pending = self._pending, []
                items = [item for item, _ in batch]
                try:
                    waits = await self._handle().check.remote(items, self.key_rpm, self.tenant_rpm)
                except Exception as exc:
                    if is_actor_died(exc):
                        self._actor = None
                    for _, fut in batch:
                        if not fut.done():
                            fut.set_exception(exc)
                    continue
                for (_, fut), wait in zip(batch, waits, strict=True):
                    if not fut.done():
                        fut.set_result(float(wait))
        finally:
            self._sending = False
