"""RAG building blocks without Ray or the embedding model: loaders, chunking,
extraction, the shard state (faiss + graph) with synthetic vectors, snapshots."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from lumos_ray.rag._chunking import chunk_text, token_counter
from lumos_ray.rag._config import ChunkingConfig, CollectionConfig, IndexConfig, QueryConfig
from lumos_ray.rag._extract import OfflineExtractor, entity_key, parse_llm_triples
from lumos_ray.rag._fusion import fuse, seeds_from_probes
from lumos_ray.rag._loaders import load_paths
from lumos_ray.rag._state import ChunkRecord, PreparedChunks, ShardState
from tests.integration.test_rag_corpus import DOCS, write_bad_files, write_corpus

DIM = 16


def test_rag_chunks_respect_limit_and_overlap():
    text = " ".join(f"Sentence number {i} talks about topic {i % 7}." for i in range(200))
    cfg = ChunkingConfig(chunk_tokens=40, overlap_tokens=10)
    chunks = chunk_text(text, cfg)
    count = token_counter("regex")
    assert len(chunks) > 5
    assert all(count(c.text) <= 40 for c in chunks)
    # Neighbours share text (the overlap), and nothing is lost.
    for a, b in itertools.pairwise(chunks):
        assert a.text.split(". ")[-1].rstrip(".") in b.text
    assert "Sentence number 199" in chunks[-1].text
    assert chunk_text("   ", cfg) == []


def test_rag_chunking_cuts_a_giant_token_run():
    chunks = chunk_text("x" * 10 + " " + "word " * 500, ChunkingConfig(chunk_tokens=50))
    assert all(c.tokens <= 50 for c in chunks) and len(chunks) >= 10


def test_rag_loaders_read_every_format_and_skip_bad_files_by_name(tmp_path):
    write_corpus(tmp_path)
    bad = write_bad_files(tmp_path)
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "nested.md").write_text("# Nested\n\nSee [the docs](http://x) *now*.")
    docs, skipped = load_paths([tmp_path, tmp_path / "missing.txt"])
    by_id = {d.doc_id: d for d in docs}
    assert set(DOCS) | {"sub/nested.md"} == set(by_id)
    assert "Calder" in by_id["vessant.pdf"].text
    assert by_id["maren_oakhart.html"].title == "Maren Oakhart"
    assert "var x" not in by_id["maren_oakhart.html"].text
    assert by_id["sub/nested.md"].text.strip().endswith("See the docs now.")
    reasons = {s["path"].rsplit("/", 1)[-1]: s["reason"].lower() for s in skipped}
    assert set(reasons) == set(bad) | {"missing.txt"}
    for name, word in bad.items():
        assert word in reasons[name]


def test_rag_offline_extractor_links_documents_through_names():
    ex = OfflineExtractor()
    a = ex.extract_one(*reversed(DOCS["harbor_bridge.md"]))
    b = ex.extract_one(*reversed(DOCS["ilse_marquand.txt"]))
    assert "ilse marquand" in a.entities and "ilse marquand" in b.entities
    assert ("harbor bridge of velmora", "was designed by", "ilse marquand") in [
        (h, r, t) for h, r, t in a.relations
    ] or any(t == "ilse marquand" for _, _, t in a.relations)
    assert entity_key("The Dandy Warhols (band)") == "dandy warhols"
    assert "in" not in ex.extract_one("In 1950 it rained.", "").entities


def test_rag_llm_triples_parser_accepts_fenced_json_and_rejects_garbage():
    ex = parse_llm_triples(
        'Sure!\n```json\n{"entities": ["Ada Lovelace"], "relations": '
        '[["Ada Lovelace", "worked with", "Charles Babbage"], ["bad"]]}\n```'
    )
    assert ex.entities["charles babbage"] == "Charles Babbage"
    assert ex.relations == [("ada lovelace", "worked with", "charles babbage")]
    from lumos_ray.errors import RagError

    with pytest.raises(RagError):
        parse_llm_triples("no json here")


def test_rag_collection_names_are_validated():
    from pydantic import ValidationError

    with pytest.raises(ValidationError):
        CollectionConfig(name="Bad Name!")
    assert CollectionConfig(name="ok-name_1", tenant="acme").tenant == "acme"


# -- shard state with synthetic vectors ---------------------------------------------


def _vec(seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal(DIM).astype(np.float32)
    return v / np.linalg.norm(v)


def _batch(docs: dict[str, tuple[list[str], int]]) -> PreparedChunks:
    """doc_id -> (entity names, vector seed) — one chunk per document."""
    ex = OfflineExtractor()
    chunks, vecs = [], []
    for doc_id, (names, seed) in docs.items():
        text = " and ".join(names) + " are here."
        e = ex.extract_one(text, "")
        chunks.append(
            ChunkRecord(
                chunk_id=f"{doc_id}#0",
                doc_id=doc_id,
                title=doc_id,
                text=text,
                entities=e.entities,
                relations=e.relations,
            )
        )
        vecs.append(_vec(seed))
    return PreparedChunks(chunks=chunks, vectors=np.stack(vecs))


def _state(**index) -> ShardState:
    return ShardState(0, DIM, IndexConfig(**index), QueryConfig())


@pytest.mark.parametrize("index", [{"kind": "flat"}, {"kind": "hnsw"}])
def test_rag_shard_upsert_update_delete_and_graph_provenance(index):
    st = _state(**index)
    st.upsert(_batch({f"d{i}": ([f"Alpha{i}", "Shared Thing"], i) for i in range(30)}))
    assert st.stats()["chunks"] == 30 and st.stats()["index"] == index["kind"]
    hits = st.vector_search(_vec(7), 3)
    assert hits[0]["doc_id"] == "d7" and hits[0]["score"] == pytest.approx(1.0, abs=1e-4)
    assert len(st.graph.entity_chunks("shared thing")) == 30
    assert st.graph.relation_edges("d7#0") == [("alpha7", "and", "shared thing")]

    # Update d7: new vector and entities replace the old ones.
    st.upsert(_batch({"d7": (["Omega Seven"], 1000)}))
    assert st.stats()["chunks"] == 30
    assert st.graph.entity_chunks("alpha7") == []
    assert st.graph.entity_chunks("omega seven") == ["d7#0"]
    assert st.vector_search(_vec(1000), 1)[0]["doc_id"] == "d7"
    assert all(h["doc_id"] != "d7" for h in st.vector_search(_vec(7), 5))

    # Delete: chunk, vector and provenance go; a shared entity keeps its other chunks.
    assert st.delete(["d3", "nope"]) == 1
    assert st.doc_chunks("d3") == []
    assert "d3#0" not in st.graph.entity_chunks("shared thing")
    assert st.graph.entity_chunks("alpha3") == []
    assert all(h["doc_id"] != "d3" for h in st.vector_search(_vec(3), 29))
    assert len(st.vector_search(_vec(3), 100)) == 29


def test_rag_index_switches_to_hnsw_above_threshold_and_compacts():
    st = _state(kind="auto", hnsw_threshold=40)
    st.upsert(_batch({f"d{i}": ([f"E{i}"], i) for i in range(30)}))
    assert st.stats()["index"] == "flat"
    st.upsert(_batch({f"x{i}": ([f"X{i}"], 100 + i) for i in range(20)}))
    assert st.stats()["index"] == "hnsw"
    assert st.vector_search(_vec(105), 1)[0]["doc_id"] == "x5"
    st.delete([f"d{i}" for i in range(30)])  # below threshold again: exact index
    assert st.stats()["index"] == "flat" and st.stats()["chunks"] == 20
    assert st.vector_search(_vec(105), 1)[0]["doc_id"] == "x5"


def test_rag_snapshot_roundtrip_keeps_data_and_answers(tmp_path):
    st = _state(kind="hnsw")
    st.upsert(_batch({f"d{i}": ([f"Alpha{i}", "Shared Thing"], i) for i in range(25)}))
    st.delete(["d2"])
    before = [h["chunk_id"] for h in st.vector_search(_vec(5), 5)]
    st.save(tmp_path)
    again = ShardState.load(tmp_path, 0, DIM, IndexConfig(kind="hnsw"), QueryConfig())
    assert again.stats()["chunks"] == 24
    assert [h["chunk_id"] for h in again.vector_search(_vec(5), 5)] == before
    assert again.graph.entity_chunks("alpha2") == []
    empty = ShardState.load(tmp_path / "none", 0, DIM, IndexConfig(), QueryConfig())
    assert empty.stats()["chunks"] == 0


def test_rag_hybrid_follows_an_entity_bridge_to_a_dissimilar_chunk():
    st = _state(kind="flat")
    q = _vec(1)
    st.upsert(_batch({"a": (["Bridge Person", "Topic A"], 1), "b": (["Bridge Person"], 50)}))
    st.upsert(_batch({f"noise{i}": ([f"Noise{i}"], 200 + i) for i in range(20)}))
    probe = st.probe(q, [], 3)
    ents, chunks = seeds_from_probes([probe], "hybrid", st.qcfg)
    out = fuse([st.expand(q, "hybrid", ents, chunks, 3)], "hybrid", 3, st.qcfg)
    ids = [h["doc_id"] for h in out]
    assert ids[:2] == ["a", "b"], ids
    bridge = out[1]
    assert bridge["path"] == ["chunk:a#0", "entity:Bridge Person", "chunk:b#0"]
    assert bridge["graph_score"] > 0
    glob = st.global_search(q, 3)
    assert glob and glob[0]["community"] is not None


def test_rag_tenants_get_separate_actors_and_snapshot_dirs(tmp_path):
    from lumos_ray.rag._names import collection_dir, router_actor_name, shard_actor_name

    assert router_actor_name("docs", "acme") != router_actor_name("docs", "globex")
    assert shard_actor_name("docs", "acme", 0).startswith("lumos-rag-docs@acme")
    a = collection_dir("docs", "acme", str(tmp_path))
    b = collection_dir("docs", "globex", str(tmp_path))
    assert a != b and a.endswith("rag/acme/docs")


def test_rag_search_tool_schema_is_typed():
    from lumos_ray.rag._tool import rag_search

    props = rag_search.parameters["properties"]
    assert set(props) == {"query", "collection", "mode", "k"}
    assert props["mode"]["enum"] == [
        "naive", "local", "global", "hybrid", "multihop", "mix", "guided",
    ]  # fmt: skip
    assert rag_search.parameters["required"] == ["query", "collection"]


class _FixedEmbedder:
    def embed(self, texts: list[str]) -> np.ndarray:
        return np.stack([_vec(len(t)) for t in texts]) if texts else np.zeros((0, DIM))


def test_rag_odd_titles_and_a_doc_id_twice_in_one_batch_ingest_and_delete():
    """Found by the fuzz suite (tests/unit/test_fuzz_rag.py): a title with no letters
    ('.', 'The') crashed upsert (IndexError), and a document id named twice in one batch
    left two chunks with one id, so deleting it raised KeyError."""
    from lumos_ray.errors import RagError
    from lumos_ray.rag import CollectionConfig, Document, EmbeddingConfig
    from lumos_ray.rag._local import LocalCollection

    cfg = CollectionConfig(name="odd", embedding=EmbeddingConfig(dim=DIM))
    coll = LocalCollection(cfg, embedder=_FixedEmbedder())
    text = "Ada Lovelace met Charles Babbage in London."
    coll.upsert(
        [
            Document(doc_id=f"t{i}", title=t, text=text)
            for i, t in enumerate([".", "-", "!!", "The"])
        ]
    )
    assert sum(len(s.chunks) for s in coll.shards) == 4
    # The same id twice in one batch: the last version wins, as across batches.
    coll.upsert([Document(doc_id="d", title="Ada", text=text), Document(doc_id="d", text="v2")])
    assert [c["text"] for c in coll.shards[0].doc_chunks("d")] == ["v2"]
    assert coll.delete(["d", "t0"]) == 2 and coll.delete(["d"]) == 0
    # Already-prepared chunks with one id twice are refused, not half-applied.
    st = _state(kind="flat")
    dup = _batch({"x": (["Ada"], 1)})
    dup = PreparedChunks(chunks=dup.chunks * 2, vectors=np.concatenate([dup.vectors] * 2))
    with pytest.raises(RagError, match="holds chunk 'x#0' twice"):
        st.upsert(dup)
    assert st.stats()["chunks"] == 0
