"""Auth and quota hooks of the gateway (the seams tenancy/billing plug into).

Both run before any model work. ``ApiKeyAuth`` accepts the keys from the config (or
none: auth off). ``QuotaHook`` is the seam for plan tiers; the built-in
``RateLimitQuota`` is a per-key, per-replica token bucket (requests per minute),
enough for one gateway replica and a real 429. A custom hook is any object with the
same ``check`` method, named by import path in ``gateway.quota.hook``.
"""

from __future__ import annotations

import hmac
import threading
import time
from typing import Protocol

from lumos_ray.errors import AuthError, QuotaExceededError

__all__ = ["ApiKeyAuth", "NoQuota", "QuotaHook", "RateLimitQuota"]


class ApiKeyAuth:
    """Bearer API keys; an empty key list turns auth off."""

    def __init__(self, keys: list[str]) -> None:
        self._keys = [k.encode() for k in keys]

    @property
    def enabled(self) -> bool:
        return bool(self._keys)

    def authenticate(self, authorization: str | None) -> str | None:
        """Return the caller's key (None when auth is off); AuthError otherwise."""
        if not self._keys:
            return None
        if not authorization or not authorization.lower().startswith("bearer "):
            raise AuthError("Missing API key: send `Authorization: Bearer <key>`.")
        key = authorization[7:].strip().encode()
        # compare_digest on every key: no timing signal about which prefix matched.
        ok = False
        for k in self._keys:
            ok |= hmac.compare_digest(k, key)
        if not ok:
            raise AuthError("Invalid API key.")
        return key.decode()


class QuotaHook(Protocol):
    def check(self, api_key: str | None, route: str) -> None:
        """Raise QuotaExceededError when the caller is over its quota."""


class NoQuota:
    def check(self, api_key: str | None, route: str) -> None:
        return None


class RateLimitQuota:
    """Token bucket per API key: ``requests_per_minute``, bursts up to the same."""

    def __init__(self, requests_per_minute: int) -> None:
        self._rate = requests_per_minute / 60.0
        self._cap = float(requests_per_minute)
        self._buckets: dict[str | None, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def check(self, api_key: str | None, route: str) -> None:
        now = time.monotonic()
        with self._lock:
            tokens, last = self._buckets.get(api_key, (self._cap, now))
            tokens = min(self._cap, tokens + (now - last) * self._rate)
            if tokens < 1.0:
                self._buckets[api_key] = (tokens, now)
                retry = max(1, int((1.0 - tokens) / self._rate + 0.999))
                raise QuotaExceededError(
                    f"Rate limit of {int(self._cap)} requests/minute exceeded.",
                    retry_after_s=retry,
                )
            self._buckets[api_key] = (tokens - 1.0, now)
