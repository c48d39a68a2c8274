"""Agent specs and the client-side handle to their actors.

An :class:`Agent` is a pydantic spec (the same in Python and YAML). ``deploy()``
gives an :class:`AgentHandle`: it finds or creates the agent's actor replicas (named,
so every client and the runner share them) and routes each thread to one replica, so
a thread's history stays warm in one process while sessions scale past processes.
"""

from __future__ import annotations

import asyncio
import re
import uuid
import zlib
from collections.abc import AsyncIterator
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from lumos_ray.actors._agent_loop import AgentResult
from lumos_ray.actors._concurrency import ConcurrentInput
from lumos_ray.actors.models import ChatModel, ModelConfig
from lumos_ray.runtime import Placement

__all__ = ["Agent", "AgentHandle", "AgentResult", "MemoryConfig", "Resources", "RestartPolicy"]

_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,99}$")


class Resources(BaseModel):
    """Ray resources for an actor or task (None = Ray's default)."""

    model_config = ConfigDict(extra="forbid")

    num_cpus: float | None = Field(default=None, ge=0)
    num_gpus: float | None = Field(default=None, ge=0)
    memory: int | None = Field(default=None, ge=0, description="Bytes.")
    resources: dict[str, float] = Field(default_factory=dict)

    def ray_options(self) -> dict[str, Any]:
        opts: dict[str, Any] = {
            k: v for k, v in self.model_dump(exclude={"resources"}).items() if v is not None
        }
        if self.resources:
            opts["resources"] = dict(self.resources)
        return opts


class RestartPolicy(BaseModel):
    """What Ray does when the agent's process dies: restart it and retry the call.

    The process is restarted for as long as it keeps dying (other sessions need it),
    but one turn is retried a bounded number of times: a turn whose input crashes
    the process (a tool exhausting memory, a native crash) would otherwise be a
    crash loop that takes every session of the actor down with it, forever. Tool
    calls carry an idempotency key, so a retried turn does not repeat side effects.
    """

    model_config = ConfigDict(extra="forbid")

    max_restarts: int = Field(default=-1, ge=-1, description="-1 = forever.")
    max_task_retries: int = Field(
        default=2,
        ge=0,
        le=100,
        description="Retries of a turn whose actor died (bounded: a turn that kills the "
        "process every time must end, not loop).",
    )


class MemoryConfig(BaseModel):
    """What an agent remembers: the thread's history, working notes, and (opt-in)
    semantic recall over past threads and summaries of what left the window."""

    model_config = ConfigDict(extra="forbid")

    history: bool = Field(default=True, description="Keep conversation history per thread.")
    persist: bool = Field(default=True, description="Persist history in the run store.")
    max_messages: int | None = Field(
        default=100, ge=1, description="Most recent history messages sent to the model."
    )
    working: bool = Field(
        default=False,
        description="Working memory: `remember`/`forget` tools whose notes (per thread, "
        "persisted) are shown to the model in its instructions.",
    )
    semantic: bool = Field(
        default=False,
        description="Semantic memory: each turn (user message and answer) is written, in "
        "the background, to a memory collection of the RAG pool, and recalled by meaning "
        "in later turns of any thread of the same agent (or tenant, see `scope`).",
    )
    scope: Literal["agent", "tenant"] = Field(
        default="agent",
        description="Whose past threads semantic memory recalls: this agent's, or every "
        "agent's of the tenant that also has scope 'tenant'. Never another tenant's.",
    )
    recall: Literal["auto", "tool"] = Field(
        default="auto",
        description="auto: before each turn the input is searched and the best passages "
        "are shown in the instructions; tool: the model calls a `recall` tool itself.",
    )
    recall_k: int = Field(default=3, ge=1, le=20, description="Passages recalled at most.")
    recall_timeout_s: float = Field(
        default=2.0,
        gt=0,
        le=60,
        description="How long auto recall may hold up a turn; past it the turn goes on "
        "without recall.",
    )
    summarize: bool = Field(
        default=False,
        description="Keep a running summary (written by the agent's model, after the turn, "
        "in the background) of the messages that fell out of the `max_messages` window, "
        "and show it in the instructions.",
    )
    summary_max_chars: int = Field(default=2000, ge=100, le=20_000)
    backend: str = Field(
        default="lumos_ray.rag._agent_memory:open_memory",
        description="'module:function(tenant, collection)' returning the semantic-memory "
        "backend (default: the RAG pool).",
    )


class Agent(BaseModel):
    """An agent: instructions, a model, tools, memory and how it runs on Ray."""

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    name: str
    instructions: str = ""
    model: ChatModel | ModelConfig | str = "test"
    tools: list[Any] = Field(
        default_factory=list,
        description="Tool names, Tools, functions, or Agent specs (each asked as a tool in "
        "its own actor).",
    )
    memory: MemoryConfig = Field(default_factory=MemoryConfig)
    max_steps: int = Field(default=10, ge=1, description="Model calls per turn at most.")
    max_tool_retries: int = Field(
        default=3, ge=0, description="Tool errors per turn before tools are withdrawn."
    )
    step_timeout_s: float | None = Field(
        default=120.0, gt=0, description="Timeout of each model call and tool call."
    )
    stream: bool = Field(default=False, description="Stream model tokens as run events.")
    tool_settings: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="Explicit relaxations for tools, e.g. {'http': {'allow_private': True}}.",
    )
    workspace: str | None = Field(
        default=None, description="Root the file tools are confined to (default: LUMOS_HOME)."
    )
    resources: Resources = Field(default_factory=Resources)
    placement: Placement | None = Field(
        default=None,
        description="Where the agent's actors run: custom resources, node labels, a node, "
        "or spread (see docs/operations.md).",
    )
    restart: RestartPolicy = Field(default_factory=RestartPolicy)
    replicas: int = Field(default=1, ge=1, description="Actor replicas (threads are sharded).")
    hosting: Literal["dedicated", "shared"] = Field(
        default="dedicated",
        description="'dedicated': the agent is its own Ray actor (a process). 'shared': "
        "it lives with many others in one of its tenant's host actors (LUMOS_AGENT_HOSTS "
        "per tenant): thousands fit on a machine and a new one answers at once; for "
        "agents that ask for no resources or placement of their own.",
    )
    concurrent_input: ConcurrentInput = Field(
        default="enqueue",
        description="What a new input on a thread whose turn is still running does: "
        "'reject' (fails with ThreadBusyError), 'enqueue' (runs after it), 'interrupt' "
        "(cancels it, keeping its messages so far marked interrupted) or 'rollback' "
        "(cancels it, keeping nothing). Overridable per call.",
    )

    @field_validator("name")
    @classmethod
    def _check_name(cls, v: str) -> str:
        if not _NAME.match(v):
            raise ValueError(
                "must start with a letter and contain only letters, digits, '_', '.', '-'"
            )
        return v

    @model_validator(mode="after")
    def _check_hosting(self) -> Agent:
        if self.hosting == "shared" and (self.resources.ray_options() or self.placement):
            raise ValueError(
                "hosting='shared' puts the agent in a shared host process, which cannot "
                "give it resources or a placement of its own: use hosting='dedicated' "
                "(the default) or drop resources/placement"
            )
        return self

    def deploy(self) -> AgentHandle:
        """Find or create this agent's actors on the cluster."""
        return AgentHandle(self)


class AgentHandle:
    """Routes turns to the agent's actor replicas (thread id -> replica)."""

    def __init__(self, spec: Agent, *, tenant: str | None = None) -> None:
        from lumos_ray.actors._agent_actor import actor_for, spec_fingerprint
        from lumos_ray.runtime import current_settings

        self.spec = spec
        self.tenant = tenant or current_settings().tenant_id
        self.fingerprint = spec_fingerprint(spec)
        self._actors = [
            actor_for(spec, i, self.fingerprint, self.tenant) for i in range(spec.replicas)
        ]
        self._current = False
        self._current_lock: asyncio.Lock | None = None

    def actor(self, thread_id: str) -> Any:
        return self._actors[zlib.crc32(thread_id.encode()) % len(self._actors)]

    async def ensure_current(self) -> None:
        """Actors are found by name, so one deployed earlier with another spec (new
        instructions, model or tools under the same name) would keep serving the old
        one: the first call through this handle hands it the new spec. One round trip
        per replica, once per handle."""
        if self._current:
            return
        # One check for all first calls: two inputs sent at once through a new handle
        # reach the actor in the order they were sent (concurrent_input depends on it).
        if self._current_lock is None:
            self._current_lock = asyncio.Lock()
        async with self._current_lock:
            if not self._current:
                running = await asyncio.gather(*self._fingerprint_refs())
                await asyncio.gather(*self._reconfigure_refs(running))
                self._current = True

    def _ensure_current_sync(self) -> None:
        from lumos_ray.runtime import get_refs

        if not self._current:
            get_refs(self._reconfigure_refs(get_refs(self._fingerprint_refs())))
            self._current = True

    def _fingerprint_refs(self) -> list[Any]:
        return [a.current_fingerprint.remote() for a in self._actors]

    def _reconfigure_refs(self, running: list[str]) -> list[Any]:
        return [
            a.reconfigure.remote(self.spec, self.fingerprint)
            for a, fp in zip(self._actors, running, strict=True)
            if fp != self.fingerprint
        ]

    async def run(
        self,
        input: str | dict[str, Any],
        *,
        thread_id: str | None = None,
        run_id: str | None = None,
        carrier: dict[str, str] | None = None,
        concurrent_input: ConcurrentInput | None = None,
    ) -> AgentResult:
        """One turn: the model and tools loop until the model answers.

        ``concurrent_input`` overrides the agent's setting for this input (what it does
        if the thread's previous turn is still running): 'reject' raises
        ThreadBusyError, 'enqueue' waits, 'interrupt'/'rollback' cancel the running turn
        (whose caller gets TurnInterruptedError)."""
        from lumos_ray import tracing
        from lumos_ray.errors import LumosError
        from lumos_ray.runtime import is_remote_task_error, unwrap_error

        thread_id = thread_id or uuid.uuid4().hex
        _check_concurrent(concurrent_input)
        await self.ensure_current()
        try:
            result: AgentResult = await self.actor(thread_id).run.remote(
                input,
                thread_id,
                run_id=run_id,
                carrier=carrier or tracing.inject(),
                concurrent_input=concurrent_input,
                turn_id=uuid.uuid4().hex,  # the same in a retry: the turn is not run twice
            )
        except Exception as exc:  # our own errors arrive as themselves, not a traceback
            if is_remote_task_error(exc) and isinstance(unwrap_error(exc), LumosError):
                raise unwrap_error(exc) from None
            raise
        return result

    def run_sync(
        self,
        input: str | dict[str, Any],
        *,
        thread_id: str | None = None,
        concurrent_input: ConcurrentInput | None = None,
    ) -> AgentResult:
        from lumos_ray import tracing
        from lumos_ray.runtime import get_refs

        thread_id = thread_id or uuid.uuid4().hex
        _check_concurrent(concurrent_input)
        self._ensure_current_sync()
        ref = self.actor(thread_id).run.remote(
            input,
            thread_id,
            carrier=tracing.inject(),
            concurrent_input=concurrent_input,
            turn_id=uuid.uuid4().hex,
        )
        result: AgentResult = get_refs(ref)
        return result

    async def stream(
        self,
        input: str | dict[str, Any],
        *,
        thread_id: str | None = None,
        concurrent_input: ConcurrentInput | None = None,
    ) -> AsyncIterator[dict[str, Any]]:
        """Events of one turn as they happen (token deltas, tool calls), then
        ``{"type": "result", "result": AgentResult}``. ``concurrent_input`` as in
        :meth:`run`."""
        from lumos_ray import tracing

        thread_id = thread_id or uuid.uuid4().hex
        _check_concurrent(concurrent_input)
        await self.ensure_current()
        gen = self.actor(thread_id).run_stream.remote(
            input,
            thread_id,
            carrier=tracing.inject(),
            concurrent_input=concurrent_input,
            turn_id=uuid.uuid4().hex,
        )
        async for ref in gen:
            yield await ref

    async def shutdown(self) -> None:
        """Stop the agent's actors and give back its plan slot; its threads stay in the
        store (deploying it again picks them up)."""
        from lumos_ray.runtime import await_ref, kill_actor

        await asyncio.gather(
            *(await_ref(a.release_slot.remote()) for a in self._actors), return_exceptions=True
        )
        from lumos_ray.actors._agent_host import HostedAgent

        for a in self._actors:
            if isinstance(a, HostedAgent):
                await a.drop()  # the host stays: other agents live in it
            else:
                kill_actor(a)

    async def history(self, thread_id: str) -> list[dict[str, Any]]:
        return await self.actor(thread_id).history.remote(thread_id)

    async def working_memory(self, thread_id: str) -> dict[str, Any]:
        """The thread's notes (see ``MemoryConfig.working``)."""
        return await self.actor(thread_id).working_memory.remote(thread_id)

    async def flush_memory(self) -> list[dict[str, int]]:
        """Wait until every replica's queued semantic-memory writes reached the pool
        (they are sent in the background); each replica's counts."""
        return list(await asyncio.gather(*(a.flush_memory.remote() for a in self._actors)))


def _check_concurrent(value: Any) -> None:
    """A bad per-call strategy fails here, before anything is sent."""
    if value is not None:
        from lumos_ray.actors._concurrency import check_strategy

        check_strategy(value)
