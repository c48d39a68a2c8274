"""Semantic memory and summaries on the agent actor's class (no Ray): an in-process
backend found by import path, like the RAG pool's in production."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from lumos_ray import Agent
from lumos_ray.actors._agent_actor import AgentActor
from lumos_ray.actors._memory import collection_name
from lumos_ray.errors import ConfigError
from lumos_ray.rag._agent_memory import rag_tenant
from lumos_ray.testing import FunctionModel, reply

_STORES: dict[tuple[str, str], dict[str, dict[str, Any]]] = {}


class WordBackend:
    """Scores a document by the words it shares with the query."""

    def __init__(self, docs: dict[str, dict[str, Any]], hang: bool = False) -> None:
        self.docs, self.hang = docs, hang

    async def add(self, docs: list[dict[str, Any]]) -> None:
        for d in docs:
            self.docs[d["doc_id"]] = d

    async def search(self, query: str, k: int) -> list[dict[str, Any]]:
        if self.hang:
            await asyncio.sleep(3600)
        words = set(query.lower().split())
        scored = [
            {**d, "score": float(len(words & set(d["text"].lower().split())))}
            for d in self.docs.values()
        ]
        return sorted((h for h in scored if h["score"] > 0), key=lambda h: -h["score"])[:k]


def word_backend(tenant: str, collection: str) -> WordBackend:
    return WordBackend(_STORES.setdefault((tenant, collection), {}))


def hanging_backend(tenant: str, collection: str) -> WordBackend:
    return WordBackend({}, hang=True)


class Seen:
    """Answers 'ok', recording each call's system message."""

    def __init__(self) -> None:
        self.systems: list[str] = []

    def __call__(self, messages: list[dict[str, Any]], tools: Any) -> Any:
        if messages[0]["role"] == "system" and "running summary" in messages[0]["content"]:
            return reply("SUMMARY: " + messages[-1]["content"].split("New messages:\n")[-1])
        self.systems.append(messages[0]["content"] if messages[0]["role"] == "system" else "")
        return reply("ok")


def _actor(seen: Seen, tenant: str = "acme", **memory: Any) -> AgentActor:
    mem = {"persist": False, "semantic": True, "backend": f"{__name__}:word_backend", **memory}
    agent = Agent(name="helper", instructions="Be brief.", model=FunctionModel(seen), memory=mem)
    return AgentActor(agent, replica=1, tenant=tenant)


async def test_a_fact_from_one_thread_is_recalled_in_another_of_the_same_tenant_only():
    _STORES.clear()
    seen = Seen()
    acme = _actor(seen)
    await acme.run("my cat is called Biscuit", "t1")
    assert (await acme.flush_memory())["written"] == 1
    await acme.run("what is my cat called", "t2")
    assert "my cat is called Biscuit" in seen.systems[-1]
    assert "thread 't1'" in seen.systems[-1]
    # Another tenant's actor of the same agent: its own collection, nothing recalled.
    other = _actor(seen, tenant="globex")
    await other.run("what is my cat called", "t2")
    assert "Biscuit" not in seen.systems[-1]
    await other.flush_memory()
    name = collection_name("helper", "agent")
    assert set(_STORES) == {("acme", name), ("globex", name)}  # opened by each tenant
    assert not any("Biscuit" in d["text"] for d in _STORES[("globex", name)].values())


async def test_the_current_threads_visible_messages_are_not_recalled_again():
    _STORES.clear()
    seen = Seen()
    actor = _actor(seen)
    await actor.run("my cat is called Biscuit", "t1")
    await actor.flush_memory()
    await actor.run("what is my cat called", "t1")
    assert "Recalled" not in seen.systems[-1]


async def test_recall_tool_mode_offers_a_tool_instead_of_instructions():
    _STORES.clear()
    seen = Seen()
    actor = _actor(seen, recall="tool")
    assert "recall" in actor.tools
    await actor.run("my cat is called Biscuit", "t1")
    await actor.flush_memory()
    out = await actor.tools["recall"].acall({"query": "cat called"}, None)
    assert out[0]["thread"] == "t1" and "Biscuit" in out[0]["text"]
    await actor.run("what is my cat called", "t2")
    assert "Recalled" not in seen.systems[-1]


async def test_a_pool_that_does_not_answer_costs_the_turn_at_most_the_recall_timeout():
    seen = Seen()
    actor = _actor(seen, backend=f"{__name__}:hanging_backend", recall_timeout_s=0.05)
    assert (await actor.run("hello", "t1")).output == "ok"
    assert "Recalled" not in seen.systems[-1]


async def test_summary_of_messages_that_left_the_window_is_shown():
    seen = Seen()
    actor = _actor(seen, semantic=False, summarize=True, max_messages=2)
    await actor.run("my cat is called Biscuit", "t")
    await actor.run("second", "t")  # history 4 > 2: the first turn left the window
    assert await actor.summary("t") == "SUMMARY: user: my cat is called Biscuit\nassistant: ok"
    await actor.run("third", "t")
    assert "Summary of the earlier part" in seen.systems[-1]
    assert "Biscuit" in seen.systems[-1]


async def test_a_bad_backend_path_is_a_config_error():
    actor = _actor(Seen(), backend="no_such_module_xyz:open")
    with pytest.raises(ConfigError):
        await actor.run("hello", "t")


def test_collection_names_are_per_agent_and_valid_rag_names():
    a, b = collection_name("Support.Bot", "agent"), collection_name("support-bot", "agent")
    assert a != b and a.startswith("memory-support-bot-")
    assert collection_name("x", "tenant") == "memory-tenant"


def test_tenant_ids_a_rag_name_cannot_hold_map_to_names_no_tenant_has():
    assert rag_tenant("acme") == "acme"
    mapped = rag_tenant("Acme.Corp")
    assert "_" in mapped  # tenant ids never contain '_', so this is no tenant's own id
    assert mapped != rag_tenant("acme.corp")
