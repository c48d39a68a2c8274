"""Cross-shard query logic: turn phase-1 probes into global seeds, fuse phase-2 results.

Local and hybrid queries run in two phases so a bridge between documents held by
different shards is still followed: (1) every shard returns its best vector hits and
their entities; the router keeps the global top ``seed_hits`` and weights each entity
by the best hit that mentions it; (2) every shard runs personalized PageRank from those
*global* seed weights over its own part of the graph. PageRank is linear in its
restart vector, so unnormalized masses from different shards are on one scale and can
be normalized by the global maximum here.
"""

from __future__ import annotations

import math
from typing import Any

from lumos_ray.rag._config import QueryConfig

__all__ = ["fuse", "merge_topk", "mix_rrf", "seeds_from_probes"]


def seeds_from_probes(
    probes: list[dict[str, Any]], mode: str, cfg: QueryConfig
) -> tuple[dict[str, tuple[float, str]], dict[str, float]]:
    """(seed entities: key → (weight, source), seed chunks: chunk_id → cosine)."""
    hits = sorted((h for p in probes for h in p["hits"]), key=lambda h: h["score"], reverse=True)
    top = hits[: cfg.seed_hits if mode == "hybrid" else min(3, cfg.seed_hits)]
    seed_chunks = {h["chunk_id"]: h["score"] for h in top}
    best = max((h["score"] for h in top), default=0.0)
    ents: dict[str, tuple[float, str]] = {}
    for h in top:
        for key, degree in h["entities"].items():
            if degree > cfg.hub_degree:
                continue
            # Sharp decay with the gap to the best hit (the graph follows the best
            # evidence, not the long tail); rarer entities say more (IDF-like).
            w = math.exp(-(best - h["score"]) / cfg.seed_temperature) / (1.0 + math.log1p(degree))
            if key not in ents or w > ents[key][0]:
                ents[key] = (w, "chunk:" + h["chunk_id"])
    for p in probes:
        for key, degree in p["query_entities"].items():
            if degree > cfg.hub_degree:
                continue
            w = cfg.query_entity_weight
            if key not in ents or w > ents[key][0]:
                ents[key] = (w, "query")
    return ents, seed_chunks


def fuse(
    candidates: list[list[dict[str, Any]]], mode: str, k: int, cfg: QueryConfig
) -> list[dict[str, Any]]:
    """Score = λ·cosine + (1-λ)·(graph/max graph)^p over all shards; best k, one per chunk.

    p < 1 lifts chunks the graph reaches at all (a bridge two hops from the best hit
    holds a fraction of the mass the hit itself holds) above ones it does not reach."""
    flat = [c for lst in candidates for c in lst]
    gmax = max((c.get("graph_score", 0.0) for c in flat), default=0.0) or 1.0
    lam = cfg.vector_weight if mode == "hybrid" else cfg.vector_weight / 2
    seen: dict[str, dict[str, Any]] = {}
    for c in flat:
        g = (c.get("graph_score", 0.0) / gmax) ** cfg.graph_power
        c["score"] = lam * c["vector_score"] + (1 - lam) * g
        prev = seen.get(c["chunk_id"])
        if prev is None or c["score"] > prev["score"]:
            seen[c["chunk_id"]] = c
    return sorted(seen.values(), key=lambda c: c["score"], reverse=True)[:k]


def merge_topk(results: list[list[dict[str, Any]]], k: int) -> list[dict[str, Any]]:
    """naive/global: shards' scores are already comparable (cosine); keep the best k."""
    flat = [h for r in results for h in r]
    return sorted(flat, key=lambda h: h["score"], reverse=True)[:k]


def mix_rrf(
    rankings: list[list[dict[str, Any]]],
    k: int,
    rrf_k: int,
    weights: list[float] | None = None,
) -> list[dict[str, Any]]:
    """mix: weighted reciprocal-rank fusion, score = Σ w_i/(rrf_k + rank_i).

    Ranks, not raw scores, because the rankings' scores are on different scales (path
    coverage vs cosine+PageRank). A chunk keeps the first ranking's record (its
    citation path), so list the ranking whose provenance should win first."""
    weights = weights or [1.0] * len(rankings)
    fused: dict[str, float] = {}
    first: dict[str, dict[str, Any]] = {}
    for ranking, w in zip(rankings, weights, strict=True):
        for rank, hit in enumerate(ranking):
            cid = hit["chunk_id"]
            fused[cid] = fused.get(cid, 0.0) + w / (rrf_k + rank + 1)
            first.setdefault(cid, hit)
    order = sorted(fused, key=lambda c: (-fused[c], c))[:k]
    return [{**first[c], "score": fused[c], "mode": "mix"} for c in order]
