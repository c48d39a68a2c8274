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
import re
import time
from typing import Any

import numpy as np

from lumos_ray.rag._config import CollectionConfig, Document
from lumos_ray.rag._fusion import fuse, merge_topk, mix_rrf, seeds_from_probes
from lumos_ray.rag._multihop import run_sharded
from lumos_ray.rag._names import shard_actor_name, shard_dir
from lumos_ray.rag._pipeline import prepare_documents, query_entities, shard_of, split_by_shard
from lumos_ray.rag._state import PreparedChunks
from lumos_ray.rag._validate import check_query, entity_keys

__all__ = ["SHARD_OPTIONS", "RagRouter"]

#: Shards hold state on disk and every method is idempotent (upsert/delete by doc id,
#: reads), so Ray may both restart them and retry calls that hit a restart.
SHARD_OPTIONS: dict[str, Any] = {
    "num_cpus": 0,
    "max_restarts": -1,
    "max_task_retries": 3,
    "max_concurrency": 64,
}


class RagRouter:
    def __init__(self, config: dict[str, Any], snapshot_root: str) -> None:
        self.cfg = CollectionConfig.model_validate(config)
        self.root = snapshot_root
        self.shards: list[Any] = [self._shard_handle(i) for i in range(self.cfg.num_shards)]
        self._embedder: Any = None
        self._extractor: Any = None
        self._qcache: collections.OrderedDict[str, np.ndarray] = collections.OrderedDict()

    # -- shards -------------------------------------------------------------------
    def _shard_handle(self, i: int) -> Any:
        from lumos_ray.rag._shard import RagShard
        from lumos_ray.runtime import remote_class

        remote = remote_class(RagShard)
        return remote.options(
            name=shard_actor_name(self.cfg.name, self.cfg.tenant, i),
            lifetime="detached",
            get_if_exists=True,
            **SHARD_OPTIONS,
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
        return RagError(
            f"Shard {i} of collection {self.cfg.name!r} could not start: {reason}",
            fix=f"Its snapshot location is {shard_dir(self.root, i)}. A corrupt snapshot: "
            "restore it from a backup, or delete it (the shard then starts empty) and "
            "ingest the shard's documents again. An unreachable store: fix the access "
            "(credentials, network) and retry.",
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
        parsed = [Document.model_validate(d) for d in docs]
        emb, ext = self._pipeline()
        batch = await asyncio.to_thread(prepare_documents, parsed, self.cfg, emb, ext)
        res = await self._upsert_prepared(batch, [d.doc_id for d in parsed])
        res["seconds"] = time.perf_counter() - t0
        return res

    async def upsert_prepared(self, batch: PreparedChunks) -> dict[str, Any]:
        """Already-embedded chunks (benchmarks, or an external pipeline)."""
        return await self._upsert_prepared(batch, batch.doc_ids())

    async def _upsert_prepared(self, batch: PreparedChunks, doc_ids: list[str]) -> dict[str, Any]:
        n = len(self.shards)
        groups = split_by_shard(batch, n)
        # Documents that produced no chunks still replace (i.e. remove) an old version.
        empty = [d for d in doc_ids if d not in set(batch.doc_ids())]
        calls = [self._call(s, "upsert", g) for s, g in groups.items()]
        by_shard: dict[int, list[str]] = {}
        for d in empty:
            by_shard.setdefault(shard_of(d, n), []).append(d)
        calls += [self._call(s, "delete", ids) for s, ids in by_shard.items()]
        results = await asyncio.gather(*calls)
        replaced = sum(r["replaced_docs"] if isinstance(r, dict) else r for r in results)
        return {"documents": len(doc_ids), "chunks": len(batch.chunks), "replaced": replaced}

    async def delete_documents(self, doc_ids: list[str]) -> int:
        n = len(self.shards)
        by_shard: dict[int, list[str]] = {}
        for d in doc_ids:
            by_shard.setdefault(shard_of(d, n), []).append(d)
        counts = await asyncio.gather(
            *(self._call(s, "delete", ids) for s, ids in by_shard.items())
        )
        return int(sum(counts))

    async def delete_entity(self, name: str) -> dict[str, Any]:
        """Remove every chunk (on every shard) that mentions the entity ``name``."""
        (key,) = entity_keys([name])
        parts = await self._all("delete_entity", key)
        return {
            "entity": key,
            "chunks": sum(p["chunks"] for p in parts),
            "documents": sorted({d for p in parts for d in p["documents"]}),
        }

    async def merge_entities(self, names: list[str], into: str) -> dict[str, Any]:
        """Make the entities ``names`` one entity with ``into`` on every shard."""
        sources = entity_keys(names)
        (target,) = entity_keys([into], "target entity name")
        counts = await self._all("merge_entities", sources, target, into.strip())
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

    async def _graph_search(
        self, qvec: np.ndarray, ents: list[str], mode: str, k: int
    ) -> list[dict[str, Any]]:
        """local/hybrid across shards: probe, global seeds, expand, fuse."""
        probes = await self._all("probe", qvec, ents, self.cfg.query.seed_hits)
        seed_ents, seed_chunks = seeds_from_probes(probes, mode, self.cfg.query)
        cands = await self._all("expand", qvec, mode, seed_ents, seed_chunks, k)
        return fuse(cands, mode, k, self.cfg.query)

    async def stats(self) -> dict[str, Any]:
        shards = await self._all("stats")
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
        }

    async def doc_chunks(self, doc_id: str) -> list[dict[str, Any]]:
        return await self._call(shard_of(doc_id, len(self.shards)), "doc_chunks", doc_id)

    async def entity_chunks(self, key: str) -> list[str]:
        return sorted(c for lst in await self._all("entity_chunks", key) for c in lst)

    async def config(self) -> dict[str, Any]:
        return self.cfg.model_dump()
