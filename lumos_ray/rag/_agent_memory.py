"""The RAG pool as an agent's semantic-memory backend (``MemoryConfig.backend``).

Agents sit below rag, so the agent actor finds this by import path; it opens (or
creates) the memory collection of the agent actor's tenant, whose router and shard
actors and snapshot files are keyed by that tenant like every collection's. Memory is
searched vector-only (``naive``): recall is on the turn's path, and a past remark is
found by its meaning, not by graph hops.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

from lumos_ray.rag._validate import MAX_QUERY_CHARS

__all__ = ["RagMemory", "open_memory", "rag_tenant"]

_RAG_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")


def rag_tenant(tenant: str) -> str:
    """The tenant as a RAG name. Tenant ids may hold capitals and ``.:@``, RAG names
    not; such an id maps to a slug plus a hash of it, joined by ``_``, a character no
    tenant id contains, so the mapped name is never another tenant's own id."""
    if _RAG_NAME.match(tenant):
        return tenant
    slug = re.sub(r"[^a-z0-9-]+", "-", tenant.lower()).strip("-")[:40] or "t"
    return f"{slug}_{hashlib.sha256(tenant.encode()).hexdigest()[:16]}"


class RagMemory:
    """Writes and searches one memory collection through its router actor."""

    def __init__(self, router: Any, name: str) -> None:
        self.router = router
        self.name = name

    async def add(self, docs: list[dict[str, Any]]) -> None:
        await self.router.upsert_documents.remote(docs)

    async def search(self, query: str, k: int) -> list[dict[str, Any]]:
        from lumos_ray import tracing

        query = query.strip()[:MAX_QUERY_CHARS]
        if not query:
            return []
        hits = await self.router.search.remote(query, "naive", min(k, 50), carrier=tracing.inject())
        return [{"doc_id": h["doc_id"], "text": h["text"], "score": h["score"]} for h in hits]


def open_memory(tenant: str, collection: str) -> RagMemory:
    """Open (creating on first use) ``collection`` of ``tenant``. Blocking: file I/O
    and named-actor lookups; the agent actor calls it in a worker thread."""
    from lumos_ray.rag._client import RagCollection
    from lumos_ray.rag._config import CollectionConfig

    t = rag_tenant(tenant)
    coll = RagCollection.open(
        collection, tenant=t, config=CollectionConfig(name=collection, tenant=t), create=True
    )
    return RagMemory(coll.router, collection)
