"""Tenant isolation and the storage quota, on real services: one small gateway app
(platform on, one replica, no model engine) on a free port of its own, the session's
Ray cluster and store (SQLite, or PostgreSQL with ``--store-backend postgresql``), real
agent and RAG actors.

Tenant B can never read, list, change or delete tenant A's thread, RAG collection,
adapter, fine-tuning job or usage: over HTTP the answer is 404 (never 403: that would
say the object exists), in Python NotFoundError. Runs are covered the same way in
test_gateway_platform.py. Fine-tuning jobs have no HTTP route and the session cluster
has no Jobs API (no dashboard): tests/unit/test_finetune_job_tenants.py checks them
against a stand-in Jobs API. RAG collections have no HTTP route either: Python only.

Serve's HTTP options belong to the cluster: this module deploys its app under
``/isotest`` on the Serve that runs already (the session's engine app, when an earlier
module started it), or starts Serve on a free port of its own; it deletes its app at
the end (and Serve with it when nothing else is left).
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

A, B, FULL = "iso-a", "iso-b", "iso-full"
LIMIT = 50_000  # bytes of the "tiny" plan


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _h(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture(scope="module")
def env(
    ray_cluster: Any, lumos_home: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Any]]:
    from ray import serve

    from lumos_ray import serve as lserve
    from lumos_ray.platform import Platform
    from lumos_ray.serve import GatewayConfig, ServeConfig, ServedEmbeddingConfig
    from lumos_ray.serve._app import _serve_running, _start_serve, _state_file, gateway_deployment

    work = tmp_path_factory.mktemp("iso")
    plans = work / "plans.yaml"
    plans.write_text(
        "default_plan: standard\nplans:\n"
        f"  tiny: {{api_calls_per_month: null, concurrent_agents: 2, storage_bytes: {LIMIT}}}\n"
        # Also a built-in plan: agent actors (workers of the session's cluster, started
        # before this file existed) read the built-in plans.
        "  standard: {api_calls_per_month: null, concurrent_agents: 50, storage_bytes: 100 GB}\n"
    )
    old_plans = os.environ.get("LUMOS_PLANS_FILE")
    os.environ["LUMOS_PLANS_FILE"] = str(plans)  # restored below: later modules use "free"
    try:
        p = Platform()  # the session's store
        for name, plan in [(A, "standard"), (B, "standard"), (FULL, "tiny")]:
            p.create_tenant(name, plan)
        keys = {t: p.create_key(t, "developer").secret_shown_once for t in (A, B, FULL)}
        port = _free_port()
        cfg = ServeConfig(
            app_name="lumos-serve-isotest",
            gateway=GatewayConfig(port=port, num_replicas=1, platform=True, auth_cache_s=0),
            embeddings=ServedEmbeddingConfig(enabled=False),
            adapters_dir=str(work / "adapters"),
        )
        if os.environ.get("LUMOS_TEST_SERVE_PROXY") and _serve_running():
            # The shared served app's fixture started Serve with its proxy on a port of
            # its own (that app's gateway answers on another, directly).
            base = os.environ["LUMOS_TEST_SERVE_PROXY"]
        elif _serve_running():  # keeps the port it was started with: find it
            state = json.loads(_state_file().read_text())
            base = str(state["url"]).removesuffix("/v1")
        else:
            _start_serve(cfg)  # retried: a saturated machine can fail the first start
            base = f"http://127.0.0.1:{port}"
        serve.run(gateway_deployment(cfg, {}, None), name=cfg.app_name, route_prefix="/isotest")
        url = base + "/isotest"
        deadline = time.monotonic() + 120
        last = ""
        while True:
            try:
                # /v1/models with a key: ready once the platform answers for a tenant.
                r = httpx.get(url + "/v1/models", headers=_h(keys[A]), timeout=5)
                if r.status_code == 200:
                    break
                last = f"{r.status_code} {r.text[:200]}"
            except httpx.HTTPError as exc:
                last = repr(exc)
            assert time.monotonic() < deadline, f"the test gateway at {url} never answered: {last}"
            time.sleep(0.5)
        yield {"url": url, "keys": keys, "platform": p, "work": work}
        lserve.stop(cfg.app_name)
    finally:
        if old_plans is None:
            os.environ.pop("LUMOS_PLANS_FILE", None)
        else:
            os.environ["LUMOS_PLANS_FILE"] = old_plans


def test_threads_of_another_tenant_are_not_found(env: dict[str, Any]) -> None:
    from lumos_ray.actors.agent import Agent, AgentHandle
    from lumos_ray.errors import NotFoundError
    from lumos_ray.store import open_store
    from lumos_ray.testing import ScriptedModel, reply

    spec = Agent(name="iso-helper", instructions="Answer.", model=ScriptedModel([reply("hi")]))
    a_agent = AgentHandle(spec, tenant=A)

    async def turn() -> None:
        await a_agent.run("the secret is 42", thread_id="t-1")
        await a_agent.shutdown()

    asyncio.run(turn())
    a_store, b_store = open_store(tenant_id=A), open_store(tenant_id=B)
    assert any("42" in str(m) for m in a_store.thread_messages("iso-helper", "t-1"))
    # Python: B's view of the same agent and thread id holds nothing of A's.
    with pytest.raises(NotFoundError):
        b_store.thread_messages("iso-helper", "t-1")
    with pytest.raises(NotFoundError):
        b_store.delete_thread("iso-helper", "t-1")
    assert b_store.list_threads() == []
    b_agent = AgentHandle(spec, tenant=B)
    assert not any("42" in str(m) for m in asyncio.run(b_agent.history("t-1")))
    asyncio.run(b_agent.shutdown())

    url, keys = env["url"], env["keys"]
    path = "/v1/threads/iso-helper/t-1"
    with httpx.Client(base_url=url, timeout=60) as c:
        assert c.get(path, headers=_h(keys[A])).status_code == 200
        assert "42" in c.get(path, headers=_h(keys[A])).text
        assert c.get(path, headers=_h(keys[B])).status_code == 404
        assert c.delete(path, headers=_h(keys[B])).status_code == 404
        listed = c.get("/v1/threads", headers=_h(keys[B])).json()["data"]
        assert listed == []
        mine = c.get("/v1/threads", headers=_h(keys[A])).json()["data"]
        assert ("iso-helper", "t-1") in {(t["agent"], t["thread_id"]) for t in mine}
        # Still there for A after B's delete; A can delete its own.
        assert c.delete(path, headers=_h(keys[A])).status_code == 200
        assert c.get(path, headers=_h(keys[A])).status_code == 404


def test_rag_collection_of_another_tenant_is_not_found(env: dict[str, Any]) -> None:
    from lumos_ray.errors import InputValidationError, NotFoundError
    from lumos_ray.rag import RagCollection, list_collections
    from lumos_ray.rag._client import unregister
    from lumos_ray.rag._config import CollectionConfig

    coll = RagCollection.open("isodocs", tenant=A)
    assert "isodocs" in list_collections(A)
    with pytest.raises(NotFoundError):
        RagCollection.open("isodocs", tenant=B, create=False)
    assert "isodocs" not in list_collections(B)
    assert unregister("isodocs", tenant=B) is False  # B's "isodocs" is not A's
    # Names that would leave B's folder are refused before any file or actor is
    # touched (before the fix, B unregistered A's entry and opened A's router).
    RagCollection.open("isomine", tenant=B)  # B has a registry folder of its own
    sneaky = f"../../{A}/_registry/isodocs"
    with pytest.raises(InputValidationError):
        unregister(sneaky, tenant=B)
    with pytest.raises(InputValidationError):
        RagCollection.open(f"../{A}/isodocs", tenant=B, config=CollectionConfig(name="x", tenant=B))
    assert "isodocs" in list_collections(A)
    coll.drop()
    RagCollection.open("isomine", tenant=B, create=False).drop()


def test_adapter_of_another_tenant_is_not_found(env: dict[str, Any], tmp_path: Path) -> None:
    from lumos_ray.adapters import AdapterRegistry
    from lumos_ray.errors import NotFoundError

    src = tmp_path / "peft"
    src.mkdir()
    (src / "adapter_config.json").write_text("{}")
    (src / "adapter_model.safetensors").write_bytes(b"\0" * 64)
    reg = AdapterRegistry(env["work"] / "adapters")
    reg.register("iso-a-lora", src, base_model="lumos-tiny", tenant=A)
    reg.register("iso-shared-lora", src, base_model="lumos-tiny")  # no tenant: shared

    # Python
    assert reg.get_for("iso-a-lora", A).tenant == A
    with pytest.raises(NotFoundError) as theirs:
        reg.get_for("iso-a-lora", B)
    with pytest.raises(NotFoundError) as never:
        reg.get_for("iso-never-lora", B)
    assert theirs.value.message.replace("iso-a", "X") == never.value.message.replace(
        "iso-never", "X"
    )
    assert {r.name for r in reg.list_for(B)} >= {"iso-shared-lora"}
    assert "iso-a-lora" not in {r.name for r in reg.list_for(B)}

    # HTTP
    url, keys = env["url"], env["keys"]
    with httpx.Client(base_url=url, timeout=60) as c:
        names_a = {r["name"] for r in c.get("/v1/adapters", headers=_h(keys[A])).json()["data"]}
        names_b = {r["name"] for r in c.get("/v1/adapters", headers=_h(keys[B])).json()["data"]}
        assert "iso-a-lora" in names_a and "iso-a-lora" not in names_b
        assert "iso-shared-lora" in names_a & names_b
        models_b = {m["id"] for m in c.get("/v1/models", headers=_h(keys[B])).json()["data"]}
        assert "iso-a-lora" not in models_b
        assert c.get("/v1/models/iso-a-lora", headers=_h(keys[A])).status_code == 200
        assert c.get("/v1/models/iso-a-lora", headers=_h(keys[B])).status_code == 404
        body = {"model": "iso-a-lora", "messages": [{"role": "user", "content": "hi"}]}
        r = c.post("/v1/chat/completions", json=body, headers=_h(keys[B]))
        assert r.status_code == 404, r.text
        served = r.json()["error"]["message"].split("Served:")[1]
        assert "iso-a-lora" not in served and "iso-shared-lora" in served  # B's own view

    # B registers the same name: it gets its own and A's is untouched (one namespace
    # for all refused this, which told B that some tenant had that name).
    reg.register("iso-a-lora", src, base_model="lumos-tiny", tenant=B)
    assert reg.get_for("iso-a-lora", B).tenant == B and reg.get_for("iso-a-lora", A).tenant == A
    with httpx.Client(base_url=url, timeout=60) as c:
        for t in (A, B):
            rows = c.get("/v1/adapters", headers=_h(keys[t])).json()["data"]
            assert [r["tenant"] for r in rows if r["name"] == "iso-a-lora"] == [t]


def test_usage_of_another_tenant_is_not_found(env: dict[str, Any]) -> None:
    from lumos_ray.errors import NotFoundError
    from lumos_ray.platform import Principal, Role

    p = env["platform"]
    p.record_usage(A, requests=7, prompt_tokens=11)
    with pytest.raises(NotFoundError):
        p.tenant_usage(Principal(B, Role.ADMIN, "k"), A)
    url, keys = env["url"], env["keys"]
    r = httpx.get(url + "/v1/usage", headers=_h(keys[B]), timeout=60)
    assert r.status_code == 200, r.text
    data = r.json()
    assert data["tenant"] == B and all(d["tenant"] == B for d in data["days"])
    a = httpx.get(url + "/v1/usage", headers=_h(keys[A]), timeout=60).json()
    assert a["tenant"] == A and sum(d["prompt_tokens"] for d in a["days"]) >= 11
    # There is no parameter that names a tenant: the one sent is ignored, not obeyed.
    r = httpx.get(url + "/v1/usage", params={"tenant": A}, headers=_h(keys[B]), timeout=60)
    assert r.json()["tenant"] == B


def test_finished_run_of_another_tenant_cannot_be_deleted(env: dict[str, Any]) -> None:
    url, keys = env["url"], env["keys"]
    with httpx.Client(base_url=url, timeout=120) as c:
        start = {"input": {"amount": 3}}
        r = c.post("/v1/workflows/approval/runs", json=start, headers=_h(keys[A]))
        assert r.status_code == 201, r.text
        run_id = r.json()["id"]
        assert c.delete(f"/v1/runs/{run_id}", headers=_h(keys[A])).status_code == 409  # live
        assert c.post(f"/v1/runs/{run_id}/cancel", headers=_h(keys[A])).status_code == 200
        deadline = time.monotonic() + 60
        while c.get(f"/v1/runs/{run_id}", headers=_h(keys[A])).json()["status"] != "cancelled":
            assert time.monotonic() < deadline, "the cancelled run never reached 'cancelled'"
            time.sleep(0.2)
        assert c.delete(f"/v1/runs/{run_id}", headers=_h(keys[B])).status_code == 404
        assert c.get(f"/v1/runs/{run_id}", headers=_h(keys[A])).status_code == 200
        assert c.delete(f"/v1/runs/{run_id}", headers=_h(keys[A])).status_code == 200
        assert c.get(f"/v1/runs/{run_id}", headers=_h(keys[A])).status_code == 404


def test_storage_limit_refuses_new_data_until_some_is_deleted(env: dict[str, Any]) -> None:
    from click.testing import CliRunner

    from lumos_ray.cli import _load_commands, cli
    from lumos_ray.errors import QuotaExceededError
    from lumos_ray.rag import RagCollection
    from lumos_ray.store import open_store

    url, keys, p = env["url"], env["keys"], env["platform"]
    store = open_store(tenant_id=FULL)
    store.create_run("iso-big", "wf", "v1", {"blob": "x" * LIMIT}, status="succeeded")
    start = {"input": {"amount": 1}}
    with httpx.Client(base_url=url, timeout=120) as c:
        r = c.post("/v1/workflows/approval/runs", json=start, headers=_h(keys[FULL]))
        assert r.status_code == 429, r.text
        err = r.json()["error"]
        assert "50.0 kB" in err["message"] and "iso-full" in err["message"]
        assert "DELETE /v1/runs" in err["fix"] and "set-plan" in err["fix"]
        assert int(r.headers["retry-after"]) >= 1
        # Other tenants write on.
        ok = c.post("/v1/workflows/approval/runs", json=start, headers=_h(keys[B]))
        assert ok.status_code == 201, ok.text
        c.post(f"/v1/runs/{ok.json()['id']}/cancel", headers=_h(keys[B]))
        # The Python API refuses the same tenant's RAG writes.
        coll = RagCollection.open("isofull", tenant=FULL)
        with pytest.raises(QuotaExceededError) as info:
            coll.upsert([{"doc_id": "d1", "text": "more data"}])
        assert info.value.details["used"] > LIMIT and info.value.details["limit"] == LIMIT
        coll.drop()
        # `lumos usage show` reports the storage against the limit.
        _load_commands()
        shown = CliRunner().invoke(cli, ["usage", "show", "--tenant", FULL, "--json"])
        assert shown.exit_code == 0, shown.output
        storage = json.loads(shown.output)["quota"]["storage"]
        assert storage["used"] > LIMIT and storage["limit"] == LIMIT
        # Deleting the data lets writes in again (the refusal re-measures).
        assert c.delete("/v1/runs/iso-big", headers=_h(keys[FULL])).status_code == 200
        deadline = time.monotonic() + 30
        while True:
            r = c.post("/v1/workflows/approval/runs", json=start, headers=_h(keys[FULL]))
            if r.status_code != 429 or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert r.status_code == 201, r.text
        c.post(f"/v1/runs/{r.json()['id']}/cancel", headers=_h(keys[FULL]))
    assert p.storage(FULL, fresh=True).total < LIMIT
