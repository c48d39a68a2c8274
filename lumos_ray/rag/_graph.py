"""The knowledge graph of one shard: entities, relations and the chunks they came from.

One undirected networkx graph holds two kinds of node: ``c:<chunk_id>`` and
``e:<entity_key>``. A chunk is linked to every entity it mentions (a "mention" edge,
without attributes); two entities are linked when some chunk relates them, and that
edge remembers which chunks said so (``prov``: chunk_id → relation). Provenance is what
makes delete exact: removing a chunk removes its edges, the relation evidence it
contributed, and entities no other chunk mentions.

Query-time graph work (personalized PageRank, neighbourhoods) runs on a bounded
subgraph around the seeds so latency does not grow with the collection.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import networkx as nx
import numpy as np

__all__ = ["KnowledgeGraph"]


@dataclass
class _Walk:
    version: int
    hub_degree: int
    names: list[str]
    index: dict[str, int]
    is_chunk: np.ndarray
    mat: Any


def cnode(chunk_id: str) -> str:
    return "c:" + chunk_id


def enode(key: str) -> str:
    return "e:" + key


class KnowledgeGraph:
    def __init__(self) -> None:
        self.g = nx.Graph()
        self.version = 0
        self._communities: tuple[int, list[set[str]]] | None = None
        self._walk: _Walk | None = None

    def __getstate__(self) -> dict:
        return {"g": self.g, "version": self.version}

    def __setstate__(self, state: dict) -> None:
        self.g, self.version = state["g"], state["version"]
        self._communities = None
        self._walk = None

    # -- mutation -----------------------------------------------------------------
    def add_chunk(
        self,
        chunk_id: str,
        entities: dict[str, str],
        relations: Iterable[tuple[str, str, str]],
    ) -> None:
        c = cnode(chunk_id)
        # Chunk nodes and mention edges carry no attributes: their kind follows from the
        # node prefixes, and an attribute dict per edge is ~170 bytes (0.6 GB at 1M chunks).
        self.g.add_node(c)
        for key, name in entities.items():
            e = enode(key)
            if e not in self.g:
                self.g.add_node(e, kind="entity", name=name, n=0)
            if not self.g.has_edge(c, e):
                self.g.nodes[e]["n"] += 1  # chunks mentioning it, kept O(1) to read
                self.g.add_edge(c, e)
        for h, rel, t in relations:
            if h not in entities or t not in entities:
                continue
            a, b = enode(h), enode(t)
            data = self.g.get_edge_data(a, b)
            if data is None:
                self.g.add_edge(a, b, kind="rel", prov={chunk_id: rel})
            else:
                data.setdefault("prov", {})[chunk_id] = rel
        self.version += 1

    def remove_chunk(self, chunk_id: str, relations: Iterable[tuple[str, str, str]] = ()) -> None:
        """Remove a chunk, the relation evidence it stated and orphaned entities.

        ``relations`` are the chunk's own triples (kept on its record), so removal
        touches only the edges the chunk contributed: O(chunk), even when it mentions
        a hub entity with a hundred thousand neighbours.
        """
        c = cnode(chunk_id)
        if c not in self.g:
            return
        ents = list(self.g.neighbors(c))
        self.g.remove_node(c)
        for h, _, t in relations:
            data = self.g.get_edge_data(enode(h), enode(t))
            prov = data.get("prov") if data else None
            if prov is not None and chunk_id in prov:
                del prov[chunk_id]
                if not prov:
                    self.g.remove_edge(enode(h), enode(t))
        for e in ents:
            self.g.nodes[e]["n"] -= 1
            if self.g.nodes[e]["n"] <= 0:
                self.g.remove_node(e)
        self.version += 1

    # -- queries ------------------------------------------------------------------
    def has_entity(self, key: str) -> bool:
        return enode(key) in self.g

    def entity_name(self, key: str) -> str:
        return self.g.nodes[enode(key)].get("name", key)

    def chunk_degree(self, key: str) -> int:
        """Number of chunks that mention the entity."""
        e = enode(key)
        return self.g.nodes[e]["n"] if e in self.g else 0

    def chunk_entities(self, chunk_id: str) -> list[str]:
        c = cnode(chunk_id)
        if c not in self.g:
            return []
        return [n[2:] for n in self.g.neighbors(c)]

    def entity_chunks(self, key: str) -> list[str]:
        e = enode(key)
        if e not in self.g:
            return []
        return [n[2:] for n in self.g.neighbors(e) if n.startswith("c:")]

    def entity_chunks_iter(self, key: str) -> Iterator[str]:
        """Chunks mentioning the entity, lazily (a caller can stop early on a hub)."""
        e = enode(key)
        if e not in self.g:
            return iter(())
        return (n[2:] for n in self.g.neighbors(e) if n.startswith("c:"))

    def related_entities(self, key: str) -> list[str]:
        e = enode(key)
        if e not in self.g:
            return []
        return [n[2:] for n in self.g.neighbors(e) if n.startswith("e:")]

    def relation_edges(self, chunk_id: str) -> list[tuple[str, str, str]]:
        """Relations whose provenance includes the chunk (for tests and inspection)."""
        out = []
        for e in self.chunk_entities(chunk_id):
            for other in self.related_entities(e):
                prov = self.g.get_edge_data(enode(e), enode(other)).get("prov", {})
                if chunk_id in prov and e < other:
                    out.append((e, prov[chunk_id], other))
        return out

    def stats(self) -> dict[str, int]:
        ents = sum(1 for n in self.g if n.startswith("e:"))
        rels = sum(1 for _, _, d in self.g.edges(data=True) if "prov" in d)
        return {"entities": ents, "relations": rels}

    # -- personalized PageRank, vectorized -----------------------------------------
    def _matrix(self, hub_degree: int) -> _Walk:
        """Column-stochastic walk matrix (CSC) of the whole graph, rebuilt lazily when
        the graph changed: the first graph query after a write pays O(graph) once
        (about a second at 100k chunks), every later one only touches the columns of
        the nodes that hold mass."""
        walk = self._walk
        if walk is not None and walk.version == self.version and walk.hub_degree == hub_degree:
            return walk
        from scipy import sparse

        g = self.g
        names = list(g.nodes)
        index = {n: i for i, n in enumerate(names)}
        deg = np.fromiter((g.degree(n) for n in names), dtype=np.float64, count=len(names))
        is_chunk = np.fromiter((n.startswith("c:") for n in names), dtype=bool, count=len(names))
        src: list[int] = []
        dst: list[int] = []
        for a, b in g.edges():
            ia, ib = index[a], index[b]
            src += (ia, ib)
            dst += (ib, ia)
        src_a = np.asarray(src, dtype=np.int64)
        dst_a = np.asarray(dst, dtype=np.int64)
        hub = (~is_chunk) & (deg > hub_degree)
        keep = ~hub[src_a]  # hubs absorb the mass they receive (they say little)
        vals = 1.0 / deg[src_a[keep]]
        mat = sparse.csc_matrix((vals, (dst_a[keep], src_a[keep])), shape=(len(names), len(names)))
        self._walk = _Walk(self.version, hub_degree, names, index, is_chunk, mat)
        return self._walk

    def ppr(
        self,
        seeds: dict[str, float],
        *,
        damping: float,
        iters: int,
        max_nodes: int,
        hub_degree: int,
        hops: int = 2,
        limit: int | None = None,
    ) -> dict[str, float]:
        """Unnormalized personalized PageRank mass of chunk nodes.

        ``seeds`` maps node ids (``e:``/``c:``) to restart weights. The result is linear
        in the weights (no renormalization), so shards fed the same global seed weights
        produce comparable scores. The walk is truncated at ``2 * hops`` steps (mass
        further out is below damping^4) and only the ``max_nodes`` heaviest nodes keep
        walking at each step, so the cost does not grow with the collection.
        """
        if not seeds:
            return {}
        walk = self._matrix(hub_degree)
        idx = np.array([walk.index[n] for n in seeds if n in walk.index], dtype=np.int64)
        if not len(idx):
            return {}
        vals = np.array([seeds[n] for n in seeds if n in walk.index], dtype=np.float64)
        total = np.zeros(len(walk.names))
        steps = min(iters, 2 * hops)
        for step in range(steps + 1):
            np.add.at(total, idx, (1.0 - damping) * vals)
            if step == steps:
                break
            y = walk.mat[:, idx] @ vals
            nz = np.flatnonzero(y > 1e-9)
            if not len(nz):
                break
            if len(nz) > max_nodes:
                nz = nz[np.argpartition(-y[nz], max_nodes)[:max_nodes]]
            idx, vals = nz, damping * y[nz]
        total[~walk.is_chunk] = 0.0
        hit = np.flatnonzero(total > 0)
        if limit is not None and len(hit) > limit:
            hit = hit[np.argpartition(-total[hit], limit)[:limit]]
        names = walk.names
        return {names[i][2:]: float(total[i]) for i in hit.tolist()}

    # -- communities --------------------------------------------------------------
    def communities(self) -> list[set[str]]:
        """Chunk-id sets of the graph's communities (cached until the graph changes).

        Louvain for graphs up to 60k nodes, label propagation beyond (Louvain in pure
        Python takes minutes there).
        """
        if self._communities is not None and self._communities[0] == self.version:
            return self._communities[1]
        g = self.g
        if g.number_of_nodes() == 0:
            comms: list[set[str]] = []
        else:
            if g.number_of_nodes() <= 60_000:
                raw = nx.community.louvain_communities(g, seed=0, resolution=1.0)
            else:
                raw = nx.community.label_propagation_communities(g)
            comms = []
            for members in raw:
                chunks = {n[2:] for n in members if n.startswith("c:")}
                if chunks:
                    comms.append(chunks)
        self._communities = (self.version, comms)
        return comms
