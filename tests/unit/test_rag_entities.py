"""Entity handling in the shard state (no Ray, no model: offline extractor, synthetic
vectors): name rules, delete by entity, merge entities, and queries that run while a
batch is being written."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from lumos_ray.errors import RagError
from lumos_ray.rag._config import IndexConfig, QueryConfig
from lumos_ray.rag._entities import coreference, entity_key, title_keys
from lumos_ray.rag._extract import OfflineExtractor
from lumos_ray.rag._shard import RagShard
from lumos_ray.rag._state import ChunkRecord, PreparedChunks, ShardState
from lumos_ray.rag._validate import MAX_ENTITY_NAMES, entity_keys

DIM = 16


def _vec(seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal(DIM).astype(np.float32)
    return v / np.linalg.norm(v)


def _docs(docs: dict[str, tuple[str, str]], seed: int = 0) -> PreparedChunks:
    """doc_id -> (title, text), extracted offline, one chunk each."""
    ex = OfflineExtractor()
    chunks, vecs = [], []
    for i, (doc_id, (title, text)) in enumerate(docs.items()):
        e = ex.extract_one(text, title)
        chunks.append(ChunkRecord(f"{doc_id}#0", doc_id, title, text, "", e.entities, e.relations))
        vecs.append(_vec(seed + i))
    return PreparedChunks(chunks=chunks, vectors=np.stack(vecs))


CORPUS = {
    "pell": ("Osric Pell", "Osric Pell was a chemist. Pell's mentor was Ada Rusk."),
    "lab": ("Pell Laboratory", "The laboratory was founded by Dr. Osric Pell in Ormet."),
    "rusk": ("Ada Rusk", "Ada Rusk taught chemistry in Ormet. Rusk wrote Salt Tables."),
    "ibm": ("IBM", "IBM built the Ormet data centre."),
    "ibm-long": (
        "International Business Machines",
        "International Business Machines opened an office in Ormet.",
    ),
}


def test_rag_entity_names_fold_possessives_honorifics_and_surnames():
    assert entity_key("Pell's") == entity_key("Pell\u2019s") == "pell"
    assert entity_key("Dr. Osric Pell") == entity_key("Professor Osric Pell") == "osric pell"
    assert entity_key("St. Louis") == "st louis"  # saints/generals start names: kept
    assert entity_key("General Motors") == "general motors"
    assert title_keys("Young, New South Wales") == ["young new south wales", "young"]
    assert coreference(["pell", "ada rusk"], "osric pell") == {"pell": "osric pell"}
    assert coreference(["pell", "anna pell"], "osric pell") == {}  # ambiguous: left alone
    assert coreference(["ceibou"], "university of ceibou") == {}  # not a person-like name
    ex = OfflineExtractor().extract_one(CORPUS["pell"][1], CORPUS["pell"][0])
    assert set(ex.entities) == {"osric pell", "ada rusk"}
    assert ("osric pell", "mentor was", "ada rusk") in ex.relations


def test_rag_titles_of_rank_fold_into_the_person_the_chunk_names():
    # "Captain Pell" in the document "Osric Pell" is Osric Pell, and its relations are
    # his; with the title word kept, "Pell" alone would have two candidates and none.
    text = (
        "Osric Pell was born in Ormet. Captain Pell studied at the University of Ketterby. "
        "Judge Pell wrote Salt Tables. Pell's mentor was Ada Rusk."
    )
    ex = OfflineExtractor().extract_one(text, "Osric Pell")
    assert set(ex.entities) == {"osric pell", "ormet", "university of ketterby", "salt tables",
                                "ada rusk"}  # fmt: skip
    assert ("osric pell", "wrote", "salt tables") in ex.relations
    assert ("osric pell", "mentor was", "ada rusk") in ex.relations
    assert coreference(["general pell", "pell"], "osric pell") == {
        "general pell": "osric pell",
        "pell": "osric pell",
    }
    # Only where the chunk names that person, and only when exactly one fits: a title
    # that starts a name of its own stays a name.
    assert coreference(["general motors"], "osric pell") == {}
    assert coreference(["st louis"], "joe louis") == {}  # titles before given names: kept
    assert coreference(["king george"], "david lloyd george") == {}
    assert coreference(["captain pell", "anna pell"], "osric pell") == {}
    assert entity_key("General Motors") == "general motors"


def test_rag_delete_entity_removes_its_chunks_vectors_and_provenance():
    st = ShardState(0, DIM, IndexConfig(kind="flat"), QueryConfig())
    st.upsert(_docs(CORPUS))
    assert sorted(st.entity_chunks("Ormet".lower())) == ["ibm#0", "ibm-long#0", "lab#0", "rusk#0"]
    out = st.delete_entity("ada rusk")
    assert out == {"chunks": 2, "documents": ["pell", "rusk"]}
    assert st.entity_chunks("ada rusk") == [] and not st.graph.has_entity("ada rusk")
    assert "rusk" not in st.docs and "pell" not in st.docs
    assert st.graph.relation_edges("lab#0")  # untouched chunks keep their relations
    assert not any(
        "ada rusk" in (h, t) for c in st.chunks for h, _, t in st.graph.relation_edges(c)
    )
    live = {h["chunk_id"] for h in st.vector_search(_vec(2), 10)}
    assert live == {"lab#0", "ibm#0", "ibm-long#0"}
    assert st.about.get("ada rusk") is None and st.about.get("osric pell") is None


def test_rag_merge_entities_moves_mentions_pages_and_future_ingestion(tmp_path):
    st = ShardState(0, DIM, IndexConfig(kind="flat"), QueryConfig())
    st.upsert(_docs(CORPUS))
    n = st.merge_entities(["international business machines"], "ibm", "IBM")
    assert n == 1
    assert st.entity_chunks("international business machines") == ["ibm#0", "ibm-long#0"]
    assert st.entity_chunks("ibm") == ["ibm#0", "ibm-long#0"]
    assert not st.graph.has_entity("international business machines")
    # The long name's document is now a page of IBM, found from either name.
    assert sorted(st.about["ibm"]) == ["ibm#0", "ibm-long#0"]
    seed = st.mh_seed(_vec(0), ["international business machines"], 2)
    assert {v["chunk_id"] for v in seed["about"]} == {"ibm#0", "ibm-long#0"}
    # Provenance stays exact: deleting one document removes only its relation evidence.
    st.delete(["ibm-long"])
    assert st.entity_chunks("ibm") == ["ibm#0"]
    assert st.graph.relation_edges("ibm#0")
    # Documents ingested later under the merged name land on the target.
    st.upsert(_docs({"news": ("News", "International Business Machines hired Ada Rusk.")}, seed=9))
    assert "news#0" in st.entity_chunks("ibm")
    assert ("ibm", "hired", "ada rusk") in st.chunks["news#0"].relations
    # The alias table is part of the snapshot.
    st.save(tmp_path)
    again = ShardState.load(tmp_path, 0, DIM, IndexConfig(kind="flat"), QueryConfig())
    assert again.canon("international business machines") == "ibm"
    assert again.entity_chunks("international business machines") == ["ibm#0", "news#0"]


def test_rag_entity_name_inputs_are_bounded_with_clear_errors():
    assert entity_keys(["Dr. Osric Pell"]) == ["osric pell"]
    for bad, words in [
        ([], "from 1 to"),
        (["x"] * (MAX_ENTITY_NAMES + 1), "from 1 to"),
        (["!!!"], "no letters or digits"),
        ([None], "expected a string"),
        (["x" * 301], "at most 300"),
    ]:
        with pytest.raises(RagError) as err:
            entity_keys(bad)
        assert words in err.value.message and err.value.fix


def test_rag_query_during_ingestion_sees_whole_batches_only(tmp_path):
    """A query that runs while a shard is writing sees every chunk of a batch or none:
    a batch (and a document replaced inside it) is applied under the shard's lock, and
    a query, even a multi-hop one that reads the shard several times, holds it too."""
    shard = RagShard({"name": "live", "embedding": {"dim": DIM}}, 0, str(tmp_path))
    batches = [
        _docs(
            {
                f"b{b}-d{i}": (f"Batch{b} Doc{i}", f"Batch{b} Marker links Doc{i} of Batch{b}.")
                for i in range(6)
            },
            seed=100 * b,
        )
        for b in range(15)
    ]
    seen: list[dict[str, int]] = []
    sizes: list[tuple[int, int]] = []
    errors: list[BaseException] = []
    done = threading.Event()

    def reader() -> None:
        q = _vec(12345)
        try:
            while not done.is_set():
                hits = shard._search_sync(q, [], "naive", 200)
                counts: dict[str, int] = {}
                for h in hits:
                    b = h["doc_id"].split("-")[0]
                    counts[b] = counts.get(b, 0) + 1
                seen.append(counts)
                shard._search_sync(q, ["batch3 marker"], "multihop", 10, "Batch3 Marker")
                stats = shard.state.stats()
                sizes.append((stats["chunks"], stats["documents"]))
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    t = threading.Thread(target=reader)
    t.start()
    try:
        # Keep writing (new batches, then the same ones again: replacements) until the
        # reader has looked at least 30 times; bounded so a stuck reader cannot hang it.
        for i in range(3000):
            shard.state.upsert(batches[i % len(batches)])
            if len(seen) >= 30 and i >= len(batches):
                break
    finally:
        done.set()
        t.join(timeout=60)
    assert not t.is_alive() and not errors, errors
    # The writer stopped only after 30 looks, so every look overlapped with writes
    # (new batches or replacements of whole documents).
    assert len(seen) >= 30
    assert all(n == 6 for counts in seen for n in counts.values())
    assert all(c % 6 == 0 and d % 6 == 0 for c, d in sizes)
