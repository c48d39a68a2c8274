"""Checks of a workflow's agents that span its steps: agents named as tools of other
agents, the multi-agent pattern steps' references, and one spec per agent name.

Run by ``Workflow``'s validator, so a bad definition fails when it is built or
loaded (YAML errors then carry file and line), never halfway through a run. The
steps are read by their fields, not their classes: ``_definition`` imports this
module, so it cannot import ``_definition``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from lumos_ray.actors._agent_tool import MAX_AGENT_DEPTH, is_agent_tool_entry
from lumos_ray.actors.agent import Agent

__all__ = ["check_agents", "handoff_targets"]


def handoff_targets(handoff: Any, name: str) -> list[str]:
    """The agents ``name`` may hand the conversation to in a handoff step."""
    if handoff.routes is None:
        return [n for n in handoff.agents if n != name]
    return list(handoff.routes.get(name, []))


def _where(step: Any) -> str:
    return f"step {step.id!r}" if step.id else f"a {step.kind} step"


def _no_duplicates(names: list[str], what: str, where: str) -> None:
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ValueError(f"{where}: {what} lists {', '.join(map(repr, dup))} more than once")


def _resolve_tool_agents(agent: Agent, by_name: dict[str, Agent], defined: str) -> None:
    """``{agent: NAME}`` / ``{agent: {...}}`` tool entries become Agent specs."""
    for i, item in enumerate(agent.tools):
        if not is_agent_tool_entry(item):
            continue
        ref = item["agent"]
        if isinstance(ref, str):
            if ref not in by_name:
                raise ValueError(
                    f"agent {agent.name!r} lists agent {ref!r} as a tool, which is not defined "
                    f"under `agents` (defined: {defined})"
                )
            agent.tools[i] = by_name[ref]
        elif isinstance(ref, dict):
            sub = Agent.model_validate(ref)
            _resolve_tool_agents(sub, by_name, defined)
            agent.tools[i] = sub
        else:
            raise ValueError(
                f"agent {agent.name!r}: a tool entry `agent:` takes an agent's name or its "
                f"spec, not {type(ref).__name__}"
            )


def _edges(agents: Iterable[Agent], graph: dict[str, set[str]], done: set[int]) -> None:
    """Agent -> the agents it asks as tools, through inline specs too (specs named by
    reference may form a cycle of objects: each is visited once)."""
    for a in agents:
        if id(a) in done:
            continue
        done.add(id(a))
        subs = [t for t in a.tools if isinstance(t, Agent)]
        graph.setdefault(a.name, set()).update(t.name for t in subs)
        _edges(subs, graph, done)


def _check_graph(graph: dict[str, set[str]]) -> None:
    """No agent reaches itself through agents-as-tools, and no chain is too deep."""

    def walk(name: str, path: list[str]) -> None:
        if name in path:
            cycle = " -> ".join([*path[path.index(name) :], name])
            raise ValueError(
                f"agents ask each other as tools in a cycle: {cycle}; a sub-agent must not "
                "(even indirectly) ask the agent that asks it"
            )
        if len(path) > MAX_AGENT_DEPTH:
            raise ValueError(
                f"agents as tools are nested more than {MAX_AGENT_DEPTH} deep: "
                + " -> ".join([*path, name])
            )
        for sub in sorted(graph.get(name, ())):
            walk(sub, [*path, name])

    for name in sorted(graph):
        walk(name, [])


def _describe(sig: tuple[Any, ...]) -> str:
    if not sig:
        return "its own tools"
    return f"its own tools plus {sig[0]} {', '.join(sig[1]) or 'nobody'}"


def check_agents(wf: Any, steps: Iterable[Any]) -> None:
    """Raise ValueError (pydantic reports it with the definition's location) when a
    step names an agent the workflow does not define, a pattern is malformed, one
    agent would need two different specs, or agents ask each other in a cycle."""
    by_name = {a.name: a for a in wf.agents}
    defined = ", ".join(sorted(by_name)) or "none"
    for a in wf.agents:
        _resolve_tool_agents(a, by_name, defined)
    graph: dict[str, set[str]] = {}
    _edges(wf.agents, graph, set())
    # One actor per agent name serves one spec: the tools a pattern adds to an agent
    # must be the same wherever that agent is used.
    uses: dict[str, dict[tuple[Any, ...], str]] = {}

    def need(name: str | None, where: str) -> None:
        if name is not None and name not in by_name:
            raise ValueError(
                f"{where} uses agent {name!r}, which is not defined under `agents` "
                f"(defined: {defined})"
            )

    def use(name: str, sig: tuple[Any, ...], where: str) -> None:
        uses.setdefault(name, {}).setdefault(sig, where)

    for step in steps:
        where = _where(step)
        if isinstance(getattr(step, "agent", None), str):
            use(step.agent, (), where)
        sup = getattr(step, "supervisor", None)
        if sup is not None:
            for n in [sup.agent, *sup.agents]:
                need(n, where)
            _no_duplicates(sup.agents, "supervisor.agents", where)
            if sup.agent in sup.agents:
                raise ValueError(f"{where}: the supervisor {sup.agent!r} is one of its sub-agents")
            use(sup.agent, ("the sub-agents", tuple(sorted(sup.agents))), where)
            for n in sup.agents:
                use(n, (), where)
            graph.setdefault(sup.agent, set()).update(sup.agents)
        ho = getattr(step, "handoff", None)
        if ho is not None:
            for n in ho.agents:
                need(n, where)
            _no_duplicates(ho.agents, "handoff.agents", where)
            for src, dsts in (ho.routes or {}).items():
                for n in [src, *dsts]:
                    if n not in ho.agents:
                        raise ValueError(
                            f"{where}: handoff.routes names {n!r}, which is not one of "
                            f"handoff.agents ({', '.join(ho.agents)})"
                        )
                if src in dsts:
                    raise ValueError(f"{where}: handoff.routes lets {src!r} hand off to itself")
            for n in ho.agents:
                targets = tuple(sorted(handoff_targets(ho, n)))
                use(n, ("handoffs to", targets), where)
        gc = getattr(step, "group_chat", None)
        if gc is not None:
            for n in [*gc.agents, gc.selector]:
                need(n, where)
            _no_duplicates(gc.agents, "group_chat.agents", where)
            for n in [*gc.agents, *([gc.selector] if gc.selector else [])]:
                use(n, (), where)
    for name, sigs in uses.items():
        if len(sigs) > 1:
            (s1, w1), (s2, w2) = list(sigs.items())[:2]
            raise ValueError(
                f"agent {name!r} is used with {_describe(s1)} in {w1} and with "
                f"{_describe(s2)} in {w2}; one agent's actor serves one spec, so define a "
                "second agent (another name) for the other use"
            )
    _check_graph(graph)
