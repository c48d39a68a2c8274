"""Shared hosting: many agents in one actor process, for density.

A dedicated agent is its own Ray actor: a worker process of ~85 MiB that takes seconds
to start, so a machine holds a few hundred. Most agents are a prompt, a model client
and a few tools, idle most of the time: ``Agent(hosting="shared")`` puts such an agent
in one of its tenant's *host actors* (``LUMOS_AGENT_HOSTS`` per tenant, default 2),
like Serve's model multiplexing puts many models on a few replicas.

What an agent keeps when it is hosted (the actor's guarantees, per agent):

* identity: one :class:`AgentActor` object per (agent, replica) in exactly one host,
  chosen by a stable hash of the name, so every client and runner reaches the same one;
* one turn at a time per thread, and the concurrent-input strategy: that logic lives
  in the :class:`AgentActor` object, unchanged;
* its own state (threads cache, notes, plan slot), in its own object;
* restart: hosts restart like dedicated agents (forever) and retry a turn whose host
  died a bounded number of times; the agent is rebuilt on the new process from the
  spec the call carries, and its threads reload from the store;
* placement: the host pool is placed as a group; an agent that asks for resources or a
  placement of its own is refused shared hosting (it gets its own actor).

Why a reference to the spec travels with every call (put in Ray's object store once per
handle): a restarted host has lost its objects, and rebuilding from the call needs no
"unknown agent" protocol between handle and host. The host fetches the spec only when
it does not hold that agent at that spec fingerprint.
"""

from __future__ import annotations

import os
import zlib
from collections.abc import AsyncIterator
from typing import Any

from lumos_ray.errors import ConfigError

__all__ = ["AgentHost", "HostedAgent", "check_shareable", "host_count", "hosted_agent"]

#: Host actors per tenant (env ``LUMOS_AGENT_HOSTS``).
HOSTS_ENV = "LUMOS_AGENT_HOSTS"
_DEFAULT_HOSTS = 2
_MAX_HOSTS = 256
#: Agents one host holds at most (each costs tens of KiB idle; bound the process).
MAX_AGENTS_PER_HOST = 20_000
#: Threads each hosted agent keeps warm (a dedicated actor keeps up to 100,000): a host
#: holds thousands of agents, so each keeps a smaller cache; the store has the rest.
HOSTED_CACHE_THREADS = 1_000


def host_count() -> int:
    raw = os.environ.get(HOSTS_ENV, "")
    try:
        n = int(raw) if raw else _DEFAULT_HOSTS
    except ValueError:
        raise ConfigError(
            f"{HOSTS_ENV}={raw!r} is not a number.",
            fix=f"Set {HOSTS_ENV} to the number of agent host actors per tenant (1-{_MAX_HOSTS}).",
        ) from None
    if not 1 <= n <= _MAX_HOSTS:
        raise ConfigError(
            f"{HOSTS_ENV}={n} is out of range.",
            fix=f"Set {HOSTS_ENV} between 1 and {_MAX_HOSTS}.",
        )
    return n


def check_shareable(spec: Any) -> None:
    """Shared hosting is for agents that ask for nothing of their own."""
    if spec.resources.ray_options() or spec.placement is not None:
        raise ConfigError(
            f"Agent {spec.name!r} asks for resources or a placement of its own, which "
            "shared hosting cannot give it (its host process is shared).",
            fix="Use hosting='dedicated' (the default) for this agent, or drop its "
            "resources/placement.",
        )


class AgentHost:
    """An async actor holding many agents (``AgentActor`` objects) by key.

    ``agent_cls`` is the AgentActor class, handed in (it travels by reference) so that
    this module and the agent actor's do not import each other."""

    def __init__(self, tenant: str, index: int, agent_cls: type) -> None:
        self.tenant = tenant
        self.index = index
        self._agent_cls = agent_cls
        self._agents: dict[str, tuple[str, Any]] = {}

    async def _agent(self, key: str, fingerprint: str, spec_ref: Any) -> Any:
        held = self._agents.get(key)
        if held is not None and held[0] == fingerprint:
            return held[1]
        from lumos_ray.runtime import await_ref

        spec, replica = await await_ref(spec_ref[0])
        held = self._agents.get(key)  # another call may have built it meanwhile
        if held is not None and held[0] == fingerprint:
            return held[1]
        if held is not None:  # the same agent with a changed spec: reconfigure in place
            held[1]._apply(spec, fingerprint)
            self._agents[key] = (fingerprint, held[1])
            return held[1]
        if len(self._agents) >= MAX_AGENTS_PER_HOST:
            raise ConfigError(
                f"Agent host {self.index} of tenant {self.tenant!r} holds "
                f"{MAX_AGENTS_PER_HOST} agents already.",
                fix=f"Raise {HOSTS_ENV} (host actors per tenant), or stop agents that "
                "are no longer used (AgentHandle.shutdown).",
            )
        agent = self._agent_cls(spec, replica, fingerprint, self.tenant)
        agent.cache_threads = HOSTED_CACHE_THREADS
        self._agents[key] = (fingerprint, agent)
        return agent

    async def call(
        self,
        key: str,
        fingerprint: str,
        blob: list[Any],
        method: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Any:
        """Call ``method`` of the hosted agent ``key`` (built from its spec if absent)."""
        if method.startswith("_") or method in _NOT_FORWARDED:
            raise ConfigError(f"{method!r} is not an agent method that can be called")
        agent = await self._agent(key, fingerprint, blob)
        return await getattr(agent, method)(*args, **kwargs)

    async def call_stream(
        self,
        key: str,
        fingerprint: str,
        blob: list[Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> AsyncIterator[dict[str, Any]]:
        """``run_stream`` of the hosted agent ``key``: its events as they happen."""
        agent = await self._agent(key, fingerprint, blob)
        async for event in agent.run_stream(*args, **kwargs):
            yield event

    async def drop(self, key: str) -> bool:
        """Forget agent ``key`` (after giving back its plan slot); its threads stay in
        the store. False when this host did not hold it."""
        held = self._agents.pop(key, None)
        if held is None:
            return False
        await held[1].release_slot()
        return True

    async def info(self) -> dict[str, Any]:
        return {"pid": os.getpid(), "index": self.index, "agents": len(self._agents)}


#: AgentActor attributes that are not remote methods.
_NOT_FORWARDED = frozenset({"cache_threads", "spec", "model", "tools", "tenant", "replica"})


class _Method:
    """``hosted.run.remote(...)``: the same call shape as an actor method."""

    __slots__ = ("_agent", "_name")

    def __init__(self, agent: HostedAgent, name: str) -> None:
        self._agent, self._name = agent, name

    def remote(self, *args: Any, **kwargs: Any) -> Any:
        a = self._agent
        if self._name == "run_stream":
            return a.host.call_stream.remote(a.key, a.fingerprint, a.blob, args, kwargs)
        return a.host.call.remote(a.key, a.fingerprint, a.blob, self._name, args, kwargs)


class HostedAgent:
    """Stands where a dedicated agent's actor handle stands (``.run.remote(...)``,
    ``.history.remote(...)``, ...), forwarding to the agent in its host."""

    def __init__(self, host: Any, key: str, fingerprint: str, blob: list[Any]) -> None:
        self.host, self.key, self.fingerprint, self.blob = host, key, fingerprint, blob

    def __getattr__(self, name: str) -> _Method:
        if name.startswith("_"):
            raise AttributeError(name)
        return _Method(self, name)

    async def drop(self) -> bool:
        from lumos_ray.runtime import await_ref

        return bool(await await_ref(self.host.drop.remote(self.key)))


#: A host restarts like a dedicated agent by default (RestartPolicy's defaults): forever,
#: retrying a turn whose process died at most twice.
HOST_OPTIONS: dict[str, Any] = {
    "max_restarts": -1,
    "max_task_retries": 2,
    "max_concurrency": 10_000,
}


def _host(tenant: str, index: int, agent_cls: type) -> Any:
    """The tenant's host actor ``index``, created on first use (one lookup per agent
    handle; handles are cached by their users, as for dedicated agents)."""
    from lumos_ray.runtime import get_or_create_actor, remote_class

    return get_or_create_actor(
        f"lumos-agent-host-{index}@{tenant}",
        remote_class(AgentHost),
        tenant,
        index,
        agent_cls,
        options=dict(HOST_OPTIONS),
    )


def hosted_agent(
    spec: Any, replica: int, fingerprint: str, tenant: str, agent_cls: type
) -> HostedAgent:
    """Replica ``replica`` of ``spec`` in its tenant's host pool (``agent_cls``: the
    AgentActor class the host builds it with)."""
    from lumos_ray.runtime import put_object

    check_shareable(spec)
    key = f"{spec.name}/{replica}"
    index = zlib.crc32(key.encode()) % host_count()
    # In a list: Ray resolves a ref passed as a top-level argument on every call; one
    # nested in a list is fetched only when the host awaits it (an agent it lacks).
    blob = [put_object((spec, replica))]
    return HostedAgent(_host(tenant, index, agent_cls), key, fingerprint, blob)
