"""Semantic memory of an agent: recall over its (or its tenant's) past threads, and a
running summary of a thread's messages that fell out of the ``max_messages`` window.

Layering: actors sit below rag (ARCHITECTURE.md), so this module never imports it.
The store behind recall is a *backend* named by import path in
``MemoryConfig.backend`` (data, like a model's config); the default,
``lumos_ray.rag._agent_memory:open_memory``, is a collection of the RAG pool whose
name is per tenant and agent (or per tenant, ``scope='tenant'``) and whose actors and
files are keyed by the agent actor's own tenant: nothing the model says picks the
collection, so one tenant's agent can never reach another's memory.

Off the hot path: a turn's memory write is a list append; a background task sends the
writes in batches. Recall (``recall='auto'``) is one call to the pool, bounded by
``recall_timeout_s``; a pool that is slow or down costs a turn at most that, and the
turn goes on without recall (memory is best effort, a turn never fails for it). The
summariser runs after the turn, in the background, with the agent's own model.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

__all__ = [
    "MemoryBackend",
    "Recalled",
    "SemanticMemory",
    "Summariser",
    "collection_name",
    "format_recalled",
    "turn_document",
]

log = logging.getLogger(__name__)

MAX_PENDING = 10_000  # memory writes waiting for the pool; the oldest are dropped beyond
BATCH = 64  # documents per write to the pool
#: A write waits this long for others to join it: the pool embeds one batch at a time
#: and a recall waits behind it, so one write per turn of a busy agent would hold up
#: every next turn's recall (measured: benchmarks/RESULTS.md, memory recall).
COALESCE_S = 0.5
_HIT_CHARS = 600  # a recalled passage shown to the model is cut at this length
_SUMMARY_INPUT_CHARS = 8_000  # transcript per summariser call
_SUMMARY_CALLS = 4  # summariser calls per turn at most (a long backlog catches up slowly)


class MemoryBackend(Protocol):
    """Where semantic memory lives (the RAG pool by default)."""

    async def add(self, docs: list[dict[str, Any]]) -> None:
        """Upsert documents ``{doc_id, text, title}`` (same doc_id: replaced)."""

    async def search(self, query: str, k: int) -> list[dict[str, Any]]:
        """The ``k`` best passages: ``{doc_id, text, score}`` each."""


def collection_name(agent: str, scope: str) -> str:
    """The memory collection of an agent (``scope='agent'``) or of all the tenant's
    agents (``'tenant'``), as a RAG collection name (``[a-z0-9_-]``, 63 at most). A
    hash of the exact agent name keeps two agents whose names fold to the same slug
    apart."""
    if scope == "tenant":
        return "memory-tenant"
    slug = re.sub(r"[^a-z0-9-]+", "-", agent.lower()).strip("-")[:40] or "agent"
    return f"memory-{slug}-{hashlib.sha256(agent.encode()).hexdigest()[:10]}"


def _text(content: Any) -> str:
    return content if isinstance(content, str) else json.dumps(content, default=str)


def turn_document(
    agent: str, thread_id: str, index: int, messages: list[dict[str, Any]]
) -> dict[str, Any] | None:
    """One turn as a memory document: what the user said and the final answer (tool
    traffic is left out). ``index``: where the turn starts in the thread's history;
    the doc id ``mem:<agent>:<index>:<thread>`` says where it came from."""
    lines = [
        f"{m['role']}: {_text(m.get('content'))}"
        for m in messages
        if m.get("role") in ("user", "assistant") and m.get("content")
    ]
    if not lines:
        return None
    return {"doc_id": f"mem:{agent}:{index}:{thread_id}", "text": "\n".join(lines), "title": ""}


@dataclass(frozen=True)
class Recalled:
    """A recalled passage: where it was said (agent, thread, message index) and what."""

    agent: str
    thread_id: str
    index: int
    text: str
    score: float


def _parse(hit: dict[str, Any]) -> Recalled | None:
    parts = str(hit.get("doc_id", "")).split(":", 3)
    if len(parts) != 4 or parts[0] != "mem":
        return None
    index = int(parts[2]) if parts[2].isdigit() else -1
    return Recalled(parts[1], parts[3], index, str(hit.get("text", "")), float(hit["score"]))


def format_recalled(items: list[Recalled]) -> str:
    """The instructions' memory section."""
    lines = [
        f"- (thread {r.thread_id!r}) " + r.text[:_HIT_CHARS].replace("\n", " / ") for r in items
    ]
    return (
        "\n\nRecalled from past conversations (most relevant first; may be unrelated):\n"
        + "\n".join(lines)
    )


class SemanticMemory:
    """One agent actor's semantic memory: a write queue, its flusher, and recall."""

    def __init__(
        self,
        open_backend: Callable[[], MemoryBackend],
        *,
        agent: str,
        recall_timeout_s: float,
    ) -> None:
        self._open_backend = open_backend
        self.agent = agent
        self.recall_timeout_s = recall_timeout_s
        self._backend: MemoryBackend | None = None
        self._opening: asyncio.Task[MemoryBackend] | None = None
        self._failed_at = 0.0
        self._pending: list[dict[str, Any]] = []
        self._flusher: asyncio.Task[None] | None = None
        self._now = asyncio.Event()  # set by flush(): stop coalescing, write now
        self.stats = {"written": 0, "dropped": 0, "errors": 0}

    # -- the backend, opened once, off the event loop ---------------------------------
    def _open(self) -> Awaitable[MemoryBackend]:
        task = self._opening
        if task is None or (
            task.done()
            and (task.cancelled() or task.exception() is not None)
            and time.monotonic() - self._failed_at > 5.0
        ):
            task = self._opening = asyncio.create_task(self._open_once())
        return asyncio.shield(task)

    async def _open_once(self) -> MemoryBackend:
        try:
            self._backend = await asyncio.to_thread(self._open_backend)
        except BaseException:
            self._failed_at = time.monotonic()
            raise
        return self._backend

    # -- writes ------------------------------------------------------------------------
    def remember(self, doc: dict[str, Any] | None) -> None:
        """Queue a document; never waits (the turn's hot path)."""
        if doc is None:
            return
        self._pending.append(doc)
        if len(self._pending) > MAX_PENDING:
            del self._pending[0]
            self.stats["dropped"] += 1
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush())

    async def _flush(self) -> None:
        failures = 0
        if not self._now.is_set():
            try:
                async with asyncio.timeout(COALESCE_S):
                    await self._now.wait()
            except TimeoutError:
                pass
        while self._pending:
            batch = self._pending[:BATCH]
            try:
                backend = await self._open()
                await backend.add(batch)
            except Exception:
                failures += 1
                self.stats["errors"] += 1
                log.warning("agent %s: memory write failed", self.agent, exc_info=True)
                if failures >= 5:  # the pool is down: keep the queue for the next turn
                    return
                await asyncio.sleep(min(30.0, 2.0**failures))
                continue
            failures = 0
            del self._pending[: len(batch)]
            self.stats["written"] += len(batch)

    async def flush(self) -> dict[str, int]:
        """Wait until every queued write reached the pool (tests, shutdown)."""
        self._now.set()
        while self._pending:
            if self._flusher is None or self._flusher.done():
                self._flusher = asyncio.create_task(self._flush())
            await asyncio.shield(self._flusher)
            if self._pending and self.stats["errors"]:
                break
        self._now.clear()
        return {**self.stats, "pending": len(self._pending)}

    # -- recall ------------------------------------------------------------------------
    async def recall(
        self, query: str, k: int, skip: Callable[[Recalled], bool] | None = None
    ) -> list[Recalled]:
        """Up to ``k`` passages for ``query``, best first, leaving out those ``skip``
        says the model already sees; [] when the pool does not answer in time."""
        try:
            async with asyncio.timeout(self.recall_timeout_s):
                backend = await self._open()
                hits = await backend.search(query, k * 2 + 2)
        except Exception as exc:
            log.warning("agent %s: recall skipped (%s)", self.agent, type(exc).__name__)
            return []
        out = [r for r in map(_parse, hits) if r is not None and not (skip and skip(r))]
        return out[:k]


class Summariser:
    """Running summaries of the part of each thread that fell out of the window,
    written by the agent's model after a turn (bounded: ``_SUMMARY_INPUT_CHARS`` of
    transcript per call, ``_SUMMARY_CALLS`` calls per turn, ``max_chars`` of summary).
    Kept in the actor; after a restart a thread's summary is rebuilt from the store."""

    PROMPT = (
        "You keep a running summary of a conversation for an assistant whose context "
        "window no longer holds its older messages. Merge the new messages into the "
        "summary: keep facts, names, numbers, decisions and open questions; drop "
        "pleasantries. Answer with the updated summary only."
    )

    def __init__(self, model: Any, timeout_s: float | None, max_chars: int) -> None:
        self.model = model
        self.timeout_s = timeout_s
        self.max_chars = max_chars
        self._state: dict[str, tuple[int, str]] = {}  # thread -> (messages covered, text)
        self._running: dict[str, asyncio.Task[None]] = {}

    def summary(self, thread_id: str) -> str:
        return self._state.get(thread_id, (0, ""))[1]

    def covered(self, thread_id: str) -> int:
        return self._state.get(thread_id, (0, ""))[0]

    def update(
        self,
        thread_id: str,
        dropped: list[dict[str, Any]],
        on_summary: Callable[[str], None] | None = None,
    ) -> None:
        """Start summarising ``dropped`` (the thread's messages before the window) in
        the background, unless it is covered or a summary of this thread is running."""
        if len(dropped) <= self.covered(thread_id):
            return
        task = self._running.get(thread_id)
        if task is not None and not task.done():
            return
        self._running[thread_id] = asyncio.create_task(
            self._summarise(thread_id, dropped, on_summary)
        )

    async def wait_all(self) -> None:
        """Wait for every summary in progress."""
        for task in list(self._running.values()):
            await asyncio.shield(task)

    async def wait(self, thread_id: str) -> str:
        task = self._running.get(thread_id)
        if task is not None:
            await asyncio.shield(task)
        return self.summary(thread_id)

    async def _summarise(
        self,
        thread_id: str,
        dropped: list[dict[str, Any]],
        on_summary: Callable[[str], None] | None,
    ) -> None:
        covered, text = self._state.get(thread_id, (0, ""))
        try:
            for _ in range(_SUMMARY_CALLS):
                if covered >= len(dropped):
                    break
                chunk: list[str] = []
                size = 0
                while covered < len(dropped) and (not chunk or size < _SUMMARY_INPUT_CHARS):
                    m = dropped[covered]
                    covered += 1
                    if m.get("role") in ("user", "assistant") and m.get("content"):
                        line = f"{m['role']}: {_text(m['content'])}"[:_SUMMARY_INPUT_CHARS]
                        chunk.append(line)
                        size += len(line)
                if not chunk:
                    self._state[thread_id] = (covered, text)
                    continue
                prompt = f"Summary so far:\n{text or '(none)'}\n\nNew messages:\n" + "\n".join(
                    chunk
                )
                async with asyncio.timeout(self.timeout_s):
                    resp = await self.model.chat(
                        [
                            {"role": "system", "content": self.PROMPT},
                            {"role": "user", "content": prompt},
                        ],
                        None,
                    )
                text = (resp.content or "").strip()[: self.max_chars]
                self._state[thread_id] = (covered, text)
        except Exception:
            log.warning("agent summary of thread %s failed", thread_id, exc_info=True)
            return
        if on_summary is not None and text:
            on_summary(text)
