"""Workflows as data: what the run store keeps instead of code.

A durable run must survive an upgrade and must not let whoever writes a row run code
on the cluster, so the store never holds pickles. A workflow becomes a JSON body:

- functions (``function:`` steps, tools that are not built-in) become import paths
  ``package.module:attr``; they are imported where the step executes, so a resumed
  run uses the code deployed *now* (finished steps are not re-executed);
- chat models become their config (``ModelConfig``); API keys are never part of it:
  they are read from an environment variable (``api_key_env``) at execution time;
- nested workflows are inlined.

The version is a content hash of that body, so (name, version) always means the
same definition. ``workflow_from_data`` turns a body back into a ``Workflow``.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from lumos_ray._imports import function_ref, import_object
from lumos_ray.errors import WorkflowDefinitionError
from lumos_ray.workflows._definition import Workflow

__all__ = ["definition_version", "workflow_from_data", "workflow_to_data"]

# Bound on a stored definition: a workflow is configuration, not a data payload.
MAX_DEFINITION_BYTES = 1_000_000


def _tool_to_data(item: Any) -> Any:
    from lumos_ray.actors.agent import Agent
    from lumos_ray.tools import Tool, get_tool

    if isinstance(item, str):
        return item
    if isinstance(item, Agent):  # an agent asked as a tool: its spec, as data
        return {"agent": _agent_to_data(item)}
    if not isinstance(item, Tool):
        if callable(item):
            return {"function": function_ref(item, "tool function")}
        raise WorkflowDefinitionError(f"cannot use {item!r} as a tool")
    try:
        if get_tool(item.name) is item:  # built-in, plugin or registered by name
            return item.name
    except Exception:
        pass
    try:
        return function_ref(item, f"tool {item.name!r}")  # a module-level @tool
    except WorkflowDefinitionError:
        pass
    data: dict[str, Any] = {"function": function_ref(item.fn, f"tool {item.name!r}")}
    for key in ("name", "description", "num_cpus", "num_gpus", "memory", "resources"):
        value = getattr(item, key, None)
        if value is not None:
            data[key] = value
    return data


def _tool_from_data(item: Any) -> Any:
    from lumos_ray.tools import Tool

    if isinstance(item, str) and ":" in item:
        return import_object(item)
    if isinstance(item, dict) and isinstance(item.get("agent"), dict):  # an agent as a tool
        return {"agent": _agent_from_data(item["agent"])}
    if isinstance(item, dict) and "function" in item:
        opts = {k: v for k, v in item.items() if k != "function"}
        return Tool(import_object(item["function"]), **opts)
    return item


def _agent_to_data(agent: Any) -> dict[str, Any]:
    from lumos_ray.actors.models import model_to_config

    data = agent.model_dump(mode="json", exclude={"model", "tools"}, exclude_defaults=True)
    data["model"] = model_to_config(agent.model, agent=agent.name)
    data["tools"] = [_tool_to_data(t) for t in agent.tools]
    return data


def _step_to_data(step: Any) -> dict[str, Any]:
    from lumos_ray.actors.agent import Agent
    from lumos_ray.workflows import _definition as d

    data = step.model_dump(
        mode="json",
        by_alias=True,
        exclude_defaults=True,
        exclude={"agent", "function", "workflow", "steps", "parallel", "map", "then", "else_"}
        | ({"loop"} if isinstance(step, d.LoopStep) else set()),
    )
    if isinstance(step, d.AgentStep):
        data["agent"] = _agent_to_data(step.agent) if isinstance(step.agent, Agent) else step.agent
    elif isinstance(step, d.FunctionStep):
        fn = step.function
        data["function"] = (
            fn if isinstance(fn, str) else function_ref(fn, f"function of step {step.id!r}")
        )
    elif isinstance(step, d.WorkflowStep):
        child = step.workflow
        if isinstance(child, str):
            try:  # inline what the client can resolve: the run then carries it as data
                child = d.get_workflow(child)
            except Exception:
                data["workflow"] = child
        if not isinstance(child, str):
            data["workflow"] = workflow_to_data(child)
    elif isinstance(step, d.SequenceStep):
        data["steps"] = [_step_to_data(s) for s in step.steps]
    elif isinstance(step, d.ParallelStep):
        data["parallel"] = [_step_to_data(s) for s in step.parallel]
    elif isinstance(step, d.MapStep):
        data["map"] = {
            **step.map.model_dump(mode="json", exclude={"step"}, exclude_defaults=True),
            "step": _step_to_data(step.map.step),
        }
    elif isinstance(step, d.IfStep):
        data["then"] = [_step_to_data(s) for s in step.then]
        data["else"] = [_step_to_data(s) for s in step.else_]
    elif isinstance(step, d.LoopStep):
        data["loop"] = {
            **step.loop.model_dump(mode="json", exclude={"steps"}, exclude_defaults=True),
            "max_iterations": step.loop.max_iterations,
            "steps": [_step_to_data(s) for s in step.loop.steps],
        }
    return data


def workflow_to_data(wf: Workflow) -> dict[str, Any]:
    """The workflow as a JSON-safe body (no code, no secrets)."""
    body = wf.model_dump(mode="json", exclude={"agents", "steps", "source"}, exclude_defaults=True)
    body["name"] = wf.name
    body["agents"] = [_agent_to_data(a) for a in wf.agents]
    body["steps"] = [_step_to_data(s) for s in wf.steps]
    return body


def _agent_from_data(agent: dict[str, Any]) -> dict[str, Any]:
    return {**agent, "tools": [_tool_from_data(t) for t in agent.get("tools", [])]}


def _revive_body(body: dict[str, Any]) -> dict[str, Any]:
    """A stored workflow body with its tool references turned back into objects."""
    return {
        **body,
        "agents": [_agent_from_data(a) for a in body.get("agents", [])],
        "steps": [_revive_step(s) for s in body.get("steps", [])],
    }


def _revive_step(step: Any) -> Any:
    """Walk a stored step by its structure (the mirror of ``_step_to_data``): only an
    inline agent's tools and nested steps are revived; arguments and inputs stay data."""
    if not isinstance(step, dict):
        return step
    out = dict(step)
    if isinstance(step.get("agent"), dict):
        out["agent"] = _agent_from_data(step["agent"])
    if isinstance(step.get("workflow"), dict):
        out["workflow"] = _revive_body(step["workflow"])
    for key in ("steps", "parallel", "then", "else"):
        if isinstance(step.get(key), list):
            out[key] = [_revive_step(s) for s in step[key]]
    if isinstance(step.get("map"), dict):
        out["map"] = {**step["map"], "step": _revive_step(step["map"].get("step"))}
    if isinstance(step.get("loop"), dict):
        loop = step["loop"]
        out["loop"] = {**loop, "steps": [_revive_step(s) for s in loop.get("steps", [])]}
    return out


def workflow_from_data(body: dict[str, Any]) -> Workflow:
    """A ``Workflow`` from a stored body (imports the functions it references)."""
    return Workflow.model_validate(_revive_body(body))


def definition_version(body: dict[str, Any]) -> str:
    """Content hash of a body: the same definition always gets the same version."""
    blob = json.dumps(body, sort_keys=True, separators=(",", ":"), default=str).encode()
    if len(blob) > MAX_DEFINITION_BYTES:
        raise WorkflowDefinitionError(
            f"workflow {body.get('name')!r} is {len(blob)} bytes as data; the limit is "
            f"{MAX_DEFINITION_BYTES}.",
            fix="Keep large data out of the definition: pass it as run input, or load it "
            "in a function step.",
        )
    return hashlib.sha256(blob).hexdigest()[:16]
