"""One trace per run, with correct parent/child spans across processes."""

from __future__ import annotations

import asyncio
import os
import time

import pytest

from lumos_ray import Agent, AgentStep, FunctionStep, Workflow, start_run, tool, wait_run
from lumos_ray.testing import ScriptedModel, call_tool, reply
from lumos_ray.tracing import read_jsonl_spans

pytestmark = pytest.mark.usefixtures("ray_cluster")


@tool
def lookup(key: str) -> str:
    """Look a key up.

    Args:
        key: What to look up.
    """
    return key.upper()


async def test_one_trace_per_run_across_runner_agent_and_tasks():
    spec = os.environ["LUMOS_TRACE_EXPORTER"]
    assert spec.startswith("jsonl:")
    span_dir = spec[len("jsonl:") :]
    agent = Agent(
        name="tracer",
        model=ScriptedModel([call_tool("lookup", key="ray"), reply("RAY")]),
        tools=[lookup],
    )
    wf = Workflow(
        name="traced",
        agents=[agent],
        steps=[
            AgentStep(id="ask", agent="tracer", input="look up ray"),
            FunctionStep(id="f", function="tests.integration._wf_helpers:add_one", args={"x": 1}),
        ],
    )
    run_id = await start_run(wf)
    info = await wait_run(run_id, timeout=120)
    assert info.status == "succeeded", info.error

    def run_spans() -> list[dict]:
        spans = read_jsonl_spans(span_dir)
        roots = [
            s
            for s in spans
            if s["name"] == "workflow.run" and s["attributes"].get("run_id") == run_id
        ]
        if not roots:
            return []
        return [s for s in spans if s["trace_id"] == roots[0]["trace_id"]]

    deadline = time.time() + 30
    while not any(s["name"] == "workflow.run" for s in run_spans()) and time.time() < deadline:
        await asyncio.sleep(0.2)
    spans = run_spans()
    by_id = {s["span_id"]: s for s in spans}
    names = sorted(s["name"] for s in spans)
    for expected in (
        "workflow.run",
        "workflow.step",
        "agent.turn",
        "agent.model_call",
        "agent.tool_call",
        "step.function",
    ):
        assert expected in names, names

    def parent(s: dict) -> dict:
        return by_id[s["parent_id"]]

    run = next(s for s in spans if s["name"] == "workflow.run")
    steps = [s for s in spans if s["name"] == "workflow.step"]
    assert {s["attributes"]["step"] for s in steps} == {"0.ask", "1.f"}
    assert all(parent(s) is run for s in steps)
    turn = next(s for s in spans if s["name"] == "agent.turn")
    assert parent(turn)["attributes"]["step"] == "0.ask"
    assert turn["pid"] != run["pid"]  # crossed into the agent actor's process
    for s in spans:
        if s["name"] in ("agent.model_call", "agent.tool_call"):
            assert parent(s) is turn
    fn_span = next(s for s in spans if s["name"] == "step.function")
    assert parent(fn_span)["attributes"]["step"] == "1.f"
    assert fn_span["pid"] not in (run["pid"], turn["pid"])  # a Ray task's worker
    model_calls = [s for s in spans if s["name"] == "agent.model_call"]
    assert len(model_calls) == 2
