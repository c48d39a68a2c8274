"""The plan's concurrent-agent limit, cluster-wide, on real agent actors: the free
tier's 4th agent is refused with a clear error until one of the three stops."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from lumos_ray import Agent
from lumos_ray.actors.agent import AgentHandle
from lumos_ray.errors import AgentConcurrencyError

pytestmark = pytest.mark.usefixtures("ray_cluster")


async def test_the_free_tiers_fourth_concurrent_agent_is_refused_until_one_stops():
    from lumos_ray.platform import default_platform

    platform = default_platform()
    tenant = f"free-{uuid.uuid4().hex[:8]}"
    platform.create_tenant(tenant, "free")  # 3 concurrent agents

    handles = [AgentHandle(Agent(name=f"slot-agent-{i}"), tenant=tenant) for i in range(4)]
    for h in handles[:3]:
        assert (await h.run("hello", thread_id="t")).output
    assert len(platform.agent_slots(tenant)) == 3

    with pytest.raises(AgentConcurrencyError) as refused:
        await handles[3].run("hello", thread_id="t")
    assert "free plan allows (3)" in refused.value.message
    assert refused.value.details["retry_after_s"] >= 1
    # A second turn on the first three still works; the default tenant is not limited.
    assert (await handles[0].run("again", thread_id="t")).output
    assert (await Agent(name="slot-agent-unlimited").deploy().run("hi")).output

    await handles[0].shutdown()  # gives its slot back
    assert len(platform.agent_slots(tenant)) == 2
    # As the refusal said: retry after retry_after_s (a refused actor asks the store again
    # at most that often; agents now start fast enough to get here sooner).
    await asyncio.sleep(refused.value.details["retry_after_s"])
    assert (await handles[3].run("hello", thread_id="t")).output  # now it gets one
    assert sorted(s.holder for s in platform.agent_slots(tenant)) == [
        f"lumos-agent-slot-agent-{i}-0@{tenant}" for i in (1, 2, 3)
    ]
    for h in handles[1:]:
        await h.shutdown()
    assert platform.agent_slots(tenant) == []
