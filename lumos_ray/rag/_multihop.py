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

from lumos_ray.rag import _guide
from lumos_ray.rag._config import GuideConfig, QueryConfig
from lumos_ray.rag._lexical import ChunkTerms, content_terms, relation_slots, sentence_naming

__all__ = [
    "arun_local",
    "merge_link_results",
    "merge_seed_results",
    "plan",
    "run_local",
    "run_sharded",
]

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
    pos: int = 0  # relation slots of the question the path has walked (relation_slots)
    skipped: int = 0  # slots its links jumped over (a farther relation matched first)
    guided: int = 0  # hops the guide model chose (mode guided)
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
    query: str,
    query_entities: list[str],
    cfg: QueryConfig,
    k: int,
    guide: GuideConfig | None = None,
) -> Generator[Request, Any, list[dict[str, Any]]]:
    """The multi-hop search as a generator of shard requests; returns the hits.

    With ``guide`` (mode ``guided``) it also yields ``("ask", messages)`` requests: the
    driver sends them to the chat model and sends back its answer text (``None`` when
    the call failed and ``guide.fallback`` allows going on without it)."""
    q_terms = content_terms(query)
    slots = relation_slots(query, query_entities)
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

    def coverage(p: _Path) -> float:
        # A term with relation slots counts fully only when a chunk deep enough in the
        # path states it (slot s: at position s-1 or later; the author's page says who
        # the author's mentor is, i.e. slot 2 at position 1). Stated earlier, it is about
        # another entity of the chain: early_term_weight of it.
        if not slots or cfg.early_term_weight >= 1:
            return sum(w.get(t, 0.0) for t in p.covered) / total_w
        tot = 0.0
        for t in p.covered:
            occ = slots.get(t)
            if not occ:
                tot += w.get(t, 0.0)
                continue
            last = max(i for i, c in enumerate(p.chunks) if t in texts[c].all)
            full = sum(1.0 if last >= s - 1 else cfg.early_term_weight for s in occ)
            tot += w.get(t, 0.0) * full / len(occ)
        return tot / total_w

    def score(p: _Path) -> float:
        return (
            coverage(p)
            + cfg.hop_link_weight * sum(w.get(t, 0.0) for t in p.linked) / total_w
            + cfg.hop_vector_weight * float(np.mean(p.sims))
            - cfg.hop_penalty * (len(p.chunks) - 1)
            - cfg.blind_hop_penalty * p.blind
            - cfg.mention_hop_penalty * p.mentions
            - cfg.slot_skip_penalty * p.skipped
            + (guide.guide_weight * p.guided if guide is not None else 0.0)
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
    calls_left = guide.max_calls if guide is not None else 0
    for _hop in range(cfg.max_hops):
        if fetched >= cfg.node_budget:
            break
        # Which entities to follow from each path end, by the new terms their sentence
        # covers (ties: in key order, the same on any number of shards).
        wanted: dict[str, int] = {}
        plans: list[tuple[_Path, str, frozenset[str], bool]] = []
        options: list[list[tuple[_Path, str, frozenset[str]]]] = []
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
            options.append([(p, key, rel) for _, key, rel in cands])
            for _, key, rel in cands[: cfg.link_fanout]:
                wanted[key] = cfg.chunks_per_entity
                plans.append((p, key, rel, False))
        if guide is not None and calls_left > (1 if guide.pick_top else 0):
            # The model sees the links of the best paths (round robin, so every path's
            # best links come first) and picks the ones to follow; lexical picks are
            # followed too, the model's get guide_weight.
            shown = _guide.round_robin(options, guide.candidates)
            if shown:
                calls_left -= 1
                answer = yield ("ask", _guide.follow_prompt(query, shown, views))
                picks, done = _guide.parse_follow(answer, len(shown), guide)
                for i in picks:
                    p, key, rel = shown[i]
                    wanted[key] = cfg.chunks_per_entity
                    plans = [x for x in plans if not (x[0] is p and x[1] == key)]
                    plans.append((p, key, rel, True))
                if done:
                    break
        if not wanted:
            break
        # Chunks already fetched come back as stubs (id, cosine, about): no text twice.
        links: dict[str, list[View]] = yield ("link", wanted, sorted(views))
        new_views = [v for vs in links.values() for v in vs if "text" in v]
        fetched += len({v["chunk_id"] for v in new_views} - views.keys())
        absorb(new_views)
        grown: list[_Path] = []
        for p, key, rel, picked in plans:
            for v in links.get(key, []):
                cid = v["chunk_id"]
                if cid in p.chunks or cid not in views:
                    continue
                name = views[p.chunks[-1]]["entities"].get(key, key)
                pos, skipped = _advance(slots, p.pos, rel)
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
                    pos,
                    p.skipped + skipped,
                    p.guided + picked,
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
    if guide is None:
        return _rank(best_for, views, k)
    ranked = _rank(best_for, views, max(k, guide.pick_top), mode="guided")
    if guide.pick_top and calls_left > 0 and len(ranked) > 1:
        shown_hits = ranked[: guide.pick_top]
        answer = yield ("ask", _guide.pick_prompt(query, shown_hits))
        order = _guide.parse_pick(answer, len(shown_hits), guide)
        first = [shown_hits[i] for i in order]
        ranked = first + [h for h in ranked if all(h is not f for f in first)]
    return ranked[:k]


def _advance(slots: dict[str, tuple[int, ...]], pos: int, rel: frozenset[str]) -> tuple[int, int]:
    """One hop along the question's relation slots: (new position, slots skipped).

    A hop whose linking sentence matches slot terms beyond ``pos`` moves to the farthest
    of them and skips the slots in between that it did not match ("founded" at slot 3
    right after the author hop skips the mentor at slot 2: the path took the author's
    own company). A hop that matches none is a paraphrase or a guess: it takes the next
    slot ("was taught by" for "mentor")."""
    hit = {s for t in rel for s in slots.get(t, ()) if s > pos}
    if not hit:
        return pos + 1, 0
    top = max(hit)
    return top, sum(1 for s in range(pos + 1, top) if s not in hit)


def _rank(
    best_for: dict[str, _Path], views: dict[str, View], k: int, mode: str = "multihop"
) -> list[dict[str, Any]]:
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
                            "sentence": sentence_naming(views[chain[i - 1]]["text"], name),
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
                    "mode": mode,
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
    guide: GuideConfig | None = None,
    ask: Callable[[list[dict[str, Any]]], Awaitable[str | None]] | None = None,
) -> list[dict[str, Any]]:
    """Drive :func:`plan` across shard actors: ``call_all(method, *args)`` calls every
    shard and returns their answers (the router's fan-out). One round trip per hop.
    With ``guide``, ``ask(messages)`` answers the model requests (``_guide.Guide.ask``)."""
    if guide is not None and ask is None:
        raise ValueError("a guided search needs ask()")
    gen = plan(query, query_entities, cfg, k, guide)
    try:
        req = next(gen)
        while True:
            if req[0] == "seed":
                parts = await call_all("mh_seed", qvec, req[1], req[2])
                reply: Any = merge_seed_results(parts, req[2])
            elif req[0] == "link":
                parts = await call_all("mh_link", qvec, req[1], req[2])
                reply = merge_link_results(parts, req[1])
            else:
                assert ask is not None
                reply = await ask(req[1])
            req = gen.send(reply)
    except StopIteration as stop:
        return stop.value


async def arun_local(
    states: Sequence[Any],
    qvec: np.ndarray,
    query: str,
    query_entities: list[str],
    cfg: QueryConfig,
    k: int,
    guide: GuideConfig | None = None,
    ask: Callable[[list[dict[str, Any]]], Awaitable[str | None]] | None = None,
) -> list[dict[str, Any]]:
    """:func:`run_sharded` over in-process shard states (the guided mode in tests and
    benchmarks: its model calls are async)."""

    async def call_all(method: str, *args: Any) -> list[Any]:
        return [getattr(s, method)(*args) for s in states]

    return await run_sharded(call_all, qvec, query, query_entities, cfg, k, guide, ask)
