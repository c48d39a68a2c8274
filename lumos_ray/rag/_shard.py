"""The shard actor: one :class:`ShardState`, persisted to its snapshot directory or URI.

Async actor: CPU work (faiss, PageRank, pickling) runs in worker threads so the event
loop keeps accepting calls. Every write returns only after a snapshot that contains it
is on disk, so a shard that Ray restarts (``max_restarts``) or that the router
re-creates after a kill loads everything it ever acknowledged. Concurrent writers share
one snapshot: each waits for a save that started after its own change.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Callable
from typing import Any

import numpy as np

from lumos_ray.rag._config import CollectionConfig
from lumos_ray.rag._fusion import fuse, mix_rrf, seeds_from_probes
from lumos_ray.rag._multihop import run_local
from lumos_ray.rag._snapshot_store import open_store
from lumos_ray.rag._state import PreparedChunks, ShardState

__all__ = ["RagShard"]


class RagShard:
    def __init__(self, config: dict[str, Any], shard: int, snapshot_dir: str) -> None:
        self.cfg = CollectionConfig.model_validate(config)
        self.shard = shard
        self.dir = snapshot_dir
        self.store = open_store(snapshot_dir)
        self.state = ShardState.load(
            self.store, shard, self.cfg.embedding.dim, self.cfg.index, self.cfg.query
        )
        self.saved_version = self.state.version
        self.loaded_chunks = len(self.state.chunks)
        self._save_lock: asyncio.Lock | None = None
        # Names this incarnation: a write applied in memory (apply) is durable only if
        # the same incarnation persists it (a restart in between reloads the snapshot).
        self.instance = uuid.uuid4().hex

    async def _persist(self) -> None:
        if self._save_lock is None:
            self._save_lock = asyncio.Lock()
        target = self.state.version
        async with self._save_lock:
            if self.saved_version >= target:
                return  # a save that started after our change already covered it
            version = self.state.version
            await asyncio.to_thread(self.state.save, self.store)
            self.saved_version = version

    # -- writes -------------------------------------------------------------------
    # Two ways in: ``upsert``/``delete``/... apply a change and return once a snapshot
    # holds it. ``apply`` + ``persist`` split the same into an in-memory step and a
    # durable one: the router applies a batch on every shard while no query runs (its
    # write lock), then persists with queries running again, so a query never sees a
    # batch on one shard and not on another, and never waits for a snapshot write.
    async def apply(self, op: str, *args: Any) -> dict[str, Any]:
        """Apply a write in memory only: ``{"result", "instance", "version"}``; follow
        with :meth:`persist` (the write is acknowledged only then)."""
        ops: dict[str, Callable[..., Any]] = {
            "upsert": self.state.upsert,
            "delete": self.state.delete,
            "delete_entity": self.state.delete_entity,
            "merge_entities": self.state.merge_entities,
        }
        fn = ops[op]
        out: Any = await asyncio.to_thread(fn, *args)
        return {"result": out, "instance": self.instance, "version": self.state.version}

    async def persist(self, instance: str, version: int) -> bool:
        """Make the state up to ``version`` durable. False when this is another
        incarnation than the one that applied it (the shard restarted and reloaded its
        snapshot without that write): the caller applies it again."""
        if instance != self.instance or self.state.version < version:
            return False
        await self._persist()
        return True

    async def upsert(self, batch: PreparedChunks) -> dict[str, int]:
        out = await asyncio.to_thread(self.state.upsert, batch)
        await self._persist()
        return out

    async def delete(self, doc_ids: list[str]) -> int:
        out = await asyncio.to_thread(self.state.delete, doc_ids)
        await self._persist()
        return out

    async def delete_entity(self, key: str) -> dict[str, Any]:
        out = await asyncio.to_thread(self.state.delete_entity, key)
        await self._persist()
        return out

    async def merge_entities(self, sources: list[str], target: str, name: str = "") -> int:
        out = await asyncio.to_thread(self.state.merge_entities, sources, target, name)
        await self._persist()
        return out

    # -- reads --------------------------------------------------------------------
    async def vector_search(self, qvec: np.ndarray, k: int) -> list[dict[str, Any]]:
        return await asyncio.to_thread(self.state.vector_search, qvec, k)

    async def probe(self, qvec: np.ndarray, query_entities: list[str], m: int) -> dict[str, Any]:
        return await asyncio.to_thread(self.state.probe, qvec, query_entities, m)

    async def expand(
        self,
        qvec: np.ndarray,
        mode: str,
        seed_entities: dict[str, tuple[float, str]],
        seed_chunks: dict[str, float],
        k: int,
    ) -> list[dict[str, Any]]:
        return await asyncio.to_thread(self.state.expand, qvec, mode, seed_entities, seed_chunks, k)

    async def global_search(self, qvec: np.ndarray, k: int) -> list[dict[str, Any]]:
        return await asyncio.to_thread(self.state.global_search, qvec, k)

    async def mh_seed(self, qvec: np.ndarray, query_entities: list[str], m: int) -> dict[str, Any]:
        return await asyncio.to_thread(self.state.mh_seed, qvec, query_entities, m)

    async def mh_link(
        self, qvec: np.ndarray, entities: dict[str, int], known: list[str]
    ) -> dict[str, list[dict[str, Any]]]:
        return await asyncio.to_thread(self.state.mh_link, qvec, entities, known)

    async def search(
        self,
        qvec: np.ndarray,
        query_entities: list[str],
        mode: str,
        k: int,
        query_text: str = "",
    ) -> list[dict[str, Any]]:
        """All phases in one call: what the router uses when there is a single shard."""
        return await asyncio.to_thread(self._search_sync, qvec, query_entities, mode, k, query_text)

    def _search_sync(
        self,
        qvec: np.ndarray,
        query_entities: list[str],
        mode: str,
        k: int,
        query_text: str = "",
    ) -> list[dict[str, Any]]:
        # One query sees one version of the shard: writes wait for the lock (the
        # multi-hop mode reads the shard several times).
        with self.state.lock:
            return self._search_locked(qvec, query_entities, mode, k, query_text)

    def _search_locked(
        self, qvec: np.ndarray, query_entities: list[str], mode: str, k: int, query_text: str
    ) -> list[dict[str, Any]]:
        if mode == "naive":
            return self.state.vector_search(qvec, k)
        if mode == "global":
            return self.state.global_search(qvec, k)
        q = self.cfg.query
        if mode == "guided":
            from lumos_ray.errors import RagError

            raise RagError(
                "Mode 'guided' runs in the collection's router (it calls a model between "
                "shard reads), not in a shard.",
                fix="Query through RagCollection.query or the router's search().",
            )
        if mode == "multihop":
            return run_local([self.state], qvec, query_text, query_entities, q, k)
        if mode == "mix":
            hops = run_local([self.state], qvec, query_text, query_entities, q, 2 * k)
            graph = self._graph_search(qvec, query_entities, "hybrid", 2 * k)
            return mix_rrf([hops, graph], k, q.mix_rrf_k, [1.0, q.mix_hybrid_weight])
        return self._graph_search(qvec, query_entities, mode, k)

    def _graph_search(
        self, qvec: np.ndarray, query_entities: list[str], mode: str, k: int
    ) -> list[dict[str, Any]]:
        q = self.cfg.query
        probe = self.state.probe(qvec, query_entities, q.seed_hits)
        ents, chunks = seeds_from_probes([probe], mode, q)
        cands = self.state.expand(qvec, mode, ents, chunks, k)
        return fuse([cands], mode, k, q)

    async def stats(self) -> dict[str, Any]:
        out = await asyncio.to_thread(self.state.stats)
        return {**out, "pid": os.getpid(), "loaded_chunks": self.loaded_chunks}

    async def doc_chunks(self, doc_id: str) -> list[dict[str, Any]]:
        return await asyncio.to_thread(self.state.doc_chunks, doc_id)

    async def entity_chunks(self, key: str) -> list[str]:
        return await asyncio.to_thread(self.state.entity_chunks, key)

    async def warm(self) -> bool:
        await asyncio.to_thread(self.state.warm)
        return True
