"""Where shard snapshots and the collection config live: a local directory or a URI.

The seam is small on purpose. A :class:`SnapshotStore` is one location (a collection
root, or one shard's folder under it) with five operations:

* ``read(name)`` / ``write(name, data)``: a small object such as ``collection.json``
  (``None`` when missing; a write replaces it atomically);
* ``save_snapshot(data)`` / ``load_snapshot()``: the shard snapshot, written so a
  reader never sees half of one, read back as the newest complete one (``None`` when
  there is none yet: an empty shard);
* ``remove()``: the files this code writes there, and the folder once it is empty
  (dropping a collection). Anything else in the folder is left alone.

:func:`open_store` picks the implementation from the string: a plain path is a
:class:`LocalDirStore` (``shard.snap`` via temp file + fsync + rename; pyarrow is never
imported on this path), anything with a ``scheme://`` is a :class:`PyArrowStore` on
whatever ``pyarrow.fs.FileSystem.from_uri`` accepts (``s3://bucket/prefix``,
``gs://bucket/prefix``, ``abfs://…``, ``hdfs://…``, ``file:///abs/path``; S3 options
ride in the query string, e.g. ``s3://b/p?endpoint_override=host:9000&scheme=http``).
Every failure is a :class:`~lumos_ray.errors.RagError` that names the location and
says how to fix it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple, Protocol, TypeVar
from urllib.parse import urlsplit, urlunsplit

from lumos_ray._files import private_dir
from lumos_ray.errors import RagError

__all__ = [
    "LEGACY_SNAPSHOT_FILE",
    "POINTER_FILE",
    "SNAPSHOT_FILE",
    "LocalDirStore",
    "PyArrowStore",
    "Snapshot",
    "SnapshotStore",
    "bounded",
    "is_uri",
    "join",
    "open_store",
]

log = logging.getLogger(__name__)

SNAPSHOT_FILE = "shard.snap"  # local directory: the snapshot itself (_snapfile format)
LEGACY_SNAPSHOT_FILE = "shard.pkl"  # written by older versions (pickle): refused on load
POINTER_FILE = "LATEST.json"  # URI: names the newest complete snapshot object
CONFIG_FILE = "collection.json"
_SNAPSHOT_PREFIX = "snapshot-"
_SNAPSHOT_SUFFIX = ".snap"
_TMP_PREFIX = ".tmp-"
_LOCAL_TMP_PREFIX = ".lumos-tmp-"
#: Every name this module (and the collection's config) writes in a location: what
#: ``remove()`` deletes. Versioned snapshot objects are snapshot-<20 digits>-<8 hex>
#: (.pkl: older versions); temp files carry our prefixes.
_OURS = re.compile(
    r"^(?:shard\.snap|shard\.pkl|LATEST\.json|collection\.json"
    r"|snapshot-\d{20}-[0-9a-f]{8}\.(?:snap|pkl)"
    r"|\.tmp-[0-9a-f]{32}-(?:LATEST|collection)\.json"
    r"|\.lumos-tmp-\w+|\.shard-\w{8})$"
)
_CHUNK = 8 << 20  # upload in 8 MiB writes (S3 multipart parts are >= 5 MiB)

_T = TypeVar("_T")

_CORRUPT_FIX = (
    "Restore the snapshot from a backup, or delete it (the shard then starts empty) and "
    "ingest the shard's documents again."
)
_REMOTE_FIX = (
    "Check the URI (scheme, bucket, prefix), that the bucket exists and that every node "
    "has credentials for it (S3: AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or an instance "
    "role, plus ?region=...; an S3-compatible server: "
    "?endpoint_override=HOST:PORT&scheme=http; GCS: GOOGLE_APPLICATION_CREDENTIALS)."
)


class Snapshot(NamedTuple):
    """A loaded snapshot: its bytes and where they came from (for error messages)."""

    data: bytes
    location: str


class SnapshotStore(Protocol):
    """One location for a collection's config or one shard's snapshots."""

    uri: str

    def read(self, name: str) -> bytes | None: ...

    def write(self, name: str, data: bytes) -> None: ...

    def save_snapshot(self, data: bytes) -> str: ...

    def load_snapshot(self) -> Snapshot | None: ...

    def remove(self) -> None: ...


def is_uri(location: str) -> bool:
    """``scheme://...`` (a filesystem URI) rather than a plain path."""
    head, sep, _ = location.partition("://")
    return bool(sep) and bool(head) and head.replace("+", "").replace("-", "").isalnum()


def join(location: str, name: str) -> str:
    """``location/name`` for a path or a URI (a URI keeps its ``?query`` options last)."""
    if not is_uri(location):
        return os.path.join(location, name)
    parts = urlsplit(location)
    path = parts.path.rstrip("/") + "/" + name
    if not parts.netloc and parts.scheme == "file":
        return f"file://{path}" + (f"?{parts.query}" if parts.query else "")
    return urlunsplit((parts.scheme, parts.netloc, path, parts.query, parts.fragment))


def open_store(location: str | Path) -> SnapshotStore:
    """The store for a directory or a URI. A URI is resolved here (unknown scheme,
    malformed URI, unresolvable bucket region: :class:`RagError`); the local path
    imports nothing extra."""
    if isinstance(location, Path) or not is_uri(location):
        return LocalDirStore(location)
    return PyArrowStore(location)


def bounded(fn: Callable[[], _T], timeout_s: float, what: str) -> _T:
    """Run ``fn`` in a daemon thread and give up after ``timeout_s`` seconds.

    Object-store clients retry for a long time when a host cannot be reached (the GCS
    client for up to 15 minutes): a collection's creation must fail within seconds
    instead. The abandoned call finishes (or fails) on its own in the background and
    does not keep the process from exiting.
    """
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:
            box["error"] = exc

    t = threading.Thread(target=run, name="lumos-rag-store", daemon=True)
    t.start()
    t.join(timeout_s)
    if t.is_alive():
        raise RagError(f"{what}: no answer within {timeout_s:g} s.", fix=_REMOTE_FIX)
    if "error" in box:
        raise box["error"]
    return box["value"]


# -- a local directory ------------------------------------------------------------------
class LocalDirStore:
    """A directory on this machine: ``<dir>/shard.snap``, written atomically (temp file
    in the same directory, fsync, rename). Readers see the old or the new file. Folders
    it creates are 0700 and files 0600 (they hold the collection's text)."""

    def __init__(self, directory: str | Path) -> None:
        self.dir = Path(directory)
        self.uri = str(self.dir)

    def read(self, name: str) -> bytes | None:
        path = self.dir / name
        try:
            return path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise RagError(
                f"Cannot read {path}: {exc}", fix="Check the file's permissions."
            ) from exc

    def write(self, name: str, data: bytes) -> None:
        # Every folder created on the way is 0700 (mkdir -p would make the parents,
        # e.g. <snapshot_dir>/<tenant>/<name> above a shard's folder, 0755 under the
        # usual umask); folders that already existed keep their mode.
        private_dir(self.dir, tighten_existing=False)
        fd, tmp = tempfile.mkstemp(prefix=_LOCAL_TMP_PREFIX, dir=self.dir)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.dir / name)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def save_snapshot(self, data: bytes) -> str:
        self.write(SNAPSHOT_FILE, data)
        return str(self.dir / SNAPSHOT_FILE)

    def load_snapshot(self) -> Snapshot | None:
        for name in (SNAPSHOT_FILE, LEGACY_SNAPSHOT_FILE):  # a legacy one is refused later
            data = self.read(name)
            if data is not None:
                return Snapshot(data, str(self.dir / name))
        return None

    def remove(self) -> None:
        """Delete the files this code writes here, then the folder if nothing else is
        in it (a user's file in the same folder survives, and so does the folder)."""
        try:
            entries = list(os.scandir(self.dir))
        except FileNotFoundError:
            return
        for entry in entries:
            if _OURS.match(entry.name) and entry.is_file(follow_symlinks=False):
                Path(entry.path).unlink(missing_ok=True)
        try:
            self.dir.rmdir()
        except OSError:  # not empty (someone else's files, or a shard folder left)
            left = sorted(p.name for p in self.dir.iterdir())[:5]
            if left:
                log.info("kept %s: it holds files lumos_ray did not write: %s", self.dir, left)


# -- any pyarrow filesystem (object stores, HDFS, file://) --------------------------------
class PyArrowStore:
    """A ``pyarrow.fs`` location: versioned snapshot objects plus a small pointer.

    A save uploads the bytes to a new, never-reused key ``snapshot-<ns>-<rand>.snap``,
    then writes ``LATEST.json`` (that key, its size and sha256) last; a load reads the
    pointer, then the object it names, and checks size and hash. Why this and not
    "upload to a temp key, then move to ``shard.snap``":

    * S3 and GCS have no rename: a move is a server-side copy plus a delete, which for
      a snapshot means copying every byte a second time (and one S3 CopyObject request
      is limited to 5 GB). Here only the pointer, a few hundred bytes, is replaced.
    * Nothing reads a snapshot object until a pointer names it, so a crash or an error
      mid-upload (including pyarrow completing a multipart upload with the part it had
      when the stream is closed on an exception) leaves at worst an unnamed partial
      object; the pointer still names the previous complete snapshot. The next save
      deletes such leftovers.
    * The pointer itself is replaced atomically: written under a temp key and moved
      (a rename on local disks and HDFS, copy-then-delete on object stores, where the
      copy creates the destination in one step); where the filesystem cannot move
      (Azure blob without hierarchical namespace) it is one small PUT, which object
      stores also apply atomically. S3 and GCS are strongly read-after-write
      consistent, so a load right after a save sees the new pointer.
    * The previous snapshot is kept until the next save, so a reader that read the old
      pointer just before a save can still fetch what it names.

    One writer per location (the shard actor; its saves are serialized). ``file://``
    goes through pyarrow's local filesystem, which does not fsync: use a plain path for
    local disks.
    """

    def __init__(self, uri: str) -> None:
        self.uri = uri
        try:
            import pyarrow.fs as pafs
        except ImportError as exc:  # pragma: no cover - pyarrow ships with ray[train]
            raise RagError(
                f"Snapshot URI {uri!r} needs pyarrow, which is not installed.",
                fix="pip install pyarrow (it comes with ray[train]), or use a directory.",
            ) from exc
        self._pafs = pafs
        try:
            self.fs, path = pafs.FileSystem.from_uri(uri)
        except ValueError as exc:  # ArrowInvalid: unknown scheme, malformed URI
            raise RagError(
                f"Snapshot location {uri!r} is not a supported filesystem URI ({exc}).",
                fix="Use a directory path, or a URI that pyarrow.fs understands: "
                "s3://bucket/prefix, gs://bucket/prefix, abfs://container@account.dfs."
                "core.windows.net/prefix, hdfs://host:port/path or file:///abs/path.",
            ) from exc
        except Exception as exc:  # OSError/ArrowException: e.g. bucket region lookup
            raise RagError(f"Cannot open snapshot store {uri!r}: {exc}", fix=_REMOTE_FIX) from exc
        self.base = path.rstrip("/")
        self._dir_made = False
        self._current: str | None = None  # key the pointer names, as last seen here

    # -- helpers ----------------------------------------------------------------------
    def _path(self, name: str) -> str:
        return f"{self.base}/{name}"

    def _uri(self, name: str) -> str:
        return join(self.uri, name)

    def _fail(self, action: str, name: str | None, exc: BaseException) -> RagError:
        where = self._uri(name) if name else self.uri
        return RagError(f"Cannot {action} {where}: {exc}", fix=_REMOTE_FIX)

    def _exists(self, name: str) -> bool:
        info = self.fs.get_file_info(self._path(name))
        return info.type != self._pafs.FileType.NotFound

    def _mkdir(self) -> None:
        if not self._dir_made:
            self.fs.create_dir(self.base, recursive=True)
            self._dir_made = True

    def _upload(self, path: str, data: bytes) -> None:
        """Write ``data`` to ``path`` (tests replace this to simulate a crash)."""
        view = memoryview(data)
        with self.fs.open_output_stream(path) as out:
            for i in range(0, len(view), _CHUNK):
                out.write(view[i : i + _CHUNK])

    def _download(self, name: str) -> bytes | None:
        if not self._exists(name):
            return None
        with self.fs.open_input_stream(self._path(name)) as f:
            return f.read()

    # -- small objects ----------------------------------------------------------------
    def read(self, name: str) -> bytes | None:
        try:
            return self._download(name)
        except Exception as exc:
            raise self._fail("read", name, exc) from exc

    def write(self, name: str, data: bytes) -> None:
        try:
            self._mkdir()
            tmp = self._path(f"{_TMP_PREFIX}{uuid.uuid4().hex}-{name}")
            self._upload(tmp, data)
            try:
                self.fs.move(tmp, self._path(name))
            except NotImplementedError:  # no rename/copy here: one PUT is atomic
                self._upload(self._path(name), data)
                self.fs.delete_file(tmp)
        except RagError:
            raise
        except Exception as exc:
            raise self._fail("write", name, exc) from exc

    # -- snapshots --------------------------------------------------------------------
    def save_snapshot(self, data: bytes) -> str:
        key = f"{_SNAPSHOT_PREFIX}{time.time_ns():020d}-{uuid.uuid4().hex[:8]}{_SNAPSHOT_SUFFIX}"
        previous = self._current
        if previous is None:
            try:
                ptr = self._pointer()
                previous = ptr["snapshot"] if ptr else None
            except RagError:
                previous = None  # unreadable pointer: this save replaces it
        try:
            self._mkdir()
            self._upload(self._path(key), data)
        except Exception as exc:
            raise self._fail("upload snapshot", key, exc) from exc
        pointer = {
            "format": 1,
            "snapshot": key,
            "bytes": len(data),
            "sha256": hashlib.sha256(data).hexdigest(),
            "written_at": time.time(),
        }
        self.write(POINTER_FILE, json.dumps(pointer).encode())
        self._current = key
        self._collect({key, previous or key})
        return self._uri(key)

    def _pointer(self) -> dict[str, Any] | None:
        raw = self.read(POINTER_FILE)
        if raw is None:
            return None
        try:
            ptr = json.loads(raw)
            if not (isinstance(ptr, dict) and isinstance(ptr.get("snapshot"), str)):
                raise ValueError("no 'snapshot' key")
            if "/" in ptr["snapshot"] or not ptr["snapshot"].startswith(_SNAPSHOT_PREFIX):
                raise ValueError(f"bad snapshot name {ptr['snapshot']!r}")
            return ptr
        except ValueError as exc:
            raise RagError(
                f"Snapshot pointer {self._uri(POINTER_FILE)} is corrupt ({exc}).",
                fix="Point it at the newest intact snapshot-*.snap next to it (write "
                '{"snapshot": "snapshot-....snap"}), or delete the folder to start the shard '
                "empty and ingest its documents again.",
            ) from exc

    def load_snapshot(self) -> Snapshot | None:
        for _ in range(3):
            ptr = self._pointer()
            if ptr is None:
                # Nothing acknowledged yet (an upload without a pointer never was).
                return None
            key = ptr["snapshot"]
            data = self.read(key)
            if data is None:
                again = self._pointer()
                if again is not None and again["snapshot"] != key:
                    continue  # a save replaced it while we read: follow the new pointer
                raise RagError(
                    f"Snapshot pointer {self._uri(POINTER_FILE)} names {self._uri(key)}, "
                    "which does not exist.",
                    fix=_CORRUPT_FIX,
                )
            size, digest = ptr.get("bytes"), ptr.get("sha256")
            if size is not None and size != len(data):
                raise RagError(
                    f"Snapshot {self._uri(key)} is truncated or corrupt: {len(data)} bytes, "
                    f"{size} expected.",
                    fix=_CORRUPT_FIX,
                )
            if digest is not None and hashlib.sha256(data).hexdigest() != digest:
                raise RagError(
                    f"Snapshot {self._uri(key)} is corrupt: its sha256 does not match "
                    f"{self._uri(POINTER_FILE)}.",
                    fix=_CORRUPT_FIX,
                )
            self._current = key
            return Snapshot(data, self._uri(key))
        raise RagError(
            f"Snapshot pointer {self._uri(POINTER_FILE)} kept changing while loading.",
            fix="Make sure only one shard actor writes this location.",
        )

    def _collect(self, keep: set[str]) -> None:
        """Delete older snapshots and leftovers of interrupted writes (best effort)."""
        try:
            sel = self._pafs.FileSelector(self.base, allow_not_found=True)
            for info in self.fs.get_file_info(sel):
                name = info.base_name
                stale = _OURS.match(name) is not None and (
                    name.startswith(_TMP_PREFIX)
                    or (name.startswith(_SNAPSHOT_PREFIX) and name not in keep)
                )
                if stale and info.type == self._pafs.FileType.File:
                    self.fs.delete_file(info.path)
        except Exception as exc:  # correctness does not depend on it
            log.warning("could not delete old snapshots under %s: %s", self.uri, exc)

    def remove(self) -> None:
        """Delete the objects this code writes here (config, pointer, snapshot objects,
        temp objects), then the folder if nothing else is in it."""
        try:
            sel = self._pafs.FileSelector(self.base, allow_not_found=True)
            left = []
            for info in self.fs.get_file_info(sel):
                if info.type == self._pafs.FileType.File and _OURS.match(info.base_name):
                    self.fs.delete_file(info.path)
                else:
                    left.append(info.base_name)
            if left:
                log.info("kept %s: it holds objects lumos_ray did not write: %s", self.uri, left)
            elif self.fs.get_file_info(self.base).type == self._pafs.FileType.Directory:
                self.fs.delete_dir(self.base)  # empty (object stores: nothing to do)
        except Exception as exc:
            raise self._fail("delete", None, exc) from exc
