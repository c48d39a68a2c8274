"""Cluster-wide concurrent-agent slots: lease rows in the store.

A running agent holds one row of ``agent_slots`` until it releases it or its lease
expires (the holder died and stopped renewing). Taking a slot counts the tenant's
live rows and inserts one in the same transaction, serialised per tenant (SQLite's
write lock; a PostgreSQL advisory lock on the tenant), so two processes can never both
take the last slot. Expired rows are deleted on the way.
"""

from __future__ import annotations

import math
import secrets
import time

from sqlalchemy import delete, func, select, update

from lumos_ray.errors import AgentConcurrencyError, InputValidationError, NotFoundError
from lumos_ray.platform._types import AgentSlot
from lumos_ray.store import Database, agent_slots

__all__ = ["DEFAULT_TTL_S", "acquire", "live_slots", "release", "renew"]

#: Default lease: a holder renews well within it (e.g. every ttl/3).
DEFAULT_TTL_S = 60.0
_MAX_TTL_S = 24 * 3600.0


def _ttl(ttl_s: float) -> float:
    if (
        isinstance(ttl_s, bool)
        or not isinstance(ttl_s, int | float)
        or not (1.0 <= ttl_s <= _MAX_TTL_S)
    ):
        raise InputValidationError(
            f"Invalid slot lease ttl_s={ttl_s!r}: must be from 1 to {_MAX_TTL_S:.0f} seconds.",
            fix="Pass a lease of a few minutes at most and renew it while the agent runs.",
        )
    return float(ttl_s)


def acquire(
    db: Database,
    tenant: str,
    plan_name: str,
    limit: int | None,
    holder: str | None,
    ttl_s: float,
) -> AgentSlot:
    """Take a slot, or raise AgentConcurrencyError when ``limit`` are live."""
    ttl = _ttl(ttl_s)
    if holder is not None and (not isinstance(holder, str) or len(holder) > 200):
        raise InputValidationError(
            "Invalid slot holder: a string of at most 200 characters.",
            fix="Name the holder briefly (e.g. the agent's actor name).",
        )
    now = time.time()
    with db.write() as c:
        db.lock(c, [f"agent_slots\x1f{tenant}"])
        c.execute(
            delete(agent_slots).where(
                agent_slots.c.tenant_id == tenant, agent_slots.c.expires_at <= now
            )
        )
        if limit is not None:
            row = c.execute(
                select(func.count(), func.min(agent_slots.c.expires_at)).where(
                    agent_slots.c.tenant_id == tenant
                )
            ).one()
            live = int(row[0])
            soonest = float(row[1]) if row[1] is not None else now + ttl
            if live >= limit:
                retry = max(1, math.ceil(soonest - now))
                raise AgentConcurrencyError(
                    f"Tenant {tenant!r} already runs {live} agent(s) at once, the most "
                    f"its {plan_name} plan allows ({limit}).",
                    retry_after_s=retry,
                    limit=limit,
                    plan=plan_name,
                )
        slot = AgentSlot(tenant, secrets.token_hex(8), holder, now + ttl)
        c.execute(
            agent_slots.insert().values(
                tenant_id=tenant,
                slot_id=slot.slot_id,
                holder=holder,
                acquired_at=now,
                expires_at=slot.expires_at,
            )
        )
    return slot


def renew(db: Database, tenant: str, slot_id: str, ttl_s: float) -> AgentSlot:
    """Extend a live lease; NotFoundError when it expired or was released (the slot
    may already be someone else's: stop the agent or acquire again)."""
    ttl = _ttl(ttl_s)
    now = time.time()
    with db.write() as c:
        n = c.execute(
            update(agent_slots)
            .where(
                agent_slots.c.tenant_id == tenant,
                agent_slots.c.slot_id == slot_id,
                agent_slots.c.expires_at > now,
            )
            .values(expires_at=now + ttl)
        ).rowcount
        holder = c.execute(
            select(agent_slots.c.holder).where(
                agent_slots.c.tenant_id == tenant, agent_slots.c.slot_id == slot_id
            )
        ).scalar()
    if n != 1:
        raise NotFoundError(
            f"Agent slot {str(slot_id)[:40]!r} of tenant {tenant!r} is not held (it "
            "expired or was released).",
            fix="Acquire a new slot; renew leases well before they expire.",
        )
    return AgentSlot(tenant, slot_id, holder, now + ttl)


def release(db: Database, tenant: str, slot_id: str) -> bool:
    """Give a slot back; False when it was not held (expired, or released before)."""
    with db.write() as c:
        n = c.execute(
            delete(agent_slots).where(
                agent_slots.c.tenant_id == tenant, agent_slots.c.slot_id == slot_id
            )
        ).rowcount
    return n == 1


def live_slots(db: Database, tenant: str) -> list[AgentSlot]:
    """The tenant's unexpired slots."""
    now = time.time()
    with db.read() as c:
        rows = c.execute(
            select(agent_slots)
            .where(agent_slots.c.tenant_id == tenant, agent_slots.c.expires_at > now)
            .order_by(agent_slots.c.acquired_at)
            .limit(10_000)
        ).all()
    return [AgentSlot(r.tenant_id, r.slot_id, r.holder, float(r.expires_at)) for r in rows]
