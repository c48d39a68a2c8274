"""Knowledge-graph RAG in a shared pool of Ray actors.

A collection is a router actor plus N shard actors. Ingestion chunks, embeds
(all-MiniLM-L6-v2 or an OpenAI-compatible endpoint) and extracts entities/relations;
each shard keeps a faiss index and its part of a networkx knowledge graph and
snapshots to disk. Queries run in seven modes (naive, local, global, hybrid, multihop,
mix, and guided: multihop steered by a chat model when one is configured) and every
hit carries a citation (document, chunk, graph path). A FolderWatcher keeps a
collection in step with a folder. Agents use it through the ``rag_search``
tool.
"""

from __future__ import annotations

from lumos_ray.rag._client import RagCollection, list_collections
from lumos_ray.rag._config import (
    ChunkingConfig,
    Citation,
    CitationLink,
    CollectionConfig,
    Document,
    EmbeddingConfig,
    ExtractorConfig,
    GuideConfig,
    IndexConfig,
    IngestReport,
    QueryConfig,
    SearchHit,
)
from lumos_ray.rag._loaders import load_paths
from lumos_ray.rag._watch import FolderWatcher, SyncReport

__all__ = [
    "ChunkingConfig",
    "Citation",
    "CitationLink",
    "CollectionConfig",
    "Document",
    "EmbeddingConfig",
    "ExtractorConfig",
    "FolderWatcher",
    "GuideConfig",
    "IndexConfig",
    "IngestReport",
    "QueryConfig",
    "RagCollection",
    "SearchHit",
    "SyncReport",
    "list_collections",
    "load_paths",
]
