"""Runs of a one-agent-step workflow execute in that agent's actor (no runner hop):
they are stored and listed like any run, followers get their events while they run,
``cancel_run`` reaches them, and a run whose actor dies mid-turn is resumed by the
runner and ends once, under the id ``execute_run`` returns."""

from __future__ import annotations

import asyncio

import pytest

from lumos_ray import (
    Agent,
    AgentStep,
    Workflow,
    cancel_run,
    execute_run,
    follow_run,
    get_run,
    list_checkpoints,
    list_runs,
)
from lumos_ray.actors._agent_actor import actor_name
from lumos_ray.runtime import current_settings, kill_actor
from lumos_ray.testing import ScriptedModel
from lumos_ray.workflows._runner import hosted_run_ids
from tests.integration._hosted_helpers import wait_for_file, waiters

pytestmark = pytest.mark.usefixtures("ray_cluster")


def _workflow(name: str, replies: list, tools: list) -> tuple[Agent, Workflow]:
    spec = Agent(name=name, model=ScriptedModel(replies), tools=tools)
    wf = Workflow(
        name=f"{name}-wf",
        agents=[spec],
        steps=[AgentStep(id="say", agent=name, input="{{ input }}")],
        output="{{ state.say }}",
    )
    return spec, wf


async def _running_run(workflow: str) -> str:
    for _ in range(600):  # bounded: 60 s
        found = [r for r in await list_runs("running") if r.workflow == workflow]
        if found:
            return found[0].id
        await asyncio.sleep(0.1)
    raise AssertionError(f"no running run of {workflow}")


async def test_a_one_agent_step_run_executes_in_its_agents_actor_and_is_stored():
    spec, wf = _workflow(
        "hosted-calc",
        [{"tool": "calculator", "args": {"expression": "1 + 2"}}, "3"],
        ["calculator"],
    )
    info = await execute_run(wf, "add", timeout=120)
    assert (info.status, info.output) == ("succeeded", "3"), info.error
    ran_here = await spec.deploy().actor("").hosted.remote(hosted_run_ids)
    assert info.id in ran_here["ended"]  # the agent's actor executed it, not the runner
    stored = await get_run(info.id)
    assert (stored.status, stored.output, stored.version) == ("succeeded", "3", info.version)
    assert info.id in [r.id for r in await list_runs()]
    assert [c.path for c in await list_checkpoints(info.id)] == ["0.say"]
    types = [e.type async for e in follow_run(info.id)]
    assert types[0] == "run_started" and types[-1] == "run_finished"
    assert "tool_call" in types


async def test_followers_and_cancel_reach_a_hosted_run(tmp_path):
    gate = tmp_path / "never"
    spec, wf = _workflow(
        "hosted-cancel",
        [{"tool": "wait_for_file", "args": {"path": str(gate)}}, "x"],
        [wait_for_file],
    )
    call = asyncio.ensure_future(execute_run(wf, "go", timeout=300))
    run_id = await _running_run(wf.name)
    seen = []
    async for ev in follow_run(run_id):  # live, while the turn waits on the gate
        seen.append(ev.type)
        if ev.type == "step_started":
            break
    assert seen[0] == "run_started"
    info = await cancel_run(run_id)
    assert info.status == "cancelled"
    ended = await asyncio.wait_for(call, 120)  # bounded: a run not cancelled waits forever
    assert (ended.id, ended.status) == (run_id, "cancelled")
    # Stopped where it ran (not only marked cancelled in the store): the actor's runner
    # no longer executes it.
    there = await spec.deploy().actor("").hosted.remote(hosted_run_ids)
    assert run_id in there["ended"] and run_id not in there["running"]
    assert [e.type async for e in follow_run(run_id)][-1] == "run_cancelled"


async def test_a_hosted_run_whose_actor_dies_is_resumed_and_ends_once(tmp_path):
    gate = tmp_path / "open"
    spec, wf = _workflow(
        "hosted-dies",
        [{"tool": "wait_for_file", "args": {"path": str(gate)}}, "done"],
        [wait_for_file],
    )
    call = asyncio.ensure_future(execute_run(wf, "go", timeout=300))
    run_id = await _running_run(wf.name)

    async def first_step_started() -> None:
        async for e in follow_run(run_id):
            if e.type == "step_started":
                return

    # Killed only once the first execution's step_started is stored (the run's row
    # comes first; under load the event's group commit can trail it).
    await asyncio.wait_for(first_step_started(), 60)
    tenant = current_settings().tenant_id
    for _ in range(600):  # bounded: 60 s (the tool's call can trail its step_started)
        if first := waiters(str(gate)):
            break
        await asyncio.sleep(0.1)
    assert len(first) == 1, first
    assert kill_actor(actor_name(spec.name, 0, tenant), no_restart=False)
    # ray.kill only asks: the gate opens once the resumed turn waits in the restarted
    # actor's process, so the first execution cannot finish before it dies.
    for _ in range(1200):  # bounded: 120 s
        if waiters(str(gate)) - first:
            break
        await asyncio.sleep(0.1)
    else:
        raise AssertionError("the run was not resumed in a new process within 120 s")
    gate.touch()  # the resumed turn gets through
    info = await call
    assert (info.id, info.status, info.output) == (run_id, "succeeded", "done"), info.error
    types = [e.type async for e in follow_run(run_id)]
    # Executed twice from the top (no step had finished when the actor died: a resume
    # with no checkpoint says run_started again), ended once.
    assert types.count("step_started") == 2 and types.count("run_started") == 2
    assert types.count("run_finished") == 1 and types[-1] == "run_finished"
    assert [r.id for r in await list_runs() if r.workflow == wf.name] == [run_id]
