"""Semantic memory on a real Ray cluster with real embeddings (all-MiniLM-L6-v2 in the
memory collections' RAG routers): a fact told in one thread is recalled in another
thread of the same tenant, and not in another tenant's thread of the same agent."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from lumos_ray import Agent
from lumos_ray.actors._memory import collection_name
from lumos_ray.actors.agent import AgentHandle
from lumos_ray.testing import reply

pytestmark = pytest.mark.usefixtures("ray_cluster")


def show_instructions(messages: list[dict[str, Any]], tools: Any) -> Any:
    """'ask: ...' is answered with the instructions the model was given (so the test
    sees what was recalled); anything else with 'noted'."""
    user = next(m for m in reversed(messages) if m["role"] == "user")["content"]
    if user.startswith("ask:"):
        return reply(messages[0]["content"] if messages[0]["role"] == "system" else "")
    return reply("noted")


async def test_fact_told_in_thread_1_is_recalled_in_thread_2_of_the_same_tenant_only():
    from lumos_ray.testing import FunctionModel

    spec = Agent(
        name="memo",
        instructions="You are a helpful assistant.",
        model=FunctionModel(show_instructions),
        # A loaded CI machine embeds slowly: the bound is generous, not the default.
        memory={"semantic": True, "recall_k": 2, "recall_timeout_s": 30.0},
    )
    acme = AgentHandle(spec, tenant="acme-mem")
    globex = AgentHandle(spec, tenant="globex-mem")

    async def tell_acme() -> None:
        await acme.run("My dog is named Pixel and she loves the beach.", thread_id="t1")
        await acme.run("I work as a lighthouse keeper in Norway.", thread_id="t1")

    # The two tenants' pools start (and load the embedding model) side by side.
    await asyncio.gather(
        tell_acme(), globex.run("Our quarterly budget review is on Friday.", thread_id="t1")
    )
    # Written in the background after each turn; wait until they are in the pool.
    for h in (acme, globex):
        (counts,) = await h.flush_memory()
        assert counts["pending"] == 0 and counts["written"] >= 1, counts

    seen = (await acme.run("ask: what is my dog called?", thread_id="t2")).output
    assert "Recalled from past conversations" in seen
    assert "My dog is named Pixel" in seen and "(thread 't1')" in seen
    # Most relevant first: the dog fact comes before the job fact.
    assert seen.index("Pixel") < seen.index("lighthouse")

    other = (await globex.run("ask: what is my dog called?", thread_id="t2")).output
    assert "Pixel" not in other and "lighthouse" not in other
    assert "quarterly budget" in other  # its own tenant's memory is all it can see

    # Each tenant's memory collection is its own pool: actors named by tenant.
    from lumos_ray import runtime

    name = collection_name("memo", "agent")
    for tenant in ("acme-mem", "globex-mem"):
        assert runtime.get_actor(f"lumos-rag-{name}@{tenant}.router") is not None
