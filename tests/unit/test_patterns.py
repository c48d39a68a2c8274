"""Multi-agent patterns without Ray: definitions (Python and YAML), their validation,
the agent-as-tool wrapper, and the pattern logic driven by a fake engine whose agent
turns are scripted (the real engine and actors are in
tests/integration/test_multi_agent.py)."""

from __future__ import annotations

import asyncio
import json
import textwrap
from typing import Any

import pytest
from pydantic import ValidationError

from lumos_ray import Agent, Workflow
from lumos_ray.actors._agent_tool import agent_tools, handoff_tool, sub_thread
from lumos_ray.errors import AgentStepLimitError, ConfigError, WorkflowDefinitionError
from lumos_ray.testing import ScriptedModel
from lumos_ray.workflows import GroupChatStep, HandoffStep, SupervisorStep, load_workflow
from lumos_ray.workflows._patterns import (
    _unseen,
    pick_speaker,
    run_pattern,
    supervisor_transcript,
)
from lumos_ray.workflows._serialize import workflow_from_data, workflow_to_data

M = ScriptedModel(["ok"])


def _agents(*names: str) -> list[Agent]:
    return [Agent(name=n, model=M) for n in names]


def _yaml(tmp_path: Any, text: str) -> Any:
    p = tmp_path / "wf.yaml"
    p.write_text(textwrap.dedent(text))
    return p


AGENTS_YAML = """
agents:
  - {name: boss, model: {provider: scripted, replies: [ok]}}
  - {name: researcher, model: {provider: scripted, replies: [ok]}}
  - {name: writer, model: {provider: scripted, replies: [ok]}}
  - {name: chooser, model: {provider: scripted, replies: [writer]}}
  - {name: triage}
  - {name: billing}
"""


def test_yaml_with_each_pattern_loads_and_survives_storage_as_data(tmp_path):
    wf = load_workflow(
        _yaml(
            tmp_path,
            AGENTS_YAML
            + """
            steps:
              - id: sup
                supervisor: {agent: boss, agents: [researcher, writer], input: "{{ input.q }}"}
              - id: desk
                handoff: {agents: [triage, billing], routes: {triage: [billing]}}
              - id: chat
                group_chat:
                  agents: [researcher, writer]
                  speaker: model
                  selector: chooser
                  max_rounds: 4
                  keyword: DONE
                  until: "round >= 3"
            """.replace("\n            ", "\n"),
        )
    )
    sup, desk, chat = wf.steps
    assert isinstance(sup, SupervisorStep) and sup.supervisor.agents == ["researcher", "writer"]
    assert isinstance(desk, HandoffStep) and desk.handoff.routes == {"triage": ["billing"]}
    assert isinstance(chat, GroupChatStep) and chat.group_chat.selector == "chooser"
    back = workflow_from_data(workflow_to_data(wf))
    assert workflow_to_data(back) == workflow_to_data(wf)


@pytest.mark.parametrize(
    ("step", "message"),
    [
        (
            "supervisor: {agent: boss, agents: [researcher, nobody]}",
            "uses agent 'nobody', which is not defined under `agents`",
        ),
        ("supervisor: {agent: boss, agents: [boss]}", "the supervisor 'boss' is one of its"),
        ("handoff: {agents: [researcher, ghost]}", "uses agent 'ghost'"),
        (
            "handoff: {agents: [researcher, writer], routes: {researcher: [boss]}}",
            "handoff.routes names 'boss', which is not one of handoff.agents",
        ),
        (
            "handoff: {agents: [researcher, writer], routes: {writer: [writer]}}",
            "lets 'writer' hand off to itself",
        ),
        ("handoff: {agents: [researcher]}", "at least 2 items"),
        (
            "group_chat: {agents: [researcher, writer], max_rounds: 0}",
            "max_rounds is 0: a group chat needs at least 1 round",
        ),
        ("group_chat: {agents: [researcher, writer], speaker: model}", "needs `selector`"),
        (
            "group_chat: {agents: [researcher, writer], speaker: model, selector: judge}",
            "uses agent 'judge'",
        ),
        ("group_chat: {agents: [researcher, writer], until: 'round >'}", "invalid expression"),
        ("group_chat: {agents: [writer, writer]}", "lists 'writer' more than once"),
    ],
)
def test_bad_pattern_definitions_name_the_problem_and_the_line(tmp_path, step, message):
    path = _yaml(tmp_path, AGENTS_YAML + "steps:\n  - id: s\n    " + step + "\n")
    with pytest.raises(WorkflowDefinitionError) as err:
        load_workflow(path)
    assert message in err.value.message
    assert err.value.message.startswith(f"{path}:")


def test_agents_asking_each_other_in_a_cycle_is_refused(tmp_path):
    path = _yaml(
        tmp_path,
        """
        agents:
          - {name: a, tools: [{agent: b}]}
          - {name: b, tools: [{agent: c}]}
          - {name: c, tools: [{agent: a}]}
        steps:
          - {id: s, agent: a}
        """,
    )
    with pytest.raises(WorkflowDefinitionError, match="in a cycle: a -> b -> c -> a"):
        load_workflow(path)


def test_a_supervisor_whose_sub_agent_asks_it_back_is_a_cycle():
    boss, r = _agents("boss", "r")
    r.tools = [boss]
    with pytest.raises(ValidationError, match="cycle: boss -> r -> boss"):
        Workflow(
            name="w",
            agents=[boss, r],
            steps=[SupervisorStep(supervisor={"agent": "boss", "agents": ["r"]})],
        )


def test_an_agent_named_as_a_tool_must_be_defined(tmp_path):
    path = _yaml(tmp_path, "agents:\n  - {name: a, tools: [{agent: zz}]}\nsteps:\n  - agent: a\n")
    with pytest.raises(WorkflowDefinitionError, match="lists agent 'zz' as a tool, which is not"):
        load_workflow(path)


def test_one_agent_with_two_different_tool_sets_is_refused():
    with pytest.raises(ValidationError, match="'boss' is used with its own tools plus the sub"):
        Workflow(
            name="w",
            agents=_agents("boss", "r"),
            steps=[
                SupervisorStep(id="a", supervisor={"agent": "boss", "agents": ["r"]}),
                {"id": "b", "agent": "boss"},
            ],
        )


def test_agent_named_as_tool_becomes_its_spec_and_round_trips_as_data(tmp_path):
    wf = load_workflow(
        _yaml(
            tmp_path,
            """
            agents:
              - {name: boss, tools: [calculator, {agent: helper}]}
              - {name: helper, instructions: "Answers questions."}
            steps:
              - {id: s, agent: boss}
            """,
        )
    )
    boss = wf.agent("boss")
    assert boss.tools[0] == "calculator" and boss.tools[1] is wf.agent("helper")
    data = workflow_to_data(wf)
    assert data["agents"][0]["tools"][1]["agent"]["name"] == "helper"
    back = workflow_from_data(data)
    assert isinstance(back.agent("boss").tools[1], Agent)
    assert back.agent("boss").tools[1].instructions == "Answers questions."


def _connect(*_a: Any) -> Any:
    raise AssertionError("no actor is made until the tool is called")


def test_agent_tool_wrapper_offers_the_agent_as_a_request_tool():
    helper = Agent(name="help.desk", instructions="Knows the refund policy.\nMore.", model=M)
    boss = Agent(name="boss", model=M, tools=[helper, "calculator", {"agent": {"name": "x"}}])
    tools = agent_tools(boss, "t1", _connect, lambda s: "fp")
    assert tools[1] == "calculator"
    schema = tools[0].openai_schema()["function"]
    assert schema["name"] == "help_desk"
    assert "Knows the refund policy." in schema["description"]
    assert schema["parameters"]["required"] == ["request"]
    assert tools[2].name == "x"
    with pytest.raises(ConfigError, match="lists itself as a tool"):
        agent_tools(Agent(name="me", tools=[Agent(name="me")]), None, _connect, str)


def test_sub_thread_is_the_same_for_a_retried_call_and_differs_per_call():
    a = sub_thread("run/0.s", "helper", "turnkey:1:0:helper")
    assert a == sub_thread("run/0.s", "helper", "turnkey:1:0:helper")
    assert a != sub_thread("run/0.s", "helper", "turnkey:1:1:helper")
    assert a.startswith("run/0.s>helper:")


def test_handoff_tool_tells_the_model_to_end_its_turn():
    t = handoff_tool("billing")
    assert t.name == "transfer_to_billing"
    assert "Transferred the conversation to billing" in t.call({"reason": "refund"})


def test_pick_speaker_reads_the_selectors_answer():
    names = ["writer", "critic"]
    assert pick_speaker(" Critic. ", names) == "critic"
    assert pick_speaker("I think writer should go, then critic", names) == "writer"
    assert pick_speaker("nobody", names) is None
    assert pick_speaker(None, names) is None


def test_unseen_messages_are_labelled_by_speaker():
    t = [
        {"agent": "user", "content": "hi"},
        {"agent": "a", "content": "one"},
        {"agent": "a", "to": "b", "content": "refund"},
    ]
    assert _unseen(t, 0, "a") == "hi"
    assert _unseen(t, 0, "b") == "user: hi\n\na: one\n\n[a handed the conversation to b (refund)]"
    assert _unseen(t, 3, "b") == "(nothing new was said)"


def test_supervisor_transcript_pairs_requests_with_answers():
    msgs = [
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "c1", "function": {"name": "r", "arguments": '{"request": "find"}'}},
                {"id": "c2", "function": {"name": "calculator", "arguments": "{}"}},
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "found"},
        {"role": "tool", "tool_call_id": "c2", "content": "4"},
        {"role": "assistant", "content": "done"},
    ]
    assert supervisor_transcript("boss", msgs, {"r": "r"}) == [
        {"agent": "boss", "to": "r", "content": "find"},
        {"agent": "r", "content": "found"},
        {"agent": "boss", "content": "done"},
    ]


# -- the pattern logic on a fake engine: each agent turn scripted by agent name ----------
class FakeEngine:
    """Runs turns with a script instead of actors; records what each agent was told."""

    run_id = "run1"
    tenant = None

    def __init__(self, script: dict[str, list[dict[str, Any]]]) -> None:
        self.script = {k: list(v) for k, v in script.items()}
        self.told: list[tuple[str, str, str]] = []
        self.done: dict[str, Any] = {}
        self.events: list[tuple[str, dict[str, Any]]] = []

    def emit(self, kind: str, data: dict[str, Any]) -> None:
        self.events.append((kind, data))

    async def _step(
        self, wf: Workflow, step: Any, scope: dict[str, Any], path: str, keep: bool = True
    ) -> Any:
        name = step.agent.name
        self.told.append((name, scope["turn_input"], path))
        turn = self.script[name].pop(0)
        calls = turn.get("calls", [])
        return {
            "output": turn.get("text"),
            "calls": [c for c, _ in calls],
            "messages": [
                {"role": "user", "content": scope["turn_input"]},
                {
                    "role": "assistant",
                    "content": turn.get("text"),
                    "tool_calls": [
                        {"id": f"x{i}", "function": {"name": c, "arguments": json.dumps(a)}}
                        for i, (c, a) in enumerate(calls)
                    ],
                },
            ],
        }


def _run(engine: FakeEngine, wf: Workflow, step: Any, input: Any = "q") -> Any:
    return asyncio.run(run_pattern(engine, wf, step, {"input": input, "state": {}}, "0.s"))


def test_handoff_passes_the_transcript_to_the_receiving_agent():
    wf = Workflow(
        name="w",
        agents=_agents("triage", "billing"),
        steps=[HandoffStep(id="s", handoff={"agents": ["triage", "billing"]})],
    )
    eng = FakeEngine(
        {
            "triage": [{"calls": [("transfer_to_billing", {"reason": "refund"})], "text": "bye"}],
            "billing": [{"text": "refunded"}],
        }
    )
    out = _run(eng, wf, wf.steps[0], "my refund")
    assert out["agent"] == "billing" and out["output"] == "refunded" and out["handoffs"] == 1
    assert out["transcript"] == [
        {"agent": "user", "content": "my refund"},
        {"agent": "triage", "to": "billing", "content": "refund"},
        {"agent": "triage", "content": "bye"},
        {"agent": "billing", "content": "refunded"},
    ]
    assert eng.told[1] == (
        "billing",
        "user: my refund\n\n[triage handed the conversation to billing (refund)]\n\ntriage: bye",
        "0.s/1.billing",
    )
    # The derived spec carries the transfer tools; the workflow's own spec does not.
    assert [getattr(t, "name", t) for t in wf.steps[0]._specs["triage"].tools] == [
        "transfer_to_billing"
    ]
    assert wf.agent("triage").tools == []


def test_handoffs_beyond_the_bound_fail_with_the_chain():
    wf = Workflow(
        name="w",
        agents=_agents("a", "b"),
        steps=[HandoffStep(id="s", handoff={"agents": ["a", "b"], "max_handoffs": 2})],
    )
    ping = {"calls": [("transfer_to_b", {})], "text": ""}
    pong = {"calls": [("transfer_to_a", {})], "text": ""}
    eng = FakeEngine({"a": [ping, ping], "b": [pong, pong]})
    with pytest.raises(AgentStepLimitError, match=r"max_handoffs=2 times \(a -> b -> a -> b\)"):
        _run(eng, wf, wf.steps[0])


def test_round_robin_group_chat_stops_at_the_keyword():
    wf = Workflow(
        name="w",
        agents=_agents("writer", "critic"),
        steps=[
            GroupChatStep(
                id="s", group_chat={"agents": ["writer", "critic"], "keyword": "APPROVED"}
            )
        ],
    )
    eng = FakeEngine(
        {
            "writer": [{"text": "draft 1"}, {"text": "draft 2"}],
            "critic": [{"text": "too long"}, {"text": "APPROVED"}],
        }
    )
    out = _run(eng, wf, wf.steps[0], "a poem")
    assert [(e["agent"], e["content"]) for e in out["transcript"]] == [
        ("user", "a poem"),
        ("writer", "draft 1"),
        ("critic", "too long"),
        ("writer", "draft 2"),
        ("critic", "APPROVED"),
    ]
    assert out["stopped"] == "keyword" and out["rounds"] == 4
    assert eng.told[2] == ("writer", "critic: too long", "0.s/2.writer")


def test_model_selected_group_chat_falls_back_in_turn_and_stops_on_until():
    wf = Workflow(
        name="w",
        agents=_agents("a", "b", "sel"),
        steps=[
            GroupChatStep(
                id="s",
                group_chat={
                    "agents": ["a", "b"],
                    "speaker": "model",
                    "selector": "sel",
                    "until": "message.agent == 'a' and round > 1",
                },
            )
        ],
    )
    eng = FakeEngine(
        {
            "sel": [{"text": "b"}, {"text": "no idea"}],
            "a": [{"text": "from a"}],
            "b": [{"text": "from b"}],
        }
    )
    out = _run(eng, wf, wf.steps[0])
    assert [e["agent"] for e in out["transcript"]] == ["user", "b", "a"]
    assert out["stopped"] == "until" and out["rounds"] == 2
    assert [k for k, _ in eng.events] == ["speaker_fallback"]
    assert [p for _, _, p in eng.told] == ["0.s/0.select", "0.s/0.b", "0.s/1.select", "0.s/1.a"]
