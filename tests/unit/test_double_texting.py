"""Concurrent input on one thread, on the agent actor's class directly (no Ray): the
test holds the first turn open with an event, so every interleaving is exact."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from lumos_ray import Agent, tool
from lumos_ray.actors._agent_actor import AgentActor
from lumos_ray.actors._concurrency import (
    INTERRUPTED_MARK,
    INTERRUPTED_TOOL,
    ThreadGate,
    Turn,
    check_strategy,
)
from lumos_ray.errors import InputValidationError, ThreadBusyError, TurnInterruptedError
from lumos_ray.testing import FunctionModel, call_tool, reply


class Script:
    """A model that answers 'answer to X' for user input X; for input 'slow' it waits
    on ``release`` first, for 'tool' it calls ``hold`` (a tool that waits on
    ``release``), for 'two-tools' it calls ``quick`` and ``hold`` together."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.started = asyncio.Event()
        self.tool_started = asyncio.Event()
        self.quick_done = threading.Event()  # set from quick's worker thread

    async def __call__(self, messages: list[dict[str, Any]], tools: Any) -> Any:
        last_user = next(m for m in reversed(messages) if m["role"] == "user")
        text = last_user["content"]
        answered_tool = messages[-1]["role"] == "tool"
        self.started.set()
        if text == "slow":
            await self.release.wait()
        if text == "tool" and not answered_tool:
            return call_tool("hold")
        if text == "two-tools" and not answered_tool:
            return {"calls": [{"tool": "quick"}, {"tool": "hold"}]}
        return reply(f"answer to {text}")


def _actor(script: Script, **spec: Any) -> AgentActor:
    @tool
    async def hold() -> str:
        """Wait until released."""
        script.tool_started.set()
        await script.release.wait()
        return "held"

    @tool
    def quick() -> str:
        """Answer at once."""
        script.quick_done.set()
        return "quick done"

    agent = Agent(
        name="dt",
        model=FunctionModel(script),
        tools=[hold, quick],
        memory={"persist": False},
        **spec,
    )
    return AgentActor(agent, replica=1)  # replica 1: no plan slot (no store)


async def _until(event: asyncio.Event) -> None:
    await asyncio.wait_for(event.wait(), 10)


def _contents(hist: list[dict[str, Any]]) -> list[tuple[str, Any]]:
    return [(m["role"], m.get("content")) for m in hist]


async def test_reject_fails_the_second_input_and_the_first_finishes():
    s = Script()
    actor = _actor(s, concurrent_input="reject")
    first = asyncio.create_task(actor.run("slow", "t"))
    await _until(s.started)
    with pytest.raises(ThreadBusyError) as err:
        await actor.run("second", "t")
    assert err.value.code == "LUMOS-E016"
    assert err.value.details == {"thread_id": "t", "agent": "dt"}
    s.release.set()
    assert (await first).output == "answer to slow"
    assert _contents(await actor.history("t")) == [
        ("user", "slow"),
        ("assistant", "answer to slow"),
    ]
    # Not busy any more: the next input runs.
    assert (await actor.run("third", "t")).output == "answer to third"


async def test_enqueue_runs_the_second_after_the_first_on_its_history():
    s = Script()
    actor = _actor(s)  # the default strategy
    assert actor.spec.concurrent_input == "enqueue"
    first = asyncio.create_task(actor.run("slow", "t"))
    await _until(s.started)
    second = asyncio.create_task(actor.run("second", "t"))
    await asyncio.sleep(0)
    assert not second.done()
    s.release.set()
    r1, r2 = await asyncio.gather(first, second)
    assert (r1.output, r2.output) == ("answer to slow", "answer to second")
    assert _contents(await actor.history("t")) == [
        ("user", "slow"),
        ("assistant", "answer to slow"),
        ("user", "second"),
        ("assistant", "answer to second"),
    ]


async def test_interrupt_keeps_the_partial_turn_marked_and_runs_the_second():
    s = Script()
    actor = _actor(s)
    first = asyncio.create_task(actor.run("slow", "t"))
    await _until(s.started)
    r2 = await actor.run("second", "t", concurrent_input="interrupt")
    with pytest.raises(TurnInterruptedError) as err:
        await first
    assert err.value.code == "LUMOS-E017"
    assert err.value.details["strategy"] == "interrupt"
    assert err.value.details["kept_messages"] == 2
    assert err.value.details["tools_started"] == []
    assert r2.output == "answer to second"
    assert _contents(await actor.history("t")) == [
        ("user", "slow"),
        ("system", INTERRUPTED_MARK),
        ("user", "second"),
        ("assistant", "answer to second"),
    ]


async def test_interrupt_during_a_tool_closes_the_call_and_names_the_tool():
    s = Script()
    actor = _actor(s, concurrent_input="interrupt")
    first = asyncio.create_task(actor.run("tool", "t"))
    await _until(s.tool_started)
    r2 = await actor.run("second", "t")
    with pytest.raises(TurnInterruptedError) as err:
        await first
    assert err.value.details["tools_started"] == ["hold"]
    assert err.value.details["tools_unfinished"] == ["hold"]
    assert "were not undone" in err.value.message
    hist = await actor.history("t")
    assert _contents(hist) == [
        ("user", "tool"),
        ("assistant", None),
        ("tool", INTERRUPTED_TOOL),
        ("system", INTERRUPTED_MARK),
        ("user", "second"),
        ("assistant", "answer to second"),
    ]
    assert hist[2]["tool_call_id"] == hist[1]["tool_calls"][0]["id"]
    assert r2.output == "answer to second"


async def test_interrupt_keeps_the_results_of_tools_that_finished():
    s = Script()
    actor = _actor(s)
    first = asyncio.create_task(actor.run("two-tools", "t"))
    await _until(s.tool_started)
    # quick (a sync tool) runs in a worker thread: on a loaded machine it may not have
    # returned yet when hold starts; the interrupt must come after it did.
    for _ in range(1000):
        if s.quick_done.is_set():
            break
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.05)  # its result reaches the turn
    await actor.run("second", "t", concurrent_input="interrupt")
    with pytest.raises(TurnInterruptedError) as err:
        await first
    assert err.value.details["tools_started"] == ["quick", "hold"]
    assert err.value.details["tools_unfinished"] == ["hold"]
    hist = await actor.history("t")
    calls = hist[1]["tool_calls"]
    by_id = {m["tool_call_id"]: m["content"] for m in hist if m["role"] == "tool"}
    assert by_id == {calls[0]["id"]: "quick done", calls[1]["id"]: INTERRUPTED_TOOL}
    assert hist[4] == {"role": "system", "content": INTERRUPTED_MARK}


async def test_rollback_discards_the_first_turn_entirely():
    s = Script()
    actor = _actor(s, concurrent_input="rollback")
    await actor.run("before", "t")
    first = asyncio.create_task(actor.run("tool", "t"))
    await _until(s.tool_started)
    r2 = await actor.run("second", "t")
    with pytest.raises(TurnInterruptedError) as err:
        await first
    assert err.value.details["strategy"] == "rollback"
    assert err.value.details["kept_messages"] == 0
    assert err.value.details["tools_started"] == ["hold"]
    assert r2.output == "answer to second"
    assert _contents(await actor.history("t")) == [
        ("user", "before"),
        ("assistant", "answer to before"),
        ("user", "second"),
        ("assistant", "answer to second"),
    ]


async def test_other_threads_are_not_affected():
    s = Script()
    actor = _actor(s, concurrent_input="reject")
    first = asyncio.create_task(actor.run("slow", "a"))
    await _until(s.started)
    assert (await actor.run("hello", "b")).output == "answer to hello"
    s.release.set()
    await first


async def test_a_cancelled_caller_keeps_nothing_and_gets_plain_cancellation():
    """Our own caller giving up (a step timeout cancels the Ray call) is not an
    interrupt: nothing of the turn is kept, as before."""
    s = Script()
    actor = _actor(s, concurrent_input="interrupt")
    first = asyncio.create_task(actor.run("slow", "t"))
    await _until(s.started)
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    assert await actor.history("t") == []
    assert (await actor.run("next", "t")).output == "answer to next"


async def test_a_turn_past_its_commit_point_is_not_cancelled():
    gate = ThreadGate()
    await gate.lock.acquire()
    gate.inflight = 1
    task = asyncio.create_task(asyncio.sleep(10))
    gate.current = Turn(task=task, committing=True)
    gate.admit("rollback", "dt", "t")
    assert gate.current.cancelled_by is None
    gate.current.committing = False
    gate.admit("rollback", "dt", "t")
    assert gate.current.cancelled_by == "rollback"
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_reject_counts_inputs_waiting_for_the_lock_as_busy():
    """Between one turn's release and the next waiter's start the lock looks free; a
    rejecting input arriving then is still refused (the thread is not idle)."""
    s = Script()
    actor = _actor(s)
    first = asyncio.create_task(actor.run("slow", "t"))
    await _until(s.started)
    second = asyncio.create_task(actor.run("second", "t"))  # enqueued
    await asyncio.sleep(0)
    s.release.set()
    while not first.done():  # first has released; second has not started yet
        await asyncio.sleep(0)
    with pytest.raises(ThreadBusyError):
        await actor.run("third", "t", concurrent_input="reject")
    await second


async def test_unknown_strategy_is_a_clear_error():
    with pytest.raises(InputValidationError) as err:
        check_strategy("later")
    assert "reject, enqueue, interrupt, rollback" in err.value.message
    actor = _actor(Script())
    with pytest.raises(InputValidationError):
        await actor.run("x", "t", concurrent_input="later")
    with pytest.raises(ValueError, match="concurrent_input"):
        Agent(name="bad", concurrent_input="later")
