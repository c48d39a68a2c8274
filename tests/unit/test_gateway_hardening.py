"""Issue 12, gateway side, in-process (FastAPI's TestClient, no Ray): each finding of
the issue that does not need a cluster, plus the platform wired in (a real Platform
over a SQLite store in tmp_path). Cross-tenant runs, several replicas and the
driver -> replica hand-over of keys are in tests/integration/test_gateway_platform.py.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from lumos_ray.errors import ServeError
from lumos_ray.serve import ApiKeySpec, GatewayConfig, ServeConfig
from lumos_ray.serve._app import check_exposure
from lumos_ray.serve._gateway import _GATEWAY, Gateway, build_app
from lumos_ray.serve._wire import JsonReply

ADMIN, DEV, VIEW, OTHER = "sk-admin-0001", "sk-dev-00001", "sk-view-0001", "sk-other-001"


def _keys() -> list[str | ApiKeySpec]:
    return [
        ApiKeySpec(key=ADMIN, tenant="acme", role="admin"),
        ApiKeySpec(key=DEV, tenant="acme", role="developer"),
        ApiKeySpec(key=VIEW, tenant="acme", role="viewer"),
        ApiKeySpec(key=OTHER, tenant="globex", role="developer"),
    ]


def _app(tmp_path: Path, handles: dict[str, Any] | None = None, **gateway: Any) -> TestClient:
    cfg = ServeConfig(
        gateway=GatewayConfig(**{"api_keys": _keys(), "api_keys_env": None, **gateway}),
        adapters_dir=str(tmp_path / "adapters"),
    )
    Gateway(cfg.model_dump_json(), llm_handles=handles or {})
    return TestClient(build_app())


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    with _app(tmp_path, max_body_bytes=64_000) as c:
        yield c
    _GATEWAY.clear()


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def _error(r: Any, status: int) -> dict[str, Any]:
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["message"] and err["code"] and err["request_id"], err
    assert r.headers["x-request-id"] == err["request_id"]
    return err


# -- metrics ---------------------------------------------------------------------------


def test_random_paths_do_not_create_metric_series(client: TestClient) -> None:
    for i in range(300):
        client.get(f"/no/such/path/{i:04d}-{i * 7919}")
        client.get(f"/v1/runs/run-{i}")  # 404s of one template
    text = client.get("/metrics", headers=_auth(ADMIN)).text
    series = [ln for ln in text.splitlines() if ln.startswith("lumos_gateway_requests_total{")]
    routes = {re.search(r'route="([^"]*)"', ln).group(1) for ln in series}  # type: ignore[union-attr]
    assert routes <= {"unmatched", "/v1/runs/{run_id}"}, routes
    assert len(series) <= 4, series  # (route x status) pairs, not one per path


def test_metrics_need_an_admin_key(client: TestClient) -> None:
    _error(client.get("/metrics"), 401)
    _error(client.get("/metrics", headers=_auth(VIEW)), 403)
    _error(client.get("/metrics", headers=_auth(DEV)), 403)
    r = client.get("/metrics", headers=_auth(ADMIN))
    assert r.status_code == 200 and "lumos_gateway_requests_total" in r.text


# -- roles and tenants -----------------------------------------------------------------


def test_viewer_cannot_start_resume_or_cancel_runs(client: TestClient) -> None:
    for path in ["/v1/runs/run-1/resume", "/v1/runs/run-1/cancel", "/v1/workflows/wf/runs"]:
        err = _error(client.post(path, json={}, headers=_auth(VIEW)), 403)
        assert "developer role" in err["message"]
    _error(client.post("/v1/chat/completions", json={}, headers=_auth(VIEW)), 403)


def test_run_ids_are_validated_before_any_runner_is_reached(client: TestClient) -> None:
    # An id with a slash (or other characters) cannot exist: 404 without a cluster.
    for bad in ["a%2Fb", "..", "x%20y", "-lead", "a" * 65]:
        _error(client.get(f"/v1/runs/{bad}", headers=_auth(DEV)), 404)
        _error(client.post(f"/v1/runs/{bad}/cancel", headers=_auth(DEV)), 404)
    body = {"input": {}, "run_id": "other/run-1"}
    err = _error(client.post("/v1/workflows/wf/runs", json=body, headers=_auth(DEV)), 422)
    assert "run_id" in err["message"]


# -- body limit and fan-out ------------------------------------------------------------


def test_one_body_limit_for_every_route_runs_api_included(client: TestClient) -> None:
    big = {"input": {"blob": "x" * 5_000_000}}  # 5 MB run input
    _error(client.post("/v1/workflows/wf/runs", json=big, headers=_auth(DEV)), 413)
    _error(client.post("/v1/runs/run-1/resume", json=big, headers=_auth(DEV)), 413)

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it streams
        yield b'{"input": "'
        for _ in range(100):
            yield b"x" * 1000
        yield b'"}'

    _error(client.post("/v1/runs/run-1/resume", content=chunks(), headers=_auth(DEV)), 413)


def test_fanout_of_one_request_is_bounded(tmp_path: Path) -> None:
    with _app(tmp_path, max_fanout=256) as c:
        body = {"model": "lumos-tiny", "prompt": ["p"] * 8, "n": 64}
        err = _error(c.post("/v1/completions", json=body, headers=_auth(DEV)), 422)
        assert err["param"] == "n" and "512 sequences" in err["message"]
        chat = {"messages": [{"role": "user", "content": "hi"}], "n": 4, "best_of": 512}
        _error(c.post("/v1/chat/completions", json=chat, headers=_auth(DEV)), 422)
    _GATEWAY.clear()


# -- errors ----------------------------------------------------------------------------


class _Gen:
    """A model deployment's streaming answer: yields the given items."""

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


class _ModelStandIn:
    """Stands in for the LLM deployment's handle (the gateway is what is tested):
    every request fails with an engine error whose text carries a traceback."""

    def options(self, **_: Any) -> _ModelStandIn:
        return self

    @property
    def generate(self) -> _Method:
        body = (
            b'{"error": {"message": "Traceback (most recent call last):\\n  File '
            b'\\"/opt/secret/engine.py\\", line 12, in run", "type": "internal_error", '
            b'"code": "internal_error"}}'
        )
        return _Method(lambda *a: _Gen([JsonReply(500, body)]))

    @property
    def check_health(self) -> _Method:
        async def fail() -> None:
            raise RuntimeError("worker at /opt/secret/worker.py died")

        return _Method(fail)


def test_errors_carry_code_message_request_id_and_no_remote_text(tmp_path: Path) -> None:
    with _app(tmp_path, handles={"lumos-tiny": _ModelStandIn()}) as c:
        chat = {"model": "lumos-tiny", "messages": [{"role": "user", "content": "hi"}]}
        r = c.post("/v1/chat/completions", json=chat, headers=_auth(DEV))
        err = _error(r, 500)
        assert "Traceback" not in r.text and "/opt/secret" not in r.text
        r = c.get("/v1/models", headers={**_auth(DEV), "X-Request-ID": "my-req-1"})
        assert r.headers["x-request-id"] == "my-req-1"
        err = _error(c.get("/v1/models", headers=_auth("sk-wrong-key")), 401)
        assert err["code"].startswith("LUMOS-E") and "sk-wrong-key" not in str(err)
        ready = c.get("/ready")
        assert ready.status_code == 503
        assert ready.json()["models"] == {"lumos-tiny": "unavailable"}
        assert "RuntimeError" not in ready.text and "/opt/secret" not in ready.text
    _GATEWAY.clear()


# -- exposure, Host, TLS ---------------------------------------------------------------


def test_non_loopback_bind_with_auth_off_refuses_unless_allowed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("LUMOS_API_KEYS", raising=False)
    open_cfg = ServeConfig(gateway=GatewayConfig(host="0.0.0.0"))
    with pytest.raises(ServeError) as ei:
        check_exposure(open_cfg)
    assert "allow_unauthenticated" in ei.value.fix
    check_exposure(ServeConfig(gateway=GatewayConfig(host="0.0.0.0", allow_unauthenticated=True)))
    check_exposure(ServeConfig(gateway=GatewayConfig(host="0.0.0.0", api_keys=[ADMIN])))
    check_exposure(ServeConfig(gateway=GatewayConfig(host="127.0.0.1")))


def test_host_allowlist(tmp_path: Path) -> None:
    with _app(tmp_path, allowed_hosts=["api.example.com"]) as c:
        ok = c.get("/health", headers={"Host": "api.example.com:8000"})
        assert ok.status_code == 200
        _error(c.get("/health", headers={"Host": "evil.example.net"}), 400)
    _GATEWAY.clear()


def test_tls_needs_certificate_and_key_and_makes_https_urls() -> None:
    with pytest.raises(ValueError):
        GatewayConfig(tls_certfile="/c.pem")
    cfg = ServeConfig(gateway=GatewayConfig(tls_certfile="/c.pem", tls_keyfile="/k.pem"))
    assert cfg.base_url().startswith("https://")


# -- OpenAPI ---------------------------------------------------------------------------


def test_openapi_describes_every_routes_request_and_response(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    schemas = spec["components"]["schemas"]
    for path, req, resp in [
        ("/v1/chat/completions", "ChatCompletionBody", "ChatCompletionResponse"),
        ("/v1/completions", "CompletionBody", "CompletionResponse"),
        ("/v1/embeddings", "EmbeddingBody", "EmbeddingResponse"),
    ]:
        op = spec["paths"][path]["post"]
        assert op["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith(req)
        ok = op["responses"]["200"]["content"]["application/json"]["schema"]
        assert ok["$ref"].endswith(resp) and resp in schemas
        assert op["responses"]["429"]["content"]["application/json"]["schema"]["$ref"].endswith(
            "ErrorResponse"
        )
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            ok = op["responses"].get("200") or op["responses"].get("201")
            assert ok and ok.get("content"), f"{method} {path} has no response schema"


# -- the platform wired in ---------------------------------------------------------------


@pytest.fixture
def platform_app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    plans = tmp_path / "plans.yaml"
    plans.write_text(
        "default_plan: tiny\nplans:\n  tiny: {api_calls_per_month: 4, concurrent_agents: 1,"
        " storage_bytes: 1000}\n  big: {api_calls_per_month: null, concurrent_agents: 1,"
        " storage_bytes: 1000}\n"
    )
    monkeypatch.setenv("LUMOS_PLANS_FILE", str(plans))
    from lumos_ray.platform import Platform

    url = f"sqlite:///{tmp_path / 'platform.db'}"
    p = Platform(url)
    p.create_tenant("acme", "tiny")
    p.create_tenant("globex", "big")
    keys: dict[str, Any] = {
        "dev": p.create_key("acme", "developer").secret_shown_once,
        "viewer": p.create_key("globex", "viewer").secret_shown_once,
        "revoked": p.create_key("globex", "developer"),
    }
    p.revoke_key("globex", keys["revoked"].key_id)
    cfg = ServeConfig(
        gateway=GatewayConfig(
            api_keys_env=None, platform=True, platform_store_url=url, auth_cache_s=0
        ),
        adapters_dir=str(tmp_path / "adapters"),
    )
    gw = Gateway(cfg.model_dump_json(), llm_handles={})
    with TestClient(build_app()) as c:
        yield c, p, keys
    gw.admission.close()
    _GATEWAY.clear()


def test_platform_keys_roles_and_plan_quota(platform_app: Any) -> None:
    c, p, keys = platform_app
    _error(c.get("/v1/models"), 401)
    _error(c.get("/v1/models", headers=_auth("lumos_0123456789abcdef_nope")), 401)
    _error(c.get("/v1/models", headers=_auth(keys["revoked"].secret_shown_once)), 401)
    assert c.get("/v1/models", headers=_auth(keys["viewer"])).status_code == 200
    _error(c.post("/v1/runs/run-1/cancel", headers=_auth(keys["viewer"])), 403)
    # acme's plan allows 4 calls a month: the 5th is refused with Retry-After.
    codes = [c.get("/v1/models", headers=_auth(keys["dev"])).status_code for _ in range(5)]
    assert codes == [200, 200, 200, 200, 429]
    r = c.get("/v1/models", headers=_auth(keys["dev"]))
    _error(r, 429)
    assert int(r.headers["retry-after"]) >= 1
    # Counted in memory, written by the next flush: exactly the 4 admitted calls.
    asyncio.run(_GATEWAY["gw"].admission.flush())
    assert sum(d.requests for d in p.usage("acme")) == 4
    assert p.quota_status("acme")["used"]["requests"] == 4


def test_expired_key_is_401_over_http(platform_app: Any) -> None:
    import time

    from lumos_ray.store import api_keys

    c, p, _ = platform_app
    key = p.create_key("globex", "developer", expires_at=time.time() + 3600)
    assert c.get("/v1/models", headers=_auth(key.secret_shown_once)).status_code == 200
    # Age the key in the store (auth_cache_s=0: the gateway reads it every request).
    with p._db.write() as conn:
        conn.execute(
            api_keys.update()
            .where(api_keys.c.key_id == key.key_id)
            .values(expires_at=time.time() - 1)
        )
    err = _error(c.get("/v1/models", headers=_auth(key.secret_shown_once)), 401)
    assert "expired" in err["message"]


def test_a_nul_in_the_url_is_a_clear_400_before_any_route(client: TestClient) -> None:
    # PostgreSQL text cannot hold a NUL: a filter with one reached the store and failed
    # there as a 500 (found by the API fuzzer on the PostgreSQL tier).
    for url in ("/v1/threads?agent=a%00b", "/v1/runs?status=%00", "/v1/threads/a%00/t"):
        r = client.get(url, headers={"Authorization": f"Bearer {DEV}"})
        assert r.status_code == 400, (url, r.text)
        assert "NUL" in r.json()["error"]["message"]
