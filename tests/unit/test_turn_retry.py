"""A turn Ray retries after the agent's process died is not run twice.

Ray re-sends an actor call whose process died (``max_task_retries``); if the process
died after the turn was saved but before it replied, the retry must not run the model
and append the turn again. Each call carries a turn id (the same in the retry), saved
with the turn's first message; a retry finds it and is answered from the store. Here a
second ``AgentActor`` on the same store stands for the restarted process (no Ray)."""

from __future__ import annotations

from typing import Any

from lumos_ray import Agent, tool
from lumos_ray.actors._agent_actor import AgentActor
from lumos_ray.testing import FunctionModel, call_tool, reply


class Counting:
    """Answers 'turn N' (N: user messages in the thread); 'add' first calls ``add``."""

    def __init__(self) -> None:
        self.calls = 0

    async def __call__(self, messages: list[dict[str, Any]], tools: Any) -> Any:
        self.calls += 1
        users = sum(1 for m in messages if m["role"] == "user")
        if messages[-1]["content"] == "add":
            return call_tool("add", a=2, b=3)
        return reply(f"turn {users}")


@tool
def add(a: int, b: int) -> int:
    """Add two numbers."""
    return a + b


def _actor(model: Counting, store: Any) -> AgentActor:
    actor = AgentActor(Agent(name="retry", model=FunctionModel(model), tools=[add]), replica=1)
    actor._store = store  # replica 1: no plan slot; the test's store
    return actor


async def test_a_retried_turn_is_answered_from_the_store_not_run_again(
    store_backend: str, make_store: Any
) -> None:
    model = Counting()
    first = _actor(model, make_store())
    assert (await first.run("hi", "t", turn_id="turn-1")).output == "turn 1"
    said = await first.run("add", "t", turn_id="turn-2")
    assert model.calls == 3 and said.steps == 2

    # The process died after saving turn-2 and before replying: Ray retries the call
    # in a new process, which has the thread only in the store.
    restarted = _actor(model, make_store())
    again = await restarted.run("add", "t", turn_id="turn-2")
    assert model.calls == 3  # the model was not asked again
    assert again.output == said.output and again.new_messages == said.new_messages
    assert again.steps == 2
    assert (
        again.tool_calls
        == said.tool_calls
        == [{"name": "add", "arguments": '{"a": 2, "b": 3}', "ok": True}]
    )
    # An older turn's retry is answered with that turn, not the thread's latest.
    assert (await restarted.run("hi", "t", turn_id="turn-1")).output == "turn 1"

    # A new turn id is a new turn; its retry in the same process is answered too.
    assert (await restarted.run("hi", "t", turn_id="turn-3")).output == "turn 3"
    assert (await restarted.run("hi", "t", turn_id="turn-3")).output == "turn 3"
    assert model.calls == 4
    users = [m["content"] for m in await restarted.history("t") if m["role"] == "user"]
    assert users == ["hi", "add", "hi"]


async def test_calls_without_a_turn_id_each_run(store_backend: str, make_store: Any) -> None:
    model = Counting()
    actor = _actor(model, make_store())
    await actor.run("hi", "t")
    assert (await actor.run("hi", "t")).output == "turn 2"
    assert model.calls == 2


class Scripted:
    """Calls the tool the input names, then answers 'done'; keeps every message list
    it was given (what a model server would receive)."""

    def __init__(self) -> None:
        self.seen: list[list[dict[str, Any]]] = []

    async def __call__(self, messages: list[dict[str, Any]], tools: Any) -> Any:
        self.seen.append(messages)
        if messages[-1]["role"] == "user":
            return call_tool(messages[-1]["content"])
        return reply("done")


@tool
def sounds_bad() -> str:
    """Succeeds with output that reads like an error."""
    return "Error: but fine"


@tool
def breaks() -> str:
    """Fails."""
    raise RuntimeError("disk on fire")


async def test_a_retried_turn_reports_each_tool_call_as_it_went(
    store_backend: str, make_store: Any
) -> None:
    """The replayed tool calls' ok comes from what happened, not from the result's text:
    a tool that succeeds with "Error: ..." output stays ok, one that raised stays not."""
    model = Scripted()

    def actor() -> AgentActor:
        spec = Agent(name="retry-ok", model=FunctionModel(model), tools=[sounds_bad, breaks])
        a = AgentActor(spec, replica=1)
        a._store = make_store()
        return a

    first = actor()
    fine = await first.run("sounds_bad", "t", turn_id="turn-1")
    failed = await first.run("breaks", "t", turn_id="turn-2")
    assert [c["ok"] for c in fine.tool_calls] == [True]
    assert [c["ok"] for c in failed.tool_calls] == [False]
    asked = len(model.seen)

    restarted = actor()  # the retries, in a new process: the thread is in the store only
    again_fine = await restarted.run("sounds_bad", "t", turn_id="turn-1")
    again_failed = await restarted.run("breaks", "t", turn_id="turn-2")
    assert len(model.seen) == asked  # answered from the store
    assert again_fine.tool_calls == [{"name": "sounds_bad", "arguments": "{}", "ok": True}]
    assert again_failed.tool_calls == [{"name": "breaks", "arguments": "{}", "ok": False}]
    # The outcome is kept with the thread's tool messages, and never sent to a model.
    stored = [m for m in await restarted.history("t") if m["role"] == "tool"]
    assert [m["ok"] for m in stored] == [True, False]
    sent = [m for msgs in model.seen for m in msgs if m["role"] == "tool"]
    assert sent and all(set(m) == {"role", "tool_call_id", "content"} for m in sent)
