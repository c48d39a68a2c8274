"""Concurrent-agent slots, cluster-wide through the store (SQLite and PostgreSQL):
the free tier's 4th concurrent agent is refused, a released or expired slot is free
again, and processes racing for the last slot never both get it."""

from __future__ import annotations

import multiprocessing
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from lumos_ray.errors import AgentConcurrencyError, NotFoundError, QuotaExceededError
from lumos_ray.platform import Platform
from tests.unit._platform_helpers import SMALL_PLANS, acquire_worker


@pytest.fixture
def platform(store_backend: str, store_url: str) -> Iterator[Platform]:
    p = Platform(store_url, plans=SMALL_PLANS, shared=False)
    yield p
    p.close()


def test_the_free_tiers_fourth_concurrent_agent_is_refused(platform: Platform) -> None:
    platform.create_tenant("acme", "free")
    slots = [platform.acquire_agent_slot("acme", holder=f"agent-{i}") for i in range(3)]
    with pytest.raises(AgentConcurrencyError) as info:
        platform.acquire_agent_slot("acme", holder="agent-3")
    err = info.value
    assert isinstance(err, QuotaExceededError)  # 429 wherever quotas are mapped
    assert "already runs 3 agent(s)" in err.message and "free plan allows (3)" in err.message
    assert err.details["limit"] == 3 and err.details["retry_after_s"] >= 1
    assert platform.release_agent_slot("acme", slots[0]) is True
    assert platform.release_agent_slot("acme", slots[0]) is False
    platform.acquire_agent_slot("acme")  # a released slot is free again
    assert len(platform.agent_slots("acme")) == 3


def test_slots_are_counted_per_tenant(platform: Platform) -> None:
    platform.create_tenant("acme", "free")
    platform.create_tenant("globex", "free")
    for _ in range(3):
        platform.acquire_agent_slot("acme")
    for _ in range(3):
        platform.acquire_agent_slot("globex")
    with pytest.raises(AgentConcurrencyError):
        platform.acquire_agent_slot("globex")


def test_an_expired_lease_frees_its_slot_and_cannot_be_renewed(
    platform: Platform, store_url: str
) -> None:
    platform.create_tenant("acme", "tiny")  # one agent at a time
    dead = platform.acquire_agent_slot("acme")
    renewed = platform.renew_agent_slot("acme", dead, ttl_s=120)
    assert renewed.expires_at > dead.expires_at
    engine = sa.create_engine(store_url)
    try:
        with engine.begin() as c:  # its holder died and stopped renewing
            c.execute(sa.text("UPDATE agent_slots SET expires_at = 0"))
    finally:
        engine.dispose()
    platform.acquire_agent_slot("acme")
    with pytest.raises(NotFoundError, match="not held"):
        platform.renew_agent_slot("acme", dead)


def test_unlimited_plans_take_any_number_of_slots(platform: Platform) -> None:
    platform.create_tenant("big", "enterprise")
    for _ in range(60):
        platform.acquire_agent_slot("big")
    assert len(platform.agent_slots("big")) == 60


def test_processes_racing_for_slots_get_exactly_the_limit(
    platform: Platform, store_url: str
) -> None:
    platform.create_tenant("acme", "free")
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(4) as pool:
        got = pool.starmap(acquire_worker, [(store_url, "acme", 2)] * 4)
    assert sum(got) == 3
    assert len(platform.agent_slots("acme")) == 3
