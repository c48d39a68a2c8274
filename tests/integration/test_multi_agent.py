"""Multi-agent patterns on a real Ray cluster: supervisor (sub-agents as tools, each in
its own actor), handoff, and group chat (round robin and model-selected), run as
durable workflow steps from YAML; a sub-agent's actor killed mid-conversation."""

from __future__ import annotations

import asyncio
import os
import textwrap
import time
from pathlib import Path

import pytest
import ray

from lumos_ray import (
    Agent,
    Workflow,
    list_checkpoints,
    load_workflow,
    replay_run,
    start_run,
    wait_run,
)
from lumos_ray.testing import FunctionModel, ScriptedModel, call_tool, reply
from lumos_ray.tracing import read_jsonl_spans
from lumos_ray.workflows import SupervisorStep

pytestmark = pytest.mark.usefixtures("ray_cluster")

PATTERNS_YAML = """
name: multi_agent_patterns
agents:
  - name: boss
    instructions: Ask your researcher and writer, then report.
    model:
      provider: scripted
      replies:
        - calls:
            - {tool: researcher, args: {request: facts about otters}}
            - {tool: writer, args: {request: a line about otters}}
        - {text: "Report: otters hold hands; otters float."}
  - {name: researcher, model: {provider: scripted, replies: [Otters hold hands asleep.]}}
  - {name: writer, model: {provider: scripted, replies: ["Otters float, paws entwined."]}}
  - name: triage
    model:
      provider: scripted
      replies:
        - {tool: transfer_to_billing, args: {reason: refund}}
        - {text: Passing you to billing.}
  - {name: billing, model: {provider: scripted, replies: [Refund of 5 EUR issued.]}}
  - name: poet
    model: {provider: scripted, replies: [Roses are red., "Roses are red, violets blue."]}
  - {name: critic, model: {provider: scripted, replies: [Too short., APPROVED]}}
  - {name: host, model: {provider: scripted, replies: [critic, "I pick poet."]}}
steps:
  - parallel:
      - id: report
        supervisor: {agent: boss, agents: [researcher, writer], input: "{{ input.question }}"}
      - id: desk
        handoff: {agents: [triage, billing], input: "{{ input.complaint }}", max_handoffs: 2}
      - id: poem
        group_chat:
          agents: [poet, critic]
          keyword: APPROVED
          max_rounds: 6
          input: "{{ input.topic }}"
      - id: picked
        group_chat:
          agents: [poet, critic]
          speaker: model
          selector: host
          max_rounds: 2
          input: "{{ input.topic }}"
"""


def _said(transcript: list[dict]) -> list[tuple]:
    return [(e["agent"], e.get("to"), e["content"]) for e in transcript]


async def test_yaml_patterns_run_durably_with_the_right_transcripts(tmp_path):
    path = tmp_path / "patterns.yaml"
    path.write_text(textwrap.dedent(PATTERNS_YAML))
    wf = load_workflow(path)
    run_id = await start_run(
        wf, {"question": "Tell me about otters", "complaint": "I want a refund", "topic": "roses"}
    )
    info = await wait_run(run_id, timeout=120)
    assert info.status == "succeeded", info.error
    out = info.output

    assert out["report"]["output"] == "Report: otters hold hands; otters float."
    assert _said(out["report"]["transcript"]) == [
        ("user", None, "Tell me about otters"),
        ("boss", "researcher", "facts about otters"),
        ("boss", "writer", "a line about otters"),
        ("researcher", None, "Otters hold hands asleep."),
        ("writer", None, "Otters float, paws entwined."),
        ("boss", None, "Report: otters hold hands; otters float."),
    ]

    desk = out["desk"]
    assert (desk["agent"], desk["handoffs"], desk["output"]) == (
        "billing",
        1,
        "Refund of 5 EUR issued.",
    )
    assert _said(desk["transcript"]) == [
        ("user", None, "I want a refund"),
        ("triage", "billing", "refund"),
        ("triage", None, "Passing you to billing."),
        ("billing", None, "Refund of 5 EUR issued."),
    ]

    poem = out["poem"]
    assert (poem["stopped"], poem["rounds"]) == ("keyword", 4)
    assert _said(poem["transcript"]) == [
        ("user", None, "roses"),
        ("poet", None, "Roses are red."),
        ("critic", None, "Too short."),
        ("poet", None, "Roses are red, violets blue."),
        ("critic", None, "APPROVED"),
    ]

    picked = out["picked"]
    assert (picked["stopped"], picked["rounds"]) == ("max_rounds", 2)
    assert _said(picked["transcript"]) == [
        ("user", None, "roses"),
        ("critic", None, "Too short."),
        ("poet", None, "Roses are red."),
    ]

    # Durable turn by turn: every agent turn is a checkpoint of its own.
    paths = {c.path for c in await list_checkpoints(run_id)}
    assert {
        "0.parallel/0.report/0.boss",
        "0.parallel/1.desk/0.triage",
        "0.parallel/1.desk/1.billing",
        "0.parallel/2.poem/3.critic",
        "0.parallel/3.picked/0.select",
        "0.parallel/3.picked/1.poet",
    } <= paths

    # Replayed from the middle of the round-robin chat (a new run, so new threads): the
    # critic continues with its earlier turn carried into its new thread, so every
    # conversation ends as it did (without it, the critic would start over).
    again_id = await replay_run(run_id, from_step="0.parallel/2.poem/3.critic")
    again = await wait_run(again_id, timeout=120)
    assert again.status == "succeeded", again.error
    assert again.output == out
    redone = {c.path: c.output for c in await list_checkpoints(again_id)}
    assert redone["0.parallel/2.poem/3.critic"]["thread"].startswith(again_id)

    # Each sub-agent ran in its own actor process, under the run's one trace.
    span_dir = os.environ["LUMOS_TRACE_EXPORTER"].removeprefix("jsonl:")

    def run_spans() -> list[dict]:
        spans = read_jsonl_spans(span_dir)
        roots = [s for s in spans if s["attributes"].get("run_id") == run_id]
        trace = roots[0]["trace_id"] if roots else None
        return [s for s in spans if s["trace_id"] == trace]

    def sub_turns(spans: list[dict]) -> list[dict]:
        subs = ("researcher", "writer")
        return [
            s for s in spans if s["name"] == "agent.turn" and s["attributes"].get("agent") in subs
        ]

    deadline = time.time() + 30
    while len(sub_turns(run_spans())) < 2 and time.time() < deadline:
        await asyncio.sleep(0.2)
    spans = run_spans()
    by_id = {s["span_id"]: s for s in spans}
    boss_turn = next(
        s for s in spans if s["name"] == "agent.turn" and s["attributes"]["agent"] == "boss"
    )
    subs = sub_turns(spans)
    assert len(subs) == 2
    for s in subs:
        call = by_id[s["parent_id"]]
        assert call["name"] == "agent.tool_call"
        assert call["attributes"]["tool"] == s["attributes"]["agent"]
        assert by_id[call["parent_id"]] is boss_turn
        assert s["pid"] != boss_turn["pid"]
    assert subs[0]["pid"] != subs[1]["pid"]


def slow_first_worker(messages, tools):
    """The request names a marker file; the first call ever notes its pid and blocks
    (the test kills its actor meanwhile); later calls answer. Module-level: durable
    runs store the model by import path."""
    path = Path(messages[-1]["content"])
    with path.open("a") as f:
        f.write(f"{os.getpid()}\n")
    if len(path.read_text().split()) == 1:
        time.sleep(60)
    return reply("worked")


async def test_sub_agent_actor_killed_mid_conversation_loses_no_turn(tmp_path):
    marker = tmp_path / "worker-calls"
    boss = Agent(
        name="boss",
        model=ScriptedModel([call_tool("worker", request=str(marker)), reply("all done")]),
    )
    worker = Agent(name="worker", model=FunctionModel(slow_first_worker))
    wf = Workflow(
        name="supervised_kill",
        agents=[boss, worker],
        steps=[SupervisorStep(id="sup", supervisor={"agent": "boss", "agents": ["worker"]})],
    )
    run_id = await start_run(wf, "go")
    deadline = time.time() + 60
    while not marker.exists() and time.time() < deadline:
        await asyncio.sleep(0.1)
    assert marker.exists(), "the worker never started its turn"
    ray.kill(ray.get_actor("lumos-agent-worker-0@default"), no_restart=False)

    info = await wait_run(run_id, timeout=120)
    assert info.status == "succeeded", info.error
    assert _said(info.output["sup"]["transcript"]) == [
        ("user", None, "go"),
        ("boss", "worker", str(marker)),
        ("worker", None, "worked"),
        ("boss", None, "all done"),
    ]
    pids = marker.read_text().split()
    assert len(pids) == 2 and pids[0] != pids[1]  # the turn really ran again, elsewhere
