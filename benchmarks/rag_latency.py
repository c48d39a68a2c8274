"""Query latency per mode (p50/p95) at 10k and 100k chunks, 1 vs 2 shards, and
ingestion throughput, through the real pool (client → router actor → shard actors).

Synthetic chunks keep the run short: vectors are drawn around 2,000 topic centres
(so nearest neighbours exist, as in real text) and each chunk names 4 entities from a
Zipf-distributed vocabulary of 30,000, with relations between neighbours, so the graph
has hubs and long tails like extracted text. Retrieval latency uses precomputed query
vectors (``search_vector``); the embedding model's own cost per query is measured
separately and added for an end-to-end hybrid figure.

  .venv/bin/python benchmarks/rag_latency.py --sizes 10000,100000 --shards 1,2
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

DIM = 384
MODES = ["naive", "local", "global", "hybrid", "multihop", "mix"]


def synthetic(n: int, seed: int = 0, start: int = 0):
    from lumos_ray.rag._state import ChunkRecord, PreparedChunks

    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(123).standard_normal((2000, DIM)).astype(np.float32)
    topic = rng.integers(0, len(centres), n)
    vecs = centres[topic] + 0.6 * rng.standard_normal((n, DIM)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    ents = np.minimum(rng.zipf(1.3, (n, 4)), 30_000)
    chunks = []
    for i in range(n):
        names = {f"entity {int(e)}": f"Entity {int(e)}" for e in ents[i]}
        keys = list(names)
        rels = [(a, "related to", b) for a, b in itertools.pairwise(keys) if a != b]
        cid = start + i
        chunks.append(
            ChunkRecord(
                chunk_id=f"doc{cid // 4}#{cid % 4}",
                doc_id=f"doc{cid // 4}",
                title=f"Doc {cid // 4}",
                text=f"Synthetic chunk {cid} about " + ", ".join(names.values()),
                entities=names,
                relations=rels,
            )
        )
    return PreparedChunks(chunks=chunks, vectors=vecs), centres


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return 1000 * xs[min(len(xs) - 1, int(p * len(xs)))]


def run(size: int, shards: int, queries: int, batch: int) -> dict:
    import ray

    from lumos_ray.rag import CollectionConfig, RagCollection

    name = f"bench-{size}-{shards}"
    coll = RagCollection.open(name, config=CollectionConfig(name=name, num_shards=shards))
    coll.drop()
    coll = RagCollection.open(name, config=CollectionConfig(name=name, num_shards=shards))
    coll.stats()  # router and shard processes are up: time ingestion, not actor start
    t0 = time.perf_counter()
    centres = None
    for start in range(0, size, batch):
        b, centres = synthetic(min(batch, size - start), seed=start, start=start)
        ray.get(coll.router.upsert_prepared.remote(b))
    ingest_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    ray.get(coll.router.warm.remote())  # communities for global mode (+ model load)
    warm_s = time.perf_counter() - t0
    stats = coll.stats()
    rng = np.random.default_rng(7)
    qv = centres[rng.integers(0, len(centres), queries)] + 0.6 * rng.standard_normal(
        (queries, DIM)
    ).astype(np.float32)
    qv /= np.linalg.norm(qv, axis=1, keepdims=True)
    texts = [
        f"What links Entity {int(a)} and Entity {int(b)}?"
        for a, b in rng.integers(1, 3000, (queries, 2))
    ]
    out = {
        "chunks": stats["chunks"],
        "shards": shards,
        "index": [s["index"] for s in stats["shards"]],
        "entities": stats["entities"],
        "ingest_s": round(ingest_s, 1),
        "ingest_chunks_per_s": round(size / ingest_s),
        "warm_s": round(warm_s, 1),
    }
    for mode in MODES:
        for i in range(5):
            ray.get(coll.router.search_vector.remote(qv[i], texts[i], mode, 10))
        lat = []
        for i in range(queries):
            t = time.perf_counter()
            ray.get(coll.router.search_vector.remote(qv[i], texts[i], mode, 10))
            lat.append(time.perf_counter() - t)
        out[mode] = {"p50_ms": round(pct(lat, 0.5), 2), "p95_ms": round(pct(lat, 0.95), 2)}
    # The embedding model per query (distinct texts: no cache hits).
    lat = []
    for i in range(min(queries, 100)):
        t = time.perf_counter()
        ray.get(coll.router.embed_query.remote(f"{texts[i]} variant {i} {time.time()}"))
        lat.append(time.perf_counter() - t)
    out["embed_query"] = {"p50_ms": round(pct(lat, 0.5), 2), "p95_ms": round(pct(lat, 0.95), 2)}
    lat = []
    for i in range(min(queries, 100)):
        t = time.perf_counter()
        ray.get(coll.router.search.remote(f"{texts[i]} e2e {i} {time.time()}", "hybrid", 10))
        lat.append(time.perf_counter() - t)
    out["hybrid_end_to_end"] = {
        "p50_ms": round(pct(lat, 0.5), 2),
        "p95_ms": round(pct(lat, 0.95), 2),
    }
    coll.drop()
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="10000,100000")
    ap.add_argument("--shards", default="1,2")
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--batch", type=int, default=25_000)
    ap.add_argument("--out")
    ap.add_argument("--modes", default=",".join(MODES), help="comma-separated query modes")
    args = ap.parse_args()
    MODES[:] = args.modes.split(",")
    from lumos_ray import runtime

    runtime.connect()
    results = []
    for size in map(int, args.sizes.split(",")):
        for shards in map(int, args.shards.split(",")):
            r = run(size, shards, args.queries, args.batch)
            results.append(r)
            print(json.dumps(r), flush=True)
    print(
        "\n| chunks | shards | index | ingest chunks/s | "
        + " | ".join(f"{m} p50/p95 ms" for m in MODES)
        + " | embed p50/p95 | hybrid e2e p50/p95 |"
    )
    print("|" + "---|" * (6 + len(MODES)))
    for r in results:
        cells = [f"{r[m]['p50_ms']}/{r[m]['p95_ms']}" for m in MODES]
        print(
            f"| {r['chunks']} | {r['shards']} | {'/'.join(r['index'])} | "
            f"{r['ingest_chunks_per_s']} | " + " | ".join(cells) + f" | "
            f"{r['embed_query']['p50_ms']}/{r['embed_query']['p95_ms']} | "
            f"{r['hybrid_end_to_end']['p50_ms']}/{r['hybrid_end_to_end']['p95_ms']} |"
        )
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2))
    runtime.shutdown()


if __name__ == "__main__":
    main()
