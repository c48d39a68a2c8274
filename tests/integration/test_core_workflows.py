"""Workflows on Ray: fan-out, map, branches, loops, nesting, retries, timeouts,
human input, cancel."""

from __future__ import annotations

import asyncio

import pytest

from lumos_ray import (
    FunctionStep,
    HumanStep,
    IfStep,
    LoopStep,
    MapStep,
    ParallelStep,
    Workflow,
    WorkflowStep,
    cancel_run,
    execute_run,
    follow_run,
    get_run,
    list_checkpoints,
    resume_run,
    start_run,
    wait_run,
)
from lumos_ray.errors import InputValidationError, RunStateError

pytestmark = pytest.mark.usefixtures("ray_cluster")
H = "tests.integration._wf_helpers"


def fn(name: str, **args):
    return FunctionStep(id=args.pop("id", None), function=f"{H}:{name}", args=args or None)


async def test_fan_out_steps_overlap_in_time(tmp_path):
    wf = Workflow(
        name="fan",
        steps=[
            ParallelStep(
                id="fan",
                parallel=[
                    FunctionStep(
                        id=f"s{i}",
                        function=f"{H}:rendezvous",
                        args={"marker_dir": str(tmp_path), "label": i, "parties": 3},
                    )
                    for i in range(3)
                ],
            )
        ],
    )
    info = await wait_run(await start_run(wf), timeout=120)
    assert info.status == "succeeded", info.error
    spans = list(info.output["fan"].values())
    # Every step started before any step ended: they all ran at the same time.
    assert max(s["start"] for s in spans) < min(s["end"] for s in spans)
    assert len({s["pid"] for s in spans}) == 3  # three Ray worker processes


async def test_map_branch_loop_and_nested_workflow():
    child = Workflow(
        name="child",
        input_schema={"type": "object", "required": ["x"]},
        steps=[FunctionStep(id="y", function=f"{H}:double", args={"x": "{{ input.x }}"})],
        output="{{ state.y }}",
    )
    wf = Workflow(
        name="shapes",
        steps=[
            MapStep(
                id="doubled",
                map={
                    "over": "input.items",
                    "step": FunctionStep(function=f"{H}:double", args={"x": "{{ item }}"}),
                },
            ),
            IfStep(
                id="big",
                **{
                    "if": "state.doubled | sum > 10",
                    "then": [
                        FunctionStep(
                            id="v_big",
                            output="verdict",
                            function=f"{H}:identity",
                            args={"x": "big"},
                        )
                    ],
                    "else": [
                        FunctionStep(
                            id="v_small",
                            output="verdict",
                            function=f"{H}:identity",
                            args={"x": "small"},
                        )
                    ],
                },
            ),
            FunctionStep(id="counter", function=f"{H}:identity", args={"x": 0}),
            LoopStep(
                id="count",
                loop={
                    "steps": [
                        FunctionStep(
                            id="counter_next",
                            output="counter",
                            function=f"{H}:add_one",
                            args={"x": "{{ state.counter }}"},
                        )
                    ],
                    "until": "state.counter >= 3",
                    "max_iterations": 10,
                },
            ),
            WorkflowStep(id="nested", workflow=child, input={"x": "{{ state.counter }}"}),
        ],
    )
    info = await wait_run(await start_run(wf, {"items": [1, 2, 3]}), timeout=120)
    assert info.status == "succeeded", info.error
    out = info.output
    assert out["doubled"] == [2, 4, 6]
    assert out["verdict"] == "big" and out["big"] is True
    assert out["counter"] == 3 and out["count"] == 3
    assert out["nested"] == 6


async def test_retries_with_backoff_then_success(tmp_path):
    wf = Workflow(
        name="retry",
        steps=[
            FunctionStep(
                id="f",
                function=f"{H}:flaky",
                args={"marker_dir": str(tmp_path), "fail_times": 2},
                retries=2,
                backoff_s=0.1,
            )
        ],
    )
    run_id = await start_run(wf)
    info = await wait_run(run_id, timeout=120)
    assert info.status == "succeeded", info.error
    assert info.output["f"] == 3
    kinds = [e.type async for e in follow_run(run_id)]
    assert kinds.count("step_retry") == 2


async def test_retries_exhausted_fail_the_run_with_the_error(tmp_path):
    wf = Workflow(
        name="retry_fail",
        steps=[
            FunctionStep(
                id="f",
                function=f"{H}:flaky",
                args={"marker_dir": str(tmp_path), "fail_times": 5},
                retries=1,
                backoff_s=0.05,
            )
        ],
    )
    info = await wait_run(await start_run(wf), timeout=120)
    assert info.status == "failed"
    assert "transient failure 2" in info.error["message"]
    assert info.error["step"] == ""  # run-level error; the step is in the events


async def test_per_step_timeout():
    wf = Workflow(
        name="slow",
        steps=[
            FunctionStep(
                id="slow",
                function=f"{H}:timed_sleep",
                args={"seconds": 60, "label": "x"},
                timeout_s=1,
            )
        ],
    )
    info = await wait_run(await start_run(wf), timeout=60)
    assert info.status == "failed"
    assert info.error["code"] == "LUMOS-E013"
    assert "timed out after 1" in info.error["message"]


async def test_human_input_suspends_and_resumes_with_validated_input():
    wf = Workflow(
        name="approve",
        steps=[
            # Inside a composite step: on resume, replay must restore `draft` from the
            # child's checkpoint (the composite itself is re-entered, not skipped).
            ParallelStep(
                parallel=[FunctionStep(id="draft", function=f"{H}:identity", args={"x": "text"})]
            ),
            HumanStep(
                id="approval",
                human={
                    "prompt": "Approve {{ state.draft }}?",
                    "schema": {
                        "type": "object",
                        "required": ["approved"],
                        "properties": {"approved": {"type": "boolean"}},
                    },
                },
            ),
            FunctionStep(
                id="final",
                function=f"{H}:identity",
                args={"x": "{{ state.approval.approved }}"},
                when="state.approval.approved",
            ),
        ],
    )
    run_id = await start_run(wf)
    info = await wait_run(run_id, timeout=60)
    assert info.status == "suspended"
    assert info.suspended["prompt"] == "Approve text?"
    with pytest.raises(InputValidationError) as bad:
        await resume_run(run_id, {"approved": "yes"})
    assert "approved" in bad.value.message
    await resume_run(run_id, {"approved": True})
    info = await wait_run(run_id, timeout=60)
    assert info.status == "succeeded", info.error
    assert info.output == {"draft": "text", "approval": {"approved": True}, "final": True}
    with pytest.raises(RunStateError):
        await resume_run(run_id, None)


async def test_cancel_a_running_run():
    wf = Workflow(
        name="cancel_me",
        steps=[fn("timed_sleep", id="long", seconds=120, label="x")],
    )
    run_id = await start_run(wf)
    async for ev in follow_run(run_id):
        if ev.type == "step_started":
            break
    info = await cancel_run(run_id)
    assert info.status == "cancelled"
    assert (await get_run(run_id)).status == "cancelled"
    with pytest.raises(RunStateError):
        await cancel_run(run_id)


async def test_input_is_validated_against_the_workflow_schema():
    wf = Workflow(
        name="typed",
        input_schema={
            "type": "object",
            "required": ["n"],
            "properties": {"n": {"type": "integer"}},
        },
        steps=[fn("identity", x="{{ input.n }}")],
    )
    with pytest.raises(InputValidationError) as err:
        await start_run(wf, {"n": "three"})
    assert "n" in err.value.message


async def test_late_follower_replays_all_events():
    wf = Workflow(name="replay", steps=[fn("identity", id="a", x=1), fn("identity", id="b", x=2)])
    run_id = await start_run(wf)
    await wait_run(run_id, timeout=60)
    await asyncio.sleep(0)
    types = [e.type async for e in follow_run(run_id)]
    assert types[0] == "run_started" and types[-1] == "run_finished"
    assert types.count("step_finished") == 2


async def test_typed_state_and_typed_outputs():
    wf = Workflow(
        name="typed_state",
        state_schema={
            "type": "object",
            "required": ["point", "n"],
            "properties": {
                "point": {"type": "object", "required": ["x", "y"]},
                "n": {"type": "integer"},
            },
        },
        steps=[
            FunctionStep(id="point", function=f"{H}:make_point", args={"x": 1, "y": 2}),
            FunctionStep(id="n", function=f"{H}:identity", args={"x": "{{ input.n }}"}),
        ],
    )
    ok = await wait_run(await start_run(wf, {"n": 3}), timeout=120)
    assert ok.status == "succeeded", ok.error
    assert ok.output == {"point": {"x": 1, "y": 2}, "n": 3}  # a pydantic model, stored as JSON
    bad = await wait_run(await start_run(wf, {"n": "three"}), timeout=120)
    assert bad.status == "failed"
    assert bad.error["code"] == "LUMOS-E012" and "state after step 1.n" in bad.error["message"]


async def test_execute_run_returns_the_ended_run_as_stored():
    """execute_run = start_run + wait_run in one runner call: the run it returns is
    the one in the store (row and events), and a suspending run comes back suspended."""
    wf = Workflow(
        name="exec_once", steps=[fn("identity", id="a", x=1), fn("add_one", id="b", x=41)]
    )
    info = await execute_run(wf, timeout=60)
    assert info.status == "succeeded", info.error
    assert info.output == {"a": 1, "b": 42}
    stored = await get_run(info.id)
    assert (stored.status, stored.output, stored.version) == (
        "succeeded",
        info.output,
        info.version,
    )
    types = [e.type async for e in follow_run(info.id)]
    assert types[0] == "run_started" and types[-1] == "run_finished"
    assert types.count("step_finished") == 2

    asks = Workflow(name="exec_asks", steps=[HumanStep(id="ok", human={"prompt": "ok?"})])
    info = await execute_run(asks, timeout=60)
    assert info.status == "suspended" and info.suspended["prompt"] == "ok?"
    await resume_run(info.id, "yes")
    assert (await wait_run(info.id, timeout=60)).output == {"ok": "yes"}


async def _state_of(run_id: str) -> str:
    """What a run that did not end was doing: its row, checkpoints and the cluster's
    free resources (a failure then says where it hung)."""
    import ray

    row = await get_run(run_id)
    done = [c.path for c in await list_checkpoints(run_id)]
    free, total = ray.available_resources(), ray.cluster_resources()
    return f"run {run_id}: {row.status} {row.error}, checkpoints {done}; free {free} of {total}"


async def test_execute_run_with_the_callers_id_is_a_retry_not_a_second_run():
    wf = Workflow(name="exec_retry", steps=[fn("identity", id="a", x="once")])
    try:
        first = await execute_run(wf, run_id="exec-retry-1", timeout=120)
    except TimeoutError:
        raise AssertionError(await _state_of("exec-retry-1")) from None
    again = await execute_run(wf, run_id="exec-retry-1", timeout=60)
    assert first.id == again.id == "exec-retry-1"
    assert again.status == "succeeded" and again.output == {"a": "once"}
    other = Workflow(name="exec_other", steps=[fn("identity", id="a", x=2)])
    with pytest.raises(RunStateError):
        await execute_run(other, run_id="exec-retry-1", timeout=60)


async def test_a_streaming_agent_step_emits_its_tokens_and_its_turn_is_saved_with_the_run():
    """An agent with ``stream=True`` in a workflow: its token deltas become run events,
    and its turn on the run's own thread is stored by the runner with the step's
    checkpoint (the agent does not save it itself)."""
    from lumos_ray import Agent, AgentStep
    from lumos_ray.store import open_store
    from lumos_ray.testing import ScriptedModel

    agent = Agent(name="streamer", model=ScriptedModel(["three little words"]), stream=True)
    wf = Workflow(
        name="streaming-step",
        agents=[agent],
        steps=[AgentStep(id="say", agent="streamer")],
        output="{{ state.say }}",
    )
    info = await execute_run(wf, "speak", timeout=120)
    assert info.status == "succeeded", info.error
    assert info.output == "three little words"
    deltas = [e.data["delta"] async for e in follow_run(info.id) if e.type == "token"]
    assert "".join(deltas).split() == ["three", "little", "words"]
    thread = f"{info.id}/0.say"
    saved = open_store(tenant_id="default").load_messages_many("streamer", [thread])[thread]
    assert [(m["role"], m["content"]) for m in saved] == [
        ("user", "speak"),
        ("assistant", "three little words"),
    ]
