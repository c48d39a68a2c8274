"""Workflow definitions: YAML parsing, line-numbered errors, expressions."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from lumos_ray.errors import WorkflowDefinitionError
from lumos_ray.workflows._definition import (
    IfStep,
    MapStep,
    ParallelStep,
    load_workflow,
)
from lumos_ray.workflows._expr import evaluate, render, truthy

REPO = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "wf.yaml"
    p.write_text(textwrap.dedent(text).lstrip())
    return p


def test_shipped_workflows_load():
    files = sorted((REPO / "configs" / "workflows").glob("*.yaml"))
    files += [REPO / "lumos_ray/templates/project/configs/workflows/hello.yaml"]
    assert files
    for f in files:
        wf = load_workflow(f)
        assert wf.steps and wf.source == str(f.resolve())


def test_all_step_kinds_parse(tmp_path):
    wf = load_workflow(
        write(
            tmp_path,
            """
            name: kinds
            agents: [{name: a, model: test}]
            steps:
              - {id: x, agent: a, input: hi}
              - {id: t, tool: calculator, args: {expression: "1+1"}}
              - {id: f, function: "os.path:join", args: {a: b}}
              - parallel: [{id: p1, tool: calculator, args: {expression: "1"}}]
              - map:
                  over: "input.items"
                  step: {function: "os.path:basename", args: {p: "{{ item }}"}}
              - if: "state.t > 1"
                then: [{id: big, tool: calculator, args: {expression: "1"}}]
              - loop:
                  max_iterations: 2
                  steps: [{id: l, tool: calculator, args: {expression: "1"}}]
              - {id: h, human: {prompt: "ok?", schema: {type: boolean}}}
              - steps: [{id: s1, tool: calculator, args: {expression: "1"}}]
            """,
        )
    )
    kinds = [s.kind for s in wf.steps]
    assert kinds == [
        "agent",
        "tool",
        "function",
        "parallel",
        "map",
        "if",
        "loop",
        "human",
        "sequence",
    ]
    assert isinstance(wf.steps[3], ParallelStep)
    assert isinstance(wf.steps[4], MapStep)
    assert isinstance(wf.steps[5], IfStep) and wf.steps[5].if_ == "state.t > 1"


def test_yaml_syntax_error_names_file_and_line(tmp_path):
    p = write(
        tmp_path,
        """
        name: broken
        steps:
          - id: a
            tool: calculator
            args: {expression: "1"
          - id: b
        """,
    )
    with pytest.raises(WorkflowDefinitionError) as e:
        load_workflow(p)
    msg = e.value.message
    assert msg.startswith(f"{p}:") and "invalid YAML" in msg
    line = int(msg.split(":")[1])
    assert line in (5, 6)


def test_unknown_field_error_points_at_its_line(tmp_path):
    p = write(
        tmp_path,
        """
        name: typo
        steps:
          - id: a
            tool: calculator
          - id: b
            tool: calculator
            retires: 3
        """,
    )
    with pytest.raises(WorkflowDefinitionError) as e:
        load_workflow(p)
    assert f"{p}:7:" in e.value.message
    assert "retires" in e.value.message and "Extra inputs are not permitted" in e.value.message
    assert e.value.details["line"] == 7


def test_step_without_kind_and_undefined_agent(tmp_path):
    p = write(tmp_path, "name: w\nsteps:\n  - id: a\n    retries: 1\n")
    with pytest.raises(WorkflowDefinitionError) as e:
        load_workflow(p)
    assert f"{p}:3:" in e.value.message and "exactly one of" in e.value.message

    p = write(tmp_path, "name: w\nsteps:\n  - {id: a, agent: ghost}\n")
    with pytest.raises(WorkflowDefinitionError) as e:
        load_workflow(p)
    assert "ghost" in e.value.message and "not defined under `agents`" in e.value.message


def test_duplicate_ids_and_loop_needs_a_bound(tmp_path):
    p = write(
        tmp_path,
        "name: w\nsteps:\n  - {id: a, tool: calculator}\n  - {id: a, tool: calculator}\n",
    )
    with pytest.raises(WorkflowDefinitionError, match="duplicate step id 'a'"):
        load_workflow(p)
    p = write(tmp_path, "name: w\nsteps:\n  - loop: {steps: [{tool: calculator}]}\n")
    with pytest.raises(WorkflowDefinitionError, match="max_iterations"):
        load_workflow(p)


def test_missing_file_and_non_mapping(tmp_path):
    with pytest.raises(WorkflowDefinitionError, match="file not found"):
        load_workflow(tmp_path / "nope.yaml")
    p = write(tmp_path, "- just\n- a list\n")
    with pytest.raises(WorkflowDefinitionError, match="must be a mapping"):
        load_workflow(p)


def test_expressions_native_values_text_and_sandbox():
    scope = {"input": {"n": 2}, "state": {"xs": [1, 2, 3], "name": "ray"}}
    assert render("{{ state.xs }}", scope) == [1, 2, 3]
    assert render("hello {{ state.name }}", scope) == "hello ray"
    assert render({"a": ["{{ input.n * 2 }}"]}, scope) == {"a": [4]}
    assert truthy("state.xs | length == 3", scope)
    assert evaluate("input.n + 1", scope) == 3
    assert evaluate("input.items", {"input": {"items": [1]}}) == [1]  # key, not dict.items
    with pytest.raises(WorkflowDefinitionError):
        render("{{ state.missing.deeper }}", scope)
    with pytest.raises(WorkflowDefinitionError):  # sandbox: no dunder escapes
        evaluate("state.__class__.__mro__", scope)
