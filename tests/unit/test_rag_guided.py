"""The LLM-guided multi-hop mode (``mode="guided"``), driven by the shipped test chat
models (FunctionModel, ScriptedModel) in-process: real MiniLM embeddings, the offline
extractor, faiss and the graph, no Ray. The default modes never call a model."""

from __future__ import annotations

import asyncio
import json
import os
import re
import time

import pytest
from pydantic import ValidationError

from lumos_ray.errors import RagError
from lumos_ray.rag import CollectionConfig, Document, GuideConfig
from lumos_ray.rag._guide import Guide, parse_follow, parse_pick
from lumos_ray.rag._local import LocalCollection
from lumos_ray.testing import FunctionModel, ScriptedModel

os.environ.setdefault("HF_HUB_OFFLINE", "1")

# A 4-document chain whose last link is a paraphrase ("trained under" for "mentor"), next
# to a link of the same kind ("worked with") that leads elsewhere: the lexical search has
# nothing to tell them apart by; a model that reads the sentences does.
DOCS = {
    "quillmoor_tower": (
        "Quillmoor Tower",
        "The Quillmoor Tower is a tower in Brask. It was built by Dravik Foundry in 1902. "
        "The plans were drawn up by Hesper Lune.",
    ),
    "dravik_foundry": (
        "Dravik Foundry",
        "Dravik Foundry is a steel company based in Ormet. It was founded in 1871 by Talia Venn.",
    ),
    "talia_venn": (
        "Talia Venn",
        "Talia Venn was an engineer born in the village of Corrowby. As a young engineer "
        "Venn worked with Mira Sollen. Venn trained under Osric Pell.",
    ),
    "osric_pell": (
        "Osric Pell",
        "Osric Pell was a chemist born in the village of Hallowmere.",
    ),
    "mira_sollen": (
        "Mira Sollen",
        "Mira Sollen was a surveyor born in the village of Dunmarrow.",
    ),
    "hesper_lune": (
        "Hesper Lune",
        "Hesper Lune was an architect born in the village of Saltwick.",
    ),
    "marrow_tower": (
        "Marrow Tower",
        "The Marrow Tower is a tower in Ormet. It was built by Senna Works in 1910.",
    ),
    "senna_works": (
        "Senna Works",
        "Senna Works is a construction company. It was founded by Ivo Garde.",
    ),
}
QUESTION = "Where was the mentor of the founder of the company that built the Quillmoor Tower born?"
CHAIN = {"Dravik Foundry", "Talia Venn", "Osric Pell"}
_LINK = re.compile(r'^(\d+)\. \(P\d+\) (.+?): "', re.M)
_PASSAGE = re.compile(r"^(\d+)\. \[(.+?)\] ", re.M)


def oracle(messages, tools):
    """Picks the links on the gold chain, and the passage about the answer."""
    text = messages[-1]["content"]
    if "Links you can follow next" in text:
        picks = [int(n) for n, name in _LINK.findall(text) if name in CHAIN]
        return json.dumps({"follow": picks, "done": False})
    picks = [int(n) for n, title in _PASSAGE.findall(text) if title == "Osric Pell"]
    return json.dumps({"answer_in": picks})


def contrarian(messages, tools):
    """Prefers Mira Sollen (wrong): shows that the model's choices steer the search."""
    text = messages[-1]["content"]
    if "Links you can follow next" in text:
        links = _LINK.findall(text)
        picks = [int(n) for n, name in links if name == "Mira Sollen"]
        picks += [int(n) for n, name in links if name in CHAIN]
        return json.dumps({"follow": picks})
    picks = [int(n) for n, title in _PASSAGE.findall(text) if title == "Mira Sollen"]
    return json.dumps({"answer_in": picks})


@pytest.fixture(scope="module")
def embedder():
    from lumos_ray.rag._config import EmbeddingConfig
    from lumos_ray.rag._embed import make_embedder

    return make_embedder(EmbeddingConfig())


@pytest.fixture(scope="module")
def prepared(embedder):
    coll = LocalCollection(CollectionConfig(name="g"), embedder=embedder)
    return coll.prepare([Document(doc_id=d, title=t, text=x) for d, (t, x) in DOCS.items()])


def _coll(embedder, prepared, model=None, **guide) -> LocalCollection:
    cfg = CollectionConfig(name="g", guide=GuideConfig(**guide))
    coll = LocalCollection(cfg, embedder=embedder, guide_model=model)
    coll.upsert_prepared(prepared)
    return coll


def test_rag_guided_follows_the_links_the_model_picks_and_cites_them(embedder, prepared):
    seen: list[str] = []

    def model(messages, tools):
        seen.append(messages[-1]["content"])
        return oracle(messages, tools)

    coll = _coll(embedder, prepared, FunctionModel(model))
    hits = coll.query(QUESTION, mode="guided", k=5)
    lexical = [h.doc_id for h in coll.query(QUESTION, mode="multihop", k=5)]
    assert lexical[0] != "osric_pell"  # without the model the answer is not first
    top = hits[0]
    assert top.doc_id == "osric_pell" and top.mode == "guided"
    assert "Hallowmere" in top.text
    assert [link.entity for link in top.citation.links] == [
        "Dravik Foundry",
        "Talia Venn",
        "Osric Pell",
    ]
    assert top.citation.links[-1].sentence == "Venn trained under Osric Pell."
    # Bounded: at most max_calls model calls (hops, then the final pick), each prompt
    # lists numbered links with the sentence that names them.
    assert 2 <= len(seen) <= coll.cfg.guide.max_calls == coll.guide.calls
    assert '(P1) Dravik Foundry: "It was built by Dravik Foundry in 1902."' in seen[0]
    assert "Passages:" in seen[-1]


def test_rag_guided_answers_follow_the_model_even_when_it_is_wrong(embedder, prepared):
    guided = _coll(embedder, prepared, FunctionModel(contrarian))
    docs = [h.doc_id for h in guided.query(QUESTION, mode="guided", k=5)]
    assert docs[0] == "mira_sollen"  # the model's pick goes first
    # ...and the lexical links were still followed: the right answer is not lost.
    assert "osric_pell" in docs


def test_rag_default_modes_never_call_the_model(embedder, prepared):
    calls: list[int] = []

    def model(messages, tools):
        calls.append(1)
        return oracle(messages, tools)

    coll = _coll(embedder, prepared, FunctionModel(model))
    for mode in ("naive", "local", "global", "hybrid", "multihop", "mix"):
        coll.query(QUESTION, mode=mode, k=3)
    assert calls == []


def test_rag_guided_unusable_answers_fall_back_to_the_lexical_search(embedder, prepared):
    multihop = [h.chunk_id for h in _coll(embedder, prepared).query(QUESTION, "multihop", 5)]
    garbage = _coll(embedder, prepared, ScriptedModel(["I think the second one."]))
    assert [h.chunk_id for h in garbage.query(QUESTION, "guided", 5)] == multihop

    def broken(messages, tools):
        raise ConnectionError("model server down")

    down = _coll(embedder, prepared, FunctionModel(broken))
    assert [h.chunk_id for h in down.query(QUESTION, "guided", 5)] == multihop
    assert down.guide.failures == down.guide.calls > 0
    assert "model server down" in down.guide.last_error

    # fallback off: the same failures are errors that say what happened.
    strict = _coll(embedder, prepared, ScriptedModel(["no json"]), fallback=False)
    with pytest.raises(RagError) as err:
        strict.query(QUESTION, "guided", 5)
    assert "not the expected JSON" in err.value.message and err.value.fix
    strict = _coll(embedder, prepared, FunctionModel(broken), fallback=False)
    with pytest.raises(RagError) as err:
        strict.query(QUESTION, "guided", 5)
    assert "model server down" in err.value.message and "guide.fallback" in err.value.fix


def test_rag_guided_model_calls_are_bounded_in_time(embedder, prepared):
    async def slow(messages, tools):
        await asyncio.sleep(30)
        return "{}"

    coll = _coll(embedder, prepared, FunctionModel(slow), timeout_s=0.2, max_calls=2)
    t0 = time.perf_counter()
    hits = coll.query(QUESTION, "guided", 3)
    assert hits and time.perf_counter() - t0 < 5
    assert "did not answer within 0.2 s" in coll.guide.last_error


def test_rag_guided_bad_config_is_a_clear_error(embedder, prepared):
    # No model configured: the mode is refused, saying how to configure one.
    with pytest.raises(RagError) as err:
        _coll(embedder, prepared).query(QUESTION, "guided", 3)
    assert "needs a chat model" in err.value.message and "guide.model" in err.value.fix
    # Malformed model configs fail when the collection config is read.
    for bad, words in [
        ({"provider": "openai"}, "needs `name`"),
        ({"provider": "openai", "nmae": "x"}, "not a model config"),
        ({"provider": "telepathy", "name": "x"}, "not a model config"),
        ({"provider": "function"}, "needs `function"),
        ({"provider": "scripted"}, "needs `replies"),
    ]:
        with pytest.raises(ValidationError) as verr:
            CollectionConfig(name="g", guide={"model": bad})
        assert words in str(verr.value), (bad, str(verr.value))
    # A function provider whose import path does not resolve: a RagError at first use.
    cfg = GuideConfig(model={"provider": "function", "function": "no_such_module:fn"})
    with pytest.raises(RagError) as err:
        Guide(cfg)
    assert "Cannot build the guide model" in err.value.message
    # A served model from config: the OpenAI-compatible client, deterministic answers.
    served = Guide(
        GuideConfig(model={"provider": "openai", "name": "m", "base_url": "http://h:1/v1"})
    )
    assert type(served.model).__name__ == "OpenAIChatModel"
    assert served.model.base_url == "http://h:1/v1"
    assert served.model.extra_body["temperature"] == 0


def test_rag_guided_answer_parsing():
    g = GuideConfig(follow=2)
    assert parse_follow('{"follow": [3, "1", 9, 3], "done": false}', 5, g) == ([2, 0], False)
    assert parse_follow('Sure! ```json\n{"follow": [], "done": true}\n```', 5, g) == ([], True)
    assert parse_follow(None, 5, g) == ([], False)
    assert parse_follow("nothing", 5, g) == ([], False)
    assert parse_pick('{"answer_in": 2}', 3, g) == [1]
    with pytest.raises(RagError):
        parse_pick('{"answer_in": ["x"]}', 3, GuideConfig(fallback=False))
