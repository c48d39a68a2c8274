"""lumos_ray side of ``benchmarks/durable_path.py``: the two tools, the agent and the
one-step workflow (main venv only).

The tools are module attributes, so they pickle by reference and the runner and
agent processes import this module (the benchmark puts this folder on ``sys.path``
before Ray starts, and Ray hands the driver's path to its workers).
"""

from __future__ import annotations

from typing import Any

from durable_agent import SCRIPT, add_impl, multiply_impl

from lumos_ray.tools import tool

AGENT_NAME = "durable-bench"  # the workflow's agent
DIRECT_AGENT_NAME = "durable-bench-direct"  # the same spec called through its handle
WORKFLOW_NAME = "durable_bench"


@tool
def add(a: int, b: int) -> int:
    """Add two integers."""
    return add_impl(a, b)


@tool
def multiply(a: int, b: int) -> int:
    """Multiply two integers."""
    return multiply_impl(a, b)


def make_agent(name: str = AGENT_NAME) -> Any:
    """3 model calls (ScriptedModel: add, multiply, answer) + 2 tool calls per turn.

    The script uses ScriptedModel's data form ({tool, args} / text), so the model is
    plain config when the workflow is registered as data. The direct and the durable
    contender get separate actors (two names, same spec): a handle hands its spec to
    the actor it finds, and two specs taking turns on one actor would measure
    reconfiguration instead of turns."""
    from durable_agent import ANSWER

    from lumos_ray.actors.agent import Agent
    from lumos_ray.testing import ScriptedModel

    script: list[Any] = [{"tool": name, "args": dict(args)} for name, args in SCRIPT]
    return Agent(name=name, model=ScriptedModel([*script, ANSWER]), tools=[add, multiply])


def make_workflow(agent: Any) -> Any:
    """One agent step; the run's output is the agent's answer."""
    from lumos_ray.workflows import AgentStep, Workflow

    return Workflow(
        name=WORKFLOW_NAME,
        agents=[agent],
        steps=[AgentStep(id="answer", agent=agent.name, input="{{ input }}")],
        output="{{ state.answer }}",
    )
