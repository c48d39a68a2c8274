"""The gateway's FastAPI app in-process (no Ray, no engine): auth, quota, errors,
metrics. The model routes' success paths need a served engine and are covered by
tests/integration/test_serve_gateway.py; everything decided before a model is called
is checked here, fast."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from lumos_ray.serve import GatewayConfig, ServeConfig
from lumos_ray.serve._config import QuotaConfig
from lumos_ray.serve._gateway import _GATEWAY, Gateway, build_app

KEY = "sk-unit"


@pytest.fixture
def client(tmp_path) -> Iterator[TestClient]:
    cfg = ServeConfig(
        gateway=GatewayConfig(
            api_keys=[KEY],
            api_keys_env=None,
            max_body_bytes=1024,
            quota=QuotaConfig(requests_per_minute=3),
        ),
        adapters_dir=str(tmp_path / "adapters"),
    )
    Gateway(cfg.model_dump_json(), llm_handles={})
    with TestClient(build_app()) as c:
        yield c
    _GATEWAY.clear()


@pytest.fixture
def unlimited(tmp_path) -> Iterator[TestClient]:
    """The same app without a rate limit (for tests that send many requests)."""
    cfg = ServeConfig(
        gateway=GatewayConfig(api_keys=[KEY], api_keys_env=None, max_body_bytes=64_000),
        adapters_dir=str(tmp_path / "adapters"),
    )
    Gateway(cfg.model_dump_json(), llm_handles={})
    with TestClient(build_app()) as c:
        yield c
    _GATEWAY.clear()


def _auth(key: str = KEY) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def _openai_error(r, status: int) -> dict:
    assert r.status_code == status, r.text
    body = r.json()["error"]
    assert body["message"] and body["type"], body
    return body


def test_probes_need_no_key_and_model_routes_do(client: TestClient) -> None:
    assert client.get("/health").json() == {"status": "ok"}
    assert "Missing API key" in _openai_error(client.get("/v1/models"), 401)["message"]
    assert (
        "Invalid API key"
        in _openai_error(client.get("/v1/models", headers=_auth("x")), 401)["message"]
    )
    ids = [m["id"] for m in client.get("/v1/models", headers=_auth()).json()["data"]]
    assert "lumos-tiny" in ids


def test_probes_under_a_route_prefix_need_no_key_either(tmp_path) -> None:
    """Deployed under a Serve route prefix, the path carries it (``root_path``): the open
    probes stay open there, and model routes still want a key."""
    cfg = ServeConfig(
        gateway=GatewayConfig(api_keys=[KEY], api_keys_env=None),
        adapters_dir=str(tmp_path / "adapters"),
    )
    Gateway(cfg.model_dump_json(), llm_handles={})
    try:
        with TestClient(build_app(), root_path="/static") as c:
            assert c.get("/static/health").status_code == 200
            assert c.get("/static/openapi.json").status_code == 200
            assert c.get("/static/v1/models").status_code == 401
            assert c.get("/static/v1/models", headers=_auth()).status_code == 200
    finally:
        _GATEWAY.clear()


def test_quota_answers_429_after_the_per_key_limit(client: TestClient) -> None:
    codes = [client.get("/v1/models", headers=_auth()).status_code for _ in range(4)]
    assert codes == [200, 200, 200, 429]


def test_bad_bodies_get_openai_shaped_errors(client: TestClient) -> None:
    url = "/v1/chat/completions"
    assert (
        "not valid JSON"
        in _openai_error(client.post(url, content=b"{nope", headers=_auth()), 400)["message"]
    )
    big = {"model": "lumos-tiny", "messages": [{"role": "user", "content": "x" * 2000}]}
    _openai_error(client.post(url, json=big, headers=_auth()), 413)
    unknown = {"model": "no-such-model", "messages": [{"role": "user", "content": "hi"}]}
    assert (
        "no-such-model"
        in _openai_error(client.post(url, json=unknown, headers=_auth()), 404)["message"]
    )


def test_metrics_count_requests_by_route_and_status(client: TestClient) -> None:
    client.get("/health")
    client.get("/v1/models")  # 401
    client.get("/v1/models", headers=_auth())  # 200
    text = client.get("/metrics", headers=_auth()).text

    def count(route: str, status: str) -> float:
        m = re.search(
            rf'lumos_gateway_requests_total\{{method="GET",route="{re.escape(route)}",'
            rf'status="{status}"\}} ([0-9.]+)',
            text,
        )
        return float(m.group(1)) if m else 0.0

    assert count("/health", "200") == 1
    assert count("/v1/models", "401") == 1
    assert count("/v1/models", "200") == 1
    # Only the /metrics request itself is in flight: every other one was counted down,
    # the 401s answered by the middleware included.
    assert "lumos_gateway_inflight_requests 1.0" in text


def test_openapi_documents_the_model_routes_request_bodies(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    schemas = spec["components"]["schemas"]
    for path, name in [
        ("/v1/chat/completions", "ChatCompletionBody"),
        ("/v1/completions", "CompletionBody"),
        ("/v1/embeddings", "EmbeddingBody"),
    ]:
        body = spec["paths"][path]["post"]["requestBody"]["content"]["application/json"]
        assert body["schema"] == {"$ref": f"#/components/schemas/{name}"}
        assert name in schemas
    chat = schemas["ChatCompletionBody"]
    assert chat["required"] == ["messages"]
    assert chat["properties"]["messages"]["maxItems"] == 4096
    assert chat.get("additionalProperties", True) is True  # vLLM extensions pass through
    assert "ChatMessage" in schemas


def test_schema_violations_are_422_naming_the_field_and_not_objects_400(
    unlimited: TestClient,
) -> None:
    url = "/v1/chat/completions"
    bad = {"model": "lumos-tiny", "messages": [{"role": "user", "content": "hi"}]}
    err = _openai_error(unlimited.post(url, json={**bad, "max_tokens": "x"}, headers=_auth()), 422)
    assert err["param"] == "max_tokens" and "max_tokens" in err["message"]
    err = _openai_error(unlimited.post(url, json={**bad, "temperature": 9}, headers=_auth()), 422)
    assert err["param"] == "temperature"
    _openai_error(unlimited.post(url, json={"model": "lumos-tiny"}, headers=_auth()), 422)
    roles = {**bad, "messages": [{"role": "robot", "content": "hi"}]}
    _openai_error(unlimited.post(url, json=roles, headers=_auth()), 422)
    assert (
        "JSON object"
        in _openai_error(unlimited.post(url, json=[1], headers=_auth()), 400)["message"]
    )
    comp = {"model": "lumos-tiny", "prompt": ["p"] * 2049}
    err = _openai_error(unlimited.post("/v1/completions", json=comp, headers=_auth()), 422)
    assert err["param"].startswith("prompt")
    emb = _openai_error(unlimited.post("/v1/embeddings", json={"input": 5}, headers=_auth()), 422)
    assert emb["param"].startswith("input")
    fmt = {"input": "x", "encoding_format": "hex"}
    _openai_error(unlimited.post("/v1/embeddings", json=fmt, headers=_auth()), 422)


def test_tool_choice_and_tool_calls_must_have_openai_shapes(unlimited: TestClient) -> None:
    """Shapes chat templates read (each call's function name and arguments) and the
    tool_choice strings OpenAI defines are checked here: a 422 naming the field, where
    the engine used to fail on them with a 500 (found by schemathesis)."""
    url = "/v1/chat/completions"
    user = {"role": "user", "content": "hi"}
    base = {"model": "lumos-tiny", "messages": [user]}
    err = _openai_error(
        unlimited.post(url, json={**base, "tool_choice": "0"}, headers=_auth()), 422
    )
    assert err["param"].startswith("tool_choice")
    for calls in ([{}], [{"id": "c1", "type": "function", "function": {"name": "f"}}]):
        body = {**base, "messages": [user, {"role": "assistant", "tool_calls": calls}]}
        err = _openai_error(unlimited.post(url, json=body, headers=_auth()), 422)
        assert err["param"].startswith("messages.1.tool_calls.0"), err


def test_validation_messages_do_not_echo_the_input(unlimited: TestClient) -> None:
    secret = "sk-very-secret-value"
    body = {"model": "lumos-tiny", "messages": [{"role": secret, "content": "hi"}]}
    r = unlimited.post("/v1/chat/completions", json=body, headers=_auth())
    assert r.status_code == 422 and secret not in r.text


class _BrokenModel:
    """A model deployment handle whose call fails with an error nobody maps."""

    def options(self, **_: object) -> _BrokenModel:
        return self

    @property
    def generate(self) -> _BrokenModel:
        return self

    def remote(self, *_: object) -> None:
        raise RuntimeError("boom at /srv/secret/path.py")


def test_an_unexpected_error_is_a_500_that_carries_the_request_id(tmp_path) -> None:
    cfg = ServeConfig(
        gateway=GatewayConfig(api_keys=[KEY], api_keys_env=None),
        models=[{"name": "lumos-tiny", "in_gateway": False}],
        adapters_dir=str(tmp_path / "adapters"),
    )
    Gateway(cfg.model_dump_json(), llm_handles={"lumos-tiny": _BrokenModel()})
    try:
        with TestClient(build_app(), raise_server_exceptions=False) as c:
            body = {"model": "lumos-tiny", "messages": [{"role": "user", "content": "hi"}]}
            r = c.post("/v1/chat/completions", json=body, headers=_auth())
    finally:
        _GATEWAY.clear()
    err = _openai_error(r, 500)
    assert err["request_id"] and err["request_id"] == r.headers["x-request-id"]
    assert "boom" not in r.text and "/srv" not in r.text
