"""A whole collection in one process, with no Ray: the shard states side by side.

Why: the retrieval modes are defined by ``ShardState`` (per shard) plus the cross-shard
steps in ``_fusion`` and ``_multihop``. This class runs exactly those steps in-process,
the way the router runs them across actors, so unit tests and the evaluation benchmark
(``benchmarks/rag_eval.py --in-process``) measure the code the pool runs without
starting a cluster. It is not a serving path: no persistence, no concurrency control
beyond each shard's own lock.
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Iterable
from typing import Any

import numpy as np

from lumos_ray.rag._config import CollectionConfig, Document, SearchHit
from lumos_ray.rag._fusion import fuse, merge_topk, mix_rrf, seeds_from_probes
from lumos_ray.rag._multihop import arun_local, run_local
from lumos_ray.rag._pipeline import prepare_documents, query_entities, split_by_shard
from lumos_ray.rag._state import PreparedChunks, ShardState
from lumos_ray.rag._validate import check_query

__all__ = ["LocalCollection"]


class LocalCollection:
    """``num_shards`` shard states in this process, queried like the pool queries them."""

    def __init__(
        self,
        cfg: CollectionConfig,
        embedder: Any = None,
        extractor: Any = None,
        guide_model: Any = None,
    ):
        """``guide_model``: a ChatModel for mode ``guided`` instead of ``cfg.guide.model``
        (e.g. a test model)."""
        self.cfg = cfg
        self.embedder = embedder
        self.extractor = extractor
        self.guide_model = guide_model
        self.guide: Any = None
        self.shards = [
            ShardState(i, cfg.embedding.dim, cfg.index, cfg.query) for i in range(cfg.num_shards)
        ]

    def _pipeline(self) -> tuple[Any, Any]:
        if self.embedder is None:
            from lumos_ray.rag._embed import make_embedder

            self.embedder = make_embedder(self.cfg.embedding)
        if self.extractor is None:
            from lumos_ray.rag._extract import make_extractor

            self.extractor = make_extractor(self.cfg.extractor)
        return self.embedder, self.extractor

    def prepare(self, docs: Iterable[Document]) -> PreparedChunks:
        emb, ext = self._pipeline()
        return prepare_documents(list(docs), self.cfg, emb, ext)

    def upsert_prepared(self, batch: PreparedChunks) -> None:
        """Index already-embedded chunks. The records are copied: a shard numbers the
        rows of the records it holds, so two collections must never share them (in the
        pool every shard gets its own unpickled copy)."""
        batch = PreparedChunks(chunks=[copy.copy(c) for c in batch.chunks], vectors=batch.vectors)
        for s, group in split_by_shard(batch, len(self.shards)).items():
            self.shards[s].upsert(group)

    def upsert(self, docs: Iterable[Document]) -> None:
        self.upsert_prepared(self.prepare(docs))

    def delete(self, doc_ids: list[str]) -> int:
        return sum(s.delete(doc_ids) for s in self.shards)

    def query(self, text: str, mode: str = "hybrid", k: int = 5) -> list[SearchHit]:
        emb, _ = self._pipeline()
        check_query(text, mode, k)
        qvec = emb.embed([text])[0]
        return [SearchHit(**h) for h in self.query_vector(qvec, text, mode, k)]

    def query_vector(self, qvec: np.ndarray, text: str, mode: str, k: int) -> list[dict]:
        """The router's ``search_vector`` over in-process shards."""
        check_query(text, mode, k)
        q = self.cfg.query
        qvec = np.asarray(qvec, dtype=np.float32).reshape(-1)
        if mode == "naive":
            return merge_topk([s.vector_search(qvec, k) for s in self.shards], k)
        if mode == "global":
            return merge_topk([s.global_search(qvec, k) for s in self.shards], k)
        ents = query_entities(text)
        if mode == "guided":
            try:
                asyncio.get_running_loop()
            except RuntimeError:
                return asyncio.run(self.aguided(qvec, text, k))
            from lumos_ray.errors import RagError

            raise RagError(
                "LocalCollection.query_vector(mode='guided') was called on a running event "
                "loop; it would block it.",
                fix="Use `await coll.aguided(qvec, text, k)` from async code.",
            )
        if mode == "multihop":
            return run_local(self.shards, qvec, text, ents, q, k)
        if mode == "mix":
            graph = self.query_vector(qvec, text, "hybrid", 2 * k)
            hops = run_local(self.shards, qvec, text, ents, q, 2 * k)
            return mix_rrf([hops, graph], k, q.mix_rrf_k, [1.0, q.mix_hybrid_weight])
        probes = [s.probe(qvec, ents, q.seed_hits) for s in self.shards]
        seed_ents, seed_chunks = seeds_from_probes(probes, mode, q)
        cands = [s.expand(qvec, mode, seed_ents, seed_chunks, k) for s in self.shards]
        return fuse(cands, mode, k, q)

    async def aguided(self, qvec: np.ndarray, text: str, k: int) -> list[dict]:
        """mode ``guided`` (the router's ``_guided`` over in-process shards)."""
        from lumos_ray.rag._guide import Guide

        check_query(text, "guided", k)
        if self.guide is None:
            self.guide = Guide(self.cfg.guide, model=self.guide_model)
        run = self.guide.bind()  # the model's HTTP client belongs to this event loop
        try:
            return await arun_local(
                self.shards,
                np.asarray(qvec, dtype=np.float32).reshape(-1),
                text,
                query_entities(text),
                self.cfg.query,
                k,
                self.cfg.guide,
                run.ask,
            )
        finally:
            self.guide.calls += run.calls
            self.guide.failures += run.failures
            self.guide.last_error = run.last_error or self.guide.last_error
            await run.aclose()
