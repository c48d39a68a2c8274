"""gateway.max_request_tokens: one request may not ask for more generated tokens in all
(sequences x max_tokens) than the bound, on top of max_fanout (sequences) and the
schema's max_tokens (per sequence). A request without max_tokens counts each sequence
at its model's max_model_len, or at the schema's ceiling. No Ray, no engine."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from lumos_ray.serve import GatewayConfig, ServeConfig, ServedModelConfig
from lumos_ray.serve._gateway import (
    _GATEWAY,
    Gateway,
    _BadRequest,
    _check_request_tokens,
    build_app,
)
from lumos_ray.serve._schemas import ChatCompletionBody, CompletionBody

KEY = "sk-tokens-001"


def _completion(**fields: Any) -> CompletionBody:
    return CompletionBody.model_validate({"model": "m", "prompt": "hi", **fields})


def _chat(**fields: Any) -> ChatCompletionBody:
    msgs = [{"role": "user", "content": "hi"}]
    return ChatCompletionBody.model_validate({"model": "m", "messages": msgs, **fields})


def _model(max_model_len: Any = None) -> ServedModelConfig:
    kwargs = {} if max_model_len is None else {"max_model_len": max_model_len}
    return ServedModelConfig(engine_kwargs=kwargs)


def test_sequences_times_max_tokens_is_bounded() -> None:
    model = _model(4096)
    _check_request_tokens(_completion(prompt=["a"] * 4, n=2, max_tokens=1000), model, 8000)
    with pytest.raises(_BadRequest) as err:
        _check_request_tokens(_completion(prompt=["a"] * 4, n=2, max_tokens=1001), model, 8000)
    e = err.value
    assert e.status == 422 and e.param == "max_tokens"
    assert "8,008 tokens (8 sequences x 1,001 tokens)" in e.message
    assert "gateway.max_request_tokens" in e.message and "at most 1,000" in e.message
    # best_of counts as sequences, like in max_fanout.
    with pytest.raises(_BadRequest):
        _check_request_tokens(_completion(best_of=9, max_tokens=1000), model, 8000)


def test_chat_max_completion_tokens_is_what_counts_and_is_named() -> None:
    model = _model(4096)
    body = _chat(n=4, max_tokens=10, max_completion_tokens=3000)
    with pytest.raises(_BadRequest) as err:
        _check_request_tokens(body, model, 8000)
    assert err.value.param == "max_completion_tokens" and "4 sequences" in err.value.message
    _check_request_tokens(_chat(n=4, max_completion_tokens=2000), model, 8000)


def test_without_max_tokens_each_sequence_counts_at_max_model_len() -> None:
    _check_request_tokens(_chat(n=8), _model(1024), 8192)  # 8 x 1024 fits exactly
    with pytest.raises(_BadRequest) as err:
        _check_request_tokens(_chat(n=9), _model(1024), 8192)
    msg = err.value.message
    assert "max_tokens is not set" in msg and "max_model_len (1024)" in msg
    assert "Set max_tokens to at most 910" in msg
    # max_tokens above max_model_len: vLLM stops at max_model_len, so that is counted.
    _check_request_tokens(_chat(n=8, max_tokens=500_000), _model(1024), 8192)


def test_without_max_tokens_or_max_model_len_the_schema_ceiling_counts() -> None:
    with pytest.raises(_BadRequest) as err:
        _check_request_tokens(_chat(), _model(), 65_536)
    msg = err.value.message
    assert "no max_model_len" in msg and "1,000,000" in msg and "at most 65,536" in msg
    _check_request_tokens(_chat(max_tokens=65_536), _model(), 65_536)
    # A max_model_len that is not a plain number (vLLM also takes "4k") is not guessed.
    with pytest.raises(_BadRequest):
        _check_request_tokens(_chat(), _model("4k"), 65_536)


def test_more_sequences_than_tokens_allowed_says_to_send_fewer() -> None:
    with pytest.raises(_BadRequest) as err:
        _check_request_tokens(_completion(prompt=["a"] * 8, max_tokens=1), _model(1024), 4)
    assert "Send fewer sequences" in err.value.message and "at most" not in err.value.message


class _NoModel:
    """A model handle that cannot answer (no ``generate``): a request that got past the
    gateway's checks would fail with a 500."""

    def options(self, **_: Any) -> _NoModel:
        return self


@pytest.fixture
def client(tmp_path: Any) -> Iterator[TestClient]:
    cfg = ServeConfig(
        gateway=GatewayConfig(api_keys=[KEY], api_keys_env=None, max_request_tokens=10_000),
        adapters_dir=str(tmp_path / "adapters"),
    )
    Gateway(cfg.model_dump_json(), llm_handles={"lumos-tiny": _NoModel()})
    with TestClient(build_app()) as c:
        yield c
    _GATEWAY.clear()


def test_over_http_the_refusal_is_an_openai_shaped_422(client: TestClient) -> None:
    """The default model (lumos-tiny) sets max_model_len 1024: n=10 without max_tokens
    may generate 10,240 tokens, above this gateway's 10,000. Refused before any model
    call (the handle here cannot answer: a call would fail with a 500)."""
    auth = {"Authorization": f"Bearer {KEY}"}
    body = {"model": "lumos-tiny", "messages": [{"role": "user", "content": "hi"}], "n": 10}
    r = client.post("/v1/chat/completions", json=body, headers=auth)
    assert r.status_code == 422, r.text
    err = r.json()["error"]
    assert err["param"] == "max_tokens" and "gateway.max_request_tokens" in err["message"]
    assert "Set max_tokens to at most 1,000" in err["message"]
    comp = {"model": "lumos-tiny", "prompt": ["a", "b"], "n": 5, "max_tokens": 1001}
    r = client.post("/v1/completions", json=comp, headers=auth)
    assert r.status_code == 422 and "10,010 tokens" in r.json()["error"]["message"]
