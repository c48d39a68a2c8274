"""Serve config, hooks and error mapping: pure Python, no Ray, no engine."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from lumos_ray.errors import (
    AdapterError,
    AuthError,
    ConfigError,
    NotFoundError,
    QuotaExceededError,
    ServeError,
)
from lumos_ray.serve import ServeConfig, ServedModelConfig, load_serve_config
from lumos_ray.serve._auth import StaticKeys, resolve_static_keys
from lumos_ray.serve._errors import lumos_error_response, status_for
from lumos_ray.serve._ratelimit import TokenBuckets

ROOT = Path(__file__).resolve().parents[2]


def test_tiny_cpu_yaml_is_the_embedded_default() -> None:
    assert load_serve_config(ROOT / "configs/serve/tiny-cpu.yaml") == ServeConfig()
    assert load_serve_config(None) == ServeConfig()
    cfg = ServeConfig()
    assert cfg.base_url() == "http://127.0.0.1:8000/v1"
    assert cfg.models[0].name == "lumos-tiny" and cfg.models[0].accelerator == "cpu"
    assert cfg.models[0].engine_kwargs["dtype"] == "float32"


def test_every_shipped_serve_config_validates() -> None:
    files = sorted((ROOT / "configs/serve").glob("*.yaml"))
    assert len(files) >= 2
    for f in files:
        assert load_serve_config(f).app_name.startswith("lumos-serve")


def test_bad_config_names_file_and_field(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("models:\n  - name: m\n    num_replicas: 0\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml.*models\.0\.num_replicas"):
        load_serve_config(bad)
    bad.write_text("models:\n  - name: m\n    autoscaling: {min_replicas: 3, max_replicas: 1}\n")
    with pytest.raises(ConfigError, match="max_replicas"):
        load_serve_config(bad)
    bad.write_text("app_name: other\n")
    with pytest.raises(ConfigError, match="app_name"):
        load_serve_config(bad)
    bad.write_text("models:\n  - name: all-MiniLM-L6-v2\n")
    with pytest.raises(ConfigError, match="unique"):
        load_serve_config(bad)


def test_api_keys_from_config_and_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LUMOS_API_KEYS", "k2, k3")
    cfg = ServeConfig.model_validate({"gateway": {"api_keys": ["k1"]}})
    specs = cfg.api_keys()
    assert [s.key for s in specs] == ["k1", "k2", "k3"]
    assert {(s.tenant, s.role) for s in specs} == {("default", "admin")}
    # The config travels to replicas as JSON.
    assert ServeConfig.model_validate_json(cfg.model_dump_json()) == cfg


def test_static_keys_hold_digests_and_prove_tenant_and_role() -> None:
    import asyncio

    from lumos_ray.serve import ApiKeySpec

    assert asyncio.run(StaticKeys([]).authenticate(None)) is None  # auth off
    specs = [ApiKeySpec(key="secret-key-a", tenant="acme", role="viewer")]
    table = resolve_static_keys(specs)
    assert "secret-key-a" not in repr(table)  # replicas get digests only
    auth = StaticKeys(table)
    who = asyncio.run(auth.authenticate("Bearer secret-key-a"))
    assert who is not None and (who.tenant, who.role.value) == ("acme", "viewer")
    for header in [None, "", "Basic secret-key-a", "Bearer wrong", "Bearer "]:
        with pytest.raises(AuthError):
            asyncio.run(auth.authenticate(header))


def test_token_buckets_per_key_and_per_tenant() -> None:
    b = TokenBuckets()
    assert b.check([("a", "t")] * 3, 3, None) == [0.0, 0.0, 0.0]
    (wait,) = b.check([("a", "t")], 3, None)
    assert wait > 0
    assert b.check([("b", "t")], 3, None) == [0.0]  # other keys have their own bucket
    t = TokenBuckets()
    waits = t.check([("k1", "acme"), ("k2", "acme"), ("k3", "acme")], 10, 2)
    assert waits[:2] == [0.0, 0.0] and waits[2] > 0  # the tenant's budget is shared


def test_error_mapping_is_openai_shaped() -> None:
    assert status_for(AuthError("x")) == 401
    assert status_for(QuotaExceededError("x")) == 429
    assert status_for(AdapterError("x")) == 404
    assert status_for(NotFoundError("x")) == 404
    assert status_for(ServeError("x")) == 503
    resp = lumos_error_response(QuotaExceededError("slow down", retry_after_s=7))
    assert resp.status_code == 429 and resp.headers["retry-after"] == "7"
    body = json.loads(resp.body)["error"]
    assert body["message"] == "slow down" and body["lumos_code"] == "LUMOS-E042"
    assert body["type"] == "rate_limit_error" and body["fix"]


def test_engine_threads_default_to_every_cpu_unless_set_or_named_in_env() -> None:
    import os

    from lumos_ray.serve._vllm import engine_threads

    assert engine_threads(ServedModelConfig()) == len(os.sched_getaffinity(0))
    assert engine_threads(ServedModelConfig(engine_threads=3)) == 3
    # The model's own env wins over the default: nothing is set over it.
    assert engine_threads(ServedModelConfig(env={"OMP_NUM_THREADS": "4"})) is None
    with pytest.raises(ValidationError):
        ServedModelConfig(engine_threads=0)
