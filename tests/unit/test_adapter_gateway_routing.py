"""The gateway resolves a model name per tenant against a real registry on disk: the
tenant's own adapter, else a shared one, else 404 like a name nobody has; the id that
reaches Serve multiplexing (and so vLLM) is the registry's serving id, unique across
tenants; the answer names the model as the client did.

In-process (FastAPI's TestClient, no Ray, no engine): the model deployment's handle is
a stand-in that records the multiplexed id and the body it was sent, and answers in
vLLM's compact JSON with the model the body named (the gateway is what is tested)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from lumos_ray.adapters import AdapterRegistry
from lumos_ray.serve import ApiKeySpec, GatewayConfig, ServeConfig
from lumos_ray.serve._gateway import _GATEWAY, Gateway, build_app
from lumos_ray.serve._wire import JsonReply

KEY_A, KEY_B, ADMIN_A = "sk-acme-00001", "sk-globex-001", "sk-acme-admin"


class _Gen:
    def __init__(self, items: list[Any]) -> None:
        self._it = iter(items)

    def __aiter__(self) -> AsyncIterator[Any]:
        return self

    async def __anext__(self) -> Any:
        try:
            return next(self._it)
        except StopIteration:
            raise StopAsyncIteration from None

    def cancel(self) -> None:
        return None


class _Method:
    def __init__(self, fn: Any) -> None:
        self.remote = fn


class _RecordingModel:
    """Stands in for the LLM deployment's handle; ``calls`` gets (multiplexed id,
    parsed body) per request."""

    def __init__(self, calls: list[tuple[str | None, dict[str, Any]]], mux: str | None = None):
        self.calls = calls
        self.mux = mux

    def options(self, **kw: Any) -> _RecordingModel:
        return _RecordingModel(self.calls, kw.get("multiplexed_model_id"))

    @property
    def generate(self) -> _Method:
        def run(kind: str, raw: bytes, carrier: Any) -> _Gen:
            body = json.loads(raw)
            self.calls.append((self.mux, body))
            compact = (",", ":")  # vLLM's model_dump_json writes compact JSON
            if body.get("stream"):
                delta = {"index": 0, "delta": {"content": "hi"}}
                event = {"id": "c1", "model": body["model"], "choices": [delta]}
                chunk = f"data: {json.dumps(event, separators=compact)}\n\n"
                return _Gen([chunk, "data: [DONE]\n\n"])
            answer = {"id": "c1", "object": "chat.completion", "model": body["model"]}
            return _Gen([JsonReply(200, json.dumps(answer, separators=compact).encode(), 3, 5)])

        return _Method(run)


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[tuple[TestClient, AdapterRegistry, list[Any]]]:
    reg = AdapterRegistry(tmp_path / "adapters")
    src = tmp_path / "peft"
    src.mkdir()
    (src / "adapter_config.json").write_text("{}")
    reg.register("foo", src, base_model="lumos-tiny", tenant="acme")
    reg.register("foo", src, base_model="lumos-tiny", tenant="globex")
    reg.register("shared-sql", src, base_model="lumos-tiny")
    reg.register("only-acme", src, base_model="lumos-tiny", tenant="acme")
    keys: list[str | ApiKeySpec] = [
        ApiKeySpec(key=KEY_A, tenant="acme", role="developer"),
        ApiKeySpec(key=KEY_B, tenant="globex", role="developer"),
        ApiKeySpec(key=ADMIN_A, tenant="acme", role="admin"),
    ]
    cfg = ServeConfig(
        gateway=GatewayConfig(api_keys=keys, api_keys_env=None),
        adapters_dir=str(reg.root),
    )
    calls: list[Any] = []
    Gateway(cfg.model_dump_json(), llm_handles={"lumos-tiny": _RecordingModel(calls)})
    with TestClient(build_app()) as c:
        yield c, reg, calls
    _GATEWAY.clear()


def _chat(c: TestClient, key: str, model: str, **extra: Any) -> Any:
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}], **extra}
    return c.post("/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"})


def test_each_tenant_reaches_its_own_adapter_of_a_shared_name(gateway: Any) -> None:
    c, reg, calls = gateway
    ra, rb = _chat(c, KEY_A, "foo"), _chat(c, KEY_B, "foo")
    assert ra.status_code == rb.status_code == 200, (ra.text, rb.text)
    (mux_a, body_a), (mux_b, body_b) = calls
    assert mux_a == reg.get("foo", "acme").serve_id == body_a["model"]
    assert mux_b == reg.get("foo", "globex").serve_id == body_b["model"]
    assert mux_a != mux_b
    # The answer names the model as the client sent it, not the serving id.
    assert ra.json()["model"] == rb.json()["model"] == "foo"
    stream = _chat(c, KEY_A, "foo", stream=True)
    assert stream.status_code == 200 and calls[-1][0] == mux_a
    assert '"model":"foo"' in stream.text and mux_a not in stream.text
    # /metrics (any tenant's admin reads it) names neither a tenant's adapter nor its
    # serving id (which names the owning tenant): tenant adapters count under their base.
    metrics = c.get("/metrics", headers={"Authorization": f"Bearer {ADMIN_A}"}).text
    assert 'model="lumos-tiny:tenant-adapter"' in metrics
    assert 'model="foo"' not in metrics and mux_b not in metrics and "~" not in metrics


def test_shared_adapters_route_by_name_for_every_tenant(gateway: Any) -> None:
    c, _, calls = gateway
    for key in (KEY_A, KEY_B):
        assert _chat(c, key, "shared-sql").status_code == 200
    assert [mux for mux, _ in calls] == ["shared-sql", "shared-sql"]
    # A shared adapter's name is every tenant's to see: its metrics carry it.
    metrics = c.get("/metrics", headers={"Authorization": f"Bearer {ADMIN_A}"}).text
    assert 'model="shared-sql"' in metrics


def test_another_tenants_adapter_answers_like_an_unknown_name(gateway: Any) -> None:
    c, reg, calls = gateway
    theirs = _chat(c, KEY_B, "only-acme")
    never = _chat(c, KEY_B, "never-registered")
    assert theirs.status_code == never.status_code == 404
    t, n = theirs.json()["error"], never.json()["error"]
    assert t["message"].replace("only-acme", "X") == n["message"].replace("never-registered", "X")
    assert t["code"] == n["code"] and "only-acme" not in n["message"]
    # A serving id sent as a model name is refused too: ids come from the registry only.
    for sneaky in (reg.get("foo", "acme").serve_id, "foo~acme", "../foo"):
        assert _chat(c, KEY_B, sneaky).status_code == 404
    assert calls == []


def test_model_lists_show_each_tenant_its_own_and_the_shared(gateway: Any) -> None:
    c, _, _ = gateway

    def ids(key: str, path: str) -> set[str]:
        r = c.get(path, headers={"Authorization": f"Bearer {key}"})
        assert r.status_code == 200, r.text
        return {m.get("id") or m.get("name") for m in r.json()["data"]}

    assert {"foo", "shared-sql", "only-acme"} <= ids(KEY_A, "/v1/models")
    assert {"foo", "shared-sql"} <= ids(KEY_B, "/v1/models")
    assert "only-acme" not in ids(KEY_B, "/v1/models")
    assert ids(KEY_B, "/v1/adapters") == {"foo", "shared-sql"}
    card = c.get("/v1/models/foo", headers={"Authorization": f"Bearer {KEY_B}"}).json()
    assert card["kind"] == "lora" and card["parent"] == "lumos-tiny"
    missing = c.get("/v1/models/only-acme", headers={"Authorization": f"Bearer {KEY_B}"})
    assert missing.status_code == 404
