"""An agent's concurrent-agent slot: the plan limit on agents a tenant runs at once.

A tenant registered on the platform (``lumos tenants create``) runs at most its plan's
``concurrent_agents`` agents across the whole cluster; a tenant with no platform row
(a single-user setup, the ``default`` tenant) has no such limit. Replica 0 of an
agent's actors holds the agent's slot: a lease row in the store, renewed while the
actor lives and released when it stops, so an actor that dies gives its slot back
when the lease lapses (:data:`TTL_S`).

Refusal is not a crash: an actor over the limit is created, but every turn it is asked
for fails with :class:`~lumos_ray.errors.AgentConcurrencyError` (what the plan allows,
when to retry) until a slot frees up, which it then takes on its next turn.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from lumos_ray.errors import AgentConcurrencyError, NotFoundError

__all__ = ["RETRY_S", "TTL_S", "AgentSlotKeeper"]

log = logging.getLogger(__name__)

TTL_S = 30.0  # lease; renewed every TTL_S / 3
RETRY_S = 1.0  # a refused actor asks again at most this often


class AgentSlotKeeper:
    """Takes, renews and gives back one agent's slot (``holder``: its actor name)."""

    def __init__(self, tenant: str, holder: str) -> None:
        self.tenant, self.holder = tenant, holder
        self._slot: Any = None
        self._limited: bool | None = None  # None: not known yet
        self._refused: AgentConcurrencyError | None = None
        self._asked_at = 0.0
        self._renewer: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()

    async def ensure(self) -> None:
        """Before a turn: hold a slot, or raise the plan's refusal."""
        if self._slot is not None or self._limited is False:
            return
        async with self._lock:
            if self._slot is not None or self._limited is False:
                return
            if self._refused is not None and time.monotonic() - self._asked_at < RETRY_S:
                raise self._refused
            self._asked_at = time.monotonic()
            try:
                await asyncio.to_thread(self._acquire)
            except AgentConcurrencyError as exc:
                self._refused = exc
                raise
            self._refused = None
            if self._slot is not None and self._renewer is None:
                self._renewer = asyncio.get_running_loop().create_task(self._renew_forever())

    def warm_up(self) -> None:
        """Open the platform (its store) ahead of the first turn; takes no slot."""
        from lumos_ray.platform import default_platform

        default_platform()

    def _acquire(self) -> None:
        from lumos_ray.platform import default_platform

        platform = default_platform()
        if self._limited is None:
            try:
                platform.get_tenant(self.tenant)
                self._limited = True
            except NotFoundError:
                self._limited = False  # not a platform tenant: no agent limit
                return
        # A slot still held under our name is our previous incarnation's (an actor
        # name has one live instance): give it back before counting.
        for old in platform.agent_slots(self.tenant):
            if old.holder == self.holder:
                platform.release_agent_slot(self.tenant, old)
        self._slot = platform.acquire_agent_slot(self.tenant, holder=self.holder, ttl_s=TTL_S)

    async def _renew_forever(self) -> None:
        from lumos_ray.platform import default_platform

        while self._slot is not None:
            await asyncio.sleep(TTL_S / 3)
            try:
                await asyncio.to_thread(
                    default_platform().renew_agent_slot, self.tenant, self._slot, ttl_s=TTL_S
                )
            except NotFoundError:  # lapsed (a long stall): take a new one next turn
                self._slot, self._renewer = None, None
                return
            except Exception:  # a store hiccup: try again next period
                log.warning("renewing the agent slot of %s failed", self.holder, exc_info=True)

    async def release(self) -> None:
        """Give the slot back now (the actor is being stopped)."""
        slot, self._slot = self._slot, None
        if self._renewer is not None:
            self._renewer.cancel()
            self._renewer = None
        if slot is not None:
            from lumos_ray.platform import default_platform

            await asyncio.to_thread(default_platform().release_agent_slot, self.tenant, slot)
