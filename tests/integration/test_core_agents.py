"""Agents as Ray actors: the tool-calling loop, self-correction, sessions, restarts."""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path

import pytest
import ray

from lumos_ray import Agent, AgentStep, Workflow, start_run, tool, wait_run
from lumos_ray.testing import FunctionModel, ScriptedModel, TestModel, call_tool, reply

pytestmark = pytest.mark.usefixtures("ray_cluster")


@tool
def add(a: int, b: int) -> int:
    """Add two integers.

    Args:
        a: First addend.
        b: Second addend.
    """
    return a + b


async def test_agent_answers_through_tool_loop():
    agent = Agent(name="calc", model=TestModel(), tools=[add]).deploy()
    result = await agent.run("what is 1 + 1?", thread_id="t-loop")
    # TestModel calls `add` with schema-generated args (1, 1), then reports the result.
    assert result.tool_calls == [{"name": "add", "arguments": '{"a": 1, "b": 1}', "ok": True}]
    assert json.loads(result.output) == ["2"]
    roles = [m["role"] for m in result.new_messages]
    assert roles == ["user", "assistant", "tool", "assistant"]


async def test_invalid_tool_arguments_are_corrected_next_turn():
    model = ScriptedModel(
        [call_tool("add", a="not a number", b=2), call_tool("add", a=40, b=2), reply("42")]
    )
    agent = Agent(name="fixer", model=model, tools=[add]).deploy()
    result = await agent.run("add", thread_id="t-fix")
    assert [c["ok"] for c in result.tool_calls] == [False, True]
    tool_msgs = [m for m in result.new_messages if m["role"] == "tool"]
    assert "a" in tool_msgs[0]["content"] and "Error" in tool_msgs[0]["content"]
    assert tool_msgs[1]["content"] == "42"
    assert result.output == "42"


async def test_malformed_json_and_unknown_tool_go_back_to_the_model():
    model = ScriptedModel(
        [call_tool("add", "{not json"), call_tool("nope", {}), call_tool("add", a=1, b=1), "2"]
    )
    result = await Agent(name="messy", model=model, tools=[add]).deploy().run("x")
    assert [c["ok"] for c in result.tool_calls] == [False, False, True]
    contents = [m["content"] for m in result.new_messages if m["role"] == "tool"]
    assert "not valid JSON" in contents[0]
    assert "no tool named 'nope'" in contents[1] and "add" in contents[1]
    assert result.output == "2"


async def test_one_actor_serves_many_threads_with_persistent_memory():
    def echo_history(messages, tools):
        users = [m["content"] for m in messages if m["role"] == "user"]
        return reply("|".join(users))

    spec = Agent(name="mem", model=FunctionModel(echo_history))
    h = spec.deploy()
    for i in range(20):
        await h.run(f"a{i}", thread_id=f"th{i}")
    r = await h.run("b3", thread_id="th3")
    assert r.output == "a3|b3"  # thread 3 saw only its own history
    info = await h.actor("th3").info.remote()
    assert info["threads_cached"] == 20
    # Memory survives the actor: a fresh process reloads the thread from the store.
    pid = info["pid"]
    ray.kill(h.actor("th3"), no_restart=False)
    # ray.kill is asynchronous: a call sent at once can still reach the old process
    # (then it answers from its cache). Wait until the restarted process answers.
    deadline = time.monotonic() + 120
    new_pid = pid
    while new_pid == pid and time.monotonic() < deadline:
        try:
            new_pid = (await h.actor("th3").info.remote())["pid"]
        except Exception:  # restarting
            pass
        if new_pid == pid:
            await asyncio.sleep(0.1)
    assert new_pid != pid
    r2 = await h.run("c3", thread_id="th3")
    assert r2.output == "a3|b3|c3"  # the fresh process reloaded thread 3 from the store
    after = await h.actor("th3").info.remote()
    assert after["pid"] == new_pid and after["threads_cached"] == 1


def slow_first_model(messages, tools):
    """The user message names a marker file. First call in a process: note the pid
    and block long enough to be killed. Module-level: durable runs store it by
    import path."""
    path = Path(messages[-1]["content"])
    with path.open("a") as f:
        f.write(f"{os.getpid()}\n")
    if len(path.read_text().split()) == 1:
        time.sleep(30)
    return reply("done")


async def test_killed_agent_actor_mid_run_is_restarted_and_run_succeeds(tmp_path):
    marker = tmp_path / "calls"
    spec = Agent(name="victim", model=FunctionModel(slow_first_model))
    wf = Workflow(
        name="survive",
        agents=[spec],
        steps=[AgentStep(id="answer", agent="victim", input=str(marker))],
    )
    run_id = await start_run(wf, {})
    deadline = time.time() + 60
    while not marker.exists() and time.time() < deadline:
        await asyncio.sleep(0.2)
    assert marker.exists(), "agent never started its turn"
    ray.kill(ray.get_actor("lumos-agent-victim-0@default"), no_restart=False)
    info = await wait_run(run_id, timeout=120)
    assert info.status == "succeeded", info.error
    assert info.output["answer"] == "done"
    pids = marker.read_text().split()
    assert len(pids) == 2 and pids[0] != pids[1]  # really a new process


async def test_working_memory_tools_persist_per_thread():
    def model(messages, tools):
        system = messages[0]["content"] if messages[0]["role"] == "system" else ""
        if "Ada" in system:
            return reply("I remember Ada")
        if messages[-1]["role"] == "tool":
            return reply("saved")
        return call_tool("remember", key="name", value="Ada")

    spec = Agent(
        name="notes",
        instructions="Keep notes.",
        model=FunctionModel(model),
        memory={"working": True},
    )
    h = spec.deploy()
    assert (await h.run("my name is Ada", thread_id="n1")).output == "saved"
    assert await h.working_memory("n1") == {"name": "Ada"}
    assert await h.working_memory("n2") == {}
    ray.kill(h.actor("n1"), no_restart=False)  # notes live in the store, not the process
    assert (await h.run("who am I?", thread_id="n1")).output == "I remember Ada"


async def test_redeployed_agent_with_a_changed_spec_serves_the_new_spec():
    """Actors are found by name: deploying the same name with new instructions and a
    new model must not keep serving the old spec. The running actor takes the new
    spec in place (same process), and the thread's history survives."""
    first = Agent(name="redeployed", instructions="v1", model=ScriptedModel([reply("old")]))
    h1 = first.deploy()
    assert (await h1.run("hi", thread_id="t-redeploy")).output == "old"
    pid = (await h1.actor("t-redeploy").info.remote())["pid"]

    def answer(messages, tools):  # runs in the actor: report what it was given
        return reply(f"new, instructions={messages[0]['content']}")

    second = Agent(name="redeployed", instructions="v2", model=FunctionModel(answer))
    h2 = second.deploy()
    result = await h2.run("again", thread_id="t-redeploy")
    assert result.output == "new, instructions=v2"
    assert (await h2.actor("t-redeploy").info.remote())["pid"] == pid
    history = await h2.history("t-redeploy")
    assert [m["content"] for m in history if m["role"] == "user"] == ["hi", "again"]
    # Same spec again: no reconfigure needed, still served.
    again = await second.deploy().run("third", thread_id="t-redeploy")
    assert again.output == "new, instructions=v2"
