"""lumos_ray side of ``benchmarks/supervisor.py`` (main venv only): the supervisor and
its two sub-agents as Agent specs, and the one-step supervisor workflow.

Tools are the module attributes of ``durable_lumos`` (pickled by reference; the
benchmark puts this folder on ``sys.path`` before Ray starts)."""

from __future__ import annotations

from typing import Any

from durable_lumos import add, multiply
from supervisor_agents import ANSWER, SCRIPTS

WORKFLOW_NAME = "supervisor_bench"


def _model(agent: str) -> Any:
    from lumos_ray.testing import ScriptedModel

    calls: list[Any] = [{"tool": name, "args": dict(args)} for name, args in SCRIPTS[agent]]
    return ScriptedModel([*calls, ANSWER])


def make_agents(boss_name: str = "sup-bench-boss") -> tuple[Any, Any, Any]:
    """(supervisor, researcher, writer). The sub-agents' names are the tool names the
    supervisor's script calls."""
    from lumos_ray.actors.agent import Agent

    researcher = Agent(name="researcher", model=_model("researcher"), tools=[add])
    writer = Agent(name="writer", model=_model("writer"), tools=[multiply])
    boss = Agent(name=boss_name, model=_model("supervisor"))
    return boss, researcher, writer


def make_workflow() -> Any:
    """One supervisor step; the run's output is the supervisor's answer."""
    from lumos_ray.workflows import SupervisorStep, Workflow

    boss, researcher, writer = make_agents()
    return Workflow(
        name=WORKFLOW_NAME,
        agents=[boss, researcher, writer],
        steps=[
            SupervisorStep(
                id="team",
                supervisor={"agent": boss.name, "agents": [researcher.name, writer.name]},
            )
        ],
        output="{{ state.team.output }}",
    )


def make_direct() -> Any:
    """The same supervisor as an agent whose tools are the sub-agent specs, called
    through its handle (no workflow, no checkpoint)."""
    boss, researcher, writer = make_agents("sup-bench-direct")
    return boss.model_copy(update={"tools": [researcher, writer]})
