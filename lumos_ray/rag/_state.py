"""One shard's data and search logic, with no Ray in it.

A :class:`ShardState` owns the chunk records, their vectors (faiss: exact
``IndexFlatIP`` while small, HNSW beyond ``hnsw_threshold``; inner product on
normalized vectors = cosine) and the shard's part of the knowledge graph. The actor in
``_shard.py`` wraps it; keeping it Ray-free lets unit tests and the single-process
benchmarks exercise exactly the code the pool runs.

Thread safety: every public method takes the state lock, so the actor can run them in
worker threads (keeping its event loop free) while writes and reads interleave.
"""

from __future__ import annotations

import itertools
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lumos_ray.errors import RagError
from lumos_ray.rag._config import IndexConfig, QueryConfig
from lumos_ray.rag._entities import title_keys
from lumos_ray.rag._graph import KnowledgeGraph, enode
from lumos_ray.rag._snapfile import LegacySnapshot, pack, unpack
from lumos_ray.rag._snapshot_store import SNAPSHOT_FILE, SnapshotStore, open_store

__all__ = ["SNAPSHOT_FILE", "ChunkRecord", "PreparedChunks", "ShardState"]

_BIG_COMMUNITY = 2000


@dataclass(slots=True)
class ChunkRecord:
    chunk_id: str
    doc_id: str
    title: str
    text: str
    source: str = ""
    entities: dict[str, str] = field(default_factory=dict)
    relations: list[tuple[str, str, str]] = field(default_factory=list)
    row: int = -1


@dataclass
class PreparedChunks:
    """Chunks ready for a shard: text, extraction results and (n, d) vectors."""

    chunks: list[ChunkRecord]
    vectors: np.ndarray

    def doc_ids(self) -> list[str]:
        return list(dict.fromkeys(c.doc_id for c in self.chunks))


def _faiss() -> Any:
    import faiss

    return faiss


class _VectorIndex:
    """faiss index over row ids; HNSW deletes are tombstones until a rebuild."""

    def __init__(self, dim: int, cfg: IndexConfig) -> None:
        self.dim = dim
        self.cfg = cfg
        self.kind = "flat"
        self.index: Any = None
        self.tombstones: set[int] = set()
        faiss = _faiss()
        faiss.omp_set_num_threads(cfg.faiss_threads)
        self._new("flat")

    def _new(self, kind: str) -> None:
        faiss = _faiss()
        if kind == "hnsw":
            base = faiss.IndexHNSWFlat(self.dim, self.cfg.hnsw_m, faiss.METRIC_INNER_PRODUCT)
            base.hnsw.efConstruction = self.cfg.hnsw_ef_construction
            base.hnsw.efSearch = self.cfg.hnsw_ef_search
        else:
            base = faiss.IndexFlatIP(self.dim)
        self.index = faiss.IndexIDMap2(base)
        self.kind = kind
        self.tombstones = set()

    def want_kind(self, live: int) -> str:
        if self.cfg.kind != "auto":
            return self.cfg.kind
        return "hnsw" if live >= self.cfg.hnsw_threshold else "flat"

    def rebuild(self, vectors: np.ndarray, rows: np.ndarray, live: int) -> None:
        self._new(self.want_kind(live))
        if len(rows):
            self.index.add_with_ids(vectors, rows.astype(np.int64))

    def add(self, vectors: np.ndarray, rows: np.ndarray) -> None:
        self.index.add_with_ids(np.ascontiguousarray(vectors, dtype=np.float32), rows)

    def remove(self, rows: list[int]) -> None:
        if not rows:
            return
        if self.kind == "flat":
            self.index.remove_ids(np.asarray(rows, dtype=np.int64))
        else:
            self.tombstones.update(rows)

    def search(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        n = self.index.ntotal
        if n == 0 or k <= 0:
            return np.zeros((len(q), 0), np.float32), np.zeros((len(q), 0), np.int64)
        extra = len(self.tombstones)
        kk = min(n, k + extra)
        scores, ids = self.index.search(np.ascontiguousarray(q, dtype=np.float32), kk)
        if extra:
            keep = [
                [
                    (s, i)
                    for s, i in zip(srow, irow, strict=True)
                    if i >= 0 and i not in self.tombstones
                ][:k]
                for srow, irow in zip(scores, ids, strict=True)
            ]
            scores = np.array([[s for s, _ in r] for r in keep], dtype=np.float32)
            ids = np.array([[i for _, i in r] for r in keep], dtype=np.int64)
        return scores[:, :k], ids[:, :k]


class ShardState:
    """Chunks + vectors + graph of one shard, and the search modes over them."""

    def __init__(self, shard: int, dim: int, index: IndexConfig, query: QueryConfig) -> None:
        self.shard = shard
        self.dim = dim
        self.index_cfg = index
        self.qcfg = query
        self.lock = threading.RLock()
        self.chunks: dict[str, ChunkRecord] = {}
        self.docs: dict[str, list[str]] = {}
        self.row_chunk: list[str | None] = []
        self.vectors = np.zeros((0, dim), dtype=np.float32)
        self.graph = KnowledgeGraph()
        self.version = 0
        self._index = _VectorIndex(dim, index)
        self._centroids: tuple[int, np.ndarray, list[list[str]], list[list[str]]] | None = None
        self._community_of: dict[str, int] = {}
        # entity key -> chunks *about* it (their document's title is that entity): the
        # page a multi-hop link leads to. Derived from the chunks, rebuilt on load.
        self.about: dict[str, list[str]] = {}
        # Merged entity keys: alias -> the key it was merged into (merge_entities). Kept
        # in the snapshot; applied to every chunk ingested later and to query entities.
        self.aliases: dict[str, str] = {}

    def canon(self, key: str) -> str:
        """The key an entity is stored under (itself unless it was merged away)."""
        return self.aliases.get(key, key)

    def _apply_aliases(self, rec: ChunkRecord) -> None:
        if not self.aliases or not (self.aliases.keys() & rec.entities.keys()):
            return
        ents: dict[str, str] = {}
        for key, name in rec.entities.items():
            ents.setdefault(self.canon(key), name)
        rec.entities = ents
        rels = []
        for h, rel, t in rec.relations:
            h, t = self.canon(h), self.canon(t)
            if h != t and (h, rel, t) not in rels:
                rels.append((h, rel, t))
        rec.relations = rels

    # -- mutation -----------------------------------------------------------------
    def upsert(self, batch: PreparedChunks) -> dict[str, int]:
        """Add documents; a document already present is replaced as a whole."""
        ids = [c.chunk_id for c in batch.chunks]
        if len(set(ids)) != len(ids):
            dup = next(c for c in ids if ids.count(c) > 1)
            raise RagError(
                f"An upsert batch holds chunk {dup!r} twice (a document id named twice in "
                "one batch?).",
                fix="Give every document its own doc_id; prepare_documents keeps the last "
                "of a repeated one.",
            )
        with self.lock:
            replaced = self._delete_locked(batch.doc_ids())
            n = len(batch.chunks)
            if n:
                vecs = np.ascontiguousarray(batch.vectors, dtype=np.float32).reshape(n, self.dim)
                start = len(self.row_chunk)
                rows = np.arange(start, start + n, dtype=np.int64)
                self.vectors = np.concatenate([self.vectors, vecs]) if start else vecs.copy()
                for rec, row in zip(batch.chunks, rows, strict=True):
                    self._apply_aliases(rec)
                    rec.row = int(row)
                    self.row_chunk.append(rec.chunk_id)
                    self.chunks[rec.chunk_id] = rec
                    self.docs.setdefault(rec.doc_id, []).append(rec.chunk_id)
                    self.graph.add_chunk(rec.chunk_id, rec.entities, rec.relations)
                    self._index_about(rec)
                self._index.add(vecs, rows)
            self._maybe_compact()
            self.version += 1
            return {"chunks": n, "replaced_docs": replaced}

    def delete(self, doc_ids: list[str]) -> int:
        """Remove documents (their chunks, vectors and graph provenance)."""
        with self.lock:
            removed = self._delete_locked(doc_ids)
            self._maybe_compact()
            self.version += 1
            return removed

    def _delete_locked(self, doc_ids: list[str]) -> int:
        """Drop the documents' chunks; returns how many of the documents existed."""
        existed = 0
        rows: list[int] = []
        for doc_id in dict.fromkeys(doc_ids):
            cids = self.docs.pop(doc_id, None)
            if cids is None:
                continue
            existed += 1
            for cid in cids:
                rec = self.chunks.pop(cid)
                self._unindex_about(rec)
                rows.append(rec.row)
                self.row_chunk[rec.row] = None
                self.graph.remove_chunk(cid, rec.relations)
        self._index.remove(rows)
        return existed

    def _about_keys(self, rec: ChunkRecord) -> list[str]:
        """Entity keys this chunk is the page of: its title's keys (``title_keys``),
        when the title is one of the chunk's entities."""
        if not rec.title or not rec.entities:
            return []
        keys = list(dict.fromkeys(self.canon(k) for k in title_keys(rec.title)))
        return keys if keys and keys[0] in rec.entities else []  # "." or "The": no key

    def _index_about(self, rec: ChunkRecord) -> None:
        for key in self._about_keys(rec):
            self.about.setdefault(key, []).append(rec.chunk_id)

    def _unindex_about(self, rec: ChunkRecord) -> None:
        for key in self._about_keys(rec):
            lst = self.about.get(key)
            if lst and rec.chunk_id in lst:
                lst.remove(rec.chunk_id)
                if not lst:
                    del self.about[key]

    def delete_entity(self, key: str) -> dict[str, Any]:
        """Remove every chunk that mentions the entity: its vectors, the relation
        evidence those chunks gave, and so the entity itself. Other chunks of the same
        documents stay (re-ingesting a document brings all of it back)."""
        with self.lock:
            key = self.canon(key)
            cids = sorted(self.graph.entity_chunks(key))
            docs: dict[str, int] = {}
            rows: list[int] = []
            for cid in cids:
                rec = self.chunks.pop(cid)
                self._unindex_about(rec)
                rows.append(rec.row)
                self.row_chunk[rec.row] = None
                self.graph.remove_chunk(cid, rec.relations)
                left = self.docs[rec.doc_id]
                left.remove(cid)
                if not left:
                    del self.docs[rec.doc_id]
                docs[rec.doc_id] = docs.get(rec.doc_id, 0) + 1
            self._index.remove(rows)
            self._maybe_compact()
            self.version += 1
            return {"chunks": len(cids), "documents": sorted(docs)}

    def merge_entities(self, sources: list[str], target: str, name: str = "") -> int:
        """Make ``sources`` one entity with ``target``: their mentions and relation
        evidence move to it (provenance stays exact, so deleting a document still
        removes just its part), later ingestion maps the source names to it, and a
        document titled with a source name becomes the target's page. Returns how many
        chunks changed."""
        with self.lock:
            target = self.canon(target)
            srcs = [self.canon(k) for k in dict.fromkeys(sources)]
            srcs = [k for k in srcs if k != target]
            display = name or (
                self.graph.entity_name(target) if self.graph.has_entity(target) else ""
            )
            changed = sorted({c for k in srcs for c in self.graph.entity_chunks(k)})
            # Take the chunks out under the old keys, then re-add them under the new.
            for cid in changed:
                rec = self.chunks[cid]
                self._unindex_about(rec)
                self.graph.remove_chunk(cid, rec.relations)
            for k in srcs:
                self.aliases[k] = target
            for alias, into in list(self.aliases.items()):  # keep chains one step long
                if into in self.aliases:
                    self.aliases[alias] = self.aliases[into]
            for cid in changed:
                rec = self.chunks[cid]
                self._apply_aliases(rec)
                if display:
                    rec.entities[target] = display
                self.graph.add_chunk(cid, rec.entities, rec.relations)
                self._index_about(rec)
            if display and self.graph.has_entity(target):
                self.graph.g.nodes["e:" + target]["name"] = display
            self.version += 1
            return len(changed)

    def _maybe_compact(self) -> None:
        """Reclaim deleted rows / switch flat↔HNSW when the size crosses the threshold."""
        live = len(self.chunks)
        dead = len(self.row_chunk) - live
        want = self._index.want_kind(live)
        if (
            dead > max(1000, live // 4)
            or want != self._index.kind
            or (self._index.tombstones and len(self._index.tombstones) > max(100, live // 10))
        ):
            self._compact()

    def _compact(self) -> None:
        live_ids = [cid for cid in self.row_chunk if cid is not None]
        old_rows = np.array([self.chunks[c].row for c in live_ids], dtype=np.int64)
        self.vectors = (
            np.ascontiguousarray(self.vectors[old_rows])
            if len(live_ids)
            else (np.zeros((0, self.dim), dtype=np.float32))
        )
        self.row_chunk = list(live_ids)
        for i, cid in enumerate(live_ids):
            self.chunks[cid].row = i
        rows = np.arange(len(live_ids), dtype=np.int64)
        self._index.rebuild(self.vectors, rows, len(live_ids))

    # -- inspection ---------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        with self.lock:
            return {
                "shard": self.shard,
                "documents": len(self.docs),
                "chunks": len(self.chunks),
                "index": self._index.kind,
                "version": self.version,
                **self.graph.stats(),
            }

    def doc_chunks(self, doc_id: str) -> list[dict[str, Any]]:
        with self.lock:
            return [self._chunk_info(cid) for cid in self.docs.get(doc_id, [])]

    def _chunk_info(self, cid: str) -> dict[str, Any]:
        rec = self.chunks[cid]
        return {
            "chunk_id": cid,
            "doc_id": rec.doc_id,
            "text": rec.text,
            "entities": sorted(self.graph.chunk_entities(cid)),
            "relations": self.graph.relation_edges(cid),
        }

    def entity_chunks(self, key: str) -> list[str]:
        with self.lock:
            return sorted(self.graph.entity_chunks(self.canon(key)))

    # -- search: building blocks shared with the router ---------------------------
    def _hit(self, cid: str, score: float, mode: str, **extra: Any) -> dict[str, Any]:
        rec = self.chunks[cid]
        return {
            "chunk_id": cid,
            "doc_id": rec.doc_id,
            "title": rec.title,
            "text": rec.text,
            "source": rec.source,
            "score": float(score),
            "mode": mode,
            "shard": self.shard,
            "entities": [rec.entities.get(k, k) for k in list(rec.entities)[:12]],
            **extra,
        }

    def vector_search(self, qvec: np.ndarray, k: int) -> list[dict[str, Any]]:
        """naive mode: the k nearest chunks."""
        with self.lock:
            scores, rows = self._index.search(qvec.reshape(1, -1), k)
            out = []
            for s, r in zip(scores[0], rows[0], strict=True):
                cid = self.row_chunk[r] if r >= 0 else None
                if cid is not None:
                    out.append(self._hit(cid, s, "naive", vector_score=float(s)))
            return out

    def probe(self, qvec: np.ndarray, query_entities: list[str], m: int) -> dict[str, Any]:
        """Phase 1 of local/hybrid: top-m vector hits with their (non-hub) entities, and
        which of the query's entities this shard knows."""
        with self.lock:
            scores, rows = self._index.search(qvec.reshape(1, -1), m)
            hits = []
            for s, r in zip(scores[0], rows[0], strict=True):
                cid = self.row_chunk[r] if r >= 0 else None
                if cid is None:
                    continue
                ents = {k: self.graph.chunk_degree(k) for k in self.graph.chunk_entities(cid)}
                hits.append({"chunk_id": cid, "score": float(s), "entities": ents})
            canon = [self.canon(k) for k in query_entities]
            known = {k: self.graph.chunk_degree(k) for k in canon if self.graph.has_entity(k)}
            return {"hits": hits, "query_entities": known}

    def expand(
        self,
        qvec: np.ndarray,
        mode: str,
        seed_entities: dict[str, tuple[float, str]],
        seed_chunks: dict[str, float],
        k: int,
    ) -> list[dict[str, Any]]:
        """Phase 2 of local/hybrid: personalized PageRank from the global seeds, then
        candidates (graph-reached chunks, plus vector hits in hybrid) with exact cosine
        and unnormalized graph mass. The router fuses across shards."""
        q = self.qcfg
        with self.lock:
            seeds = {enode(e): w for e, (w, _) in seed_entities.items()}
            mass = self.graph.ppr(
                seeds,
                damping=q.damping,
                iters=q.ppr_iters,
                max_nodes=q.max_subgraph,
                hub_degree=q.hub_degree,
                hops=q.ppr_hops,
                limit=max(5 * k, 50),
            )
            cands = set(mass)
            if mode == "hybrid":
                cands.update(c for c in seed_chunks if c in self.chunks)
            cands = {c for c in cands if c in self.chunks}
            if not cands:
                return []
            ids = list(cands)
            rows = np.array([self.chunks[c].row for c in ids], dtype=np.int64)
            sims = self.vectors[rows] @ qvec.reshape(-1)
            gmax = max(mass.values(), default=0.0) or 1.0
            lam = q.vector_weight if mode == "hybrid" else q.vector_weight / 2
            p = q.graph_power
            local = [
                (lam * float(s) + (1 - lam) * (mass.get(c, 0.0) / gmax) ** p, c, float(s))
                for c, s in zip(ids, sims, strict=True)
            ]
            local.sort(reverse=True)
            out = []
            for est, cid, sim in local[: max(3 * k, k + 10)]:
                out.append(
                    self._hit(
                        cid,
                        est,
                        mode,
                        vector_score=sim,
                        graph_score=mass.get(cid, 0.0),
                        path=self._path(cid, seed_entities, seed_chunks),
                    )
                )
            return out

    def _path(
        self, cid: str, seed_entities: dict[str, tuple[float, str]], seed_chunks: dict[str, float]
    ) -> list[str]:
        """How the graph reaches ``cid`` from a seed: chunk → entity → chunk (or via a
        related entity)."""
        best: tuple[float, list[str]] | None = None
        for e in self.graph.chunk_entities(cid):
            if e in seed_entities and seed_entities[e][1] != "chunk:" + cid:
                w, src = seed_entities[e]
                cand = [src, "entity:" + self.graph.entity_name(e), "chunk:" + cid]
                if best is None or w > best[0]:
                    best = (w, cand)
        if best is None:
            for e in self.graph.chunk_entities(cid):
                if self.graph.g.degree(enode(e)) > self.qcfg.hub_degree:
                    continue
                for r in self.graph.related_entities(e):
                    if r in seed_entities and seed_entities[r][1] != "chunk:" + cid:
                        w, src = seed_entities[r]
                        cand = [
                            src,
                            "entity:" + self.graph.entity_name(r),
                            "entity:" + self.graph.entity_name(e),
                            "chunk:" + cid,
                        ]
                        if best is None or w > best[0]:
                            best = (w, cand)
        return best[1] if best else []

    # -- multihop: the shard side of _multihop.plan --------------------------------
    def _view(self, cid: str, sim: float) -> dict[str, Any]:
        rec = self.chunks[cid]
        return {
            "chunk_id": cid,
            "doc_id": rec.doc_id,
            "title": rec.title,
            "text": rec.text,
            "source": rec.source,
            "shard": self.shard,
            # Rounded: the same chunk scores the same whether faiss or numpy computed
            # it, so ties break the same way on any number of shards.
            "sim": round(float(sim), 6),
            "entities": dict(rec.entities),
            "degree": {k: self.graph.chunk_degree(k) for k in rec.entities},
            "about": self._about_keys(rec),
        }

    def _sims(self, cids: list[str], qvec: np.ndarray) -> np.ndarray:
        rows = np.array([self.chunks[c].row for c in cids], dtype=np.int64)
        return self.vectors[rows] @ qvec.reshape(-1)

    def mh_seed(self, qvec: np.ndarray, query_entities: list[str], m: int) -> dict[str, Any]:
        """Top-m vector hits and the chunks about the query's entities, as views."""
        with self.lock:
            scores, rows = self._index.search(qvec.reshape(1, -1), m)
            hits = [
                self._view(self.row_chunk[r], s)
                for s, r in zip(scores[0], rows[0], strict=True)
                if r >= 0 and self.row_chunk[r] is not None
            ]
            about_ids = list(
                dict.fromkeys(
                    c for e in query_entities for c in self.about.get(self.canon(e), [])[:3]
                )
            )
            sims: Any = self._sims(about_ids, qvec) if about_ids else []
            about = [self._view(c, s) for c, s in zip(about_ids, sims, strict=True)]
            return {"hits": hits, "about": about}

    def mh_link(
        self, qvec: np.ndarray, entities: dict[str, int], known: list[str]
    ) -> dict[str, list[dict[str, Any]]]:
        """For each entity, up to its cap of chunks: the ones about it, then the ones
        mentioning it, most similar to the query first. Chunks in ``known`` (the caller
        has their text already) come back as stubs: id, cosine and about-key only."""
        with self.lock:
            seen = set(known)
            out: dict[str, list[dict[str, Any]]] = {}
            for key, cap in entities.items():
                about = [c for c in self.about.get(key, []) if c in self.chunks]
                picked: list[tuple[str, float]] = []
                if about:
                    sims = self._sims(about, qvec)
                    order = np.argsort(-sims)[:cap]
                    picked += [(about[i], float(sims[i])) for i in order]
                else:
                    # A link leads to the entity's own page when it has one; the chunks
                    # that merely mention it are followed only for entities without one
                    # (at most 4096 of them scored: the planner skips hubs, but a hub
                    # on this shard may not be one on the shard that asked).
                    mention = list(itertools.islice(self.graph.entity_chunks_iter(key), 4096))
                    mention = [c for c in mention if c in self.chunks]
                    if mention:
                        sims = self._sims(mention, qvec)
                        order = np.argsort(-sims)[:cap]
                        picked += [(mention[i], float(sims[i])) for i in order]
                out[key] = [
                    {"chunk_id": c, "sim": round(s, 6), "about": self._about_keys(self.chunks[c])}
                    if c in seen
                    else self._view(c, s)
                    for c, s in picked
                ]
            return out

    def global_search(self, qvec: np.ndarray, k: int) -> list[dict[str, Any]]:
        """global mode: rank the graph's communities by their centroid, then chunks
        inside the best communities; score = mean of community and chunk cosine."""
        with self.lock:
            cents, members, top_ents = self._community_centroids()
            if not len(cents):
                return []
            csims = cents @ qvec.reshape(-1)
            order = np.argsort(-csims)[: self.qcfg.communities_top]
            out = []
            near: list[str] | None = None
            for ci in order:
                ids = members[ci]
                if len(ids) > _BIG_COMMUNITY:
                    # A giant community (label propagation on a big graph makes some):
                    # score only its members among the nearest chunks, not all of them.
                    if near is None:
                        _, nrows = self._index.search(qvec.reshape(1, -1), max(512, 20 * k))
                        near = [self.row_chunk[r] for r in nrows[0] if r >= 0]
                    comm = self._community_of
                    ids = [c for c in near if c is not None and comm.get(c) == ci] or ids[:1]
                rows = np.array([self.chunks[c].row for c in ids], dtype=np.int64)
                sims = self.vectors[rows] @ qvec.reshape(-1)
                best = np.argsort(-sims)[:k]
                for j in best:
                    cid = ids[j]
                    out.append(
                        self._hit(
                            cid,
                            0.5 * float(csims[ci]) + 0.5 * float(sims[j]),
                            "global",
                            vector_score=float(sims[j]),
                            graph_score=float(csims[ci]),
                            community=int(ci),
                            path=[f"community:{self.shard}.{int(ci)}"]
                            + ["entity:" + n for n in top_ents[ci][:3]],
                        )
                    )
            out.sort(key=lambda h: -h["score"])
            return out[:k]

    def _community_centroids(self) -> tuple[np.ndarray, list[list[str]], list[list[str]]]:
        if self._centroids is not None and self._centroids[0] == self.graph.version:
            return self._centroids[1], self._centroids[2], self._centroids[3]
        comms = self.graph.communities()
        members = [sorted(c for c in comm if c in self.chunks) for comm in comms]
        members = [m for m in members if m]
        cents = np.zeros((len(members), self.dim), dtype=np.float32)
        top_ents: list[list[str]] = []
        for i, ids in enumerate(members):
            rows = np.array([self.chunks[c].row for c in ids], dtype=np.int64)
            v = self.vectors[rows].mean(axis=0)
            cents[i] = v / (np.linalg.norm(v) or 1.0)
            counts: dict[str, int] = {}
            for c in ids:
                for e in self.chunks[c].entities:
                    counts[e] = counts.get(e, 0) + 1
            top = sorted(counts, key=lambda e: -counts[e])[:5]
            top_ents.append(
                [self.graph.entity_name(e) if self.graph.has_entity(e) else e for e in top]
            )
        self._community_of = {c: i for i, ids in enumerate(members) for c in ids}
        self._centroids = (self.graph.version, cents, members, top_ents)
        return cents, members, top_ents

    def warm(self) -> None:
        """Precompute communities (global mode) and the walk matrix (local/hybrid) so the
        first query does not pay for them."""
        with self.lock:
            self._community_centroids()
            self.graph._matrix(self.qcfg.hub_degree)

    # -- snapshots ----------------------------------------------------------------
    def dumps(self) -> bytes:
        """The whole shard as bytes, in the snapshot format of ``_snapfile``: JSON for
        the records and the graph, .npy for the vectors and the edge list, faiss's own
        serialization for the index.

        A consistent cut is taken under the lock (copies of what writes mutate in place,
        references to what they only replace: the vector array, each record's relation
        list); encoding, hashing and joining run after it is released, so queries and
        writes wait for the cut only (about half of the time: 1.0 of 1.8 s at 40k chunks)."""
        with self.lock:
            faiss = _faiss()
            g = self.graph.g
            order = {n: i for i, n in enumerate(g.nodes)}
            entities = {}
            for n, i in order.items():
                if n.startswith("e:"):
                    data = g.nodes[n]
                    entities[str(i)] = [data.get("name", ""), int(data.get("n", 0))]
            edges = np.zeros((g.number_of_edges(), 3), dtype=np.int64)
            prov: list[dict[str, str]] = []
            for j, (a, b, data) in enumerate(g.edges(data=True)):
                rel = -1
                if "prov" in data:
                    rel = len(prov)
                    prov.append(dict(data["prov"]))
                edges[j] = (order[a], order[b], rel)
            meta = {
                "version": self.version,
                "graph_version": self.graph.version,
                "index_kind": self._index.kind,
                "tombstones": sorted(self._index.tombstones),
                "aliases": dict(self.aliases),
                "docs": {d: list(c) for d, c in self.docs.items()},
                "row_chunk": list(self.row_chunk),
                "chunks": [
                    (
                        r.chunk_id,
                        r.doc_id,
                        r.title,
                        r.text,
                        r.source,
                        list(r.entities.items()),
                        r.relations,
                        r.row,
                    )
                    for r in self.chunks.values()
                ],
                "nodes": list(order),
                "entities": entities,
                "prov": prov,
            }
            vectors = self.vectors  # replaced by writes, never changed in place
            index = faiss.serialize_index(self._index.index)
        return pack(
            {"kind": "lumos-rag-shard", "shard": self.shard, "dim": self.dim},
            {
                "meta": ("json", meta),
                "vectors": ("npy", np.ascontiguousarray(vectors, dtype=np.float32)),
                "edges": ("npy", edges),
                "index": ("raw", index.tobytes()),
            },
        )

    def save(self, target: str | Path | SnapshotStore) -> str:
        """Write the snapshot so a reader never sees half of it: a directory gets a temp
        file + rename, a URI a versioned object plus a pointer (``_snapshot_store``).
        Returns where it was written."""
        data = self.dumps()
        store = open_store(target) if isinstance(target, (str, Path)) else target
        return store.save_snapshot(data)

    @classmethod
    def load(
        cls,
        source: str | Path | SnapshotStore,
        shard: int,
        dim: int,
        index: IndexConfig,
        query: QueryConfig,
    ) -> ShardState:
        """A shard from its snapshot, or an empty one when there is none yet. A snapshot
        that exists but cannot be read is a :class:`RagError`, never an empty shard;
        nothing in it is unpickled (``_snapfile``)."""
        store = open_store(source) if isinstance(source, (str, Path)) else source
        state = cls(shard, dim, index, query)
        snap = store.load_snapshot()
        if snap is None:
            return state
        try:
            manifest, sections = unpack(snap.data)
            state._restore(manifest, sections, index)
        except LegacySnapshot:
            raise RagError(
                f"Snapshot {snap.location} of shard {shard} was written by an older "
                "lumos_ray as a pickle, which is no longer loaded (unpickling a file runs "
                "any code it names).",
                fix="Ingest the collection again: `lumos rag delete --collection NAME --all` "
                "(removes the old snapshots and config), then `lumos rag ingest PATH "
                "--collection NAME` (same --shards/--config as before). Or restore a "
                "snapshot written by this version.",
            ) from None
        except Exception as exc:
            raise RagError(
                f"Snapshot {snap.location} of shard {shard} is unreadable "
                f"({type(exc).__name__}: {exc}).",
                fix="Restore it from a backup, or delete it (the shard then starts empty) "
                "and ingest the shard's documents again.",
            ) from exc
        return state

    def _restore(
        self, manifest: dict[str, Any], sections: dict[str, Any], index: IndexConfig
    ) -> None:
        """Rebuild the state from decoded sections, checking every cross-reference (a
        snapshot is data from disk: wrong shapes or dangling ids are refused)."""
        if manifest.get("kind") != "lumos-rag-shard":
            raise ValueError("not a shard snapshot")
        if manifest.get("dim") != self.dim:
            raise ValueError(
                f"vectors of {manifest.get('dim')} dims, the collection has {self.dim}"
            )
        for name in ("meta", "vectors", "edges", "index"):
            if name not in sections:
                raise ValueError(f"the snapshot has no {name!r} section")
        meta, vectors, edges = sections["meta"], sections["vectors"], sections["edges"]
        if not isinstance(meta, dict):
            raise ValueError("meta is not an object")
        if vectors.dtype != np.float32 or vectors.ndim != 2 or vectors.shape[1] != self.dim:
            raise ValueError(f"vectors of shape {vectors.shape} and dtype {vectors.dtype}")
        row_chunk = _list(meta.get("row_chunk"), "row_chunk")
        if len(row_chunk) != len(vectors):
            raise ValueError(f"{len(row_chunk)} rows named, {len(vectors)} vectors")
        chunks: dict[str, ChunkRecord] = {}
        for item in _list(meta.get("chunks"), "chunks"):
            cid, doc, title, text, source, ents, rels, row = item
            if not (isinstance(row, int) and 0 <= row < len(row_chunk) and row_chunk[row] == cid):
                raise ValueError(f"chunk {cid!r}: row {row!r} does not name it")
            rec = ChunkRecord(
                chunk_id=_str(cid),
                doc_id=_str(doc),
                title=_str(title),
                text=_str(text),
                source=_str(source),
                entities={_str(k): _str(v) for k, v in ents},
                relations=[(_str(h), _str(r), _str(t)) for h, r, t in rels],
                row=row,
            )
            chunks[rec.chunk_id] = rec
        if any(c is not None and c not in chunks for c in row_chunk):
            raise ValueError("row_chunk names a chunk that is not in the snapshot")
        docs = {_str(d): [_str(c) for c in cids] for d, cids in meta.get("docs", {}).items()}
        if sum(len(v) for v in docs.values()) != len(chunks) or any(
            c not in chunks for v in docs.values() for c in v
        ):
            raise ValueError("docs and chunks disagree")
        # The graph: nodes in their order, entity attributes, edges with provenance.
        import networkx as nx

        nodes = [_str(n) for n in _list(meta.get("nodes"), "nodes")]
        ents = meta.get("entities", {})
        prov = _list(meta.get("prov"), "prov")
        if edges.dtype != np.int64 or edges.ndim != 2 or edges.shape[1] != 3:
            raise ValueError(f"edges of shape {edges.shape} and dtype {edges.dtype}")
        if len(edges) and (
            edges[:, :2].min() < 0
            or edges[:, :2].max() >= len(nodes)
            or edges[:, 2].max() >= len(prov)
        ):
            raise ValueError("an edge names a node or provenance that does not exist")
        g = nx.Graph()
        for i, n in enumerate(nodes):
            if n.startswith("e:"):
                name, count = ents[str(i)]
                g.add_node(n, kind="entity", name=_str(name), n=int(count))
            elif n.startswith("c:") and n[2:] in chunks:
                g.add_node(n)
            else:
                raise ValueError(f"graph node {n!r} is neither a chunk nor an entity")
        for a, b, rel in edges.tolist():
            if rel < 0:
                g.add_edge(nodes[a], nodes[b])
            else:
                p = prov[rel]
                g.add_edge(
                    nodes[a], nodes[b], kind="rel", prov={_str(c): _str(r) for c, r in p.items()}
                )
        faiss = _faiss()
        base = faiss.deserialize_index(np.frombuffer(sections["index"], dtype=np.uint8))
        tombstones = {int(t) for t in _list(meta.get("tombstones"), "tombstones")}
        live = sum(1 for c in row_chunk if c is not None)
        if base.d != self.dim or base.ntotal not in (live, live + len(tombstones)):
            raise ValueError(
                f"the index holds {base.ntotal} vectors of {base.d} dims; the snapshot "
                f"has {live} live rows of {self.dim}"
            )
        kind = meta.get("index_kind")
        if kind not in ("flat", "hnsw"):
            raise ValueError(f"unknown index kind {kind!r}")
        state = self
        state.version = int(meta["version"])
        state.chunks = chunks
        state.docs = docs
        state.row_chunk = row_chunk
        state.vectors = np.ascontiguousarray(vectors)
        state.graph.g = g
        state.graph.version = int(meta["graph_version"])
        state.aliases = {_str(k): _str(v) for k, v in meta.get("aliases", {}).items()}
        state.about = {}
        for rec in state.chunks.values():
            state._index_about(rec)
        state._index.index = base
        state._index.kind = kind
        state._index.tombstones = tombstones
        if kind == "hnsw":
            faiss.downcast_index(base.index).hnsw.efSearch = index.hnsw_ef_search


def _str(v: Any) -> str:
    if not isinstance(v, str):
        raise ValueError(f"expected a string, got {type(v).__name__}")
    return v


def _list(v: Any, what: str) -> list[Any]:
    if not isinstance(v, list):
        raise ValueError(f"{what} is not a list")
    return v
