"""The agent's Ray actor: one async process serving many threads.

Thread state is a list of messages, loaded from the run store on first use and kept
in a bounded LRU cache; each turn appends its new messages to the store in one small
write. Store I/O runs in a worker thread so the event loop keeps serving other
threads. Turns of the same thread are serialised by a per-thread gate, which also
decides what a second input does while a turn runs (``_concurrency``: reject, enqueue,
interrupt, rollback).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

from lumos_ray import tracing
from lumos_ray.actors._agent_loop import (
    TOOL_OK,
    AgentResult,
    run_turn,
    turn_key,
    user_message,
)
from lumos_ray.actors._concurrency import (
    ThreadGate,
    Turn,
    check_strategy,
    close_interrupted,
    interrupted_error,
)
from lumos_ray.actors._memory import (
    Recalled,
    SemanticMemory,
    Summariser,
    collection_name,
    format_recalled,
    turn_document,
)
from lumos_ray.actors._slot import AgentSlotKeeper
from lumos_ray.actors.models import build_model
from lumos_ray.tools._api import ToolContext, redact_arguments

if TYPE_CHECKING:
    from lumos_ray.actors.agent import Agent

__all__ = ["AgentActor", "actor_for", "actor_name", "spec_fingerprint"]

log = logging.getLogger(__name__)

_CACHE_THREADS = int(os.environ.get("LUMOS_AGENT_CACHE_THREADS", "100000"))
#: Turn ids remembered per cached thread (a retry is of one of the latest turns).
_TURNS_KEPT = 32


def _tool_ok(message: dict[str, Any]) -> bool:
    """Whether a stored tool message's call succeeded: the flag the loop saved with it.
    Only a message saved before the flag existed (an older release's thread) falls back
    to the loop's failure wording, which is all such a message has."""
    flag = message.get(TOOL_OK)
    if isinstance(flag, bool):
        return flag
    return not str(message.get("content", "")).startswith("Error: ")


def actor_name(agent_name: str, replica: int, tenant: str) -> str:
    """Agent actors are named per tenant: two tenants' agents of the same name are
    different actors with different stores."""
    return f"lumos-agent-{agent_name}-{replica}@{tenant}"


def spec_fingerprint(spec: Agent) -> str:
    """Identity of an agent spec: its pickled bytes (model, tools and all), hashed.

    Cheap next to a turn and stable for the same definition, so a redeployed agent
    whose spec changed is told apart from the running one without comparing objects
    across processes."""
    import hashlib

    import cloudpickle

    return hashlib.sha256(cloudpickle.dumps(spec)).hexdigest()[:32]


class AgentActor:
    #: Threads kept warm in memory (least recently used leave; the store has them all).
    cache_threads: int = _CACHE_THREADS

    def __init__(
        self,
        spec: Agent,
        replica: int = 0,
        fingerprint: str = "",
        tenant: str | None = None,
        *,
        warm_up: bool = False,
    ) -> None:
        """``warm_up``: open the store in the background at once (the agent's own
        actor process, see :meth:`_warm_up`); off for objects built in a shared host
        or in a test."""
        tracing.setup_tracing()
        self.replica = replica
        self.tenant = tenant
        self._notes: dict[str, dict[str, Any]] = {}
        self._semantic: tuple[tuple[Any, ...], SemanticMemory] | None = None
        self._summaries: Summariser | None = None
        self._apply(spec, fingerprint)
        self._threads: OrderedDict[str, list[dict[str, Any]]] = OrderedDict()
        # thread id -> turn id -> where the turn starts in the thread (the latest turns)
        self._turn_starts: dict[str, dict[str, int]] = {}
        self._gates: dict[str, ThreadGate] = {}
        self._store: Any = None
        self._writes: list[tuple[str, list[dict[str, Any]], str | None, asyncio.Future[None]]] = []
        self._writer: asyncio.Task[None] | None = None
        self._loads: dict[str, asyncio.Future[tuple[list[dict[str, Any]], dict[str, int]]]] = {}
        self._loader: asyncio.Task[None] | None = None
        # Replica 0 holds the agent's slot of its tenant's plan (platform tenants only).
        self._slot = (
            AgentSlotKeeper(
                tenant or "default", actor_name(spec.name, replica, tenant or "default")
            )
            if replica == 0
            else None
        )
        #: State of the work a caller's layer runs here through :meth:`hosted`.
        self.hosted_state: dict[str, Any] = {}
        self._warming: threading.Thread | None = None
        if warm_up:
            # The actor answers as soon as this returns; what its first turn needs (the
            # store, the platform: ~0.4 s of SQLAlchemy imports) opens meanwhile.
            self._warming = threading.Thread(
                target=self._warm_up, name="lumos-agent-warm-up", daemon=True
            )
            self._warming.start()

    def _warm_up(self) -> None:
        """Open the process-wide run store and platform (the plan slot's) in the
        background, so readiness never waits for them and the first turn mostly finds
        them open. Both are opened under their own locks, and ``self`` is not touched: a
        turn that arrives first opens them itself. A failure is left to that turn, which
        reports it (opening a store caches nothing on failure)."""
        try:
            if self.spec.memory.persist:
                from lumos_ray.store._sql import open_store

                open_store(tenant_id=self.tenant)
            if self._slot is not None:
                self._slot.warm_up()
        except Exception:
            log.debug("warming up agent %s failed", self.spec.name, exc_info=True)

    def _apply(self, spec: Agent, fingerprint: str) -> None:
        from lumos_ray.actors._agent_tool import agent_tools
        from lumos_ray.tools._api import resolve_tools

        self.spec = spec
        self.fingerprint = fingerprint
        self.model = build_model(spec.model)
        # Agent specs among the tools are asked in their own actors (_agent_tool).
        own = agent_tools(spec, self.tenant, actor_for, spec_fingerprint)
        self.tools = {t.name: t for t in resolve_tools(own)}
        if spec.memory.working:
            for t in self._memory_tools():
                self.tools[t.name] = t
        if spec.memory.semantic and spec.memory.recall == "tool":
            self.tools["recall"] = self._recall_tool()

    async def current_fingerprint(self) -> str:
        return self.fingerprint

    async def reconfigure(self, spec: Agent, fingerprint: str) -> None:
        """Take a changed spec in place (Serve's ``reconfigure``, for agents): turns
        that already started finish with the model and tools they began with; the
        threads' histories and notes are kept. Resources and restart policy are fixed
        when the actor is created and do not change here."""
        self._apply(spec, fingerprint)

    async def _flush_writes(self) -> None:
        while self._writes:
            batch, self._writes = self._writes[:500], self._writes[500:]
            try:
                await asyncio.to_thread(
                    self._get_store().append_messages_many,
                    self.spec.name,
                    [(t, m, turn) for t, m, turn, _ in batch],
                )
            except BaseException as exc:
                for *_, f in batch:
                    if not f.done():
                        f.set_exception(exc)
            else:
                for *_, f in batch:
                    if not f.done():
                        f.set_result(None)

    async def _persist(
        self, thread_id: str, new: list[dict[str, Any]], turn_id: str | None
    ) -> None:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._writes.append((thread_id, new, turn_id, fut))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._flush_writes())
        await fut

    async def _flush_loads(self) -> None:
        while self._loads:
            batch = dict(list(self._loads.items())[:500])
            for t in batch:
                del self._loads[t]
            try:
                res = await asyncio.to_thread(
                    self._get_store().load_threads, self.spec.name, list(batch)
                )
            except BaseException as exc:
                for f in batch.values():
                    if not f.done():
                        f.set_exception(exc)
            else:
                for t, f in batch.items():
                    if not f.done():
                        f.set_result(res[t])

    async def _load(self, thread_id: str) -> tuple[list[dict[str, Any]], dict[str, int]]:
        fut = self._loads.get(thread_id)
        if fut is None:
            fut = self._loads[thread_id] = asyncio.get_running_loop().create_future()
            if self._loader is None or self._loader.done():
                self._loader = asyncio.create_task(self._flush_loads())
        # Shielded: a turn cancelled by newer input must not cancel a load that other
        # callers (``history``) await too.
        return await asyncio.shield(fut)

    def _memory_tools(self) -> list[Any]:
        """`remember`/`forget`, bound to this actor's per-thread notes."""
        from lumos_ray.tools._api import tool

        async def remember(key: str, value: str, ctx: ToolContext) -> str:
            """Save a note in working memory; it is shown to you on every later turn.

            Args:
                key: A short name for the note.
                value: What to remember.
            """
            notes = await self._load_notes(ctx.thread_id or "")
            notes[key] = value
            await self._save_notes(ctx.thread_id or "", notes)
            return f"remembered {key!r}"

        async def forget(key: str, ctx: ToolContext) -> str:
            """Delete a note from working memory.

            Args:
                key: The note's name.
            """
            notes = await self._load_notes(ctx.thread_id or "")
            existed = notes.pop(key, None) is not None
            await self._save_notes(ctx.thread_id or "", notes)
            return f"forgot {key!r}" if existed else f"no note named {key!r}"

        return [tool(remember, category="memory"), tool(forget, category="memory")]

    async def _load_notes(self, thread_id: str) -> dict[str, Any]:
        notes = self._notes.get(thread_id)
        if notes is None:
            loaded: dict[str, Any] = {}
            if self.spec.memory.persist:
                loaded = await asyncio.to_thread(
                    self._get_store().load_working_memory, self.spec.name, thread_id
                )
            self._notes[thread_id] = notes = loaded
        return notes

    async def _save_notes(self, thread_id: str, notes: dict[str, Any]) -> None:
        self._notes[thread_id] = notes
        if self.spec.memory.persist:
            await asyncio.to_thread(
                self._get_store().save_working_memory, self.spec.name, thread_id, notes
            )

    async def working_memory(self, thread_id: str) -> dict[str, Any]:
        return dict(await self._load_notes(thread_id))

    # -- semantic memory and summaries (_memory) -------------------------------------
    def _semantic_memory(self) -> SemanticMemory | None:
        """This actor's semantic memory (None when off); a new one when the spec
        names another collection or backend."""
        from lumos_ray._imports import import_object

        m = self.spec.memory
        if not m.semantic:
            return None
        tenant = self.tenant or "default"
        key = (m.backend, collection_name(self.spec.name, m.scope), tenant, m.recall_timeout_s)
        if self._semantic is None or self._semantic[0] != key:
            factory = import_object(m.backend)  # ConfigError naming a bad path
            mem = SemanticMemory(
                lambda: factory(tenant, key[1]),
                agent=self.spec.name,
                recall_timeout_s=m.recall_timeout_s,
            )
            self._semantic = (key, mem)
        return self._semantic[1]

    def _summariser(self) -> Summariser | None:
        m = self.spec.memory
        if not m.summarize or m.max_messages is None:
            return None
        s = self._summaries
        if s is None or s.model is not self.model or s.max_chars != m.summary_max_chars:
            s = self._summaries = Summariser(
                self.model, self.spec.step_timeout_s, m.summary_max_chars
            )
        return s

    def _recall_tool(self) -> Any:
        from lumos_ray.tools._api import tool

        async def recall(query: str) -> list[dict[str, Any]]:
            """Search your past conversations (other threads) for what was said about
            something; returns the most relevant passages, best first.

            Args:
                query: What to look for, in natural language.
            """
            mem = self._semantic_memory()
            hits = await mem.recall(query, self.spec.memory.recall_k) if mem else []
            return [
                {"thread": r.thread_id, "text": r.text, "score": round(r.score, 4)} for r in hits
            ]

        return tool(recall, category="memory")

    async def _memory_context(
        self, input: Any, thread_id: str, hist: list[dict[str, Any]], shown_from: int
    ) -> str:
        """The instructions' memory sections: the thread's summary, then recall."""
        extra = ""
        summariser = self._summariser()
        summary = summariser.summary(thread_id) if summariser and shown_from > 0 else ""
        if summary:
            extra += (
                "\n\nSummary of the earlier part of this conversation (those messages "
                f"are no longer shown): {summary}"
            )
        mem = self._semantic_memory()
        if mem is not None and self.spec.memory.recall == "auto":
            name = self.spec.name

            def seen(r: Recalled) -> bool:  # in the window, or its summary (index -1)
                same = r.agent == name and r.thread_id == thread_id
                return same and (r.index >= shown_from or r.index < 0)

            query = input if isinstance(input, str) else json.dumps(input, default=str)
            hits = await mem.recall(query, self.spec.memory.recall_k, skip=seen)
            if hits:
                extra += format_recalled(hits)
        return extra

    def _after_turn(self, thread_id: str, start: int, result: AgentResult) -> None:
        """Memory work of a finished turn, queued, never awaited (off the hot path)."""
        mem = self._semantic_memory()
        if mem is not None:
            mem.remember(turn_document(self.spec.name, thread_id, start, result.new_messages))
        summariser = self._summariser()
        limit = self.spec.memory.max_messages
        hist = self._threads.get(thread_id)
        if summariser is not None and limit is not None and hist and len(hist) > limit:

            def store(text: str) -> None:
                if mem is not None:
                    doc = {"doc_id": f"mem:{self.spec.name}:summary:{thread_id}", "title": ""}
                    mem.remember({**doc, "text": f"summary: {text}"})

            summariser.update(thread_id, hist[:-limit], store)

    async def flush_memory(self) -> dict[str, int]:
        """Wait for queued semantic-memory writes and running summaries."""
        if self._summaries is not None:
            await self._summaries.wait_all()
        mem = self._semantic[1] if self._semantic else None
        return await mem.flush() if mem else {"written": 0, "pending": 0}

    async def summary(self, thread_id: str) -> str:
        """The thread's running summary ('' when none), after any in progress."""
        return await self._summaries.wait(thread_id) if self._summaries else ""

    def _get_store(self) -> Any:
        if self._store is None:
            from lumos_ray.store._sql import open_store

            self._store = open_store(tenant_id=self.tenant)
        return self._store

    async def _history(self, thread_id: str, fresh: bool = False) -> list[dict[str, Any]]:
        """The thread's messages (loaded from the store on first use, unless the caller
        knows the thread is new: see ``run``)."""
        hist = self._threads.get(thread_id)
        if hist is None:
            hist = []
            if self.spec.memory.history and self.spec.memory.persist and not fresh:
                hist, turns = await self._load(thread_id)
                latest = sorted(turns.items(), key=lambda kv: kv[1])[-_TURNS_KEPT:]
                self._turn_starts[thread_id] = dict(latest)
            self._threads[thread_id] = hist
            while len(self._threads) > self.cache_threads:
                old, _ = self._threads.popitem(last=False)
                self._turn_starts.pop(old, None)
                gate = self._gates.get(old)
                if gate is not None and not gate.inflight:
                    del self._gates[old]
        else:
            self._threads.move_to_end(thread_id)
        return hist

    async def _turn(
        self,
        input: Any,
        thread_id: str,
        run_id: str | None,
        carrier: dict[str, str] | None,
        emit: Any,
        fresh: bool = False,
        concurrent_input: str | None = None,
        turn_id: str | None = None,
        defer_save: bool = False,
    ) -> AgentResult:
        strategy = check_strategy(concurrent_input or self.spec.concurrent_input)
        gate = self._gates.get(thread_id)
        if gate is None:
            gate = self._gates[thread_id] = ThreadGate()
        # Before any await: inputs are judged in the order they reached the actor.
        gate.admit(strategy, self.spec.name, thread_id)
        gate.inflight += 1
        try:
            async with gate.lock:
                turn = Turn()
                turn.task = asyncio.create_task(
                    self._turn_body(
                        input, thread_id, run_id, carrier, emit, fresh, turn, turn_id, defer_save
                    )
                )
                gate.current = turn
                try:
                    return await turn.task
                except asyncio.CancelledError:
                    me = asyncio.current_task()
                    if turn.cancelled_by is None or (me is not None and me.cancelling()):
                        raise  # our own caller cancelled (timeout, ray.cancel): nothing kept
                    raise await self._settle(thread_id, input, turn, turn_id) from None
                finally:
                    gate.current = None
        finally:
            gate.inflight -= 1

    async def _settle(
        self, thread_id: str, input: Any, turn: Turn, turn_id: str | None
    ) -> Exception:
        """A turn a newer input cancelled: keep its messages so far (interrupt) or
        nothing (rollback), and the error its caller gets."""
        partial = list(turn.transcript) or [user_message(input)]
        kept: list[dict[str, Any]] = []
        if turn.cancelled_by == "interrupt" and self.spec.memory.history:
            kept = close_interrupted(partial)
            hist = await self._history(thread_id)
            await asyncio.shield(self._commit(thread_id, hist, kept, turn_id))
        return interrupted_error(
            turn.cancelled_by or "interrupt", self.spec.name, thread_id, partial, len(kept)
        )

    async def _commit(
        self,
        thread_id: str,
        hist: list[dict[str, Any]],
        new: list[dict[str, Any]],
        turn_id: str | None = None,
    ) -> None:
        """Save a turn's messages, then add them to the cached history: the cache never
        holds what the store does not (a failed write leaves both as they were). Run
        shielded: once the write is queued, the cache must follow it."""
        if self.spec.memory.persist:
            await self._persist(thread_id, new, turn_id)
        if turn_id is not None and new:
            turns = self._turn_starts.setdefault(thread_id, {})
            turns[turn_id] = len(hist)
            while len(turns) > _TURNS_KEPT:
                del turns[next(iter(turns))]
        hist.extend(new)

    def _answered(
        self, thread_id: str, hist: list[dict[str, Any]], turn_id: str
    ) -> AgentResult | None:
        """The result of turn ``turn_id`` if the thread already holds it: the call is a
        retry (Ray re-ran it after the actor died between saving the turn and replying),
        so it is answered from the saved messages instead of being run again."""
        turns = self._turn_starts.get(thread_id, {})
        start = turns.get(turn_id)
        if start is None:
            return None
        end = min((i for i in turns.values() if i > start), default=len(hist))
        new = hist[start:end]
        replies = [m for m in new if m.get("role") == "assistant"]
        outcome = {m.get("tool_call_id"): _tool_ok(m) for m in new if m.get("role") == "tool"}
        calls = []
        for m in replies:
            for c in m.get("tool_calls") or []:
                fn = c.get("function") or {}
                ok = outcome.get(c.get("id"), False)  # no result: the call never finished
                calls.append(
                    {
                        "name": fn.get("name"),
                        "arguments": redact_arguments(fn.get("arguments")),
                        "ok": ok,
                    }
                )
        output = replies[-1].get("content") if replies else None
        return AgentResult(
            output if isinstance(output, str) or output is None else json.dumps(output),
            thread_id,
            list(new),
            len(replies),
            calls,
        )

    async def _turn_body(
        self,
        input: Any,
        thread_id: str,
        run_id: str | None,
        carrier: dict[str, str] | None,
        emit: Any,
        fresh: bool,
        turn: Turn,
        turn_id: str | None,
        defer_save: bool = False,
    ) -> AgentResult:
        if self._slot is not None:
            await self._slot.ensure()  # AgentConcurrencyError over the plan's limit
        with tracing.span(
            "agent.turn", carrier, agent=self.spec.name, thread_id=thread_id, run_id=run_id
        ):
            hist = await self._history(thread_id, fresh)
            if turn_id is not None:
                done = self._answered(thread_id, hist, turn_id)
                if done is not None:
                    return done
            limit = self.spec.memory.max_messages
            window = hist[-limit:] if hist and limit is not None else hist
            # Never start the window on a tool result: it needs its assistant call.
            while window and window[0].get("role") == "tool":
                window = window[1:]
            instructions = self.spec.instructions
            shown_from = len(hist) - len(window)
            if self.spec.memory.semantic or self.spec.memory.summarize:
                instructions += await self._memory_context(input, thread_id, hist, shown_from)
            if self.spec.memory.working:
                notes = await self._load_notes(thread_id)
                instructions += (
                    "\n\nWorking memory (your notes; change them with `remember` and "
                    f"`forget`): {json.dumps(notes, default=str) if notes else '(empty)'}"
                )
            result = await run_turn(
                model=self.model,
                tools=self.tools,
                instructions=instructions,
                history=window if self.spec.memory.history else [],
                input=input,
                thread_id=thread_id,
                max_steps=self.spec.max_steps,
                max_tool_retries=self.spec.max_tool_retries,
                timeout_s=self.spec.step_timeout_s,
                stream=self.spec.stream,
                tool_ctx=ToolContext(
                    run_id=run_id,
                    thread_id=thread_id,
                    workspace=self.spec.workspace,
                    settings=self.spec.tool_settings,
                    tenant=self.tenant,
                ),
                emit=emit,
                # The full persisted history (not the window): a retry of this
                # turn sees the same length, the next turn a longer one.
                key=turn_key(run_id, thread_id, len(hist), input),
                transcript=turn.transcript,
            )
            turn.committing = True  # the commit point: newer input no longer cancels it
            start = len(hist)
            if defer_save and self.spec.memory.history and self.spec.memory.persist:
                # The caller (the runner) saves the turn with its step's checkpoint.
                # Until then the store lacks it, so the cache must not hold the thread:
                # the next turn on it reads the store.
                self._threads.pop(thread_id, None)
                self._turn_starts.pop(thread_id, None)
            elif self.spec.memory.history:
                await asyncio.shield(self._commit(thread_id, hist, result.new_messages, turn_id))
            if self.spec.memory.semantic or self.spec.memory.summarize:
                self._after_turn(thread_id, start, result)
            return result

    async def run(
        self,
        input: Any,
        thread_id: str,
        run_id: str | None = None,
        carrier: dict[str, str] | None = None,
        fresh: bool = False,
        concurrent_input: str | None = None,
        turn_id: str | None = None,
        defer_save: bool = False,
    ) -> AgentResult:
        """One turn. ``fresh``: the caller knows ``thread_id`` has never been used (the
        runner's per-step thread of a run's first attempt), so no history is read.
        ``concurrent_input``: what this input does if the thread is busy (default: the
        agent's ``concurrent_input``). ``turn_id``: the caller's id for this turn (the
        same when Ray retries the call): a turn the thread already holds is answered
        from the store, not run and saved twice. ``defer_save``: the caller saves the
        turn's messages (``result.new_messages``) itself, with its own write (the
        runner: in the step's checkpoint transaction); the actor does not."""
        return await self._turn(
            input, thread_id, run_id, carrier, None, fresh, concurrent_input, turn_id, defer_save
        )

    async def run_stream(
        self,
        input: Any,
        thread_id: str,
        run_id: str | None = None,
        carrier: dict[str, str] | None = None,
        fresh: bool = False,
        concurrent_input: str | None = None,
        turn_id: str | None = None,
        defer_save: bool = False,
    ) -> AsyncIterator[dict[str, Any]]:
        queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()

        def emit(kind: str, data: dict[str, Any]) -> None:
            queue.put_nowait({"type": kind, **data})

        async def work() -> AgentResult:
            try:
                return await self._turn(
                    input,
                    thread_id,
                    run_id,
                    carrier,
                    emit,
                    fresh,
                    concurrent_input,
                    turn_id,
                    defer_save,
                )
            finally:
                queue.put_nowait(None)

        task = asyncio.create_task(work())
        while (item := await queue.get()) is not None:
            yield item
        yield {"type": "result", "result": await task}

    async def history(self, thread_id: str) -> list[dict[str, Any]]:
        return list(await self._history(thread_id))

    async def hosted(self, fn: Callable[..., Awaitable[Any]], *args: Any) -> Any:
        """``await fn(self, *args)`` on this actor's loop: work of a higher layer that
        runs beside the agent's turns, sent by reference (an importable function). The
        workflows layer executes a run whose workflow is one step of this agent here,
        calling :meth:`run` in-process instead of over an actor hop (see
        ``lumos_ray.workflows._runner.hosted_execute``).

        Only a module-level function of the lumos_ray package, the same object its
        module holds, is run: a Ray caller cannot send code by value (a lambda, a
        closure, a function of its own) through this door."""
        if not _own_function(fn):
            raise TypeError(
                f"AgentActor.hosted runs only lumos_ray's own module-level functions, "
                f"not {getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', fn)!s}."
            )
        return await fn(self, *args)

    async def release_slot(self) -> None:
        """Give back the agent's plan slot (before the actor is stopped)."""
        if self._slot is not None:
            await self._slot.release()

    async def info(self) -> dict[str, Any]:
        return {"pid": os.getpid(), "threads_cached": len(self._threads), "replica": self.replica}


def actor_for(spec: Agent, replica: int, fingerprint: str, tenant: str) -> Any:
    """The named actor of replica ``replica`` of ``spec`` for ``tenant``, created on
    first use; for ``hosting="shared"`` its stand-in in the tenant's host pool (same
    method surface: ``.run.remote(...)``)."""
    from lumos_ray.runtime import get_or_create_actor, merge_actor_options, remote_class

    if spec.hosting == "shared":
        from lumos_ray.actors._agent_host import hosted_agent

        return hosted_agent(spec, replica, fingerprint, tenant, AgentActor)

    opts: dict[str, Any] = {
        "max_restarts": spec.restart.max_restarts,
        "max_task_retries": spec.restart.max_task_retries,
        "max_concurrency": 10_000,
        **spec.resources.ray_options(),
    }
    opts = merge_actor_options(opts, spec.placement)
    return get_or_create_actor(
        actor_name(spec.name, replica, tenant),
        remote_class(AgentActor),
        spec,
        replica,
        fingerprint,
        tenant,
        options=opts,
        warm_up=True,
    )


def _own_function(fn: Any) -> bool:
    """Whether ``fn`` is a module-level function of the lumos_ray package, sent by
    reference (the object its module holds), not rebuilt from code a caller sent."""
    import importlib
    import inspect

    module = getattr(fn, "__module__", None) or ""
    name = getattr(fn, "__qualname__", "") or ""
    if not inspect.iscoroutinefunction(fn) or not module.startswith("lumos_ray."):
        return False
    if not name.isidentifier():  # nested ("f.<locals>.g") or a lambda
        return False
    try:
        return getattr(importlib.import_module(module), name, None) is fn
    except ImportError:
        return False
