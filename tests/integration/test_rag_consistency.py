"""Queries during ingestion see whole batches across shards (through the real pool).

Every batch rewrites the same 8 documents, 4 on each of 2 shards, with its generation
number in every chunk; queries run all the while. A query that saw one shard's part of
a batch and not the other's would return two generations. Vectors are precomputed
(``upsert_prepared`` / ``search_vector``), so no model is loaded and batches come fast.
"""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest

DIM = 8
DOCS = [f"d{i}" for i in range(8)]  # crc32 places d0-d3 on shard 0, d4-d7 on shard 1


def _batch(gen: int):
    from lumos_ray.rag._state import ChunkRecord, PreparedChunks

    chunks = [
        ChunkRecord(
            chunk_id=f"{d}#0",
            doc_id=d,
            title=d,
            text=f"generation {gen} of {d}",
            entities={"ledger": "Ledger", f"e{d}": d.upper()},
            relations=[("ledger", "lists", f"e{d}")],
        )
        for d in DOCS
    ]
    vecs = np.tile(np.eye(DIM, dtype=np.float32)[0], (len(DOCS), 1))
    vecs[:, 1] = np.linspace(0.0, 0.1, len(DOCS), dtype=np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    return PreparedChunks(chunks=chunks, vectors=vecs)


@pytest.mark.slow
def test_rag_query_during_ingestion_sees_a_batch_on_every_shard_or_none(ray_cluster):
    from lumos_ray.rag import CollectionConfig, EmbeddingConfig, RagCollection
    from lumos_ray.rag._pipeline import shard_of
    from lumos_ray.runtime import get_refs

    assert {shard_of(d, 2) for d in DOCS} == {0, 1}
    name = "atomic-batches"
    cfg = CollectionConfig(name=name, num_shards=2, embedding=EmbeddingConfig(dim=DIM))
    coll = RagCollection.open(name, config=cfg, create=True)
    router = coll.router
    try:
        get_refs(router.upsert_prepared.remote(_batch(0)))
        qvec = np.eye(DIM, dtype=np.float32)[0]

        async def scenario() -> tuple[int, list[tuple[str, set[int]]]]:
            done = asyncio.Event()
            mixed: list[tuple[str, set[int]]] = []
            looks = 0

            async def writer() -> None:
                for gen in range(1, 41):
                    await router.upsert_prepared.remote(_batch(gen))
                done.set()

            async def reader(mode: str) -> None:
                nonlocal looks
                while not done.is_set():
                    hits = await router.search_vector.remote(qvec, "Ledger", mode, 8)
                    gens = {int(h["text"].split()[1]) for h in hits}
                    looks += 1
                    if len(gens) > 1 or (mode == "naive" and len(hits) != 8):
                        mixed.append((mode, gens))

            await asyncio.gather(
                writer(), *(reader(m) for m in ("naive", "naive", "hybrid", "multihop", "local"))
            )
            return looks, mixed

        t0 = time.perf_counter()
        looks, mixed = asyncio.run(asyncio.wait_for(scenario(), timeout=240))
        assert looks >= 40, f"only {looks} queries ran during 40 batches"
        assert mixed == [], f"queries saw parts of two batches: {mixed[:5]}"
        # Every write was acknowledged durably: the snapshots hold the last batch.
        stats = coll.stats()
        assert [s["chunks"] for s in stats["shards"]] == [4, 4]
        assert time.perf_counter() - t0 < 240
    finally:
        coll.drop()
