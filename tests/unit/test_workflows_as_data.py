"""Durable runs store workflows as data: import paths, model configs, no code, no keys."""

from __future__ import annotations

import json

import pytest

from lumos_ray import Agent, AgentStep, FunctionStep, IfStep, ParallelStep, Workflow, WorkflowStep
from lumos_ray.actors import OpenAIChatModel
from lumos_ray.errors import ConfigError, WorkflowDefinitionError
from lumos_ray.testing import FunctionModel, ScriptedModel, call_tool, reply
from lumos_ray.workflows._serialize import definition_version, workflow_from_data, workflow_to_data
from tests.unit import _wf_refs


def _wf(model: object, **extra: object) -> Workflow:
    agent = Agent(name="a", model=model, tools=[_wf_refs.shout, "calculator"])
    child = Workflow(
        name="child",
        steps=[FunctionStep(id="c", function="tests.unit._wf_refs:double", args={"x": 1})],
    )
    return Workflow(
        name="wf",
        agents=[agent],
        steps=[
            ParallelStep(
                parallel=[
                    AgentStep(id="ask", agent="a", input="{{ input.q }}"),
                    FunctionStep(id="dbl", function=_wf_refs.double, args={"x": 2}),
                ]
            ),
            IfStep(**{"if": "state.dbl > 1", "then": [WorkflowStep(id="sub", workflow=child)]}),
        ],
        **extra,
    )


def test_round_trip_keeps_the_definition_and_its_version() -> None:
    wf = _wf(ScriptedModel([call_tool("shout", text="hi"), reply("done")]))
    body = workflow_to_data(wf)
    blob = json.dumps(body)  # plain JSON: no objects, no pickles
    assert "tests.unit._wf_refs:double" in blob and "tests.unit._wf_refs:shout" in blob
    back = workflow_from_data(json.loads(blob))
    # functions stay references: they are imported where the step runs (current code)
    assert back.steps[0].parallel[1].function == "tests.unit._wf_refs:double"
    assert back.agents[0].tools[0] is _wf_refs.shout
    assert workflow_to_data(back) == body
    assert definition_version(workflow_to_data(back)) == definition_version(body)


def test_a_changed_definition_gets_a_new_version() -> None:
    a = workflow_to_data(_wf(ScriptedModel([reply("one")])))
    b = workflow_to_data(_wf(ScriptedModel([reply("two")])))
    assert definition_version(a) != definition_version(b)


def test_api_keys_are_never_part_of_the_definition() -> None:
    body = workflow_to_data(
        _wf(OpenAIChatModel("m", "http://127.0.0.1:1/v1", api_key_env="MY_KEY"))
    )
    assert body["agents"][0]["model"] == {
        "provider": "openai",
        "name": "m",
        "base_url": "http://127.0.0.1:1/v1",
        "api_key_env": "MY_KEY",
    }
    with pytest.raises(ConfigError, match="never store secrets") as err:
        workflow_to_data(_wf(OpenAIChatModel("m", api_key="sk-secret")))
    assert "api_key_env" in (err.value.fix or "")


def test_code_that_cannot_be_imported_back_is_refused_with_the_fix() -> None:
    def local(x: int) -> int:
        return x

    wf = Workflow(name="w", steps=[FunctionStep(id="f", function=local)])
    with pytest.raises(WorkflowDefinitionError, match="never code") as err:
        workflow_to_data(wf)
    assert "top level of an importable module" in (err.value.fix or "")
    with pytest.raises(WorkflowDefinitionError, match="import"):
        workflow_to_data(_wf(FunctionModel(lambda m, t: "x")))


def test_function_models_are_stored_by_import_path() -> None:
    body = workflow_to_data(_wf(FunctionModel(_wf_refs.decide)))
    assert body["agents"][0]["model"] == {
        "provider": "function",
        "function": "tests.unit._wf_refs:decide",
    }


def test_step_arguments_that_look_like_an_agent_stay_data() -> None:
    """Only an inline agent's tools are imported back: a function step whose arguments
    happen to have `instructions`/`model`/`tools` keys keeps them as plain data."""
    args = {"instructions": "x", "model": "m", "tools": "pkg.mod:attr"}
    wf = Workflow(
        name="w",
        agents=[Agent(name="a", tools=[_wf_refs.shout])],
        steps=[
            FunctionStep(id="f", function="tests.unit._wf_refs:double", args=args),
            AgentStep(id="inline", agent=Agent(name="b", tools=[_wf_refs.shout])),
        ],
    )
    back = workflow_from_data(json.loads(json.dumps(workflow_to_data(wf))))
    assert back.steps[0].args == args
    assert back.steps[1].agent.tools[0] is _wf_refs.shout
    assert back.agents[0].tools[0] is _wf_refs.shout
