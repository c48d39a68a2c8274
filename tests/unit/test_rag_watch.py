"""Incremental ingestion from a watched folder, into an in-process collection (real
MiniLM embeddings, offline extractor, faiss + graph; no Ray). Time is passed to
``sync_once(now=...)`` so "still being written" is decided without sleeping."""

from __future__ import annotations

import os
import time

import pytest

from lumos_ray.errors import RagError
from lumos_ray.rag import CollectionConfig, FolderWatcher
from lumos_ray.rag._local import LocalCollection

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="module")
def embedder():
    from lumos_ray.rag._config import EmbeddingConfig
    from lumos_ray.rag._embed import make_embedder

    return make_embedder(EmbeddingConfig())


def _write(path, text: str, age_s: float = 60.0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    t = time.time() - age_s
    os.utime(path, (t, t))


def _docs(coll: LocalCollection) -> set[str]:
    return {d for s in coll.shards for d in s.docs}


def test_rag_watcher_adds_updates_deletes_and_skips_by_name(embedder, tmp_path):
    folder = tmp_path / "inbox"
    _write(folder / "vessel.txt", "The Quillon is a survey vessel based in Ormet.")
    _write(folder / "guide" / "ormet.md", "# Ormet\n\nOrmet is a harbour city.")
    _write(folder / ".hidden.txt", "never read")
    (folder / "broken.txt").write_bytes(b"\x00\x01binary")
    os.utime(folder / "broken.txt", (time.time() - 60, time.time() - 60))
    coll = LocalCollection(CollectionConfig(name="watch", num_shards=2), embedder=embedder)
    state = tmp_path / "watch-state.json"
    w = FolderWatcher(coll, folder, state_file=state)

    first = w.sync_once()
    assert first.added == ["guide/ormet.md", "vessel.txt"] and not first.updated
    assert [s["path"].rsplit("/", 1)[-1] for s in first.skipped] == ["broken.txt"]
    assert "NUL" in first.skipped[0]["reason"]
    assert _docs(coll) == {"guide/ormet.md", "vessel.txt"}
    hits = coll.query("Which vessel is based in Ormet?", mode="naive", k=1)
    assert hits[0].doc_id == "vessel.txt"

    # Nothing changed: nothing is written. A touch (same bytes) is hashed, not ingested.
    assert not w.sync_once().changed
    os.utime(folder / "vessel.txt", (time.time() - 30, time.time() - 30))
    assert not w.sync_once().changed

    # An edit replaces the document; a removed file removes its document.
    _write(folder / "vessel.txt", "The Quillon is a research vessel based in Brask.", 30)
    (folder / "guide" / "ormet.md").unlink()
    rep = w.sync_once()
    assert rep.updated == ["vessel.txt"] and rep.deleted == ["guide/ormet.md"]
    assert _docs(coll) == {"vessel.txt"}
    texts = [c.text for s in coll.shards for c in s.chunks.values()]
    assert texts == ["The Quillon is a research vessel based in Brask."]

    # A file written just now is left for the next scan (it may be half written).
    _write(folder / "fresh.txt", "Brask lies on the Ilm River.", age_s=0)
    now = time.time()
    rep = w.sync_once(now=now)
    assert rep.deferred == ["fresh.txt"] and "fresh.txt" not in _docs(coll)
    assert w.sync_once(now=now + 5).added == ["fresh.txt"]

    # A restarted watcher reads its state: nothing to redo.
    again = FolderWatcher(coll, folder, state_file=state)
    assert not again.sync_once().changed


def test_rag_watcher_bad_setup_is_a_clear_error(tmp_path):
    with pytest.raises(RagError, match="not a directory"):
        FolderWatcher(object(), tmp_path / "missing")  # type: ignore[arg-type]
    with pytest.raises(RagError, match="interval_s > 0"):
        FolderWatcher(object(), tmp_path, interval_s=0)  # type: ignore[arg-type]
    bad = tmp_path / "state.json"
    bad.write_text("{not json")
    with pytest.raises(RagError, match="unreadable") as err:
        FolderWatcher(object(), tmp_path, state_file=bad)  # type: ignore[arg-type]
    assert "Delete it" in err.value.fix
