"""`lumos rag ...`: ingest files, query, inspect and delete knowledge collections."""

from __future__ import annotations

from typing import Any

import click

from lumos_ray.cli._common import address_option, emit, json_option
from lumos_ray.rag._config import SEARCH_MODES

__all__ = ["register"]

_MODES = click.Choice(list(SEARCH_MODES))


def _connect(address: str | None) -> None:
    from lumos_ray import runtime

    runtime.connect(address=address)


def _open(name: str, *, create: bool, shards: int | None = None, config: str | None = None) -> Any:
    from lumos_ray.config import load_yaml_model
    from lumos_ray.rag import CollectionConfig, RagCollection

    cfg = load_yaml_model(config, CollectionConfig) if config else None
    return RagCollection.open(name, config=cfg, create=create, num_shards=shards)


def _render_ingest(r: dict[str, Any]) -> str:
    lines = [
        f"Ingested {r['documents']} document(s), {r['chunks']} chunk(s) into "
        f"{r['collection']!r} ({r['replaced']} replaced) in {r['seconds']:.1f}s."
    ]
    if r["skipped"]:
        lines.append(f"Skipped {len(r['skipped'])} file(s):")
        lines += [f"  {s['path']}: {s['reason']}" for s in r["skipped"]]
    return "\n".join(lines)


def _render_hits(hits: list[dict[str, Any]]) -> str:
    if not hits:
        return "No results."
    out = []
    for i, h in enumerate(hits, 1):
        text = " ".join(h["text"].split())
        out.append(f"{i}. [{h['score']:.3f}] {h['doc_id']} ({h['chunk_id']}, shard {h['shard']})")
        out.append(f"   {text[:240]}{'...' if len(text) > 240 else ''}")
        if h.get("path"):
            out.append("   via " + " -> ".join(h["path"]))
    return "\n".join(out)


def _render_stats(s: dict[str, Any]) -> str:
    if "collections" in s:
        return "\n".join(s["collections"]) or "No collections."
    lines = [
        f"Collection {s['collection']!r} (tenant {s['tenant']}): {s['documents']} documents, "
        f"{s['chunks']} chunks, {s['entities']} entities, {s['relations']} relations, "
        f"{s['num_shards']} shard(s)",
        f"Snapshots: {s['snapshot_dir']}",
    ]
    lines += [
        f"  shard {x['shard']}: {x['documents']} docs, {x['chunks']} chunks, index {x['index']}"
        for x in s["shards"]
    ]
    return "\n".join(lines)


def register(cli: click.Group) -> None:
    @cli.group("rag")
    def rag() -> None:
        """Knowledge-graph RAG collections (a shared pool of Ray actors)."""

    @rag.command("ingest")
    @click.argument("paths", nargs=-1, required=True, type=click.Path())
    @click.option("--collection", "-c", required=True, help="Collection name (created if new).")
    @click.option("--shards", type=int, default=None, help="Shard actors (new collections).")
    @click.option("--config", type=click.Path(exists=True), help="CollectionConfig YAML.")
    @address_option
    @json_option
    def ingest(
        paths: tuple[str, ...],
        collection: str,
        shards: int | None,
        config: str | None,
        address: str | None,
        as_json: bool,
    ) -> None:
        """Ingest text, Markdown, HTML and PDF files or folders. Unsupported or corrupt
        files are reported by name and skipped; the rest are ingested. Ingesting a file
        again replaces its previous version."""
        _connect(address)
        coll = _open(collection, create=True, shards=shards, config=config)
        report = coll.ingest(paths).model_dump()
        emit(report, as_json, _render_ingest)

    @rag.command("query")
    @click.argument("text")
    @click.option("--collection", "-c", required=True)
    @click.option("--mode", "-m", type=_MODES, default="hybrid", show_default=True)
    @click.option("-k", "--top-k", "k", type=click.IntRange(1, 100), default=5, show_default=True)
    @address_option
    @json_option
    def query(
        text: str, collection: str, mode: str, k: int, address: str | None, as_json: bool
    ) -> None:
        """Search a collection; results carry document, chunk and graph path."""
        _connect(address)
        hits = [h.model_dump() for h in _open(collection, create=False).query(text, mode, k)]
        emit(hits, as_json, _render_hits)

    @rag.command("stats")
    @click.option("--collection", "-c", default=None, help="Omit to list collections.")
    @address_option
    @json_option
    def stats(collection: str | None, address: str | None, as_json: bool) -> None:
        """Documents, chunks, entities and relations per shard (or list collections)."""
        if collection is None:
            from lumos_ray.rag import list_collections

            emit({"collections": list_collections()}, as_json, _render_stats)
            return
        _connect(address)
        emit(_open(collection, create=False).stats(), as_json, _render_stats)

    @rag.command("delete")
    @click.argument("doc_ids", nargs=-1)
    @click.option("--collection", "-c", required=True)
    @click.option("--all", "drop", is_flag=True, help="Delete the whole collection.")
    @address_option
    @json_option
    def delete(
        doc_ids: tuple[str, ...], collection: str, drop: bool, address: str | None, as_json: bool
    ) -> None:
        """Delete documents (by id: the path relative to the folder ingested), or the
        whole collection with --all (actors, the snapshot and config files it wrote,
        its registry entry; other files in its folder are kept)."""
        from lumos_ray.errors import InputValidationError

        if not doc_ids and not drop:
            raise InputValidationError(
                "Name the document ids to delete, or pass --all to delete the collection.",
                fix="`lumos rag delete --collection C DOC_ID...` or `--all`.",
            )
        _connect(address)
        if drop:
            from lumos_ray.errors import NotFoundError
            from lumos_ray.rag._client import unregister

            try:
                coll = _open(collection, create=False)
            except NotFoundError:
                # Registered, but its config is gone (deleted by hand): forget the name.
                if not unregister(collection):
                    raise
                emit(
                    {"collection": collection, "dropped": True, "forgotten": True},
                    as_json,
                    f"Forgot {collection!r} (its snapshot folder no longer had a config).",
                )
                return
            coll.drop()
            emit({"collection": collection, "dropped": True}, as_json, f"Deleted {collection!r}.")
            return
        coll = _open(collection, create=False)
        n = coll.delete(list(doc_ids))
        emit(
            {"collection": collection, "deleted": n, "requested": len(doc_ids)},
            as_json,
            f"Deleted {n} of {len(doc_ids)} document(s) from {collection!r}.",
        )
