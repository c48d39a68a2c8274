"""Mode ``guided`` through the real pool (router + 2 shards): the guide model comes from
the collection's config (a function model by import path; a scripted one as data), and
a collection without one refuses the mode with a clear error."""

from __future__ import annotations

import pytest

from tests.unit.test_rag_guided import DOCS, QUESTION


@pytest.mark.slow
def test_rag_guided_mode_through_the_pool_uses_the_configured_model(ray_cluster):
    from lumos_ray.errors import RagError
    from lumos_ray.rag import CollectionConfig, Document, RagCollection

    docs = [Document(doc_id=d, title=t, text=x) for d, (t, x) in DOCS.items()]
    oracle = {"provider": "function", "function": "tests.unit.test_rag_guided:oracle"}
    coll = RagCollection.open(
        "guided-pool",
        config=CollectionConfig(name="guided-pool", num_shards=2, guide={"model": oracle}),
    )
    plain = RagCollection.open("guided-none", config=CollectionConfig(name="guided-none"))
    try:
        coll.upsert(docs)
        assert all(s["chunks"] for s in coll.stats()["shards"])  # both shards hold some
        hits = coll.query(QUESTION, mode="guided", k=3)
        assert hits[0].doc_id == "osric_pell" and hits[0].mode == "guided"
        assert [link.entity for link in hits[0].citation.links][-1] == "Osric Pell"
        guide = coll.stats()["guide"]
        assert guide["calls"] >= 2 and guide["failures"] == 0

        # Without a model configured, the mode is refused and says how to configure one.
        plain.upsert(docs[:2])
        with pytest.raises(RagError, match="needs a chat model") as err:
            plain.query(QUESTION, mode="guided", k=3)
        assert "guide.model" in err.value.fix
    finally:
        coll.drop()
        plain.drop()
