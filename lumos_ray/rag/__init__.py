"""Knowledge-graph RAG in a shared pool of Ray actors.

A collection is a router actor plus N shard actors. Ingestion chunks, embeds
(all-MiniLM-L6-v2 or an OpenAI-compatible endpoint) and extracts entities/relations;
each shard keeps a faiss index and its part of a networkx knowledge graph and
snapshots to disk. Queries run in four modes (naive, local, global, hybrid) and carry
provenance. Agents use it through the ``rag_search`` tool.
"""

from __future__ import annotations

from lumos_ray.rag._client import RagCollection, list_collections
from lumos_ray.rag._config import (
    ChunkingConfig,
    CollectionConfig,
    Document,
    EmbeddingConfig,
    ExtractorConfig,
    IndexConfig,
    IngestReport,
    QueryConfig,
    SearchHit,
)
from lumos_ray.rag._loaders import load_paths

__all__ = [
    "ChunkingConfig",
    "CollectionConfig",
    "Document",
    "EmbeddingConfig",
    "ExtractorConfig",
    "IndexConfig",
    "IngestReport",
    "QueryConfig",
    "RagCollection",
    "SearchHit",
    "list_collections",
    "load_paths",
]
