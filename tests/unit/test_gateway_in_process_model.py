"""A model whose engine runs inside the gateway (``in_gateway: true``): the gateway
calls the local host directly, with the same routing, auth, renaming and stream
handling as the handle path, and a client that leaves closes the answer down to the
engine's own stream.

In-process (FastAPI's TestClient, no Ray, no engine): the local host is a stand-in with
``ModelHost``'s interface that records what it was asked and answers in vLLM's compact
JSON (the gateway is what is tested; tests/integration/test_serve_gateway.py runs the
real engine on this path)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from lumos_ray.adapters import AdapterRegistry
from lumos_ray.serve import ApiKeySpec, GatewayConfig, ServeConfig, ServedModelConfig
from lumos_ray.serve._gateway import _GATEWAY, Gateway, _LocalAnswer, build_app
from lumos_ray.serve._wire import JsonReply

KEY_A, KEY_B = "sk-acme-00001", "sk-globex-001"
COMPACT = (",", ":")  # vLLM's model_dump_json writes compact JSON


class _LocalHost:
    """Stands in for ModelHost; ``calls`` gets (adapter, parsed body, coalesce)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str | None, dict[str, Any], bool]] = []
        self.healthy = True

    async def check_health(self) -> None:
        if not self.healthy:
            raise RuntimeError("engine core died")

    async def generate(
        self, kind: str, raw: bytes, adapter: str | None, carrier: Any, coalesce: bool = True
    ) -> AsyncIterator[Any]:
        body = json.loads(raw)
        self.calls.append((adapter, body, coalesce))
        if body.get("stream"):
            for word in ("a", "b"):
                delta = {"index": 0, "delta": {"content": word}}
                event = {"id": "c1", "model": body["model"], "choices": [delta]}
                yield f"data: {json.dumps(event, separators=COMPACT)}\n\n"
            usage = {
                "id": "c1",
                "choices": [],
                "usage": {"prompt_tokens": 4, "completion_tokens": 2},
            }
            yield f"data: {json.dumps(usage, separators=COMPACT)}\n\n"
            yield "data: [DONE]\n\n"
            return
        answer = {"id": "c1", "object": "chat.completion", "model": body["model"]}
        yield JsonReply(200, json.dumps(answer, separators=COMPACT).encode(), 4, 2)


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[tuple[TestClient, AdapterRegistry, _LocalHost]]:
    reg = AdapterRegistry(tmp_path / "adapters")
    src = tmp_path / "peft"
    src.mkdir()
    (src / "adapter_config.json").write_text("{}")
    reg.register("foo", src, base_model="lumos-tiny", tenant="acme")
    keys: list[str | ApiKeySpec] = [
        ApiKeySpec(key=KEY_A, tenant="acme", role="developer"),
        ApiKeySpec(key=KEY_B, tenant="globex", role="developer"),
    ]
    cfg = ServeConfig(
        gateway=GatewayConfig(api_keys=keys, api_keys_env=None),
        models=[ServedModelConfig(in_gateway=True)],
        adapters_dir=str(reg.root),
    )
    host = _LocalHost()
    Gateway(cfg.model_dump_json(), llm_handles={}, local_models={"lumos-tiny": host})
    with TestClient(build_app()) as c:
        yield c, reg, host
    _GATEWAY.clear()


def _chat(c: TestClient, key: str, model: str, **extra: Any) -> Any:
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}], **extra}
    return c.post("/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"})


def test_base_model_requests_reach_the_local_host_without_an_adapter(gateway: Any) -> None:
    c, _, host = gateway
    r = _chat(c, KEY_A, "lumos-tiny", max_tokens=3)
    assert r.status_code == 200, r.text
    assert r.json()["model"] == "lumos-tiny"
    ((adapter, body, coalesce),) = host.calls
    assert adapter is None and body["max_tokens"] == 3
    # Chunks go as they come: nothing crosses a handle, so nothing is joined.
    assert coalesce is False


def test_a_tenants_adapter_runs_on_the_local_host_under_its_serving_id(gateway: Any) -> None:
    c, reg, host = gateway
    r = _chat(c, KEY_A, "foo")
    assert r.status_code == 200, r.text
    serve_id = reg.get("foo", "acme").serve_id
    adapter, body, _ = host.calls[-1]
    assert adapter == serve_id == body["model"]
    assert r.json()["model"] == "foo"  # the client's name, not the serving id
    # Another tenant does not see acme's adapter: 404 like a name nobody holds.
    assert _chat(c, KEY_B, "foo").status_code == 404
    assert len(host.calls) == 1


def test_a_stream_from_the_local_host_is_relayed_with_usage_hidden(gateway: Any) -> None:
    c, _, host = gateway
    r = _chat(c, KEY_A, "lumos-tiny", stream=True)
    assert r.status_code == 200, r.text
    assert r.text.count('"content"') == 2 and r.text.rstrip().endswith("data: [DONE]")
    assert '"prompt_tokens"' not in r.text  # the client did not ask for usage
    assert host.calls[-1][1]["stream_options"] == {"include_usage": True}


def test_readiness_reports_the_local_engines_health(gateway: Any) -> None:
    c, _, host = gateway
    r = c.get("/ready")
    assert r.status_code == 200 and r.json()["models"] == {"lumos-tiny": "ok"}
    host.healthy = False
    r = c.get("/ready")
    assert r.status_code == 503 and r.json()["models"] == {"lumos-tiny": "unavailable"}
    assert "engine core died" not in r.text
    with pytest.raises(RuntimeError):  # Serve's health check fails: the replica is replaced
        asyncio.run(_GATEWAY["gw"].check_health())


class _Engine:
    """Stands in for VLLMHost (vLLM is not under test): ``run`` gives a long stream
    that records when it is closed, as vLLM's aborts the request when closed."""

    def __init__(self) -> None:
        self.closed: list[bool] = []

    async def run(self, kind: str, raw: bytes) -> AsyncIterator[str]:
        async def stream() -> AsyncIterator[str]:
            try:
                for i in range(1000):
                    yield f"data: {i}\n\n"
                    await asyncio.sleep(0)
            finally:
                self.closed.append(True)

        return stream()


@pytest.mark.parametrize("coalesce", [False, True])
def test_a_client_that_leaves_closes_the_engine_stream(tmp_path: Path, coalesce: bool) -> None:
    from lumos_ray.serve._llm_server import ModelHost

    engine = _Engine()
    model = ServedModelConfig(lora={"enabled": False})
    host = ModelHost(model, str(tmp_path / "adapters"), str(tmp_path), engine=engine)

    async def main() -> None:
        answer = _LocalAnswer(host.generate("chat", b"{}", None, None, coalesce=coalesce))
        assert (await answer.__anext__()).startswith("data: 0")
        answer.cancel()  # what the gateway does when the client left mid-stream
        for _ in range(20):
            await asyncio.sleep(0)

    asyncio.run(main())
    assert engine.closed == [True]


def test_at_most_one_model_runs_in_the_gateway_and_it_sets_the_replicas() -> None:
    two = [
        ServedModelConfig(name="a", in_gateway=True),
        ServedModelConfig(name="b", in_gateway=True),
    ]
    with pytest.raises(ValueError, match="at most one model"):
        ServeConfig(models=two)
    with pytest.raises(ValueError, match=r"gateway\.num_replicas"):
        ServeConfig(
            gateway=GatewayConfig(num_replicas=2), models=[ServedModelConfig(in_gateway=True)]
        )
    cfg = ServeConfig(
        models=[ServedModelConfig(name="a", in_gateway=True), ServedModelConfig(name="b")]
    )
    assert cfg.gateway_model() is not None and cfg.gateway_model().name == "a"  # type: ignore[union-attr]


def test_a_gateway_that_hosts_a_model_takes_its_resources_env_and_scaling() -> None:
    from lumos_ray.serve import AutoscalingConfig
    from lumos_ray.serve._app import hosting_options

    model = ServedModelConfig(num_cpus=0.5, env={"X": "1"}, in_gateway=True)
    opts = hosting_options(model, 0.1, {"LUMOS_HOME": "/h"}, "/h", {"PYTHONPATH": "/p"})
    actor = opts["ray_actor_options"]
    # The engine's CPU, the model's own and the gateway's.
    assert actor["num_cpus"] == pytest.approx(1.6)
    env = actor["runtime_env"]["env_vars"]
    assert env["X"] == "1" and env["HF_HUB_OFFLINE"] == "1" and env["LUMOS_HOME"] == "/h"
    assert env["PYTHONPATH"] == "/p"
    assert opts["num_replicas"] == 1 and opts["health_check_timeout_s"] == 60
    # The gateway keeps its own name and request limit.
    assert "name" not in opts and "max_ongoing_requests" not in opts
    scaled = ServedModelConfig(autoscaling=AutoscalingConfig(max_replicas=3), in_gateway=True)
    opts = hosting_options(scaled, 0.1, {}, "/h", {})
    assert opts["autoscaling_config"]["max_replicas"] == 3 and "num_replicas" not in opts
