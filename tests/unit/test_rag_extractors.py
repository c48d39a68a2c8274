"""The LLM extractor through the project's chat models (no Ray, no served model):
scripted answers from a FunctionModel, a local fake OpenAI server for the config-built
OpenAIChatModel, and the ingestion pipeline carrying LLM relations into chunks."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np
import pytest

from lumos_ray.actors.models import ModelResponse, OpenAIChatModel
from lumos_ray.errors import RagError
from lumos_ray.rag._config import CollectionConfig, Document, EmbeddingConfig, ExtractorConfig
from lumos_ray.rag._embed import OpenAIEmbedder
from lumos_ray.rag._extract import (
    LLMExtractor,
    OfflineExtractor,
    make_extractor,
    parse_llm_triples,
)
from lumos_ray.rag._pipeline import prepare_documents
from lumos_ray.rag._state import ShardState
from lumos_ray.testing import FunctionModel

TRIPLES = {
    "entities": ["Ilse Marquand", "Harbor Bridge", "Vessant"],
    "relations": [
        ["Ilse Marquand", "Designed", "The Harbor Bridge"],
        ["Harbor Bridge", "located in", "Vessant"],
    ],
}
TEXT = "The Harbor Bridge of Vessant was designed by the engineer Ilse Marquand in 1931."


def _recording(answer: Any) -> tuple[FunctionModel, list[list[dict[str, Any]]]]:
    """A FunctionModel that answers ``answer`` (or answer(prompt)) and records prompts."""
    seen: list[list[dict[str, Any]]] = []

    def fn(messages: list[dict[str, Any]], tools: list[dict[str, Any]]) -> Any:
        seen.append(messages)
        return answer(messages[-1]["content"]) if callable(answer) else answer

    return FunctionModel(fn), seen


def _llm(answer: Any, **cfg: Any) -> tuple[LLMExtractor, list[list[dict[str, Any]]]]:
    model, seen = _recording(answer)
    return LLMExtractor(ExtractorConfig(kind="llm", **cfg), model=model), seen


def test_rag_llm_extractor_sends_the_chunk_and_parses_triples_into_graph_keys():
    ext, seen = _llm(json.dumps(TRIPLES))
    [out] = ext.extract([TEXT], ["Harbor Bridge (Vessant)"])
    assert len(seen) == 1 and seen[0][-1]["role"] == "user"
    prompt = seen[0][-1]["content"]
    assert prompt.endswith(TEXT) and "JSON" in prompt
    assert out.entities == {
        "ilse marquand": "Ilse Marquand",
        "harbor bridge": "Harbor Bridge",  # the title's key, deduplicated
        "vessant": "Vessant",
    }
    assert out.relations == [
        ("ilse marquand", "designed", "harbor bridge"),
        ("harbor bridge", "located in", "vessant"),
    ]
    assert ext.fallbacks == 0 and ext.last_error is None


def test_rag_llm_extractor_adds_the_title_entity_and_keeps_order_over_chunks():
    def answer(prompt: str) -> str:
        name = prompt.rsplit("\n", 1)[-1].split()[0]
        return json.dumps({"entities": [name], "relations": []})

    ext, seen = _llm(answer, concurrency=3)
    texts = [f"Chunk{i} text." for i in range(7)]
    outs = ext.extract(texts, ["Some Doc"] * 7)
    assert len(seen) == 7
    for i, out in enumerate(outs):
        assert out.entities == {f"chunk{i}": f"Chunk{i}", "some doc": "Some Doc"}


@pytest.mark.parametrize(
    "content",
    [
        "Sure! Here are the triples:\n" + json.dumps(TRIPLES) + "\nHope that helps.",
        "```json\n" + json.dumps(TRIPLES, indent=2) + "\n```",
        "Result: {not json} and then " + json.dumps(TRIPLES),
        json.dumps(
            {
                "entities": [{"name": "Ilse Marquand"}, "Vessant"],
                "relations": [
                    {"head": "Ilse Marquand", "relation": "designed", "tail": "Harbor Bridge"},
                    {"subject": "Harbor Bridge", "predicate": "located in", "object": "Vessant"},
                ],
            }
        ),
    ],
    ids=["prose", "fenced", "brace-before", "object-triples"],
)
def test_rag_llm_extractor_accepts_prose_fenced_and_object_shaped_json(content):
    ext, _ = _llm(content, fallback_offline=False)
    [out] = ext.extract([TEXT], [""])
    assert set(out.entities) == {"ilse marquand", "harbor bridge", "vessant"}
    assert ("ilse marquand", "designed", "harbor bridge") in out.relations
    assert ("harbor bridge", "located in", "vessant") in out.relations


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("I cannot find any entities here.", "no JSON object"),
        ('{"entities": ["A", "relations": [}', "invalid JSON"),
        ('{"entities": "Ilse Marquand", "relations": []}', "expected lists"),
        ("", "empty answer"),
    ],
)
def test_rag_llm_extractor_malformed_answer_falls_back_or_raises(content, problem):
    title = "Harbor Bridge"
    ext, _ = _llm(content, fallback_offline=True)
    [out] = ext.extract([TEXT], [title])
    offline = OfflineExtractor().extract_one(TEXT, title)
    assert out.entities == offline.entities and out.relations == offline.relations
    assert ext.fallbacks == 1 and problem in str(ext.last_error)

    strict, _ = _llm(content, fallback_offline=False)
    with pytest.raises(RagError, match=problem) as info:
        strict.extract([TEXT], [title])
    assert info.value.code == "LUMOS-E070" and "function" in info.value.message
    assert "fallback_offline" in info.value.fix


def test_rag_llm_extractor_model_failure_and_truncation_are_named():
    def boom(messages: list[dict[str, Any]], tools: list[dict[str, Any]]) -> str:
        raise ConnectionError("server went away")

    strict = LLMExtractor(
        ExtractorConfig(kind="llm", fallback_offline=False), model=FunctionModel(boom)
    )
    with pytest.raises(RagError, match="ConnectionError: server went away") as info:
        strict.extract([TEXT], [""])
    assert "extractor.base_url" in info.value.fix

    lenient = LLMExtractor(ExtractorConfig(kind="llm"), model=FunctionModel(boom))
    [out] = lenient.extract([TEXT], [""])
    assert "ilse marquand" in out.entities and lenient.fallbacks == 1

    cut = ModelResponse(content='{"entities": ["Ilse Marq', finish_reason="length")
    ext, _ = _llm(cut, fallback_offline=False)
    with pytest.raises(RagError, match="cut off at max_tokens") as info:
        ext.extract([TEXT], [""])
    assert "extractor.max_tokens" in info.value.fix


def test_rag_llm_extractor_times_out_a_slow_model():
    async def slow(messages: list[dict[str, Any]], tools: list[dict[str, Any]]) -> str:
        await asyncio.sleep(5)
        return "{}"

    ext = LLMExtractor(
        ExtractorConfig(kind="llm", timeout_s=0.05, fallback_offline=False),
        model=FunctionModel(slow),
    )
    with pytest.raises(RagError, match=r"did not answer within 0\.05 s"):
        ext.extract([TEXT], [""])


def test_rag_llm_extractor_refuses_to_block_a_running_loop_and_has_an_async_form():
    ext, _ = _llm(json.dumps(TRIPLES))

    async def main() -> None:
        with pytest.raises(RagError, match="running event loop") as info:
            ext.extract([TEXT], [""])
        assert "aextract" in info.value.fix
        [out] = await ext.aextract([TEXT], [""])
        assert "vessant" in out.entities

    asyncio.run(main())


def test_rag_llm_extractor_config_is_backwards_compatible_and_builds_a_chat_model():
    old = ExtractorConfig.model_validate(
        {"kind": "llm", "base_url": "http://h:1/v1/", "model": "m", "api_key": "k", "timeout_s": 7}
    )
    assert old.json_mode and old.fallback_offline and old.max_tokens is None
    ext = make_extractor(old)
    assert isinstance(ext, LLMExtractor) and isinstance(ext.model, OpenAIChatModel)
    m = ext.model
    assert (m.model, m.base_url, m.api_key, m.timeout_s) == ("m", "http://h:1/v1", "k", 7)
    assert m.extra_body == {"temperature": 0, "response_format": {"type": "json_object"}}
    plain = LLMExtractor(old.model_copy(update={"json_mode": False, "max_tokens": 300}))
    assert plain.model.extra_body == {"temperature": 0, "max_tokens": 300}
    assert isinstance(make_extractor(ExtractorConfig()), OfflineExtractor)
    assert isinstance(make_extractor(ExtractorConfig(kind="llm"), FunctionModel(str)), LLMExtractor)
    with pytest.raises(RagError, match=r"needs extractor\.base_url and extractor\.model") as info:
        LLMExtractor(ExtractorConfig(kind="llm", model="m"))
    assert "http://127.0.0.1:8000/v1" in info.value.fix
    # A collection config written before the new fields still loads.
    CollectionConfig.model_validate({"name": "c", "extractor": {"kind": "llm", "model": "m"}})


# -- a fake OpenAI-compatible server: the config-built chat model over real HTTP ---------


@pytest.fixture
def fake_openai() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    requests: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["content-length"])))
            requests.append({"path": self.path, "auth": self.headers.get("authorization"), **body})
            if self.path.endswith("/chat/completions"):
                text = body["messages"][-1]["content"]
                reply = json.dumps(TRIPLES) if "Harbor" in text else "no idea"
                data: dict[str, Any] = {
                    "model": body["model"],
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": reply},
                            "finish_reason": "stop",
                        }
                    ],
                }
            else:  # /embeddings: 3-d vectors; "mismatch" in the model name -> 2-d
                n = 2 if "mismatch" in body["model"] else 3
                data = {
                    "data": [
                        {"index": i, "embedding": [float(len(t)), 1.0, 0.0][:n]}
                        for i, t in reversed(list(enumerate(body["input"])))
                    ]
                }
            raw = json.dumps(data).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1", requests
    finally:
        server.shutdown()
        server.server_close()


def test_rag_llm_extractor_over_http_uses_json_mode_and_survives_many_loops(fake_openai):
    url, requests = fake_openai
    cfg = ExtractorConfig(kind="llm", base_url=url, model="tiny", api_key="sk-x", max_tokens=99)
    ext = make_extractor(cfg)
    for _ in range(3):  # each extract() runs its own event loop: no stale client
        outs = ext.extract([TEXT, "nothing to see"], ["Bridge Doc", "Other Doc"])
        assert ("ilse marquand", "designed", "harbor bridge") in outs[0].relations
        assert outs[1].entities == {"other doc": "Other Doc"}  # offline fallback
    assert len(requests) == 6 and ext.fallbacks == 3
    r = requests[0]
    assert r["path"] == "/v1/chat/completions" and r["auth"] == "Bearer sk-x"
    assert r["model"] == "tiny" and r["temperature"] == 0 and r["max_tokens"] == 99
    assert r["response_format"] == {"type": "json_object"}
    assert ext.model._client is None  # per-run copies hold (and close) the clients


def test_rag_llm_extractor_unreachable_server_is_a_clear_error():
    cfg = ExtractorConfig(
        kind="llm", base_url="http://127.0.0.1:9/v1", model="m", fallback_offline=False
    )
    with pytest.raises(RagError, match=r"chat model 'm' at http://127.0.0.1:9/v1 failed"):
        make_extractor(cfg).extract([TEXT], [""])


def test_rag_openai_embedder_batches_orders_and_checks_dimension(fake_openai):
    url, requests = fake_openai
    emb = OpenAIEmbedder(
        EmbeddingConfig(backend="openai", base_url=url, model="e", dim=3, batch_size=2)
    )
    texts = ["a", "bbb", "cc", "dddd", "e"]
    vecs = emb.embed(texts)
    assert [len(r["input"]) for r in requests] == [2, 2, 1]
    expected = np.array([[len(t), 1.0, 0.0] for t in texts], dtype=np.float32)
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    assert vecs.dtype == np.float32 and np.allclose(vecs, expected)
    assert emb.embed([]).shape == (0, 3)

    bad = OpenAIEmbedder(EmbeddingConfig(backend="openai", base_url=url, model="mismatch", dim=3))
    with pytest.raises(RagError, match="returned 2-d vectors, the collection expects 3") as info:
        bad.embed(["x"])
    assert "embedding.dim" in info.value.fix
    with pytest.raises(RagError, match=r"needs embedding\.base_url"):
        OpenAIEmbedder(EmbeddingConfig(backend="openai"))


# -- the ingestion pipeline with the LLM extractor --------------------------------------


class _HashEmbedder:
    dim = 16

    def embed(self, texts: list[str]) -> np.ndarray:
        rows = [np.random.default_rng(abs(hash(t)) % 2**32).standard_normal(16) for t in texts]
        v = np.asarray(rows, dtype=np.float32).reshape(len(texts), 16)
        return v / np.linalg.norm(v, axis=1, keepdims=True)


def test_rag_prepare_documents_carries_llm_relations_into_chunks_and_graph():
    def answer(prompt: str) -> str:
        if "Harbor Bridge" in prompt:
            return "```json\n" + json.dumps(TRIPLES) + "\n```"
        return json.dumps(
            {"entities": ["Ilse Marquand"], "relations": [["Ilse Marquand", "born in", "Calder"]]}
        )

    ext, seen = _llm(answer, fallback_offline=False)
    cfg = CollectionConfig(name="t", embedding=EmbeddingConfig(dim=16))
    docs = [
        Document(doc_id="bridge.md", title="Harbor Bridge", text=TEXT),
        Document(doc_id="ilse.txt", title="Ilse Marquand", text="She was born in Calder."),
    ]
    batch = prepare_documents(docs, cfg, _HashEmbedder(), ext)
    assert len(seen) == 2 and batch.vectors.shape == (2, 16)
    by_id = {c.chunk_id: c for c in batch.chunks}
    assert by_id["bridge.md#0"].relations == [
        ("ilse marquand", "designed", "harbor bridge"),
        ("harbor bridge", "located in", "vessant"),
    ]
    assert by_id["ilse.txt#0"].relations == [("ilse marquand", "born in", "calder")]
    assert set(by_id["ilse.txt#0"].entities) == {"ilse marquand", "calder"}

    # The shard's graph links the two documents through the LLM's entities.
    from lumos_ray.rag._config import IndexConfig, QueryConfig

    st = ShardState(0, 16, IndexConfig(kind="flat"), QueryConfig())
    st.upsert(batch)
    assert sorted(st.graph.entity_chunks("ilse marquand")) == ["bridge.md#0", "ilse.txt#0"]
    [(a, rel, b)] = st.graph.relation_edges("ilse.txt#0")  # stored undirected
    assert rel == "born in" and {a, b} == {"ilse marquand", "calder"}
    assert "calder" in st.graph.related_entities("ilse marquand")


def test_rag_llm_triples_parser_rejects_non_object_json():
    with pytest.raises(RagError, match="no JSON object"):
        parse_llm_triples('["just", "a", "list"]')
