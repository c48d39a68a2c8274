"""Multi-hop retrieval (beam search over entity links), mix mode, citations and query
bounds, in-process: real all-MiniLM-L6-v2 embeddings, the offline extractor, faiss
and the networkx graph, no Ray (``LocalCollection`` runs the shard states the pool
runs)."""

from __future__ import annotations

import os

import pytest

from lumos_ray.errors import RagError
from lumos_ray.rag import CollectionConfig, Document, QueryConfig, SearchHit
from lumos_ray.rag._lexical import content_terms, link_terms, stem
from lumos_ray.rag._local import LocalCollection
from lumos_ray.rag._multihop import merge_link_results, plan
from lumos_ray.rag._validate import MAX_K, MAX_QUERY_CHARS, check_query

os.environ.setdefault("HF_HUB_OFFLINE", "1")

# A 4-document chain (tower -> company -> founder -> founder's mentor) among
# distractors that share the question's words. Every name is invented.
DOCS = {
    "quillmoor_tower": (
        "Quillmoor Tower",
        "The Quillmoor Tower is a tower in Brask. It was built by Dravik Foundry in 1902. "
        "The plans were drawn up by Hesper Lune.",
    ),
    "dravik_foundry": (
        "Dravik Foundry",
        "Dravik Foundry is a steel company based in Ormet. It was founded in 1871 by "
        "Talia Venn. Its best-known works include the Quillmoor Tower.",
    ),
    "talia_venn": (
        "Talia Venn",
        "Talia Venn was an engineer born in the village of Corrowby. Venn's mentor was "
        "Osric Pell. Venn founded Dravik Foundry.",
    ),
    "osric_pell": (
        "Osric Pell",
        "Osric Pell was a chemist born in the village of Hallowmere. Professor Pell "
        "studied at the University of Ketterby.",
    ),
    "hesper_lune": (
        "Hesper Lune",
        "Hesper Lune was an architect born in the village of Saltwick. Lune studied at "
        "the University of Ketterby.",
    ),
    "brask": ("Brask", "Brask is a city on the Ilm River. Its old town is known for markets."),
    "ormet": ("Ormet", "Ormet is a city in Vell Province. It lies on the Dorn River."),
    "university_of_ketterby": (
        "University of Ketterby",
        "The University of Ketterby is a university in Ormet. It was founded by Ada Rusk.",
    ),
    # Distractors: the question's words, other towers, companies and founders.
    "marrow_tower": (
        "Marrow Tower",
        "The Marrow Tower is a tower in Ormet. It was built by Senna Works in 1910.",
    ),
    "senna_works": (
        "Senna Works",
        "Senna Works is a construction company. It was founded by Ivo Garde, who was born "
        "in the village of Pike.",
    ),
    "ivo_garde": (
        "Ivo Garde",
        "Ivo Garde was a founder of companies, born in the village of Pike. His mentor was "
        "Lena Voss.",
    ),
    "lena_voss": (
        "Lena Voss",
        "Lena Voss was a mentor to many founders. She was born in the village of Amberlee.",
    ),
}
QUESTION = "Where was the mentor of the founder of the company that built the Quillmoor Tower born?"


@pytest.fixture(scope="module")
def embedder():
    from lumos_ray.rag._config import EmbeddingConfig
    from lumos_ray.rag._embed import make_embedder

    return make_embedder(EmbeddingConfig())


@pytest.fixture(scope="module")
def prepared(embedder):
    coll = LocalCollection(CollectionConfig(name="mh"), embedder=embedder)
    docs = [Document(doc_id=d, title=t, text=x) for d, (t, x) in DOCS.items()]
    return coll.prepare(docs)


def _collection(embedder, prepared, shards: int = 1, **query) -> LocalCollection:
    cfg = CollectionConfig(name="mh", num_shards=shards, query=QueryConfig(**query))
    coll = LocalCollection(cfg, embedder=embedder)
    coll.upsert_prepared(prepared)
    return coll


def test_rag_multihop_reaches_the_fourth_document_of_a_chain_and_cites_each_link(
    embedder, prepared
):
    coll = _collection(embedder, prepared)
    hits = coll.query(QUESTION, mode="multihop", k=5)
    docs = [h.doc_id for h in hits]
    assert {"quillmoor_tower", "dravik_foundry", "talia_venn", "osric_pell"} <= set(docs)
    answer = next(h for h in hits if h.doc_id == "osric_pell")
    assert "Hallowmere" in answer.text
    cite = answer.citation
    assert cite is not None and cite.doc_id == "osric_pell" and cite.chunk_id == "osric_pell#0"
    assert [(link.from_chunk, link.entity, link.to_chunk) for link in cite.links] == [
        ("quillmoor_tower#0", "Dravik Foundry", "dravik_foundry#0"),
        ("dravik_foundry#0", "Talia Venn", "talia_venn#0"),
        ("talia_venn#0", "Osric Pell", "osric_pell#0"),
    ]
    assert cite.links[0].sentence == "It was built by Dravik Foundry in 1902."
    assert answer.path == [
        "chunk:quillmoor_tower#0",
        "entity:Dravik Foundry",
        "chunk:dravik_foundry#0",
        "entity:Talia Venn",
        "chunk:talia_venn#0",
        "entity:Osric Pell",
        "chunk:osric_pell#0",
    ]
    assert cite.render().startswith("[quillmoor_tower#0] > Dravik Foundry > [dravik_foundry#0]")


def test_rag_naive_misses_the_end_of_the_chain_that_multihop_finds(embedder, prepared):
    coll = _collection(embedder, prepared)
    naive = [h.doc_id for h in coll.query(QUESTION, mode="naive", k=5)]
    assert "osric_pell" not in naive


def test_rag_multihop_gives_the_same_hits_on_one_and_three_shards(embedder, prepared):
    one = _collection(embedder, prepared, shards=1)
    three = _collection(embedder, prepared, shards=3)
    assert len({s.shard for s in three.shards if s.chunks}) > 1  # really spread out
    a = [(h.chunk_id, h.path, h.score) for h in one.query(QUESTION, mode="multihop", k=8)]
    b = [(h.chunk_id, h.path, h.score) for h in three.query(QUESTION, mode="multihop", k=8)]
    assert a == b


def test_rag_multihop_stays_within_its_hop_and_node_budget(embedder, prepared):
    coll = _collection(embedder, prepared, max_hops=1)
    hits = coll.query(QUESTION, mode="multihop", k=10)
    assert max(len(h.citation.links) for h in hits) <= 1
    # Count the chunks the shards hand over: never more than the budget allows
    # (the seed round is always answered; link rounds stop once it is reached).
    cfg = QueryConfig(node_budget=8, seed_hits=4)
    st = _collection(embedder, prepared).shards[0]
    qvec = embedder.embed([QUESTION])[0]
    gen = plan(QUESTION, ["quillmoor tower"], cfg, 5)
    req, fetched, rounds = next(gen), 0, 0
    try:
        while True:
            rounds += 1
            if req[0] == "seed":
                reply = st.mh_seed(qvec, req[1], req[2])
                fetched += len(reply["hits"]) + len(reply["about"])
            else:
                assert fetched < cfg.node_budget  # a link round starts only under budget
                reply = merge_link_results([st.mh_link(qvec, req[1], req[2])], req[1])
                fetched += sum("text" in v for vs in reply.values() for v in vs)
            req = gen.send(reply)
    except StopIteration as stop:
        assert stop.value
    assert rounds <= 1 + cfg.max_hops


def test_rag_link_prefers_the_entity_page_and_stubs_known_chunks(embedder, prepared):
    st = _collection(embedder, prepared).shards[0]
    qvec = embedder.embed([QUESTION])[0]
    out = st.mh_link(qvec, {"dravik foundry": 3}, ["dravik_foundry#0"])
    # The entity has a page: only the page is followed (not the tower that mentions
    # it), and the caller already has its text, so it comes back as a stub.
    assert out["dravik foundry"] == [
        {"chunk_id": "dravik_foundry#0", "sim": pytest.approx(out["dravik foundry"][0]["sim"]),
         "about": ["dravik foundry"]}
    ]  # fmt: skip
    # No page for "vell province": the chunks that mention it are followed.
    out = st.mh_link(qvec, {"vell province": 3}, [])
    assert [v["chunk_id"] for v in out["vell province"]] == ["ormet#0"]
    assert out["vell province"][0]["text"].startswith("Ormet is a city")


def test_rag_mix_fuses_multihop_and_hybrid_and_every_hit_has_a_citation(embedder, prepared):
    coll = _collection(embedder, prepared)
    mix = coll.query(QUESTION, mode="mix", k=6)
    assert all(h.mode == "mix" for h in mix)
    assert len({h.chunk_id for h in mix}) == len(mix) == 6
    hops = {h.chunk_id for h in coll.query(QUESTION, mode="multihop", k=12)}
    graph = {h.chunk_id for h in coll.query(QUESTION, mode="hybrid", k=12)}
    assert {h.chunk_id for h in mix} <= hops | graph
    for mode in ("naive", "local", "global", "hybrid", "multihop", "mix"):
        for h in coll.query(QUESTION, mode=mode, k=3):
            assert h.citation.doc_id == h.doc_id and h.citation.chunk_id == h.chunk_id
            assert h.citation.path == h.path


def test_rag_query_bounds_are_clear_errors():
    check_query("fine", "multihop", 5)
    cases = [
        (("q", "deep", 5), "Unknown query mode 'deep'"),
        (("   ", "hybrid", 5), "empty"),
        (("x" * (MAX_QUERY_CHARS + 1), "hybrid", 5), f"at most {MAX_QUERY_CHARS}"),
        (("q", "hybrid", 0), f"from 1 to {MAX_K}"),
        (("q", "hybrid", MAX_K + 1), f"from 1 to {MAX_K}"),
        (("q", "hybrid", "5"), "integer"),
    ]
    for args, words in cases:
        with pytest.raises(RagError) as err:
            check_query(*args)
        assert words in err.value.message and err.value.fix


def test_rag_lexical_terms_stem_and_separate_relation_words_from_names():
    assert stem("founder") == stem("founded") == "found"
    assert stem("company") == stem("companies")
    assert content_terms("Who founded the company that built the Quillmoor Tower?") == [
        "found", "compan", "built", "quillmoor", "tower",
    ]  # fmt: skip
    text = "The Quillmoor Tower is a tower in Brask. It was built by Dravik Foundry in 1902."
    names = ["Quillmoor Tower", "Brask", "Dravik Foundry"]
    assert link_terms(text, "Dravik Foundry", names) == {"built", "1902"}
    assert "brask" not in link_terms(text, "Brask", names)


def test_rag_search_hit_fills_a_citation_from_its_own_fields():
    hit = SearchHit(
        chunk_id="a#0", doc_id="a", title="A", text="t", score=1.0, mode="hybrid", shard=0,
        path=["chunk:b#0", "entity:X", "chunk:a#0"],
    )  # fmt: skip
    assert hit.citation.doc_id == "a" and hit.citation.path == hit.path
    assert hit.citation.render() == "[a#0] via chunk:b#0 > entity:X > chunk:a#0"
