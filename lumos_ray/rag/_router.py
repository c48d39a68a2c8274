"""The router actor: the single entry point of a collection.

It owns the embedder and extractor (documents are chunked, embedded and extracted
here, so shards only index), places documents on shards by a stable hash of their id,
fans queries out and merges the shards' top-k. Shards are named detached actors with
``max_restarts``; if one is gone for good (``ray.kill`` without restart) the router
re-creates it under the same name and it reloads its snapshot.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import re
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from lumos_ray.rag._config import CollectionConfig, Document
from lumos_ray.rag._fusion import fuse, merge_topk, mix_rrf, seeds_from_probes
from lumos_ray.rag._names import shard_actor_name, shard_dir
from lumos_ray.rag._validate import check_query, entity_keys

# numpy and the pipeline (networkx, the extractor) are imported where they are used:
# a client that finds this actor by name loads this module (Ray unpickles the class),
# and `lumos rag query` should not pay their ~0.5 s import for a query it only sends.
if TYPE_CHECKING:
    import numpy as np

    from lumos_ray.rag._state import PreparedChunks

__all__ = ["SHARD_OPTIONS", "RagRouter", "docs_without_chunks"]

#: Shards hold state on disk and every method is idempotent (upsert/delete by doc id,
#: reads), so Ray may both restart them and retry calls that hit a restart.
SHARD_OPTIONS: dict[str, Any] = {
    "num_cpus": 0,
    "max_restarts": -1,
    "max_task_retries": 3,
    "max_concurrency": 64,
}


class _RWLock:
    """Many readers or one writer (asyncio). A waiting writer holds back new readers,
    so a stream of queries cannot starve ingestion."""

    def __init__(self) -> None:
        self._cond = asyncio.Condition()
        self._readers = 0
        self._writer = False
        self._writers_waiting = 0

    @contextlib.asynccontextmanager
    async def read(self) -> AsyncIterator[None]:
        async with self._cond:
            await self._cond.wait_for(lambda: not self._writer and not self._writers_waiting)
            self._readers += 1
        try:
            yield
        finally:
            async with self._cond:
                self._readers -= 1
                self._cond.notify_all()

    @contextlib.asynccontextmanager
    async def write(self) -> AsyncIterator[None]:
        async with self._cond:
            self._writers_waiting += 1
            try:
                await self._cond.wait_for(lambda: not self._writer and not self._readers)
            finally:
                self._writers_waiting -= 1
            self._writer = True
        try:
            yield
        finally:
            async with self._cond:
                self._writer = False
                self._cond.notify_all()


def docs_without_chunks(doc_ids: list[str], batch: PreparedChunks) -> list[str]:
    """The documents of a write that produced no chunks: they still replace (i.e.
    remove) an old version. One pass over the batch (the set was once rebuilt for every
    document: 22,500 documents of 90,000 chunks held the router's event loop for
    minutes)."""
    present = set(batch.doc_ids())
    return [d for d in doc_ids if d not in present]


class RagRouter:
    """Queries and writes of one collection.

    Consistency across shards: a write (an upsert batch, a delete, a merge) is applied
    in memory on all its shards under the router's write lock, and every query runs
    under the read lock (a multi-hop query for all its hops; a guided one for each
    round of shard reads, not while its model thinks), so a query sees a batch on every
    shard or on none. Snapshots are written after the lock is released; the write is
    acknowledged once they are on disk."""

    def __init__(self, config: dict[str, Any], snapshot_root: str) -> None:
        self.cfg = CollectionConfig.model_validate(config)
        self.root = snapshot_root
        self.shards: list[Any] = [self._shard_handle(i) for i in range(self.cfg.num_shards)]
        self._embedder: Any = None
        self._extractor: Any = None
        self._guide: Any = None
        self._qcache: collections.OrderedDict[str, np.ndarray] = collections.OrderedDict()
        self._rw = _RWLock()

    # -- shards -------------------------------------------------------------------
    def _shard_handle(self, i: int) -> Any:
        from lumos_ray.rag._shard import RagShard
        from lumos_ray.runtime import merge_actor_options, remote_class

        remote = remote_class(RagShard)
        return remote.options(
            name=shard_actor_name(self.cfg.name, self.cfg.tenant, i),
            lifetime="detached",
            get_if_exists=True,
            **merge_actor_options(SHARD_OPTIONS, self.cfg.placement, member=i),
        ).remote(self.cfg.model_dump(), i, shard_dir(self.root, i))

    async def _call(self, i: int, method: str, *args: Any) -> Any:
        """Call shard ``i``; if it died for good, re-create it from its snapshot once."""
        from lumos_ray.runtime import is_actor_died

        for attempt in range(3):
            try:
                return await getattr(self.shards[i], method).remote(*args)
            except Exception as exc:
                if not is_actor_died(exc):  # died, unavailable, or failed to start
                    raise
                if attempt == 2:
                    if getattr(exc, "actor_init_failed", False):
                        raise self._start_failure(i, exc) from None
                    raise
                await asyncio.sleep(0.2 * (attempt + 1))
                self.shards[i] = self._shard_handle(i)
        raise AssertionError("unreachable")

    def _start_failure(self, i: int, exc: BaseException) -> Exception:
        """A shard whose constructor keeps failing (its snapshot is corrupt, or its store
        unreachable): a RagError with the shard's own message instead of Ray's
        ActorDiedError wrapping a remote traceback."""
        from lumos_ray.errors import RagError

        text = str(exc)
        found = re.findall(r"\[LUMOS-E\d+\] (.+)", text)
        reason = found[-1] if found else (text.strip().splitlines() or ["unknown error"])[-1]
        if "as a pickle" in reason:  # a snapshot from before the safe format
            fix = (
                f"Ingest the collection again: `lumos rag delete --collection {self.cfg.name} "
                f"--all` (removes its old snapshots and config), then `lumos rag ingest PATH "
                f"--collection {self.cfg.name}` with the same --shards/--config as before."
            )
        else:
            fix = (
                f"Its snapshot location is {shard_dir(self.root, i)}. A corrupt snapshot: "
                "restore it from a backup, or delete it (the shard then starts empty) and "
                "ingest the shard's documents again. An unreachable store: fix the access "
                "(credentials, network) and retry."
            )
        return RagError(
            f"Shard {i} of collection {self.cfg.name!r} could not start: {reason}", fix=fix
        )

    async def _all(self, method: str, *args: Any) -> list[Any]:
        return list(
            await asyncio.gather(*(self._call(i, method, *args) for i in range(len(self.shards))))
        )

    # -- pipeline pieces, loaded lazily (torch import and model load take seconds) --
    def _pipeline(self) -> tuple[Any, Any]:
        if self._embedder is None:
            from lumos_ray.rag._embed import make_embedder
            from lumos_ray.rag._extract import make_extractor

            self._embedder = make_embedder(self.cfg.embedding)
            self._extractor = make_extractor(self.cfg.extractor)
        return self._embedder, self._extractor

    async def warm(self) -> bool:
        emb, _ = self._pipeline()
        await asyncio.to_thread(emb.embed, ["warm up"])
        await self._all("warm")
        return True

    # -- writes -------------------------------------------------------------------
    async def upsert_documents(self, docs: list[dict[str, Any]]) -> dict[str, Any]:
        """Add or replace documents (whole-document replace keyed by doc_id)."""
        t0 = time.perf_counter()
        from lumos_ray.rag._pipeline import prepare_documents

        parsed = [Document.model_validate(d) for d in docs]
        emb, ext = self._pipeline()
        batch = await asyncio.to_thread(prepare_documents, parsed, self.cfg, emb, ext)
        res = await self._upsert_prepared(batch, list(dict.fromkeys(d.doc_id for d in parsed)))
        res["seconds"] = time.perf_counter() - t0
        return res

    async def upsert_prepared(self, batch: PreparedChunks) -> dict[str, Any]:
        """Already-embedded chunks (benchmarks, or an external pipeline)."""
        return await self._upsert_prepared(batch, batch.doc_ids())

    async def _write(self, ops: list[tuple[int, str, tuple[Any, ...]]]) -> list[Any]:
        """Apply ``(shard, op, args)`` writes on their shards at once (under the write
        lock: queries see all of them or none), then make them durable (outside it)."""
        if not ops:
            return []
        async with self._rw.write():
            applied = await asyncio.gather(*(self._call(i, "apply", op, *a) for i, op, a in ops))

        async def durable(i: int, op: str, args: tuple[Any, ...], res: dict[str, Any]) -> Any:
            if await self._call(i, "persist", res["instance"], res["version"]):
                return res["result"]
            # The shard restarted between apply and persist and reloaded a snapshot
            # without this write: apply it again, durably (writes are idempotent).
            async with self._rw.write():
                return await self._call(i, op, *args)

        return list(
            await asyncio.gather(
                *(durable(i, op, a, r) for (i, op, a), r in zip(ops, applied, strict=True))
            )
        )

    async def _upsert_prepared(self, batch: PreparedChunks, doc_ids: list[str]) -> dict[str, Any]:
        from lumos_ray.rag._pipeline import shard_of, split_by_shard

        n = len(self.shards)
        groups = split_by_shard(batch, n)
        empty = docs_without_chunks(doc_ids, batch)
        ops: list[tuple[int, str, tuple[Any, ...]]] = [
            (s, "upsert", (g,)) for s, g in groups.items()
        ]
        by_shard: dict[int, list[str]] = {}
        for d in empty:
            by_shard.setdefault(shard_of(d, n), []).append(d)
        ops += [(s, "delete", (ids,)) for s, ids in by_shard.items()]
        results = await self._write(ops)
        replaced = sum(r["replaced_docs"] if isinstance(r, dict) else r for r in results)
        return {"documents": len(doc_ids), "chunks": len(batch.chunks), "replaced": replaced}

    async def delete_documents(self, doc_ids: list[str]) -> int:
        from lumos_ray.rag._pipeline import shard_of

        n = len(self.shards)
        by_shard: dict[int, list[str]] = {}
        for d in doc_ids:
            by_shard.setdefault(shard_of(d, n), []).append(d)
        counts = await self._write([(s, "delete", (ids,)) for s, ids in by_shard.items()])
        return int(sum(counts))

    async def delete_entity(self, name: str) -> dict[str, Any]:
        """Remove every chunk (on every shard) that mentions the entity ``name``."""
        (key,) = entity_keys([name])
        parts = await self._write([(i, "delete_entity", (key,)) for i in range(len(self.shards))])
        return {
            "entity": key,
            "chunks": sum(p["chunks"] for p in parts),
            "documents": sorted({d for p in parts for d in p["documents"]}),
        }

    async def merge_entities(self, names: list[str], into: str) -> dict[str, Any]:
        """Make the entities ``names`` one entity with ``into`` on every shard."""
        sources = entity_keys(names)
        (target,) = entity_keys([into], "target entity name")
        args = (sources, target, into.strip())
        counts = await self._write([(i, "merge_entities", args) for i in range(len(self.shards))])
        return {"into": target, "merged": sorted(set(sources) - {target}), "chunks": sum(counts)}

    # -- reads --------------------------------------------------------------------
    async def embed_query(self, text: str) -> np.ndarray:
        cached = self._qcache.get(text)
        if cached is not None:
            self._qcache.move_to_end(text)
            return cached
        emb, _ = self._pipeline()
        vec = (await asyncio.to_thread(emb.embed, [text]))[0]
        self._qcache[text] = vec
        if len(self._qcache) > 2048:
            self._qcache.popitem(last=False)
        return vec

    async def search(
        self,
        query: str,
        mode: str = "hybrid",
        k: int = 5,
        carrier: dict[str, str] | None = None,
    ) -> list[dict[str, Any]]:
        """``carrier``: the caller's trace context, continued by a ``rag.search`` span."""
        from lumos_ray import tracing

        check_query(query, mode, k)
        with tracing.span("rag.search", carrier, collection=self.cfg.name, mode=mode, k=k) as sp:
            qvec = await self.embed_query(query)
            hits = await self.search_vector(qvec, query, mode, k)
            sp.set_attribute("hits", len(hits))
            return hits

    async def search_vector(
        self, qvec: np.ndarray, query: str, mode: str = "hybrid", k: int = 5
    ) -> list[dict[str, Any]]:
        """Search with a precomputed query vector (the text still names entities)."""
        import numpy as np

        from lumos_ray.rag._pipeline import query_entities

        check_query(query, mode, k)
        qvec = np.asarray(qvec, dtype=np.float32).reshape(-1)
        if qvec.shape != (self.cfg.embedding.dim,):
            from lumos_ray.errors import RagError

            raise RagError(
                f"The query vector has {qvec.size} values; the collection's embeddings "
                f"have {self.cfg.embedding.dim}.",
                fix="Embed the query with the collection's embedding model.",
            )
        ents = query_entities(query) if mode not in ("naive", "global") else []
        if mode == "guided":
            return await self._guided(qvec, query, ents, k)
        async with self._rw.read():
            return await self._search_locked(qvec, query, ents, mode, k)

    async def _search_locked(
        self, qvec: np.ndarray, query: str, ents: list[str], mode: str, k: int
    ) -> list[dict[str, Any]]:
        from lumos_ray.rag._multihop import run_sharded

        if len(self.shards) == 1:
            return await self._call(0, "search", qvec, ents, mode, k, query)
        if mode == "naive":
            return merge_topk(await self._all("vector_search", qvec, k), k)
        if mode == "global":
            return merge_topk(await self._all("global_search", qvec, k), k)
        q = self.cfg.query
        if mode == "multihop":
            return await run_sharded(self._all, qvec, query, ents, q, k)
        if mode == "mix":
            hops, graph = await asyncio.gather(
                run_sharded(self._all, qvec, query, ents, q, 2 * k),
                self._graph_search(qvec, ents, "hybrid", 2 * k),
            )
            return mix_rrf([hops, graph], k, q.mix_rrf_k, [1.0, q.mix_hybrid_weight])
        return await self._graph_search(qvec, ents, mode, k)

    async def _guided(
        self, qvec: np.ndarray, query: str, ents: list[str], k: int
    ) -> list[dict[str, Any]]:
        """mode guided: the multi-hop search with the guide model's choices (_guide).
        Each round of shard reads holds the read lock; the model calls do not."""
        from lumos_ray.rag._guide import Guide
        from lumos_ray.rag._multihop import run_sharded

        if self._guide is None:
            self._guide = Guide(self.cfg.guide)  # RagError when no model is configured

        async def call_all(method: str, *args: Any) -> list[Any]:
            async with self._rw.read():
                return await self._all(method, *args)

        return await run_sharded(
            call_all, qvec, query, ents, self.cfg.query, k, self.cfg.guide, self._guide.ask
        )

    async def _graph_search(
        self, qvec: np.ndarray, ents: list[str], mode: str, k: int
    ) -> list[dict[str, Any]]:
        """local/hybrid across shards: probe, global seeds, expand, fuse."""
        probes = await self._all("probe", qvec, ents, self.cfg.query.seed_hits)
        seed_ents, seed_chunks = seeds_from_probes(probes, mode, self.cfg.query)
        cands = await self._all("expand", qvec, mode, seed_ents, seed_chunks, k)
        return fuse(cands, mode, k, self.cfg.query)

    async def stats(self) -> dict[str, Any]:
        async with self._rw.read():
            shards = await self._all("stats")
        guide = self._guide
        return {
            "collection": self.cfg.name,
            "tenant": self.cfg.tenant,
            "num_shards": len(self.shards),
            "documents": sum(s["documents"] for s in shards),
            "chunks": sum(s["chunks"] for s in shards),
            "entities": sum(s["entities"] for s in shards),
            "relations": sum(s["relations"] for s in shards),
            "shards": shards,
            "snapshot_dir": self.root,
            "guide": None
            if guide is None
            else {"calls": guide.calls, "failures": guide.failures, "last_error": guide.last_error},
        }

    async def doc_chunks(self, doc_id: str) -> list[dict[str, Any]]:
        from lumos_ray.rag._pipeline import shard_of

        return await self._call(shard_of(doc_id, len(self.shards)), "doc_chunks", doc_id)

    async def entity_chunks(self, key: str) -> list[str]:
        return sorted(c for lst in await self._all("entity_chunks", key) for c in lst)

    async def config(self) -> dict[str, Any]:
        return self.cfg.model_dump()
