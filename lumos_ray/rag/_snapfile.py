"""The shard snapshot file: a manifest, then sections of plain data. No pickle.

Why: a snapshot is read back by a shard actor when it (re)starts, possibly from an
object store other people can write to. Unpickling such bytes runs whatever code they
name, so snapshots hold only data that is parsed, never executed:

```
LUMOS-RAG-SNAPSHOT\\n              magic (19 bytes)
<u64 little-endian>               length of the manifest
{"format": 2, "sections": [{"name", "kind", "offset", "length", "sha256"}, ...], ...}
<section bytes, back to back>     kinds: json (UTF-8 JSON), npy (numpy .npy, loaded
                                  with allow_pickle=False), raw (bytes, e.g. faiss's
                                  own index serialization)
```

:func:`unpack` checks the manifest before it parses anything: the magic, the manifest's
size and shape, that the sections tile the file exactly, and every section's sha256;
only then are sections decoded. A file that starts with a pickle header (snapshots
written before this format) is refused with :class:`LegacySnapshot`, whose message
says how to re-ingest; it is never unpickled.
"""

from __future__ import annotations

import hashlib
import io
import json
import struct
from typing import Any

import numpy as np

__all__ = ["FORMAT", "MAGIC", "LegacySnapshot", "SnapshotFormatError", "pack", "unpack"]

MAGIC = b"LUMOS-RAG-SNAPSHOT\n"
FORMAT = 2
_MAX_MANIFEST = 1 << 20  # bytes
_KINDS = ("json", "npy", "raw")


class SnapshotFormatError(ValueError):
    """The bytes are not a snapshot of this format (or are damaged)."""


class LegacySnapshot(SnapshotFormatError):
    """A snapshot pickled by an older lumos_ray (refused: unpickling runs code)."""


def pack(meta: dict[str, Any], sections: dict[str, tuple[str, Any]]) -> bytes:
    """``sections``: name → (kind, value): json → a JSON-able value, npy → a numpy array
    (no object dtype), raw → bytes."""
    blobs: list[bytes] = []
    entries: list[dict[str, Any]] = []
    offset = 0
    for name, (kind, value) in sections.items():
        if kind == "json":
            blob = json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()
        elif kind == "npy":
            if value.dtype == object:
                raise TypeError(f"section {name}: object arrays are not allowed")
            buf = io.BytesIO()
            np.save(buf, value, allow_pickle=False)
            blob = buf.getvalue()
        elif kind == "raw":
            blob = bytes(value)
        else:
            raise ValueError(f"unknown section kind {kind!r}")
        entries.append(
            {
                "name": name,
                "kind": kind,
                "offset": offset,
                "length": len(blob),
                "sha256": hashlib.sha256(blob).hexdigest(),
            }
        )
        blobs.append(blob)
        offset += len(blob)
    manifest = json.dumps({**meta, "format": FORMAT, "sections": entries}).encode()
    return b"".join([MAGIC, struct.pack("<Q", len(manifest)), manifest, *blobs])


def _check_manifest(manifest: Any, body: int) -> list[dict[str, Any]]:
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        got = manifest.get("format") if isinstance(manifest, dict) else type(manifest).__name__
        raise SnapshotFormatError(f"snapshot format {got!r}, expected {FORMAT}")
    sections = manifest.get("sections")
    if not isinstance(sections, list):
        raise SnapshotFormatError("the manifest has no section list")
    expect = 0
    names: set[str] = set()
    for s in sections:
        if not isinstance(s, dict):
            raise SnapshotFormatError("a manifest section is not an object")
        name, kind = s.get("name"), s.get("kind")
        off, length, digest = s.get("offset"), s.get("length"), s.get("sha256")
        if not isinstance(name, str) or name in names or kind not in _KINDS:
            raise SnapshotFormatError(f"bad section name or kind: {name!r}/{kind!r}")
        if not (isinstance(off, int) and isinstance(length, int) and off == expect >= 0):
            raise SnapshotFormatError(f"section {name!r}: bad offset/length")
        if length < 0 or not (isinstance(digest, str) and len(digest) == 64):
            raise SnapshotFormatError(f"section {name!r}: bad length or sha256")
        names.add(name)
        expect = off + length
    if expect != body:
        raise SnapshotFormatError(
            f"the sections cover {expect} bytes, the file has {body} after its manifest "
            "(truncated or appended to)"
        )
    return sections


def unpack(data: bytes) -> tuple[dict[str, Any], dict[str, Any]]:
    """(manifest, name → decoded section). Raises :class:`SnapshotFormatError` (or
    :class:`LegacySnapshot`) before decoding anything unverified."""
    if data[:1] == b"\x80" or data[:2] in (b"(d", b"}q"):  # pickle protocol 2+ / 0-1
        raise LegacySnapshot("an old pickled snapshot")
    if not data.startswith(MAGIC):
        raise SnapshotFormatError("not a lumos_ray RAG snapshot (unknown header)")
    head = len(MAGIC)
    if len(data) < head + 8:
        raise SnapshotFormatError("truncated before the manifest")
    (mlen,) = struct.unpack("<Q", data[head : head + 8])
    if mlen > _MAX_MANIFEST or head + 8 + mlen > len(data):
        raise SnapshotFormatError(f"manifest length {mlen} is out of bounds")
    start = head + 8 + mlen
    try:
        manifest = json.loads(data[head + 8 : start])
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SnapshotFormatError(f"the manifest is not JSON ({exc})") from None
    sections = _check_manifest(manifest, len(data) - start)
    view = memoryview(data)
    blobs = {}
    for s in sections:  # every hash first: nothing is decoded from a damaged file
        blob = view[start + s["offset"] : start + s["offset"] + s["length"]]
        if hashlib.sha256(blob).hexdigest() != s["sha256"]:
            raise SnapshotFormatError(f"section {s['name']!r}: sha256 does not match")
        blobs[s["name"]] = (s["kind"], blob)
    out: dict[str, Any] = {}
    for name, (kind, blob) in blobs.items():
        try:
            if kind == "json":
                out[name] = json.loads(bytes(blob))
            elif kind == "npy":
                out[name] = np.load(io.BytesIO(blob), allow_pickle=False)
            else:
                out[name] = bytes(blob)
        except ValueError as exc:  # JSONDecodeError and numpy's refusals
            raise SnapshotFormatError(f"section {name!r} does not decode ({exc})") from None
    return manifest, out
