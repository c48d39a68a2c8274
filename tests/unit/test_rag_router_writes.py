"""The router's write planning without Ray: which documents of a write produced no
chunks (they still remove an old version)."""

from __future__ import annotations

import numpy as np

from lumos_ray.rag._router import docs_without_chunks
from lumos_ray.rag._state import ChunkRecord, PreparedChunks


class _CountingBatch(PreparedChunks):
    calls = 0

    def doc_ids(self) -> list[str]:
        type(self).calls += 1
        return super().doc_ids()


def _batch(doc_ids: list[str], per_doc: int = 4) -> _CountingBatch:
    chunks = [
        ChunkRecord(chunk_id=f"{d}#{i}", doc_id=d, title=d, text="t")
        for d in doc_ids
        for i in range(per_doc)
    ]
    return _CountingBatch(chunks=chunks, vectors=np.zeros((len(chunks), 4), dtype=np.float32))


def test_documents_that_produced_no_chunks_are_the_ones_left_to_remove():
    batch = _batch(["a", "c"])
    assert docs_without_chunks(["a", "b", "c", "d"], batch) == ["b", "d"]
    assert docs_without_chunks([], batch) == []


def test_the_batch_is_read_once_however_many_documents_the_write_names():
    # It was read once per document: 22,500 documents of 90,000 chunks held the
    # router's event loop for minutes.
    _CountingBatch.calls = 0
    docs = [f"doc{i}" for i in range(500)]
    docs_without_chunks(docs, _batch(docs[:250]))
    assert _CountingBatch.calls == 1
