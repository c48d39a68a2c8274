"""Agents as tools of other agents, and the handoff tools of a handoff conversation.

An :class:`~lumos_ray.actors.agent.Agent` spec listed in another agent's ``tools`` is
called like any tool (a request string in, the sub-agent's answer out), but the
sub-agent runs in its own named actor, found or created the way an ``AgentHandle``
finds it (same name, same tenant, same replica routing), so it keeps an actor's
guarantees: its own process, restart, one turn at a time per thread.

Its thread is derived from the calling tool call's idempotency key (run, parent
thread, persisted history length, input, the call's place in the turn): a retried
parent turn asks the same sub-thread again, and when that sub-thread already holds a
finished answer (the sub-agent answered before the parent died) the answer is reused
instead of asking again. The trace carrier of the tool-call span travels with the
call, so the sub-agent's turn is a child span of the parent's: one trace.

This module imports neither ``agent`` nor ``_agent_actor`` (both depend on it
through the actor's ``_apply``): the actor hands in its ``actor_for`` and
``spec_fingerprint``, and agent specs are recognised as instances of the parent
spec's own class.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import uuid
import zlib
from collections.abc import Callable
from typing import Any

from lumos_ray import tracing
from lumos_ray.errors import ConfigError, LumosError, ToolError
from lumos_ray.tools._api import Tool, ToolContext

__all__ = [
    "MAX_AGENT_DEPTH",
    "agent_tools",
    "handoff_tool",
    "handoff_tool_name",
    "is_agent_tool_entry",
    "sub_thread",
    "tool_name_for",
]

#: Agents calling agents calling agents: deeper than this is refused at call time (a
#: cycle of agents as tools would otherwise recurse until something ran out).
MAX_AGENT_DEPTH = 5
_SEP = ">"  # parent thread > sub-agent: the depth is the number of these


def tool_name_for(agent_name: str) -> str:
    """The tool name an agent is offered under (chat APIs allow [A-Za-z0-9_-]{1,64})."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", agent_name)[:64]


def handoff_tool_name(target: str) -> str:
    return f"transfer_to_{tool_name_for(target)}"[:64]


def sub_thread(parent_thread: str | None, agent_name: str, key: str | None) -> str:
    """The sub-agent's thread for one tool call: the same for a retried call."""
    digest = hashlib.sha256((key or "").encode()).hexdigest()[:16]
    return f"{parent_thread or 'direct'}{_SEP}{agent_name}:{digest}"


def is_agent_tool_entry(item: Any) -> bool:
    """``{"agent": ...}``: an agent listed as a tool in YAML or stored data."""
    return isinstance(item, dict) and set(item) == {"agent"}


def _describe(spec: Any) -> str:
    first = (spec.instructions or "").strip().splitlines()
    about = f" ({first[0][:200]})" if first else ""
    return (
        f"Ask the agent {spec.name!r}{about}. Give it the whole request: it does not "
        "see this conversation. It answers in text."
    )


class _SubAgent:
    """The sub-agent's actors, found once per parent process (a thin ``AgentHandle``)."""

    def __init__(
        self, spec: Any, tenant: str, connect: Callable[..., Any], fingerprint: str
    ) -> None:
        self.spec, self.tenant, self.connect, self.fingerprint = spec, tenant, connect, fingerprint
        self._actors: list[Any] | None = None
        self._lock: asyncio.Lock | None = None

    async def actor(self, thread_id: str) -> Any:
        if self._actors is None:
            if self._lock is None:
                self._lock = asyncio.Lock()
            async with self._lock:
                if self._actors is None:
                    self._actors = await self._find()
        return self._actors[zlib.crc32(thread_id.encode()) % len(self._actors)]

    async def _find(self) -> list[Any]:
        from lumos_ray.runtime import await_ref

        spec, fp = self.spec, self.fingerprint
        # Finding (or creating) named actors is a blocking Ray call: not on the loop.
        actors = await asyncio.to_thread(
            lambda: [self.connect(spec, i, fp, self.tenant) for i in range(spec.replicas)]
        )
        # A same-named actor deployed earlier with another spec takes this one (as
        # AgentHandle.ensure_current does).
        running = await asyncio.gather(*(await_ref(a.current_fingerprint.remote()) for a in actors))
        await asyncio.gather(
            *(
                await_ref(a.reconfigure.remote(spec, fp))
                for a, got in zip(actors, running, strict=True)
                if got != fp
            )
        )
        return actors


def _agent_tool(sub: _SubAgent) -> Tool:
    name = sub.spec.name

    async def ask(request: str, ctx: ToolContext) -> str:
        """Ask the agent.

        Args:
            request: What to ask, with everything the agent needs to know.
        """
        from lumos_ray.runtime import await_ref, is_remote_task_error, unwrap_error

        parent = ctx.thread_id or ""
        if parent.count(_SEP) >= MAX_AGENT_DEPTH:
            raise ToolError(
                f"agent {name!r} was not asked: agents calling agents as tools are nested "
                f"{MAX_AGENT_DEPTH} deep here (thread {parent!r}); answer without it."
            )
        thread = sub_thread(ctx.thread_id, name, ctx.idempotency_key)
        actor = await sub.actor(thread)
        try:
            # A retried parent turn asks the same thread: a finished answer is reused.
            hist = await await_ref(actor.history.remote(thread))
            if hist and hist[-1].get("role") == "assistant" and not hist[-1].get("tool_calls"):
                return str(hist[-1].get("content") or "")
            result = await await_ref(
                actor.run.remote(
                    request,
                    thread,
                    run_id=ctx.run_id,
                    carrier=tracing.inject(),
                    turn_id=uuid.uuid4().hex,  # the same if Ray retries the call
                )
            )
        except Exception as exc:
            if is_remote_task_error(exc) and isinstance(unwrap_error(exc), LumosError):
                raise unwrap_error(exc) from None
            raise
        return str(result.output or "")

    return Tool(ask, name=tool_name_for(name), description=_describe(sub.spec), category="agent")


def agent_tools(
    spec: Any,
    tenant: str | None,
    connect: Callable[..., Any],
    fingerprint: Callable[[Any], str],
) -> list[Any]:
    """``spec.tools`` with every agent spec in it (an instance of ``type(spec)``, or
    ``{"agent": {...}}`` data) turned into a tool that asks that agent in its own
    actor; other entries are left for ``resolve_tools``."""
    agent_cls = type(spec)
    out: list[Any] = []
    for item in spec.tools:
        if is_agent_tool_entry(item):
            if not isinstance(item["agent"], dict):
                raise ConfigError(
                    f"agent {spec.name!r} lists {item!r} as a tool: an agent named as a tool "
                    "must be defined (under the workflow's `agents`, or inline as a mapping).",
                    fix="Write `tools: [{agent: NAME}]` inside a workflow that defines NAME "
                    "under `agents`, or pass the Agent spec itself in Python.",
                )
            item = agent_cls.model_validate(item["agent"])
        if isinstance(item, agent_cls):
            if item.name == spec.name:
                raise ConfigError(f"agent {spec.name!r} lists itself as a tool.")
            item = _agent_tool(_SubAgent(item, tenant or "default", connect, fingerprint(item)))
        out.append(item)
    return out


def handoff_tool(target: str) -> Tool:
    """``transfer_to_<target>``: the model calls it to hand the conversation over. The
    handoff step reads the call from the turn's tool calls; the tool itself only
    tells the model to finish its turn."""

    def transfer(reason: str = "") -> str:
        """Hand the conversation to another agent.

        Args:
            reason: Why, in one line (the other agent sees it).
        """
        return (
            f"Transferred the conversation to {target}. End your turn now with a short "
            f"note for {target}; do not answer the request yourself."
        )

    return Tool(
        transfer,
        name=handoff_tool_name(target),
        description=f"Hand the conversation over to the agent {target!r}, who continues it.",
        category="handoff",
    )
