"""Client handle of a collection: open/create it in the cluster and talk to its router.

The collection's config is written to ``<snapshot root>/collection.json`` when it is
created, and the collection is registered by tenant and name in
``<LUMOS_HOME>/rag/<tenant>/_registry/<name>.json`` (which names the snapshot root), so
any later process (another CLI call with a fresh embedded cluster, an agent on another
node) reopens it by name alone, wherever its snapshots live, and the shards reload them.
The snapshot root is ``<snapshot_dir>/<tenant>/<name>`` (a directory or an object-store
URI, ``_snapshot_store``) or ``<LUMOS_HOME>/rag/<tenant>/<name>``; a URI is checked here,
in the caller's process and within :data:`STORE_CHECK_TIMEOUT_S`, before any actor
starts.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from lumos_ray.errors import NotFoundError, RagError
from lumos_ray.rag._config import CollectionConfig, Document, IngestReport, SearchHit
from lumos_ray.rag._names import (
    check_names,
    collection_dir,
    registry_dir,
    router_actor_name,
    shard_actor_name,
    shard_dir,
)
from lumos_ray.rag._snapshot_store import (
    CONFIG_FILE,
    LocalDirStore,
    SnapshotStore,
    bounded,
    is_uri,
    join,
    open_store,
)

if TYPE_CHECKING:
    from lumos_ray.rag._watch import FolderWatcher

__all__ = ["RagCollection", "list_collections", "registered_root", "unregister"]

log = logging.getLogger(__name__)

ROUTER_OPTIONS: dict[str, Any] = {"num_cpus": 0, "max_restarts": -1, "max_task_retries": 3}
#: How long opening a collection waits for an object store (resolve the URI, read or
#: write collection.json) before it fails with a RagError.
STORE_CHECK_TIMEOUT_S = 30.0

_T = TypeVar("_T")


def _store_io(root: str, fn: Callable[[], _T], what: str) -> _T:
    """Run a store operation of :meth:`RagCollection.open`: time-bounded for a URI (an
    unreachable object store would otherwise retry for minutes), direct for a path."""
    if is_uri(root):
        return bounded(fn, STORE_CHECK_TIMEOUT_S, what)
    return fn()


def _home() -> str:
    from lumos_ray import runtime

    return runtime.current_settings().home


def _tenant(tenant: str | None) -> str:
    from lumos_ray import runtime

    return tenant or runtime.current_settings().tenant_id


# -- the registry: collection name -> snapshot root, per tenant ----------------------------
def _entry_path(name: str, tenant: str, home: str) -> Path:
    check_names(name, tenant)  # a name with '/' or '..' would leave the tenant's folder
    return Path(registry_dir(tenant, home)) / f"{name}.json"


def registered_root(name: str, tenant: str, home: str) -> str | None:
    """The snapshot root registered for ``name``, or None."""
    path = _entry_path(name, tenant, home)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    try:
        entry = json.loads(raw)
        if entry.get("name") != name or entry.get("tenant") != tenant:
            raise ValueError("it names another collection")
        root = entry["root"]
        if not isinstance(root, str) or not root:
            raise ValueError("no root")
        return root
    except (ValueError, KeyError, AttributeError) as exc:
        raise RagError(
            f"The registry entry {path} of RAG collection {name!r} is damaged ({exc}).",
            fix="Delete the file and open the collection with its config "
            "(`lumos rag ingest ... --config FILE`, whose snapshot_dir says where it is).",
        ) from None


def _register(name: str, tenant: str, home: str, root: str) -> None:
    if registered_root(name, tenant, home) == root:
        return
    entry = {"name": name, "tenant": tenant, "root": root, "registered_at": time.time()}
    LocalDirStore(registry_dir(tenant, home)).write(f"{name}.json", json.dumps(entry).encode())


def unregister(name: str, tenant: str | None = None, home: str | None = None) -> bool:
    """Forget a collection's registry entry (its files are not touched). True if there
    was one."""
    path = _entry_path(name, _tenant(tenant), home or _home())
    existed = path.exists()
    path.unlink(missing_ok=True)
    return existed


def list_collections(tenant: str | None = None, home: str | None = None) -> list[str]:
    """Collections of a tenant: those registered by name (wherever their snapshots
    live), and those under ``<LUMOS_HOME>/rag/<tenant>/`` from before the registry."""
    tenant = _tenant(tenant)
    check_names("x", tenant)
    home = home or _home()
    names = {p.stem for p in Path(registry_dir(tenant, home)).glob("*.json")}
    root = Path(home).expanduser() / "rag" / tenant
    if root.is_dir():
        names |= {p.parent.name for p in root.glob(f"*/{CONFIG_FILE}")}
    return sorted(names)


def _old_layout_error(name: str, tenant: str, snapshot_dir: str) -> RagError | None:
    """A collection created by an older lumos_ray directly in ``snapshot_dir`` (before
    collections got a sub-folder of their own): say how to move on."""
    try:
        raw = _store_io(
            snapshot_dir,
            lambda: open_store(snapshot_dir).read(CONFIG_FILE),
            f"Reading {join(snapshot_dir, CONFIG_FILE)}",
        )
        old = json.loads(raw) if raw else None
    except (RagError, ValueError):
        return None
    if not isinstance(old, dict) or old.get("name") != name:
        return None
    if old.get("tenant", "default") != tenant:
        return None
    return RagError(
        f"RAG collection {name!r} was created by an older lumos_ray directly in "
        f"{snapshot_dir} (collections now live in {join(join(snapshot_dir, tenant), name)}), "
        "with pickled snapshots this version no longer loads.",
        fix=f"Ingest it again into the new layout: delete the old files ({CONFIG_FILE} and "
        "shard-*/ in that folder, after a backup if you need one), then `lumos rag ingest "
        f"PATH --collection {name} --config FILE`.",
    )


def _router_handle(cfg: CollectionConfig, root: str) -> Any:
    """The collection's router, created (detached, named) if it is not running."""
    from lumos_ray import runtime
    from lumos_ray.rag._router import RagRouter

    return runtime.get_or_create_actor(
        router_actor_name(cfg.name, cfg.tenant),
        runtime.remote_class(RagRouter),
        cfg.model_dump(),
        root,
        options=runtime.merge_actor_options(ROUTER_OPTIONS, cfg.placement),
    )


class RagCollection:
    """A collection in the cluster (router + shards). Sync methods; ``a*`` are async."""

    def __init__(self, router: Any, config: CollectionConfig, root: str) -> None:
        self.router = router
        self.config = config
        self.root = root

    @property
    def name(self) -> str:
        return self.config.name

    # -- opening ------------------------------------------------------------------
    @classmethod
    def open(
        cls,
        name: str,
        *,
        tenant: str | None = None,
        config: CollectionConfig | None = None,
        create: bool = True,
        num_shards: int | None = None,
    ) -> RagCollection:
        """Open ``name`` (creating it when ``create`` and it does not exist).

        An existing collection keeps the config it was created with; asking for another
        shard count is an error (re-sharding is a re-ingest).
        """
        from lumos_ray import runtime

        tenant = _tenant(tenant or (config.tenant if config else None))
        # Checked before any path or actor name is made from them (a config given
        # with the call is not re-validated by model_copy below).
        check_names(name, tenant)
        base = config or CollectionConfig(name=name, tenant=tenant)
        base = base.model_copy(update={"name": name, "tenant": tenant})
        # A config is stored (collection.json): a literal API key is refused, before
        # anything is written (the key is named by api_key_env instead).
        base.check_storable()
        if num_shards is not None:
            base = base.model_copy(update={"num_shards": num_shards})
        # Found by name: the registry says where its snapshots are. A config naming
        # another place for an existing collection is an error, not a second copy.
        home = _home()
        known = registered_root(name, tenant, home)
        root = collection_dir(name, tenant, home, base.snapshot_dir)
        if known is not None and base.snapshot_dir and known != root:
            raise RagError(
                f"RAG collection {name!r} (tenant {tenant!r}) already exists at {known}; "
                f"the config asks for {root}.",
                fix="Open it without snapshot_dir (or with the same one), or delete it "
                "first (`lumos rag delete --collection NAME --all`) to re-create it there.",
            )
        root = known or root
        # The store is checked before Ray is touched: a bad URI or an unreachable bucket
        # fails here, not as a traceback in a shard actor.
        store: SnapshotStore = _store_io(
            root, lambda: open_store(root), f"Opening snapshot store {root}"
        )
        cfg_uri = join(root, CONFIG_FILE)
        raw = _store_io(root, lambda: store.read(CONFIG_FILE), f"Reading {cfg_uri}")
        if raw is not None:
            try:
                stored = CollectionConfig.model_validate_json(raw)
            except ValueError as exc:  # pydantic's ValidationError is a ValueError
                raise RagError(
                    f"{cfg_uri} is not a valid collection config: {str(exc).splitlines()[0]}",
                    fix="Restore it from a backup, or delete the collection "
                    "(`lumos rag delete`) and ingest it again.",
                ) from None
            if num_shards is not None and num_shards != stored.num_shards:
                raise RagError(
                    f"Collection {name!r} has {stored.num_shards} shards; {num_shards} requested.",
                    fix="Omit --shards, or delete the collection and ingest it again.",
                )
            if stored.literal_keys():  # written before keys were refused
                log.warning(
                    "%s holds a literal API key (%s); remove it and name the variable "
                    "holding the key with *.api_key_env instead",
                    cfg_uri,
                    ", ".join(stored.literal_keys()),
                )
            cfg = stored
        else:
            old = _old_layout_error(name, tenant, base.snapshot_dir) if base.snapshot_dir else None
            if old is not None:
                raise old
            if not create:
                stale = " (registered, but its config is gone)" if known else ""
                forget = "; `lumos rag delete --collection NAME --all` forgets it" if known else ""
                raise NotFoundError(
                    f"RAG collection {name!r} (tenant {tenant!r}) does not exist under "
                    f"{root}{stale}.",
                    fix="Create it with `lumos rag ingest PATH --collection NAME`; list them "
                    f"with `lumos rag stats`{forget}.",
                )
            cfg = base
            data = cfg.model_dump_json(indent=2).encode()
            _store_io(root, lambda: store.write(CONFIG_FILE, data), f"Writing {cfg_uri}")
        _register(name, tenant, home, root)
        if not runtime.is_connected():
            runtime.connect()
        return cls(_router_handle(cfg, root), cfg, root)

    # -- writes -------------------------------------------------------------------
    def ingest(self, paths: Iterable[str | Path], batch_docs: int = 32) -> IngestReport:
        """Read files (this process), then upsert them through the router in batches.

        Unsupported or corrupt files are listed in ``report.skipped`` by name with the
        reason; the rest are ingested.
        """
        from lumos_ray.rag._loaders import load_paths

        t0 = time.perf_counter()
        docs, skipped = load_paths(paths)
        report = self.upsert(docs, batch_docs=batch_docs)
        report.skipped = skipped + report.skipped
        report.seconds = time.perf_counter() - t0
        return report

    def upsert(
        self, docs: Iterable[Document | dict[str, Any]], batch_docs: int = 32
    ) -> IngestReport:
        """Add documents; one whose doc_id exists replaces the old version. Refused
        (QuotaExceededError) while the collection's tenant is at its plan's storage
        limit (platform tenants only; measured, not estimated per document)."""
        from lumos_ray.platform import default_platform
        from lumos_ray.runtime import get_refs

        default_platform().check_storage(self.config.tenant)

        report = IngestReport(collection=self.name)
        batch: list[dict[str, Any]] = []
        pending = []

        def flush() -> None:
            if batch:
                pending.append(self.router.upsert_documents.remote(list(batch)))
                batch.clear()

        for d in docs:
            batch.append(d.model_dump() if isinstance(d, Document) else dict(d))
            if len(batch) >= batch_docs:
                flush()
                if len(pending) >= 2:  # keep the router busy, memory bounded
                    self._absorb(report, get_refs(pending.pop(0)))
        flush()
        for ref in pending:
            self._absorb(report, get_refs(ref))
        return report

    @staticmethod
    def _absorb(report: IngestReport, res: dict[str, Any]) -> None:
        report.documents += res["documents"]
        report.chunks += res["chunks"]
        report.replaced += res["replaced"]

    def delete(self, doc_ids: Iterable[str]) -> int:
        from lumos_ray.runtime import get_refs

        return get_refs(self.router.delete_documents.remote(list(doc_ids)))

    def delete_entity(self, name: str) -> dict[str, Any]:
        """Remove every chunk that mentions the entity (its vectors, the relation
        evidence they gave, the entity itself); other chunks of those documents stay.
        Returns ``{"entity": key, "chunks": n, "documents": [doc ids touched]}``."""
        from lumos_ray.runtime import get_refs

        return get_refs(self.router.delete_entity.remote(name))

    def merge_entities(self, names: Iterable[str], into: str) -> dict[str, Any]:
        """Make the entities ``names`` one with ``into`` (aliases the rules missed, e.g.
        "IBM" and "International Business Machines"); later ingestion follows it.
        Returns ``{"into": key, "merged": [keys], "chunks": n}``."""
        from lumos_ray.runtime import get_refs

        return get_refs(self.router.merge_entities.remote(list(names), into))

    def watch(self, folder: str | Path, **options: Any) -> FolderWatcher:
        """A :class:`~lumos_ray.rag.FolderWatcher` that keeps this collection in step
        with ``folder`` (call ``.sync_once()`` or ``.start()``); options as its own."""
        from lumos_ray.rag._watch import FolderWatcher

        return FolderWatcher(self, folder, **options)

    # -- reads --------------------------------------------------------------------
    def query(self, text: str, mode: str = "hybrid", k: int = 5) -> list[SearchHit]:
        from lumos_ray import tracing
        from lumos_ray.runtime import get_refs

        with tracing.span("rag.query", collection=self.name, mode=mode, k=k):
            ref = self.router.search.remote(text, mode, k, carrier=tracing.inject())
            return [SearchHit(**h) for h in get_refs(ref)]

    async def aquery(self, text: str, mode: str = "hybrid", k: int = 5) -> list[SearchHit]:
        from lumos_ray import tracing

        with tracing.span("rag.query", collection=self.name, mode=mode, k=k):
            ref = self.router.search.remote(text, mode, k, carrier=tracing.inject())
            return [SearchHit(**h) for h in await ref]

    def stats(self) -> dict[str, Any]:
        from lumos_ray.runtime import get_refs

        return get_refs(self.router.stats.remote())

    def doc_chunks(self, doc_id: str) -> list[dict[str, Any]]:
        from lumos_ray.runtime import get_refs

        return get_refs(self.router.doc_chunks.remote(doc_id))

    def shard_handle(self, shard: int) -> Any:
        from lumos_ray.runtime import get_actor

        name = shard_actor_name(self.name, self.config.tenant, shard)
        handle = get_actor(name)
        if handle is None:
            raise RagError(
                f"shard {shard} of collection {self.name!r} is not running ({name}).",
                fix="Query the collection: its router restarts missing shards from snapshots.",
            )
        return handle

    def warm(self) -> None:
        from lumos_ray.runtime import get_refs

        get_refs(self.router.warm.remote())

    def drop(self) -> None:
        """Kill the collection's actors, delete the files it wrote (its config, each
        shard's snapshots) and its registry entry. Folders are removed once empty; a
        file it did not write survives, and so does the folder holding it."""
        from lumos_ray.runtime import kill_actor

        for name in [router_actor_name(self.name, self.config.tenant)] + [
            shard_actor_name(self.name, self.config.tenant, i)
            for i in range(self.config.num_shards)
        ]:
            kill_actor(name)  # False (nothing to do) when it is not running
        for i in range(self.config.num_shards):
            open_store(shard_dir(self.root, i)).remove()
        open_store(self.root).remove()
        unregister(self.name, self.config.tenant)
