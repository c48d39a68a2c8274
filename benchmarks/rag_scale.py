"""Index-scale measurement: memory and query latency of one shard at 100k-1M chunks.

What runs: the real shard code in this process (``ShardState``: faiss HNSW index,
networkx graph, the cached walk matrix, and the query steps the router runs, through
``LocalCollection.query_vector``), with no Ray and **no snapshots** (at 1M chunks a
snapshot is a ~3.5 GB file per write; persistence cost is reported by
``rag_latency.py`` through the pool at 100k).

What is synthetic: the text ("Synthetic chunk N about Entity a, Entity b, ...") and the
vectors: deterministic unit vectors drawn around 2,000 topic centres (seeded numpy), not
MiniLM embeddings (embedding 1M chunks with MiniLM on 2 cores takes days). Each chunk
names 4 entities out of 30,000 (Zipf, so there are hubs) with relations between them,
as in ``rag_latency.py``. Query vectors are drawn the same way; query texts name two
entities, so local/hybrid/multihop seed the graph from them.

Memory: resident set size of this process (``/proc/self/status``: VmRSS now, VmHWM
peak) after loading, and the growth per chunk; ``--max-rss-gb`` stops loading early
(and says so) instead of swapping the machine.

  .venv/bin/python benchmarks/rag_scale.py --sizes 100000,1000000 --queries 300
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from rag_latency import DIM, pct, synthetic


def rss_gb() -> tuple[float, float]:
    """(current, peak) resident set size of this process, GiB."""
    vals = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            vals[key] = int(rest.split()[0]) / (1 << 20)
    return round(vals["VmRSS"], 2), round(vals["VmHWM"], 2)


def snapshot_cost(shard, qv: np.ndarray) -> dict:
    """Write the shard's snapshot to a temp dir and load it back (the format of
    ``_snapfile``: JSON + .npy + faiss); the reloaded shard must answer the same."""
    import tempfile

    from lumos_ray.rag._state import ShardState

    with tempfile.TemporaryDirectory(prefix="rag-scale-snap-") as d:
        t0 = time.perf_counter()
        where = shard.save(d)
        save_s = time.perf_counter() - t0
        size = Path(where).stat().st_size
        t0 = time.perf_counter()
        back = ShardState.load(d, 0, shard.dim, shard.index_cfg, shard.qcfg)
        load_s = time.perf_counter() - t0
    same = [h["chunk_id"] for h in back.vector_search(qv, 10)] == [
        h["chunk_id"] for h in shard.vector_search(qv, 10)
    ]
    return {
        "snapshot_mib": round(size / (1 << 20), 1),
        "save_s": round(save_s, 2),
        "load_s": round(load_s, 2),
        "same_answers": same,
    }


def run(
    size: int, queries: int, batch: int, modes: list[str], max_rss: float, snapshot_max: int
) -> dict:
    from lumos_ray.rag import CollectionConfig
    from lumos_ray.rag._local import LocalCollection

    gc.collect()
    base_rss, _ = rss_gb()
    coll = LocalCollection(CollectionConfig(name=f"scale-{size}", num_shards=1))
    shard = coll.shards[0]
    t0 = time.perf_counter()
    loaded, centres, stopped = 0, None, ""
    for start in range(0, size, batch):
        b, centres = synthetic(min(batch, size - start), seed=start, start=start)
        shard.upsert(b)
        loaded += len(b.chunks)
        del b
        now, _ = rss_gb()
        print(f"  {loaded} chunks, rss {now} GiB, {time.perf_counter() - t0:.0f}s", flush=True)
        if now > max_rss:
            stopped = f"stopped at {loaded} chunks: rss {now} GiB > --max-rss-gb {max_rss}"
            break
    load_s = time.perf_counter() - t0
    gc.collect()
    t0 = time.perf_counter()
    shard.graph._matrix(shard.qcfg.hub_degree)  # what warm() does for local/hybrid
    matrix_s = time.perf_counter() - t0
    rss, peak = rss_gb()
    stats = shard.stats()
    out: dict = {
        "chunks": stats["chunks"],
        "index": stats["index"],
        "entities": stats["entities"],
        "graph_nodes": shard.graph.g.number_of_nodes(),
        "graph_edges": shard.graph.g.number_of_edges(),
        "load_s": round(load_s, 1),
        "walk_matrix_s": round(matrix_s, 1),
        "rss_gib": rss,
        "peak_rss_gib": peak,
        "rss_growth_gib": round(rss - base_rss, 2),
        "bytes_per_chunk": round((rss - base_rss) * (1 << 30) / max(stats["chunks"], 1)),
        "vectors_gib": round(shard.vectors.nbytes / (1 << 30), 2),
    }
    if stopped:
        out["stopped"] = stopped
    rng = np.random.default_rng(7)
    assert centres is not None
    qv = centres[rng.integers(0, len(centres), queries)] + 0.6 * rng.standard_normal(
        (queries, DIM)
    ).astype(np.float32)
    qv /= np.linalg.norm(qv, axis=1, keepdims=True)
    texts = [
        f"What links Entity {int(a)} and Entity {int(c)}?"
        for a, c in rng.integers(1, 3000, (queries, 2))
    ]
    for mode in modes:
        for i in range(5):  # warm-up (first multihop query tokenizes, etc.)
            coll.query_vector(qv[i], texts[i], mode, 10)
        lat = []
        for i in range(queries):
            t = time.perf_counter()
            coll.query_vector(qv[i], texts[i], mode, 10)
            lat.append(time.perf_counter() - t)
        out[mode] = {"p50_ms": round(pct(lat, 0.5), 2), "p95_ms": round(pct(lat, 0.95), 2)}
        print(f"  {mode}: {out[mode]}", flush=True)
    if size <= snapshot_max:
        out["snapshot"] = snapshot_cost(shard, qv[0])
        print(f"  snapshot: {out['snapshot']}", flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--sizes", default="100000,1000000")
    ap.add_argument("--queries", type=int, default=300)
    ap.add_argument("--batch", type=int, default=50_000)
    ap.add_argument("--modes", default="naive,local,hybrid,multihop,mix")
    ap.add_argument("--max-rss-gb", type=float, default=8.0)
    ap.add_argument(
        "--snapshot-max",
        type=int,
        default=200_000,
        help="also time a snapshot save + load at sizes up to this (a 1M-chunk snapshot "
        "needs ~4 GB more memory while it is built)",
    )
    ap.add_argument("--out")
    args = ap.parse_args()
    results = []
    for size in map(int, args.sizes.split(",")):
        print(f"size {size}", flush=True)
        r = run(
            size,
            args.queries,
            args.batch,
            args.modes.split(","),
            args.max_rss_gb,
            args.snapshot_max,
        )
        print(json.dumps(r), flush=True)
        results.append(r)
        gc.collect()
    modes = args.modes.split(",")
    print(
        "\n| chunks | index | RSS GiB (peak) | bytes/chunk | "
        + " | ".join(f"{m} p50/p95 ms" for m in modes)
        + " |"
    )
    print("|" + "---|" * (4 + len(modes)))
    for r in results:
        cells = [f"{r[m]['p50_ms']}/{r[m]['p95_ms']}" for m in modes]
        print(
            f"| {r['chunks']} | {r['index']} | {r['rss_gib']} ({r['peak_rss_gib']}) | "
            f"{r['bytes_per_chunk']} | " + " | ".join(cells) + " |"
        )
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
