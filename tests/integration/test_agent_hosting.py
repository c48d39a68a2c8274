"""Shared hosting: many agents per host actor keep what an actor guarantees.

500 distinct agents (``hosting="shared"``) each answer as themselves; killing one host
actor while turns are in flight loses no turn (Ray restarts the host and retries the
call; the agent is rebuilt there and its thread reloads from the store); a shared
agent's thread still takes one turn at a time; a spec asking for resources is refused
shared hosting with a clear error.
"""

from __future__ import annotations

import asyncio

import pytest
import ray

from lumos_ray import Agent
from lumos_ray.errors import ThreadBusyError
from lumos_ray.testing import FunctionModel

pytestmark = pytest.mark.usefixtures("ray_cluster")

N_AGENTS = 500


async def whoami(messages: list[dict], tools: list[dict]) -> str:
    """The agent's instructions (its identity) and how many user turns its thread holds;
    slow enough that a killed host has turns in flight."""
    await asyncio.sleep(0.3)
    system = next((m["content"] for m in messages if m["role"] == "system"), "")
    users = sum(1 for m in messages if m["role"] == "user")
    return f"{system}|{users}"


def _spec(i: int) -> Agent:
    return Agent(
        name=f"dense-{i}", instructions=f"agent {i}", model=FunctionModel(whoami), hosting="shared"
    )


async def test_500_shared_agents_answer_as_themselves_and_a_killed_host_loses_no_turn() -> None:
    handles = [_spec(i).deploy() for i in range(N_AGENTS)]
    first = await asyncio.gather(*(h.run("hi", thread_id="t") for h in handles))
    assert [r.output for r in first] == [f"agent {i}|1" for i in range(N_AGENTS)]
    hosts = {h._actors[0].host._actor_id for h in handles}
    assert len(hosts) >= 2  # spread over the tenant's host pool, not one actor each

    victim = handles[0]._actors[0].host
    on_victim = [
        i for i, h in enumerate(handles) if h._actors[0].host._actor_id == victim._actor_id
    ]
    assert on_victim, "no agent on the host to kill"
    second = [asyncio.ensure_future(h.run("again", thread_id="t")) for h in handles]
    await asyncio.sleep(0.1)  # the turns are in flight (each takes 0.3 s)
    ray.kill(victim, no_restart=False)
    results = await asyncio.gather(*second)
    # Every turn answered, by the right agent, with its first turn still in the thread
    # (the agents of the killed host were rebuilt and reloaded their threads from the store).
    assert [r.output for r in results] == [f"agent {i}|2" for i in range(N_AGENTS)]
    for i in on_victim[:20]:
        history = await handles[i].history("t")
        users = [m["content"] for m in history if m["role"] == "user"]
        assert users == ["hi", "again"], (i, users)


async def test_a_shared_agents_thread_takes_one_turn_at_a_time() -> None:
    agent = Agent(
        name="dense-busy",
        model=FunctionModel(whoami),
        hosting="shared",
        concurrent_input="reject",
    ).deploy()
    running = asyncio.ensure_future(agent.run("one", thread_id="b"))
    await asyncio.sleep(0.1)
    with pytest.raises(ThreadBusyError):
        await agent.run("two", thread_id="b")
    assert (await running).output == "|1"
    # Another thread of the same agent is not held up.
    assert (await agent.run("three", thread_id="c")).output == "|1"


def test_an_agent_with_resources_of_its_own_is_refused_shared_hosting() -> None:
    with pytest.raises(ValueError, match="hosting='dedicated'"):
        Agent(name="heavy", hosting="shared", resources={"num_cpus": 1})
