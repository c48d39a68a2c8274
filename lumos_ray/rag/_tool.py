"""``rag_search``: how every agent of the cluster queries a shared collection.

The tool only holds a handle to the collection's router actor (looked up by name, so
any process in the cluster reaches the same pool) and awaits it: no model, index or
graph lives in the agent. The tenant is the calling agent's own (its actor's tenant,
passed in the tool context; the process settings only when a tool is called outside
an agent), so an agent can only reach its own tenant's collections, whatever the
model asks for.
"""

from __future__ import annotations

from typing import Any, Literal

from lumos_ray.tools._api import Tool, ToolContext, register_tool, tool

__all__ = ["rag_search", "register_rag_tools"]

_handles: dict[str, Any] = {}


def _router(collection: str, tenant: str | None) -> Any:
    from lumos_ray import runtime
    from lumos_ray.rag._client import RagCollection
    from lumos_ray.rag._names import router_actor_name

    if not runtime.is_connected():
        runtime.connect()
    tenant = tenant or runtime.current_settings().tenant_id
    name = router_actor_name(collection, tenant)
    handle = _handles.get(name)
    if handle is None:
        handle = runtime.get_actor(name)
        if handle is None:
            # Not running (e.g. a fresh cluster): start it from its snapshots on disk.
            handle = RagCollection.open(collection, tenant=tenant, create=False).router
        _handles[name] = handle
    return handle


@tool(category="ai")
async def rag_search(
    query: str,
    collection: str,
    mode: Literal["naive", "local", "global", "hybrid", "multihop", "mix", "guided"] = "hybrid",
    k: int = 5,
    ctx: ToolContext | None = None,
) -> list[dict[str, Any]]:
    """Search a knowledge collection (vector index + knowledge graph) and return the
    best passages with where they came from.

    Args:
        query: What to look for, in natural language.
        collection: Name of the RAG collection (see `lumos rag stats`).
        mode: naive = vector only; local = entity neighbourhoods; global = graph
            communities; hybrid = vector hits expanded through the graph (facts from
            two documents); multihop = follows a chain of documents linked by entities
            (a question whose answer is 3-4 documents away); mix = multihop and
            hybrid fused; guided = multihop steered by the collection's chat model
            (only for collections configured with one).
        k: How many passages to return (1-50).
    """
    from lumos_ray.errors import RagError

    if not 1 <= k <= 50:
        raise RagError(f"k must be between 1 and 50, got {k}")
    router = _router(collection, ctx.tenant if ctx is not None else None)
    try:
        from lumos_ray import tracing

        hits = await router.search.remote(query, mode, k, carrier=tracing.inject())
    except Exception:
        _handles.clear()  # a stale handle (router re-created) is looked up again next time
        raise
    return [
        {
            "text": h["text"],
            "doc_id": h["doc_id"],
            "chunk_id": h["chunk_id"],
            "title": h["title"],
            "score": round(h["score"], 4),
            "path": h.get("path", []),
            "source": h.get("source", ""),
            # The sentence behind each hop (multihop/mix): what to quote as evidence.
            "links": [
                {"entity": link["entity"], "sentence": link["sentence"]}
                for link in (h.get("citation") or {}).get("links", [])
            ],
        }
        for h in hits
    ]


def register_rag_tools() -> list[Tool]:
    """Register ``rag_search`` in this process's tool registry (agents then resolve it by
    name). Explicit rather than at import time: importing must have no side effects."""
    return [register_tool(rag_search)]
