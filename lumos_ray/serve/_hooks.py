"""The custom quota hook seam of the gateway.

Built-in limits live elsewhere: keys and roles in ``_auth`` (static keys or the
platform's), request rates per key and per tenant in ``_ratelimit`` (cluster-wide),
plan quotas in the platform (``Platform.charge``). A deployment that needs another
policy names a class by import path in ``gateway.quota.hook``: it is built with the
``QuotaConfig`` and its ``check`` runs before any model work, after auth.
"""

from __future__ import annotations

from typing import Protocol

__all__ = ["QuotaHook"]


class QuotaHook(Protocol):
    def check(self, api_key: str | None, route: str) -> None:
        """Raise QuotaExceededError when the caller is over its quota. ``api_key`` is
        the caller's key id (never the key itself; None when auth is off), ``route``
        the matched route template."""
