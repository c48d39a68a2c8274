"""Snapshot stores without Ray: a plain directory and a pyarrow filesystem URI.

The URI tests go through the real pyarrow code path with ``file://`` URIs to a tmp
dir (S3 and GCS cannot be reached from the test machines)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from lumos_ray.errors import RagError
from lumos_ray.rag._config import CollectionConfig, IndexConfig, QueryConfig
from lumos_ray.rag._snapshot_store import (
    POINTER_FILE,
    SNAPSHOT_FILE,
    LocalDirStore,
    PyArrowStore,
    bounded,
    is_uri,
    join,
    open_store,
)
from lumos_ray.rag._state import ChunkRecord, PreparedChunks, ShardState

DIM = 16


def _vec(seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal(DIM).astype(np.float32)
    return v / np.linalg.norm(v)


def _state(n: int, prefix: str = "d") -> ShardState:
    st = ShardState(0, DIM, IndexConfig(kind="flat"), QueryConfig())
    chunks = [
        ChunkRecord(
            chunk_id=f"{prefix}{i}#0",
            doc_id=f"{prefix}{i}",
            title=f"{prefix}{i}",
            text=f"text {i}",
            entities={f"e{i}": f"E{i}", "shared": "Shared"},
        )
        for i in range(n)
    ]
    st.upsert(PreparedChunks(chunks, np.stack([_vec(i) for i in range(n)])))
    return st


def _load(where) -> ShardState:
    return ShardState.load(where, 0, DIM, IndexConfig(kind="flat"), QueryConfig())


def _files(d: Path) -> list[str]:
    return sorted(p.name for p in d.iterdir()) if d.exists() else []


@pytest.fixture(params=["dir", "uri"])
def location(request, tmp_path) -> str:
    d = tmp_path / "snaps" / "shard-0"
    return str(d) if request.param == "dir" else d.as_uri()


# -- both implementations -------------------------------------------------------------
def test_rag_store_kind_follows_the_location(tmp_path):
    assert isinstance(open_store(str(tmp_path)), LocalDirStore)
    assert isinstance(open_store(tmp_path), LocalDirStore)
    assert isinstance(open_store(tmp_path.as_uri()), PyArrowStore)
    assert is_uri("s3://b/p") and is_uri("file:///x") and not is_uri("/x/y")
    assert not is_uri("relative/dir") and not is_uri("weird:/x")


def test_rag_store_roundtrip_and_missing_means_empty(location):
    store = open_store(location)
    assert store.load_snapshot() is None  # nothing yet: an empty shard
    assert store.read("collection.json") is None
    assert _load(location).stats()["chunks"] == 0

    st = _state(12)
    before = [h["chunk_id"] for h in st.vector_search(_vec(3), 4)]
    where = st.save(location)
    assert where.endswith(".snap") and where.startswith(location)
    again = _load(location)
    assert again.stats()["chunks"] == 12 and again.version == st.version
    assert [h["chunk_id"] for h in again.vector_search(_vec(3), 4)] == before
    assert again.entity_chunks("shared") == sorted(f"d{i}#0" for i in range(12))

    st.delete(["d0", "d1"])
    st.save(open_store(location))  # a store object works as well as a string
    assert _load(location).stats()["chunks"] == 10

    store.write("collection.json", b'{"a": 1}')
    store.write("collection.json", b'{"a": 2}')
    assert store.read("collection.json") == b'{"a": 2}'
    store.remove()
    assert store.load_snapshot() is None and store.read("collection.json") is None
    store.remove()  # idempotent


def test_rag_uri_store_layout_pointer_and_old_snapshots_collected(tmp_path):
    d = tmp_path / "shard-0"
    store = open_store(d.as_uri())
    st = _state(5)
    first = Path(st.save(store).removeprefix("file://")).name
    st.delete(["d0"])
    second = Path(st.save(store).removeprefix("file://")).name
    st.delete(["d1"])
    third = Path(st.save(store).removeprefix("file://")).name
    # The current and the previous snapshot are kept; older ones are deleted.
    assert _files(d) == sorted([POINTER_FILE, second, third])
    assert first not in _files(d)
    ptr = json.loads((d / POINTER_FILE).read_text())
    assert ptr["snapshot"] == third and ptr["bytes"] == (d / third).stat().st_size
    assert _load(d.as_uri()).stats()["chunks"] == 3


# -- atomicity: a crash mid-save leaves the previous snapshot readable ------------------
def test_rag_uri_crash_mid_upload_keeps_previous_snapshot(tmp_path, monkeypatch):
    d = tmp_path / "shard-0"
    uri = d.as_uri()
    _state(6).save(uri)
    real_upload = PyArrowStore._upload

    def crash_halfway(self, path, data):
        # Half the bytes reach the object, then the process "dies" (the stream is closed
        # on the way out, as pyarrow does, so the partial object is really there).
        real_upload(self, path, data[: len(data) // 2])
        raise OSError("connection reset by peer")

    monkeypatch.setattr(PyArrowStore, "_upload", crash_halfway)
    with pytest.raises(RagError, match="upload snapshot"):
        _state(20, prefix="new").save(uri)
    partial = [n for n in _files(d) if n.startswith("snapshot-")]
    assert len(partial) == 2  # the old complete one and the unnamed partial one
    loaded = _load(uri)
    assert loaded.stats()["chunks"] == 6 and loaded.doc_chunks("d5")

    # The next good save replaces the pointer and deletes the partial leftover.
    monkeypatch.setattr(PyArrowStore, "_upload", real_upload)
    _state(20, prefix="new").save(uri)
    assert _load(uri).stats()["chunks"] == 20
    assert len([n for n in _files(d) if n.startswith("snapshot-")]) == 2


def test_rag_uri_crash_before_or_during_pointer_write_keeps_previous(tmp_path, monkeypatch):
    d = tmp_path / "shard-0"
    uri = d.as_uri()
    _state(4).save(uri)
    real_upload = PyArrowStore._upload

    def die_on_pointer(self, path, data):
        if POINTER_FILE in path:  # the pointer's temp object: half written, then gone
            real_upload(self, path, data[:7])
            raise OSError("killed")
        real_upload(self, path, data)

    monkeypatch.setattr(PyArrowStore, "_upload", die_on_pointer)
    with pytest.raises(RagError, match="Cannot write"):
        _state(9, prefix="x").save(uri)
    assert _load(uri).stats()["chunks"] == 4
    json.loads((d / POINTER_FILE).read_text())  # the live pointer is intact

    # The very first save dying after its upload: nothing was acknowledged, so empty.
    d2 = tmp_path / "shard-1"
    with pytest.raises(RagError):
        _state(3).save(d2.as_uri())
    assert any(n.startswith("snapshot-") for n in _files(d2))
    assert _load(d2.as_uri()).stats()["chunks"] == 0


# -- a corrupt snapshot is a RagError naming it, never an empty shard -------------------
def _ptr(d: Path) -> dict:
    return json.loads((d / POINTER_FILE).read_text())


@pytest.mark.parametrize("damage", ["flip", "truncate", "missing", "pointer"])
def test_rag_uri_corrupt_snapshot_is_a_clear_error(tmp_path, damage):
    d = tmp_path / "shard-0"
    uri = d.as_uri()
    _state(5).save(uri)
    obj = d / _ptr(d)["snapshot"]
    if damage == "flip":
        raw = bytearray(obj.read_bytes())
        raw[len(raw) // 2] ^= 0xFF
        obj.write_bytes(bytes(raw))
        expect = "sha256 does not match"
    elif damage == "truncate":
        obj.write_bytes(obj.read_bytes()[:100])
        expect = "truncated or corrupt"
    elif damage == "missing":
        obj.unlink()
        expect = "does not exist"
    else:
        (d / POINTER_FILE).write_text("{not json")
        expect = "pointer .* is corrupt"
    with pytest.raises(RagError, match=expect) as info:
        _load(uri)
    assert uri in info.value.message
    assert info.value.fix and "ingest" in info.value.fix


def test_rag_snapshot_that_is_not_a_shard_is_a_clear_error(tmp_path):
    # Directory: a damaged shard.snap.
    d = tmp_path / "dir"
    d.mkdir()
    (d / SNAPSHOT_FILE).write_bytes(b"LUMOS-RAG-SNAPSHOT\n" + b"\xff" * 40)
    with pytest.raises(RagError, match="unreadable") as info:
        _load(str(d))
    assert str(d / SNAPSHOT_FILE) in info.value.message
    # URI: bytes that match the pointer's hash but are no snapshot (a foreign writer).
    u = tmp_path / "uri"
    store = open_store(u.as_uri())
    store.save_snapshot(json.dumps({"something": "else"}).encode())
    with pytest.raises(RagError, match="unreadable") as info:
        _load(u.as_uri())
    assert u.as_uri() in info.value.message
    # Another dimension than the collection's is refused, not mis-loaded.
    _state(3).save(str(tmp_path / "dim"))
    with pytest.raises(RagError, match="dims"):
        ShardState.load(str(tmp_path / "dim"), 0, DIM * 2, IndexConfig(), QueryConfig())


class _Exploit:
    """Unpickling this runs code: it creates the file ``path``."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (Path(self.path).touch, ())


@pytest.mark.parametrize("where", ["dir", "uri"])
def test_rag_snapshot_load_never_unpickles(tmp_path, where):
    """A snapshot is data: a pickled file (an old snapshot, or a tampered one) is refused
    with the way to re-ingest, and the code it carries never runs."""
    import pickle

    marker = tmp_path / "pwned"
    payload = pickle.dumps({"format": 1, "chunks": _Exploit(str(marker))})
    shard = tmp_path / "snaps" / "shard-0"
    if where == "dir":
        shard.mkdir(parents=True)
        (shard / "shard.pkl").write_bytes(payload)  # the old file name
        location = str(shard)
    else:
        location = shard.as_uri()
        open_store(location).save_snapshot(payload)  # sha256 and size match
    with pytest.raises(RagError) as info:
        _load(location)
    assert not marker.exists()
    assert "older lumos_ray as a pickle" in info.value.message
    assert "lumos rag delete --collection NAME --all" in info.value.fix
    assert "lumos rag ingest" in info.value.fix


def test_rag_snapshot_file_checks_its_manifest_before_decoding():
    from lumos_ray.rag._snapfile import SnapshotFormatError, pack, unpack

    data = pack({"kind": "x"}, {"a": ("json", {"k": [1, 2]}), "v": ("npy", np.arange(4.0))})
    manifest, sections = unpack(data)
    assert manifest["kind"] == "x" and sections["a"] == {"k": [1, 2]}
    assert sections["v"].tolist() == [0.0, 1.0, 2.0, 3.0]
    bad = [
        (data[:-1], "cover"),  # truncated
        (data + b"x", "cover"),  # appended to
        (data[:-3] + b"\x00\x00\x01", "sha256"),  # a flipped byte in a section
        (b"LUMOS-RAG-SNAPSHOT\n" + (10**9).to_bytes(8, "little"), "out of bounds"),
        (b"PK\x03\x04...", "unknown header"),
    ]
    for raw, words in bad:
        with pytest.raises(SnapshotFormatError, match=words):
            unpack(raw)
    # An object array (which only pickle can store) is refused when writing, and a
    # hand-made .npy section holding one is refused when reading.
    with pytest.raises(TypeError):
        pack({}, {"o": ("npy", np.array([{"a": 1}], dtype=object))})
    import hashlib
    import io

    buf = io.BytesIO()
    np.save(buf, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    blob = buf.getvalue()
    entry = {"name": "o", "kind": "npy", "offset": 0, "length": len(blob)}
    entry["sha256"] = hashlib.sha256(blob).hexdigest()
    manifest = json.dumps({"format": 2, "sections": [entry]}).encode()
    raw = b"LUMOS-RAG-SNAPSHOT\n" + len(manifest).to_bytes(8, "little") + manifest + blob
    with pytest.raises(SnapshotFormatError, match="does not decode"):
        unpack(raw)


# -- bad URIs fail at collection creation, in the caller's process ----------------------
def test_rag_unknown_scheme_is_a_clear_error():
    with pytest.raises(RagError, match="not a supported filesystem URI") as info:
        open_store("nosuchfs://bucket/prefix")
    assert "s3://bucket/prefix" in info.value.fix


def _open(snapshot_dir: str):
    from lumos_ray.rag import RagCollection

    cfg = CollectionConfig(name="snapcheck", snapshot_dir=snapshot_dir)
    return RagCollection.open("snapcheck", config=cfg, create=True)


def test_rag_collection_with_bad_snapshot_uri_fails_before_ray(tmp_path, monkeypatch):
    monkeypatch.setenv("LUMOS_HOME", str(tmp_path / "home"))
    with pytest.raises(RagError, match="not a supported filesystem URI"):
        _open("nosuchfs://bucket/prefix")
    # A location that cannot be written (its parent is a file): the config write fails.
    (tmp_path / "afile").write_text("x")
    with pytest.raises(RagError, match="Cannot write") as info:
        _open((tmp_path / "afile" / "coll").as_uri())
    assert "collection.json" in info.value.message
    # An object store nobody answers for: bounded, then a RagError naming the URI.
    from lumos_ray.rag import _client

    monkeypatch.setattr(_client, "STORE_CHECK_TIMEOUT_S", 1.0)
    uri = "s3://lumos-bucket/p?region=us-east-1&scheme=http&endpoint_override=127.0.0.1:9"
    t0 = time.perf_counter()
    with pytest.raises(RagError) as info:
        _open(uri)
    assert time.perf_counter() - t0 < 10
    assert "lumos-bucket" in info.value.message
    assert "endpoint_override" in info.value.fix


def test_rag_bounded_gives_up_and_passes_errors_through():
    with pytest.raises(RagError, match=r"no answer within 0\.2 s"):
        bounded(lambda: time.sleep(5), 0.2, "Reading s3://b/p")
    with pytest.raises(KeyError):
        bounded(lambda: {}["x"], 5, "x")
    assert bounded(lambda: 7, 5, "x") == 7


def test_rag_uri_paths_keep_their_query_last():
    from lumos_ray.rag._names import collection_dir, shard_dir

    root = collection_dir("c", "t", "/home", "s3://b/p/?endpoint_override=h:9000")
    assert root == "s3://b/p/t/c?endpoint_override=h:9000"  # <snapshot_dir>/<tenant>/<name>
    assert shard_dir(root, 0) == "s3://b/p/t/c/shard-0?endpoint_override=h:9000"
    assert shard_dir("s3://b/p?endpoint_override=h:9000", 1) == (
        "s3://b/p/shard-1?endpoint_override=h:9000"
    )
    assert shard_dir("file:///tmp/x", 0) == "file:///tmp/x/shard-0"
    assert shard_dir("/tmp/x", 0) == "/tmp/x/shard-0"
    assert collection_dir("c", "t", "/home", "gs://bucket/prefix/") == "gs://bucket/prefix/t/c"
    assert collection_dir("c", "t", "/home", "/data/rag") == "/data/rag/t/c"
    assert collection_dir("c", "t", "/home") == "/home/rag/t/c"
    assert join("s3://bucket", "collection.json") == "s3://bucket/collection.json"


def test_rag_plain_directory_path_never_imports_pyarrow(tmp_path):
    code = (
        "import sys\n"
        "from lumos_ray.rag._client import RagCollection\n"
        "from lumos_ray.rag._shard import RagShard\n"
        "from lumos_ray.rag._state import ShardState\n"
        "from lumos_ray.rag._config import IndexConfig, QueryConfig\n"
        f"d = {str(tmp_path)!r}\n"
        "ShardState(0, 8, IndexConfig(), QueryConfig()).save(d)\n"
        "ShardState.load(d, 0, 8, IndexConfig(), QueryConfig())\n"
        "assert 'pyarrow' not in sys.modules, sorted(sys.modules)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_rag_corrupt_collection_config_is_a_rag_error_before_ray(tmp_path):
    """A damaged collection.json names the file and the fix, and fails before Ray is
    touched (the unit tier's guard would fail this test if Ray started)."""
    from lumos_ray.rag._client import CONFIG_FILE, RagCollection

    store = tmp_path / "store"
    root = store / "default" / "c"  # <snapshot_dir>/<tenant>/<name>
    root.mkdir(parents=True)
    (root / CONFIG_FILE).write_text('{"name": "c", "num_shards": "many"}')
    cfg = CollectionConfig(name="c", snapshot_dir=str(store))
    with pytest.raises(RagError) as exc:
        RagCollection.open("c", config=cfg)
    assert CONFIG_FILE in str(exc.value) and "not a valid collection config" in str(exc.value)
    assert "ingest it again" in (exc.value.fix or "")


def test_rag_collection_in_the_old_flat_layout_is_a_clear_error(tmp_path, monkeypatch):
    """Created by an older version directly in snapshot_dir (pickled snapshots): the
    error says where collections live now and how to ingest again."""
    from lumos_ray.rag._client import CONFIG_FILE, RagCollection

    monkeypatch.setenv("LUMOS_HOME", str(tmp_path / "home"))
    old = tmp_path / "old"
    (old / "shard-0").mkdir(parents=True)
    (old / CONFIG_FILE).write_text('{"name": "c", "tenant": "default", "num_shards": 1}')
    (old / "shard-0" / "shard.pkl").write_bytes(b"\x80\x05...")
    with pytest.raises(RagError) as exc:
        RagCollection.open("c", config=CollectionConfig(name="c", snapshot_dir=str(old)))
    assert "created by an older lumos_ray" in exc.value.message
    assert str(old / "default" / "c") in exc.value.message
    assert "lumos rag ingest" in exc.value.fix


def test_rag_local_store_makes_every_folder_it_creates_private(tmp_path):
    """A shard's first snapshot creates <snapshot_dir>/<tenant>/<name>/shard-0 at once:
    each of those folders is 0700 and the snapshot 0600 whatever the umask; the folder
    the user named keeps its mode."""
    import os
    import stat

    chosen = tmp_path / "shared"
    chosen.mkdir(mode=0o755)
    os.chmod(chosen, 0o755)
    old = os.umask(0o022)
    try:
        LocalDirStore(chosen / "default" / "coll" / "shard-0").save_snapshot(b"x")
    finally:
        os.umask(old)

    def mode(p: Path) -> int:
        return stat.S_IMODE(p.stat().st_mode)

    assert mode(chosen) == 0o755
    for d in ("default", "default/coll", "default/coll/shard-0"):
        assert mode(chosen / d) == 0o700, d
    assert mode(chosen / "default/coll/shard-0/shard.snap") == 0o600
