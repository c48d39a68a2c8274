"""Documents → prepared chunks (text, entities, relations, vectors), ready for shards.

Runs wherever the embedder lives (the router actor in the pool; the caller's process
for single-process use), batched so a large ingestion keeps the model busy without
holding every vector in memory at once.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable

import numpy as np

from lumos_ray.rag._chunking import chunk_text
from lumos_ray.rag._config import CollectionConfig, Document
from lumos_ray.rag._embed import Embedder
from lumos_ray.rag._extract import Extractor, entity_key
from lumos_ray.rag._state import ChunkRecord, PreparedChunks

__all__ = ["prepare_documents", "query_entities", "shard_of", "split_by_shard"]


def shard_of(doc_id: str, num_shards: int) -> int:
    """Stable document → shard placement (an update lands where the old version is)."""
    return zlib.crc32(doc_id.encode()) % num_shards


def prepare_documents(
    docs: Iterable[Document],
    cfg: CollectionConfig,
    embedder: Embedder,
    extractor: Extractor,
) -> PreparedChunks:
    records: list[ChunkRecord] = []
    embed_inputs: list[str] = []
    # A document id named twice in one batch: the last one wins, as it does across
    # batches (two of the same id would otherwise share chunk ids on the shard).
    docs = list({d.doc_id: d for d in docs}.values())
    for doc in docs:
        title = doc.title or doc.doc_id
        pieces = chunk_text(doc.text, cfg.chunking)
        extractions = extractor.extract([p.text for p in pieces], [title] * len(pieces))
        for piece, ex in zip(pieces, extractions, strict=True):
            records.append(
                ChunkRecord(
                    chunk_id=f"{doc.doc_id}#{piece.index}",
                    doc_id=doc.doc_id,
                    title=title,
                    text=piece.text,
                    source=doc.source,
                    entities=ex.entities,
                    relations=ex.relations,
                )
            )
            embed_inputs.append(
                f"{title}\n{piece.text}" if cfg.embedding.title_prefix else piece.text
            )
    vectors = (
        embedder.embed(embed_inputs)
        if embed_inputs
        else np.zeros((0, cfg.embedding.dim), dtype=np.float32)
    )
    return PreparedChunks(chunks=records, vectors=vectors)


def query_entities(text: str) -> list[str]:
    """Entity keys named in a query (same heuristics as the offline extractor)."""
    from lumos_ray.rag._extract import _spans

    return list(dict.fromkeys(entity_key(name) for name, _, _ in _spans(text)))


def split_by_shard(batch: PreparedChunks, num_shards: int) -> dict[int, PreparedChunks]:
    groups: dict[int, list[int]] = {}
    for i, rec in enumerate(batch.chunks):
        groups.setdefault(shard_of(rec.doc_id, num_shards), []).append(i)
    return {
        s: PreparedChunks(chunks=[batch.chunks[i] for i in idx], vectors=batch.vectors[idx])
        for s, idx in groups.items()
    }
