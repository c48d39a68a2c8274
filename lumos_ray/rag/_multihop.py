"""Iterative multi-hop retrieval: beam search over chains of chunks linked by entities.

Why: a question such as "Where was the mentor of the founder of the company that built
the Velmora Bridge born?" names one entity; the answer is three documents away. One
round of vector search finds the first document, one round of graph expansion the
second; the third and fourth are neither similar to the question nor near its entities.
This mode follows the chain the way a reader does:

1. **Seed** — the top ``seed_hits`` vector hits plus the chunks *about* the entities
   the question names (a chunk is about an entity when its document title is that
   entity). Each seed is a path of one chunk.
2. **Link** — from the last chunk of every path in the beam, pick the entities whose
   sentence in that chunk covers question terms the path has not covered yet
   (``_lexical``: "built by X" answers "the company that built ..."), up to
   ``link_fanout`` per chunk, skipping hubs and entities already on the path.
3. **Expand** — fetch the chunks about each picked entity (then the ones that merely
   mention it, most similar first), at most ``chunks_per_entity`` each.
4. **Re-score** — a path's score is the weighted share of question terms its chunks
   cover, plus ``hop_vector_weight`` times their mean cosine to the question, minus
   ``hop_penalty`` per hop: a path grows only while a hop adds evidence. Keep the best
   ``beam_width`` paths and repeat, at most ``max_hops`` times and ``node_budget``
   fetched chunks in all.

The answer: chunks ranked by the best path that contains them (the end of a path
first, since that is where the chain was going), each carrying that path as its
citation. Ties with no graph evidence fall back to the vector ranking, so a one-hop
question gets the vector hits.

The search is written *sans I/O*: :func:`plan` is a generator that yields requests
(``("seed", entities, m)``, ``("link", {entity: cap}, exclude)``) and receives the
chunk views the shards return. :func:`run_local` drives it over in-process
:class:`~lumos_ray.rag._state.ShardState` objects (one shard's actor, tests,
benchmarks); the router drives the same generator across shard actors, one fan-out per
hop. Same generator, same answers, whatever the shard count.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Generator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from lumos_ray.rag._config import QueryConfig
from lumos_ray.rag._lexical import ChunkTerms, content_terms, sentences

__all__ = ["merge_link_results", "merge_seed_results", "plan", "run_local", "run_sharded"]

View = dict[str, Any]
Request = tuple[Any, ...]


@dataclass
class _Path:
    chunks: list[str]
    via: list[str]  # entity display names, one per hop
    covered: frozenset[str]
    sims: list[float]
    linked: frozenset[str] = frozenset()  # question terms among the links' relation words
    blind: int = 0  # hops whose link sentence matched no new question term
    mentions: int = 0  # hops to a chunk that only names a page-less entity
    anchored: bool = False  # starts at the page of an entity the question names
    score: float = 0.0


def _rank_key(p: _Path) -> tuple[float, list[str]]:
    """Best score first; equal scores in chunk-id order, so the beam (and the answer)
    does not depend on the order shards answered in."""
    return (-p.score, p.chunks)


def _weights(q_terms: list[str], views: Sequence[View], cache: dict[str, ChunkTerms]) -> dict:
    """Question-term weights: rarer among the candidates = heavier (see _lexical)."""
    df = dict.fromkeys(q_terms, 0)
    for v in views:
        for t in cache[v["chunk_id"]].all & df.keys():
            df[t] += 1
    return {t: 1.0 / (1.0 + np.log1p(df[t])) for t in q_terms}


def plan(
    query: str, query_entities: list[str], cfg: QueryConfig, k: int
) -> Generator[Request, Any, list[dict[str, Any]]]:
    """The multi-hop search as a generator of shard requests; returns the hits."""
    q_terms = content_terms(query)
    seed = yield ("seed", list(query_entities), cfg.seed_hits)
    views: dict[str, View] = {}
    texts: dict[str, ChunkTerms] = {}

    def absorb(vs: list[View]) -> None:
        for v in vs:
            if v["chunk_id"] not in views:
                views[v["chunk_id"]] = v
                texts[v["chunk_id"]] = ChunkTerms(v["title"], v["text"], v["entities"].values())

    absorb(seed["hits"])
    absorb(seed["about"])
    if not views:
        return []
    w = _weights(q_terms, list(views.values()), texts)
    total_w = sum(w.values()) or 1.0
    about_q = {v["chunk_id"] for v in seed["about"]}

    def score(p: _Path) -> float:
        cov = sum(w.get(t, 0.0) for t in p.covered) / total_w
        return (
            cov
            + cfg.hop_link_weight * sum(w.get(t, 0.0) for t in p.linked) / total_w
            + cfg.hop_vector_weight * float(np.mean(p.sims))
            - cfg.hop_penalty * (len(p.chunks) - 1)
            - cfg.blind_hop_penalty * p.blind
            - cfg.mention_hop_penalty * p.mentions
            + (cfg.anchor_weight if p.anchored else 0.0)
        )

    q_set = frozenset(q_terms)
    paths: list[_Path] = []
    for cid, v in views.items():
        covered = frozenset(texts[cid].all & q_set)
        p = _Path([cid], [], covered, [v["sim"]])
        p.anchored = cid in about_q
        p.score = score(p)
        paths.append(p)
    best_for: dict[str, _Path] = {p.chunks[-1]: p for p in paths}
    beam = sorted(paths, key=_rank_key)[: cfg.beam_width]
    fetched = len(views)
    for _hop in range(cfg.max_hops):
        if fetched >= cfg.node_budget:
            break
        # Which entities to follow from each path end, by the new terms their sentence
        # covers (ties: in key order, the same on any number of shards).
        wanted: dict[str, int] = {}
        plans: list[tuple[_Path, str, frozenset[str]]] = []
        for p in beam:
            end = views[p.chunks[-1]]
            cands = []
            for key, name in end["entities"].items():
                if key in end["about"]:
                    continue
                if any(key in views[c]["entities"] and c != p.chunks[-1] for c in p.chunks):
                    continue  # already on the path
                if end["degree"].get(key, 1) > cfg.hub_degree:
                    continue  # (the degree is the chunk's own shard's: a hub anywhere)
                rel = frozenset(texts[p.chunks[-1]].link(name) & q_set)
                gain = sum(w[t] for t in rel - p.linked) + 0.25 * sum(w[t] for t in rel)
                cands.append((-gain, key, rel))
            cands.sort(key=lambda c: (c[0], c[1]))
            for _, key, rel in cands[: cfg.link_fanout]:
                wanted[key] = cfg.chunks_per_entity
                plans.append((p, key, rel))
        if not wanted:
            break
        # Chunks already fetched come back as stubs (id, cosine, about): no text twice.
        links: dict[str, list[View]] = yield ("link", wanted, sorted(views))
        new_views = [v for vs in links.values() for v in vs if "text" in v]
        fetched += len({v["chunk_id"] for v in new_views} - views.keys())
        absorb(new_views)
        grown: list[_Path] = []
        for p, key, rel in plans:
            for v in links.get(key, []):
                cid = v["chunk_id"]
                if cid in p.chunks or cid not in views:
                    continue
                name = views[p.chunks[-1]]["entities"].get(key, key)
                np_ = _Path(
                    [*p.chunks, cid],
                    [*p.via, name],
                    p.covered | (texts[cid].all & q_set),
                    [*p.sims, views[cid]["sim"]],
                    p.linked | rel,
                    p.blind + (not (rel - p.linked)),
                    # A chunk that merely names the entity (it has no page): in real
                    # text mostly a generic name ("American", "Europe").
                    p.mentions + (key not in views[cid]["about"]),
                    p.anchored,
                )
                np_.score = score(np_)
                grown.append(np_)
        if not grown:
            break
        for p in grown:
            prev = best_for.get(p.chunks[-1])
            if prev is None or p.score > prev.score:
                best_for[p.chunks[-1]] = p
        beam = sorted(beam + grown, key=_rank_key)[: cfg.beam_width]
    return _rank(best_for, views, k)


def _rank(best_for: dict[str, _Path], views: dict[str, View], k: int) -> list[dict[str, Any]]:
    """Chunks by the best path containing them; within a path, its end first."""
    order = sorted(best_for.values(), key=lambda p: (-p.score, -len(p.chunks), p.chunks[-1]))
    out: list[dict[str, Any]] = []
    seen: set[str] = set()
    for p in order:
        for pos in range(len(p.chunks) - 1, -1, -1):
            cid = p.chunks[pos]
            if cid in seen:
                continue
            seen.add(cid)
            v = views[cid]
            chain = p.chunks[: pos + 1]
            path: list[str] = []
            links: list[dict[str, str]] = []
            for i, c in enumerate(chain):
                if i:
                    name = p.via[i - 1]
                    path.append("entity:" + name)
                    links.append(
                        {
                            "from_chunk": chain[i - 1],
                            "entity": name,
                            "to_chunk": c,
                            "sentence": _sentence_naming(views[chain[i - 1]]["text"], name),
                        }
                    )
                path.append("chunk:" + c)
            out.append(
                {
                    "chunk_id": cid,
                    "doc_id": v["doc_id"],
                    "title": v["title"],
                    "text": v["text"],
                    "source": v.get("source", ""),
                    "shard": v["shard"],
                    "score": float(p.score),
                    "mode": "multihop",
                    "vector_score": float(v["sim"]),
                    "graph_score": float(len(chain) - 1),
                    "entities": list(v["entities"].values())[:12],
                    "path": path if len(chain) > 1 else [],
                    "citation": {
                        "doc_id": v["doc_id"],
                        "chunk_id": cid,
                        "title": v["title"],
                        "source": v.get("source", ""),
                        "path": path if len(chain) > 1 else [],
                        "links": links,
                    },
                }
            )
            if len(out) >= k:
                return out
    return out


def _sentence_naming(text: str, name: str, limit: int = 300) -> str:
    """The first sentence of ``text`` that names ``name`` (bounded), else ''."""
    low = name.lower()
    for s in sentences(text):
        if low in s.lower():
            s = s.strip()
            return s if len(s) <= limit else s[: limit - 1] + "…"
    return ""


# -- merging shard answers (the router's side) ------------------------------------
def merge_seed_results(parts: list[dict[str, list[View]]], m: int) -> dict[str, list[View]]:
    """Shards' seed answers → global top-m vector hits plus every about-chunk."""
    hits = sorted((v for p in parts for v in p["hits"]), key=lambda v: (-v["sim"], v["chunk_id"]))
    about = sorted((v for p in parts for v in p["about"]), key=lambda v: (-v["sim"], v["chunk_id"]))
    return {"hits": hits[:m], "about": about}


def merge_link_results(parts: list[dict[str, list[View]]], caps: dict[str, int]) -> dict:
    """Shards' link answers → per entity: its pages (chunks about it) when any shard has
    one, else the chunks that mention it; most similar first, capped. (A shard without
    the page sends mentions; they are dropped here when another shard has the page, so
    the answer does not depend on the shard count.)"""
    out: dict[str, list[View]] = {}
    for key, cap in caps.items():
        vs = [v for p in parts for v in p.get(key, [])]
        pages = [v for v in vs if key in v["about"]]
        vs = pages or vs
        vs.sort(key=lambda v: (-v["sim"], v["chunk_id"]))
        out[key] = vs[:cap]
    return out


def run_local(
    states: Sequence[Any], qvec: np.ndarray, query: str, query_entities: list[str],
    cfg: QueryConfig, k: int,
) -> list[dict[str, Any]]:  # fmt: skip
    """Drive :func:`plan` over in-process shard states (no Ray)."""
    gen = plan(query, query_entities, cfg, k)
    try:
        req = next(gen)
        while True:
            if req[0] == "seed":
                parts = [s.mh_seed(qvec, req[1], req[2]) for s in states]
                reply: Any = merge_seed_results(parts, req[2])
            else:
                parts = [s.mh_link(qvec, req[1], req[2]) for s in states]
                reply = merge_link_results(parts, req[1])
            req = gen.send(reply)
    except StopIteration as stop:
        return stop.value


async def run_sharded(
    call_all: Callable[..., Awaitable[list[Any]]],
    qvec: np.ndarray,
    query: str,
    query_entities: list[str],
    cfg: QueryConfig,
    k: int,
) -> list[dict[str, Any]]:
    """Drive :func:`plan` across shard actors: ``call_all(method, *args)`` calls every
    shard and returns their answers (the router's fan-out). One round trip per hop."""
    gen = plan(query, query_entities, cfg, k)
    try:
        req = next(gen)
        while True:
            if req[0] == "seed":
                parts = await call_all("mh_seed", qvec, req[1], req[2])
                reply: Any = merge_seed_results(parts, req[2])
            else:
                parts = await call_all("mh_link", qvec, req[1], req[2])
                reply = merge_link_results(parts, req[1])
            req = gen.send(reply)
    except StopIteration as stop:
        return stop.value
