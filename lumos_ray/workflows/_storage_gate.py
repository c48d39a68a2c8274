"""The storage limit, checked where runs are made: in the runner, for every client.

The gateway checked a tenant's plan storage limit before it started, replayed or
forked a run; a run started through the Python API or the CLI went straight to the
runner and was never refused. The runner is the one place every entry point reaches,
so the check lives here (``Platform.check_storage``: QuotaExceededError, HTTP 429,
with the used and allowed bytes and a fix).

Why a verdict cache: ``check_storage`` decides on a measurement that is refreshed in
the background every minute, but even its cheap path takes locks and, for a tenant it
has not seen within ``PLAN_CACHE_S``, reads the tenant's plan from the database. The
durable path starts thousands of runs a second per runner, so the runner asks at most
once per ``VERDICT_S`` (in a worker thread, never on the actor's event loop) and
reuses the answer -- a refusal too -- until then. A tenant that crosses its limit is
refused within ``VERDICT_S`` of the measurement that saw it.
"""

from __future__ import annotations

import asyncio
import time

from lumos_ray.errors import QuotaExceededError

__all__ = ["StorageGate"]

#: How long one answer of the platform is reused (seconds).
VERDICT_S = 1.0


class StorageGate:
    """Refuses new runs of ``tenant`` while it is at its plan's storage limit."""

    def __init__(self, tenant: str) -> None:
        self.tenant = tenant
        self._checked_at = float("-inf")
        self._refusal: QuotaExceededError | None = None
        self._pending: asyncio.Task[None] | None = None

    async def check(self) -> None:
        """Raise the platform's QuotaExceededError when the tenant is at its limit."""
        if time.monotonic() - self._checked_at >= VERDICT_S:
            if self._pending is None or self._pending.done():
                self._pending = asyncio.ensure_future(self._ask())
            await asyncio.shield(self._pending)
        if self._refusal is not None:
            raise self._refusal

    async def _ask(self) -> None:
        from lumos_ray.platform import default_platform

        try:
            await asyncio.to_thread(default_platform().check_storage, self.tenant)
        except QuotaExceededError as exc:
            self._refusal = exc
        else:
            self._refusal = None
        self._checked_at = time.monotonic()
