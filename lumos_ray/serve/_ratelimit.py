"""Request rate limits per API key and per tenant: the bucket arithmetic.

:class:`TokenBuckets` is plain Python; ``_admission`` runs it in the app's admission
actor (cluster-wide: every replica draws from the same buckets) or, in a process
without Ray (unit tests), in the process.
"""

from __future__ import annotations

import time

from lumos_ray.errors import QuotaExceededError

__all__ = ["TokenBuckets", "limiter_actor_name", "rate_limit_error"]

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

    def available(self, name: str, rpm: int, now: float) -> float:
        """Tokens in bucket ``name`` now (nothing taken)."""
        tokens, last = self._buckets.get(name, (float(rpm), now))
        return min(float(rpm), tokens + (now - last) * rpm / 60.0)

    def take_many(self, name: str, n: int, rpm: int, now: float) -> None:
        """Take ``n`` tokens at once (a lease; the caller checked :meth:`available`)."""
        self._buckets[name] = (self.available(name, rpm, now) - n, now)

    def give_back(self, name: str, n: int, rpm: int, now: float) -> None:
        """Return ``n`` unused tokens (never above a full bucket)."""
        if n > 0 and name in self._buckets:
            self._buckets[name] = (min(float(rpm), self.available(name, rpm, now) + n), now)

    def check(
        self, items: list[tuple[str, str]], key_rpm: int | None, tenant_rpm: int | None
    ) -> list[float]:
        """For each (key id, tenant): 0.0 (admitted, one token taken from each of its
        buckets) or the seconds to wait. A request refused by its tenant's bucket
        gives its key's token back, so a refused request costs nothing."""
        return [self.check_one(key_id, tenant, key_rpm, tenant_rpm) for key_id, tenant in items]

    def check_one(
        self, key_id: str, tenant: str, key_rpm: int | None, tenant_rpm: int | None
    ) -> float:
        """:meth:`check` of one (key id, tenant)."""
        now = time.monotonic()
        wait = self.take("k:" + key_id, key_rpm, now) if key_rpm else 0.0
        if not wait and tenant_rpm:
            wait = self.take("t:" + tenant, tenant_rpm, now)
            if wait and key_rpm:
                tokens, last = self._buckets["k:" + key_id]
                self._buckets["k:" + key_id] = (tokens + 1.0, last)
        return wait


def limiter_actor_name(app_name: str) -> str:
    # "lumos-serve" prefix: a service that lives as long as the app.
    return f"{app_name}-ratelimit"


def rate_limit_error(
    wait: float, key_rpm: int | None, tenant_rpm: int | None
) -> QuotaExceededError:
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
