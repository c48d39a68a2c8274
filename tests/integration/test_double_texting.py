"""Concurrent input on one thread on a real Ray cluster: for each strategy, two inputs
sent 1 ms apart to the same thread of an agent actor, whose first turn is held open by
a scripted model or tool (they wait for a file the test writes, or for cancellation).
The resulting history is checked exactly, in the actor and in the store."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from lumos_ray import Agent, tool
from lumos_ray.actors._concurrency import INTERRUPTED_MARK
from lumos_ray.errors import ThreadBusyError, TurnInterruptedError
from lumos_ray.testing import FunctionModel, call_tool, reply

pytestmark = pytest.mark.usefixtures("ray_cluster")

_WAIT_S = 60.0  # a held turn gives up after this (the test failed if it gets there)


async def _wait_for(path: Path) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + _WAIT_S
    while not path.exists() and loop.time() < deadline:
        await asyncio.sleep(0.01)


async def gated_model(messages: list[dict[str, Any]], tools: Any) -> Any:
    """'hold:PATH' waits for PATH to exist, 'tool:PATH' calls `hold_tool` on PATH,
    anything else is answered at once with 'answer to ...'."""
    text = next(m for m in reversed(messages) if m["role"] == "user")["content"]
    if text.startswith("hold:"):
        await _wait_for(Path(text[5:]))
    if text.startswith("tool:") and messages[-1]["role"] != "tool":
        return call_tool("hold_tool", path=text[5:])
    return reply(f"answer to {text}")


@tool
async def hold_tool(path: str) -> str:
    """Record that it started (its side effect), then wait for PATH to exist.

    Args:
        path: The file to wait for.
    """
    Path(path + ".started").write_text("side effect")
    await _wait_for(Path(path))
    return "released"


def _agent(name: str, **spec: Any) -> Any:
    return Agent(name=name, model=FunctionModel(gated_model), tools=[hold_tool], **spec).deploy()


async def _two_inputs(h: Any, first: str, second: str, **second_kw: Any) -> tuple[Any, Any]:
    """Send ``first``, then ``second`` 1 ms later, to thread 't'; both as tasks."""
    await h.ensure_current()  # the handle's one-time spec check is not part of the race
    a = asyncio.create_task(h.run(first, thread_id="t"))
    await asyncio.sleep(0.001)
    b = asyncio.create_task(h.run(second, thread_id="t", **second_kw))
    return a, b


def _stored(agent: str) -> list[dict[str, Any]]:
    from lumos_ray.store._sql import open_store

    return open_store(tenant_id="default").load_messages_many(agent, ["t"])["t"]


def _contents(hist: list[dict[str, Any]]) -> list[tuple[str, Any]]:
    return [(m["role"], m.get("content")) for m in hist]


async def test_reject_refuses_the_second_input_while_the_first_runs(tmp_path):
    gate = tmp_path / "go"
    h = _agent("dt-reject", concurrent_input="reject")
    a, b = await _two_inputs(h, f"hold:{gate}", "second")
    with pytest.raises(ThreadBusyError) as err:
        await b
    assert err.value.code == "LUMOS-E016" and err.value.details["thread_id"] == "t"
    assert not a.done()  # the first is still held open: it was running all along
    gate.touch()
    assert (await a).output == f"answer to hold:{gate}"
    expected = [("user", f"hold:{gate}"), ("assistant", f"answer to hold:{gate}")]
    assert _contents(await h.history("t")) == expected
    assert _contents(_stored("dt-reject")) == expected


async def test_enqueue_runs_the_second_after_the_first_seeing_its_history(tmp_path):
    gate = tmp_path / "go"
    h = _agent("dt-enqueue")  # the default strategy
    a, b = await _two_inputs(h, f"hold:{gate}", "second")
    done, _ = await asyncio.wait({b}, timeout=0.5)
    assert not done  # queued behind the held first turn
    gate.touch()
    r1, r2 = await asyncio.gather(a, b)
    assert (r1.output, r2.output) == (f"answer to hold:{gate}", "answer to second")
    expected = [
        ("user", f"hold:{gate}"),
        ("assistant", f"answer to hold:{gate}"),
        ("user", "second"),
        ("assistant", "answer to second"),
    ]
    assert _contents(await h.history("t")) == expected
    assert _contents(_stored("dt-enqueue")) == expected


async def test_interrupt_cancels_the_first_keeps_it_marked_and_runs_the_second(tmp_path):
    gate = tmp_path / "never"
    h = _agent("dt-interrupt", concurrent_input="interrupt")
    a, b = await _two_inputs(h, f"hold:{gate}", "second")
    r2 = await b
    with pytest.raises(TurnInterruptedError) as err:
        await a
    assert r2.output == "answer to second"
    d = err.value.details
    assert (d["strategy"], d["kept_messages"], d["tools_started"]) == ("interrupt", 2, [])
    expected = [
        ("user", f"hold:{gate}"),
        ("system", INTERRUPTED_MARK),
        ("user", "second"),
        ("assistant", "answer to second"),
    ]
    hist = await h.history("t")
    assert _contents(hist) == expected
    assert _stored("dt-interrupt") == hist


async def test_rollback_cancels_the_first_and_keeps_nothing_of_it(tmp_path):
    gate = tmp_path / "never"
    h = _agent("dt-rollback")
    await h.run("before", thread_id="t")
    # The second input goes once the first turn's tool has started (its side effect
    # happened): Ray does not promise that two calls 1 ms apart reach an async actor in
    # the order sent, and a second input that arrived first would interrupt nothing.
    a = asyncio.create_task(h.run(f"tool:{gate}", thread_id="t"))
    await _wait_for(tmp_path / "never.started")
    b = asyncio.create_task(h.run("second", thread_id="t", concurrent_input="rollback"))
    r2 = await b
    with pytest.raises(TurnInterruptedError) as err:
        await a
    assert r2.output == "answer to second"
    assert err.value.details["strategy"] == "rollback"
    assert err.value.details["kept_messages"] == 0
    assert err.value.details["tools_started"] == ["hold_tool"]  # the side effect is named
    expected = [
        ("user", "before"),
        ("assistant", "answer to before"),
        ("user", "second"),
        ("assistant", "answer to second"),
    ]
    assert _contents(await h.history("t")) == expected
    assert _contents(_stored("dt-rollback")) == expected


async def test_per_call_strategy_overrides_the_agents(tmp_path):
    gate = tmp_path / "go"
    h = _agent("dt-override", concurrent_input="interrupt")
    a, b = await _two_inputs(h, f"hold:{gate}", "second", concurrent_input="reject")
    with pytest.raises(ThreadBusyError):
        await b
    gate.touch()
    assert (await a).output == f"answer to hold:{gate}"


async def test_a_workflow_step_chooses_its_own_concurrent_input(tmp_path):
    """A step on a named thread that a user is talking on: `reject` there fails the
    step with ThreadBusyError (the agent's own default, enqueue, would have waited);
    the user's turn is untouched."""
    from lumos_ray import AgentStep, Workflow, execute_run

    gate = tmp_path / "go"
    spec = Agent(name="dt-step", model=FunctionModel(gated_model), tools=[hold_tool])
    h = spec.deploy()
    await h.ensure_current()
    user_turn = asyncio.create_task(h.run(f"hold:{gate}", thread_id="shared"))
    await asyncio.sleep(0.5)  # the user's turn holds the thread (it waits on the gate)
    wf = Workflow(
        name="dt-step-reject",
        agents=[spec],
        steps=[AgentStep(id="ask", agent="dt-step", thread="shared", concurrent_input="reject")],
    )
    info = await execute_run(wf, "from the workflow", timeout=120)
    assert info.status == "failed"
    assert info.error["code"] == "LUMOS-E016", info.error
    gate.touch()
    assert (await user_turn).output == f"answer to hold:{gate}"
    assert [m["content"] for m in await h.history("shared") if m["role"] == "user"] == [
        f"hold:{gate}"
    ]
