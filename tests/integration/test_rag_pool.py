"""The RAG pool on a real Ray cluster: ingestion, multi-hop retrieval, mutation while
serving, shard recovery and concurrent agent queries.

One session-shared collection (2 shards, so cross-shard graph expansion is exercised)
is built once: the router loads the real all-MiniLM-L6-v2 once for all these tests.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.test_rag_corpus import (
    DOCS,
    QUESTIONS,
    answer_recall,
    write_bad_files,
    write_corpus,
)

COLLECTION = "shared-multihop"  # actors: lumos-rag-shared-multihop@<tenant>.* (kept)


@pytest.fixture(scope="session")
def rag_corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    d = tmp_path_factory.mktemp("rag-corpus")
    write_corpus(d)
    bad = write_bad_files(d)
    return d, bad


@pytest.fixture(scope="session")
def rag_pool(ray_cluster, rag_corpus) -> Iterator[tuple]:
    from lumos_ray.rag import CollectionConfig, RagCollection

    coll = RagCollection.open(
        COLLECTION, config=CollectionConfig(name=COLLECTION, num_shards=2), create=True
    )
    report = coll.ingest([rag_corpus[0]])
    yield coll, report
    coll.drop()


def _recall(coll, mode: str, k: int) -> float:
    return answer_recall([[h.text for h in coll.query(q, mode, k)] for q, _, _ in QUESTIONS])


@pytest.mark.slow
def test_rag_ingest_reports_bad_files_by_name_and_ingests_the_rest(rag_pool, rag_corpus):
    coll, report = rag_pool
    _, bad = rag_corpus
    skipped = {Path(s["path"]).name: s["reason"].lower() for s in report.skipped}
    assert set(skipped) == set(bad)
    for name, word in bad.items():
        assert word in skipped[name], (name, skipped[name])
    assert report.documents == len(DOCS)
    stats = coll.stats()
    assert stats["documents"] == len(DOCS)
    assert stats["num_shards"] == 2
    assert all(s["documents"] > 0 for s in stats["shards"])  # both shards hold data
    # Every format made it in with its text: pdf, html (no script/style), md, txt.
    pdf = coll.doc_chunks("vessant.pdf")
    assert pdf and "Calder" in pdf[0]["text"]
    html = coll.doc_chunks("maren_oakhart.html")
    assert "dulcimer" in html[0]["text"] and "var x" not in html[0]["text"]


@pytest.mark.slow
def test_rag_hybrid_recall_beats_naive_on_multihop_corpus(rag_pool):
    coll, _ = rag_pool
    naive = {k: _recall(coll, "naive", k) for k in (2, 3)}
    hybrid = {k: _recall(coll, "hybrid", k) for k in (2, 3)}
    assert hybrid[2] > naive[2], (naive, hybrid)
    assert hybrid[3] > naive[3], (naive, hybrid)
    # Provenance: the bridge document was reached through an entity of another chunk.
    hits = coll.query(QUESTIONS[0][0], "hybrid", 3)
    bridge = next(h for h in hits if h.doc_id == "ilse_marquand.txt")
    assert bridge.path[0].startswith("chunk:harbor_bridge.md")
    assert "entity:Ilse Marquand" in bridge.path
    assert bridge.path[-1] == f"chunk:{bridge.chunk_id}"


@pytest.mark.slow
def test_rag_every_mode_returns_results_with_provenance(rag_pool):
    coll, _ = rag_pool
    q = QUESTIONS[2][0]
    for mode in ("naive", "local", "global", "hybrid", "multihop", "mix"):
        hits = coll.query(q, mode, 4)
        assert 1 <= len(hits) <= 4, mode
        assert all(h.doc_id in DOCS and h.chunk_id.startswith(h.doc_id + "#") for h in hits)
        assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
        assert all(h.mode == mode for h in hits)
        assert all(
            (h.citation.doc_id, h.citation.chunk_id, h.citation.path)
            == (h.doc_id, h.chunk_id, h.path)
            for h in hits
        )
    glob = coll.query(q, "global", 3)
    assert all(h.community is not None and h.path[0].startswith("community:") for h in glob)
    _assert_query_traced(coll.name)


def _assert_query_traced(collection: str) -> None:
    """A query is one trace: the client's rag.query span and, as its child in the
    router actor, rag.search (with the configured JSONL exporter)."""
    import os
    import time

    from lumos_ray.tracing import read_jsonl_spans

    spans_dir = os.environ["LUMOS_TRACE_EXPORTER"].removeprefix("jsonl:")
    deadline = time.monotonic() + 30
    while True:
        spans = read_jsonl_spans(spans_dir)
        queries = {
            s["span_id"]: s
            for s in spans
            if s["name"] == "rag.query" and s["attributes"].get("collection") == collection
        }
        searches = [s for s in spans if s["name"] == "rag.search" and s["parent_id"] in queries]
        if searches or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert queries and searches, "rag.query -> rag.search spans were not exported"
    s = searches[0]
    assert s["trace_id"] == queries[s["parent_id"]]["trace_id"]
    assert s["pid"] != queries[s["parent_id"]]["pid"]  # the router actor's process


@pytest.mark.slow
def test_rag_multihop_across_two_shards_follows_the_bridge_and_cites_the_sentence(rag_pool):
    coll, _ = rag_pool
    naive = _recall(coll, "naive", 3)
    assert _recall(coll, "multihop", 3) > naive
    assert _recall(coll, "mix", 3) > naive
    hits = coll.query(QUESTIONS[0][0], "multihop", 3)
    bridge = next(h for h in hits if h.doc_id == "ilse_marquand.txt")
    assert "Kestrel Falls" in bridge.text
    (link,) = bridge.citation.links
    assert link.from_chunk.startswith("harbor_bridge.md#") and link.entity == "Ilse Marquand"
    assert "designed by Ilse Marquand" in link.sentence
    assert bridge.path == [
        f"chunk:{link.from_chunk}",
        "entity:Ilse Marquand",
        f"chunk:{bridge.chunk_id}",
    ]


@pytest.mark.slow
def test_rag_merge_and_delete_entity_through_the_pool(rag_pool):
    import ray

    from lumos_ray.errors import RagError
    from lumos_ray.rag import Document

    coll, _ = rag_pool
    docs = [
        Document(doc_id="ent-quorra.txt", title="Quorra Vantis",
                 text="Quorra Vantis founded Brindle Works in Hollowmere."),
        Document(doc_id="ent-brindle.txt", title="Brindle Works",
                 text="Brindle Works makes tower clocks for Hollowmere."),
        Document(doc_id="ent-clocks.txt", title="Clock history",
                 text="Vantis Clockmakers supplied the clock of the Hollowmere guildhall."),
    ]  # fmt: skip
    coll.upsert(docs)
    router = coll.router
    out = coll.merge_entities(["Vantis Clockmakers"], into="Brindle Works")
    assert out == {"into": "brindle works", "merged": ["vantis clockmakers"], "chunks": 1}
    merged = ray.get(router.entity_chunks.remote("brindle works"))
    assert merged == ["ent-brindle.txt#0", "ent-clocks.txt#0", "ent-quorra.txt#0"]
    assert ray.get(router.entity_chunks.remote("vantis clockmakers")) == merged

    out = coll.delete_entity("Brindle Works")
    assert out["entity"] == "brindle works" and out["chunks"] == 3
    assert out["documents"] == ["ent-brindle.txt", "ent-clocks.txt", "ent-quorra.txt"]
    assert ray.get(router.entity_chunks.remote("brindle works")) == []
    assert ray.get(router.entity_chunks.remote("quorra vantis")) == []  # gone with its chunks
    assert all(coll.doc_chunks(d.doc_id) == [] for d in docs)
    for mode in ("naive", "hybrid", "multihop"):
        hits = coll.query("Who founded Brindle Works in Hollowmere?", mode, 5)
        assert all(not h.doc_id.startswith("ent-") for h in hits), mode
    with pytest.raises(RagError, match="no letters or digits"):
        coll.delete_entity("!!!")


@pytest.mark.slow
def test_rag_update_replaces_and_delete_removes_chunks_and_graph_provenance(rag_pool):
    import ray

    from lumos_ray.rag import Document

    coll, _ = rag_pool
    doc_id = "mutable-zorbit.txt"
    v1 = Document(
        doc_id=doc_id,
        title="Zorbit Quell",
        text="Zorbit Quell is the mayor of Plinthaven. Zorbit Quell founded the Glimmer Guild.",
    )
    coll.upsert([v1])
    chunks = coll.doc_chunks(doc_id)
    assert chunks and "Plinthaven" in chunks[0]["text"]
    assert "plinthaven" in chunks[0]["entities"] and chunks[0]["relations"]
    assert any(
        h.doc_id == doc_id for h in coll.query("Who is the mayor of Plinthaven?", "naive", 3)
    )

    # Update: the new version replaces every chunk and its graph facts.
    v2 = v1.model_copy(update={"text": "Zorbit Quell is a retired lighthouse keeper in Dunmore."})
    report = coll.upsert([v2])
    assert report.replaced == 1
    chunks = coll.doc_chunks(doc_id)
    assert len(chunks) == 1 and "lighthouse keeper" in chunks[0]["text"]
    assert "plinthaven" not in chunks[0]["entities"]
    entity_chunks = ray.get(coll.router.entity_chunks.remote("plinthaven"))
    assert entity_chunks == []  # the old version's entity is gone with its provenance
    assert ray.get(coll.router.entity_chunks.remote("glimmer guild")) == []
    # Shared entity: Dunmore is also named by copper_lanterns.md; both chunks link to it.
    dunmore = ray.get(coll.router.entity_chunks.remote("dunmore"))
    assert f"{doc_id}#0" in dunmore and any(c.startswith("copper_lanterns.md#") for c in dunmore)

    # Delete: chunks, vectors and this document's graph provenance disappear, while an
    # entity another document still mentions stays.
    assert coll.delete([doc_id]) == 1
    assert coll.doc_chunks(doc_id) == []
    assert ray.get(coll.router.entity_chunks.remote("zorbit quell")) == []
    dunmore = ray.get(coll.router.entity_chunks.remote("dunmore"))
    assert dunmore and all(not c.startswith(doc_id) for c in dunmore)
    for mode in ("naive", "hybrid"):
        hits = coll.query("Zorbit Quell retired lighthouse keeper", mode, 5)
        assert all(h.doc_id != doc_id for h in hits)
    assert coll.delete([doc_id]) == 0  # idempotent


@pytest.mark.slow
def _kill_shards_and_check_they_come_back(coll, before: list[dict]) -> None:
    """1) each shard killed with restart: Ray restarts it and it reloads its snapshot;
    2) shard 0 killed for good: the router re-creates it by name from the snapshot.
    Chunk counts and a hybrid query's hits are the same afterwards."""
    import ray

    expected = [h.chunk_id for h in coll.query(QUESTIONS[3][0], "hybrid", 4)]
    for shard in range(len(before)):
        old_pid = before[shard]["pid"]
        ray.kill(coll.shard_handle(shard), no_restart=False)
        deadline = time.time() + 60
        while True:
            try:
                st = ray.get(coll.shard_handle(shard).stats.remote(), timeout=30)
                if st["pid"] != old_pid:
                    break
            except Exception:
                pass
            assert time.time() < deadline, "shard did not restart"
            time.sleep(0.5)
        assert st["chunks"] == before[shard]["chunks"] > 0
        assert st["loaded_chunks"] == st["chunks"]
    ray.kill(coll.shard_handle(0), no_restart=True)
    after = coll.stats()["shards"]
    assert [s["chunks"] for s in after] == [s["chunks"] for s in before]
    assert after[0]["loaded_chunks"] == before[0]["chunks"]
    assert [h.chunk_id for h in coll.query(QUESTIONS[3][0], "hybrid", 4)] == expected


def test_rag_killed_shard_comes_back_with_its_data(rag_pool):
    coll, _ = rag_pool
    before = coll.stats()["shards"]
    _kill_shards_and_check_they_come_back(coll, before)


@pytest.mark.slow
def test_rag_killed_shard_comes_back_from_a_file_uri_snapshot(ray_cluster, rag_corpus, tmp_path):
    """The kill test above, with the snapshots behind a ``file://`` URI: the same
    pyarrow code path as ``s3://`` / ``gs://`` (versioned objects plus a pointer)."""
    import json

    import ray

    from lumos_ray.errors import RagError
    from lumos_ray.rag import CollectionConfig, RagCollection

    name = "uri-snapshots"
    store = tmp_path / "store"
    uri = store.as_uri()
    cfg = CollectionConfig(name=name, num_shards=2, snapshot_dir=uri)
    coll = RagCollection.open(name, config=cfg, create=True)
    root = store / coll.config.tenant / name  # <snapshot_dir>/<tenant>/<name>
    try:
        coll.ingest([rag_corpus[0]])
        before = coll.stats()["shards"]
        assert coll.stats()["snapshot_dir"] == root.as_uri()
        assert all(s["chunks"] > 0 for s in before)
        assert json.loads((root / "collection.json").read_text())["snapshot_dir"] == uri
        for shard in range(2):  # each shard: a pointer naming a complete snapshot object
            ptr = json.loads((root / f"shard-{shard}" / "LATEST.json").read_text())
            snap = root / f"shard-{shard}" / ptr["snapshot"]
            assert snap.stat().st_size == ptr["bytes"]
        _kill_shards_and_check_they_come_back(coll, before)
        # A write after the recovery lands in a new snapshot behind the same URI.
        extra = {"doc_id": "uri-note.txt", "title": "Quillon", "text": "Quillon Marsh."}
        assert coll.upsert([extra]).chunks == 1
        assert sum(s["chunks"] for s in coll.stats()["shards"]) == (
            sum(s["chunks"] for s in before) + 1
        )
        # A corrupt snapshot is a RagError naming it, never a silently empty shard.
        ray.kill(coll.shard_handle(0), no_restart=True)
        shard0 = root / "shard-0"
        snap = shard0 / json.loads((shard0 / "LATEST.json").read_text())["snapshot"]
        snap.write_bytes(snap.read_bytes()[:50])
        with pytest.raises(RagError, match="could not start") as info:
            coll.stats()
        assert snap.as_uri() in str(info.value) and "truncated" in str(info.value)
    finally:
        coll.drop()
    assert not root.exists()  # drop removes the collection from the store


@pytest.mark.slow
def test_rag_50_concurrent_agent_queries_through_rag_search_tool(rag_pool):
    """50 queries in flight at once from agent actors, each through the rag_search tool
    (the path agents use), while a document is written: answers equal the sequential
    ones."""
    import ray

    from lumos_ray.rag._tool import rag_search

    coll, _ = rag_pool
    expected = {q: [h.chunk_id for h in coll.query(q, "hybrid", 3)] for q, _, _ in QUESTIONS}

    @ray.remote(num_cpus=0, max_concurrency=64)
    class Agent:
        async def ask(self, question: str) -> list[dict]:
            return await rag_search.acall(
                {"query": question, "collection": COLLECTION, "mode": "hybrid", "k": 3}
            )

    agents = [Agent.remote() for _ in range(4)]
    questions = [QUESTIONS[i % len(QUESTIONS)][0] for i in range(50)]
    refs = [agents[i % 4].ask.remote(q) for i, q in enumerate(questions)]
    # A write lands while the queries are in flight (the pool updates while serving).
    extra = {"doc_id": "concurrent-note.txt", "title": "Zyxt", "text": "Zyxt qorp vlim."}
    write = coll.router.upsert_documents.remote([extra])
    results = ray.get(refs, timeout=300)
    assert ray.get(write)["chunks"] == 1
    assert coll.delete(["concurrent-note.txt"]) == 1
    assert len(results) == 50
    for q, res in zip(questions, results, strict=True):
        assert [r["chunk_id"] for r in res] == expected[q]
        assert all({"text", "doc_id", "chunk_id", "score", "path"} <= set(r) for r in res)
    # The tool reports a missing collection as a tool error, not a crash.
    from lumos_ray.errors import ToolError

    with pytest.raises(ToolError, match="does not exist"):
        asyncio.run(rag_search.acall({"query": "x", "collection": "no-such-collection"}))
    for a in agents:
        ray.kill(a)


def _lumos(args: list[str], capsys) -> tuple[int, str, str]:
    """Run the real `lumos` entry point in-process (it reuses the test cluster)."""
    from lumos_ray.cli import main

    code = 0
    try:
        main(args)
    except SystemExit as exc:
        code = int(exc.code or 0)
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.mark.slow
def test_rag_cli_ingest_query_stats_delete(rag_pool, tmp_path, capsys):
    import json

    note = tmp_path / "cli-note.md"
    note.write_text("# Quorvath Spire\n\nThe Quorvath Spire is a granite tower in Plinthaven.")
    (tmp_path / "junk.bin").write_bytes(b"\x00\x01")
    code, out, _ = _lumos(
        ["rag", "ingest", str(tmp_path), "--collection", COLLECTION, "--json"], capsys
    )
    assert code == 0, out
    rep = json.loads(out)
    assert rep["documents"] == 1 and rep["chunks"] == 1
    assert [Path(s["path"]).name for s in rep["skipped"]] == ["junk.bin"]

    code, out, _ = _lumos(
        ["rag", "query", "granite tower", "-c", COLLECTION, "--mode", "naive", "-k", "2", "--json"],
        capsys,
    )
    assert code == 0 and json.loads(out)[0]["doc_id"] == "cli-note.md"
    code, out, _ = _lumos(["rag", "query", "granite tower", "-c", COLLECTION], capsys)
    assert code == 0 and "cli-note.md" in out  # human rendering

    code, out, _ = _lumos(["rag", "stats", "-c", COLLECTION, "--json"], capsys)
    assert code == 0 and json.loads(out)["documents"] == len(DOCS) + 1
    code, out, _ = _lumos(["rag", "stats", "--json"], capsys)
    assert COLLECTION in json.loads(out)["collections"]

    code, out, _ = _lumos(["rag", "delete", "cli-note.md", "-c", COLLECTION, "--json"], capsys)
    assert code == 0 and json.loads(out)["deleted"] == 1

    # A missing collection is a clear error with a fix, not a stack trace.
    code, out, err = _lumos(["rag", "query", "x", "-c", "nope-missing", "--json"], capsys)
    assert code == 1
    assert json.loads(out)["error"]["code"] == "LUMOS-E003"
    code, out, err = _lumos(["rag", "query", "x", "-c", "nope-missing"], capsys)
    assert code == 1 and "How to fix" in err and "Traceback" not in err
