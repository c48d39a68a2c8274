"""Keep a collection in step with a folder: incremental ingestion by polling.

Why polling: it works the same on every OS and on network filesystems (where inotify
sees nothing), and a scan of a folder's ``stat`` results is cheap next to embedding.
Each :meth:`FolderWatcher.sync_once`:

* lists the supported files under the folder (hidden files skipped; at most
  ``max_files``); a file's document id is its path relative to the folder, exactly as
  ``RagCollection.ingest(folder)`` names it, so watching a folder that was ingested
  before updates those documents instead of duplicating them;
* leaves alone a file modified less than ``settle_s`` ago (it may be half written:
  the next scan takes it), and reports one above ``max_file_bytes`` as skipped;
* re-reads a file whose size or mtime changed, and ingests it only if its content hash
  changed (a ``touch`` costs a hash, not an embedding);
* upserts new and changed documents (whole-document replace), deletes the documents
  whose files are gone, and only then records the new state, so a failed sync is
  retried in full by the next one.

Queries keep running meanwhile: every shard applies a batch under its lock, so a query
sees a document's old chunks or its new ones, never half of each (docs/rag.md).
``state_file`` (JSON) keeps what was ingested across restarts of the watcher.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from lumos_ray.errors import RagError
from lumos_ray.rag._config import Document
from lumos_ray.rag._loaders import SUPPORTED_SUFFIXES, load_file

__all__ = ["FolderWatcher", "SyncReport"]


class _Target(Protocol):
    def upsert(self, docs: list[Document]) -> Any: ...

    def delete(self, doc_ids: list[str]) -> Any: ...


@dataclass
class SyncReport:
    """What one sync did (document ids), and the files it skipped with the reason."""

    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    deferred: list[str] = field(default_factory=list)  # still being written
    skipped: list[dict[str, str]] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.added or self.updated or self.deleted)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class FolderWatcher:
    """Mirror ``folder`` into ``collection`` (a ``RagCollection`` or any object with
    ``upsert(docs)`` and ``delete(doc_ids)``), one :meth:`sync_once` at a time or in a
    background thread (:meth:`start` / :meth:`stop`)."""

    def __init__(
        self,
        collection: _Target,
        folder: str | Path,
        *,
        interval_s: float = 2.0,
        settle_s: float = 1.0,
        max_file_bytes: int = 50 * 1024 * 1024,
        max_files: int = 100_000,
        state_file: str | Path | None = None,
        on_sync: Callable[[SyncReport], None] | None = None,
    ) -> None:
        self.folder = Path(folder).expanduser().resolve()
        if not self.folder.is_dir():
            raise RagError(
                f"Cannot watch {self.folder}: it is not a directory.",
                fix="Create the folder first, or pass the folder that holds the documents.",
            )
        if interval_s <= 0 or settle_s < 0 or max_file_bytes < 1 or max_files < 1:
            raise RagError(
                "FolderWatcher needs interval_s > 0, settle_s >= 0, max_file_bytes >= 1 "
                f"and max_files >= 1 (got {interval_s}, {settle_s}, {max_file_bytes}, "
                f"{max_files}).",
                fix="Use the defaults, or positive values.",
            )
        self.collection = collection
        self.interval_s = interval_s
        self.settle_s = settle_s
        self.max_file_bytes = max_file_bytes
        self.max_files = max_files
        self.state_file = Path(state_file) if state_file else None
        self.on_sync = on_sync
        #: doc_id -> [mtime_ns, size, sha256] of what the collection holds
        self.seen: dict[str, list[Any]] = self._load_state()
        self.last_error: BaseException | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- state ----------------------------------------------------------------------
    def _load_state(self) -> dict[str, list[Any]]:
        if self.state_file is None or not self.state_file.exists():
            return {}
        try:
            data = json.loads(self.state_file.read_text())
            if not isinstance(data, dict) or data.get("folder") != str(self.folder):
                raise ValueError("it belongs to another folder")
            return {str(k): list(v) for k, v in data["files"].items()}
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise RagError(
                f"Watcher state {self.state_file} is unreadable ({exc}).",
                fix="Delete it: the next sync re-reads every file (unchanged documents "
                "are replaced by themselves).",
            ) from None

    def _save_state(self) -> None:
        if self.state_file is None:
            return
        tmp = self.state_file.with_suffix(self.state_file.suffix + ".tmp")
        tmp.write_text(json.dumps({"folder": str(self.folder), "files": self.seen}))
        tmp.replace(self.state_file)

    # -- one pass -------------------------------------------------------------------
    def _files(self) -> dict[str, Path]:
        out: dict[str, Path] = {}
        for f in sorted(self.folder.rglob("*")):
            rel = f.relative_to(self.folder)
            if any(part.startswith(".") for part in rel.parts):
                continue
            if f.is_file() and f.suffix.lower() in SUPPORTED_SUFFIXES:
                out[rel.as_posix()] = f
                if len(out) > self.max_files:
                    raise RagError(
                        f"{self.folder} holds more than {self.max_files} supported files.",
                        fix="Watch a smaller folder, or raise max_files.",
                    )
        return out

    def sync_once(self, now: float | None = None) -> SyncReport:
        """One scan and the writes it calls for (see the module doc)."""
        now = time.time() if now is None else now
        report = SyncReport()
        files = self._files()
        docs: list[Document] = []
        new_seen = {k: v for k, v in self.seen.items() if k in files}
        for doc_id, path in files.items():
            try:
                st = path.stat()
            except OSError:
                continue  # vanished between the listing and now: the next scan sees it
            prev = self.seen.get(doc_id)
            if prev is not None and prev[0] == st.st_mtime_ns and prev[1] == st.st_size:
                continue
            if now - st.st_mtime < self.settle_s:
                report.deferred.append(doc_id)
                continue
            if st.st_size > self.max_file_bytes:
                report.skipped.append(
                    {"path": str(path), "reason": f"larger than {self.max_file_bytes} bytes"}
                )
                continue
            digest = _sha256(path)
            if prev is not None and prev[2] == digest:
                new_seen[doc_id] = [st.st_mtime_ns, st.st_size, digest]  # touched only
                continue
            try:
                docs.append(load_file(path, doc_id))
            except Exception as exc:  # the loader's own reason (binary, bad PDF, ...)
                report.skipped.append({"path": str(path), "reason": str(exc)})
                continue
            (report.updated if prev is not None else report.added).append(doc_id)
            new_seen[doc_id] = [st.st_mtime_ns, st.st_size, digest]
        report.deleted = sorted(set(self.seen) - set(files))
        if docs:
            self.collection.upsert(docs)
        if report.deleted:
            self.collection.delete(report.deleted)
        self.seen = new_seen
        self._save_state()
        if self.on_sync is not None and (report.changed or report.skipped):
            self.on_sync(report)
        return report

    # -- background -----------------------------------------------------------------
    def start(self) -> FolderWatcher:
        """Sync every ``interval_s`` in a daemon thread until :meth:`stop`. A failing
        sync (the cluster away, say) is kept in :attr:`last_error` and retried."""
        if self._thread is not None and self._thread.is_alive():
            return self
        self._stop.clear()

        def loop() -> None:
            while not self._stop.is_set():
                try:
                    self.sync_once()
                    self.last_error = None
                except Exception as exc:  # retried next round; visible to the caller
                    self.last_error = exc
                self._stop.wait(self.interval_s)

        self._thread = threading.Thread(target=loop, name=f"rag-watch:{self.folder}", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout_s: float = 30.0) -> None:
        """Stop the thread after its current sync (waits at most ``timeout_s``)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
