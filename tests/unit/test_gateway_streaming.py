"""Token metering of streamed answers (platform on, in-process gateway, a real
Platform over SQLite in tmp_path; the model deployment is a stand-in that streams
fixed SSE text, since the gateway is what is tested)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from lumos_ray.platform import Platform
from lumos_ray.serve import GatewayConfig, ServeConfig
from lumos_ray.serve._gateway import _GATEWAY, Gateway, build_app


def _event(data: dict[str, Any]) -> str:
    return f"data: {json.dumps(data)}\n\n"


def _delta(text: str) -> dict[str, Any]:
    return {"id": "c1", "choices": [{"index": 0, "delta": {"content": text}}], "usage": None}


USAGE = {"id": "c1", "choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": 3}}


class _Stream:
    def __init__(self, items: list[str]) -> None:
        self._it = iter(items)

    def __aiter__(self) -> AsyncIterator[str]:
        return self

    async def __anext__(self) -> str:
        try:
            return next(self._it)
        except StopIteration:
            raise StopAsyncIteration from None

    def cancel(self) -> None:
        return None


class _Method:
    def __init__(self, fn: Any) -> None:
        self.remote = fn


class _StreamingModel:
    """Streams three deltas; with ``usage`` it honours include_usage as vLLM does.
    Records the request bodies it received."""

    def __init__(self, usage: bool) -> None:
        self.usage = usage
        self.bodies: list[dict[str, Any]] = []

    def options(self, **_: Any) -> _StreamingModel:
        return self

    @property
    def generate(self) -> _Method:
        def gen(kind: str, raw: bytes, carrier: Any) -> _Stream:
            body = json.loads(raw)
            self.bodies.append(body)
            items = [_event(_delta("a")), _event(_delta("b")) + _event(_delta("c"))]
            if self.usage and (body.get("stream_options") or {}).get("include_usage"):
                items.append(_event(USAGE))
            items.append("data: [DONE]\n\n")
            return _Stream(items)

        return _Method(gen)


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[Any]:
    url = f"sqlite:///{tmp_path / 'platform.db'}"
    p = Platform(url)
    p.create_tenant("acme", "enterprise")
    key = p.create_key("acme", "developer").secret_shown_once
    models: dict[str, _StreamingModel] = {}

    def start(usage: bool) -> TestClient:
        models["m"] = _StreamingModel(usage)
        cfg = ServeConfig(
            gateway=GatewayConfig(
                api_keys_env=None, platform=True, platform_store_url=url, auth_cache_s=0
            ),
            adapters_dir=str(tmp_path / "adapters"),
        )
        Gateway(cfg.model_dump_json(), llm_handles={"lumos-tiny": models["m"]})
        return TestClient(build_app())

    yield start, p, {"Authorization": f"Bearer {key}"}, models
    gw = _GATEWAY.get("gw")
    if gw is not None:
        gw.admission.close()
    _GATEWAY.clear()


def _chat(c: TestClient, headers: dict[str, str], **extra: Any) -> str:
    body = {
        "model": "lumos-tiny",
        "messages": [{"role": "user", "content": "hi"}],
        "stream": True,
        **extra,
    }
    r = c.post("/v1/chat/completions", json=body, headers=headers)
    assert r.status_code == 200, r.text
    return r.text


def _flush() -> None:
    asyncio.run(_GATEWAY["gw"].admission.flush())


def test_stream_is_metered_from_the_engines_usage_event_hidden_when_not_asked(
    setup: Any,
) -> None:
    start, p, headers, models = setup
    with start(usage=True) as c:
        text = _chat(c, headers)
        assert models["m"].bodies[0]["stream_options"] == {"include_usage": True}
        assert '"prompt_tokens"' not in text  # the client did not ask for usage
        assert text.count('"content"') == 3 and text.rstrip().endswith("data: [DONE]")
        # A client that asks for usage gets the event.
        text = _chat(c, headers, stream_options={"include_usage": True})
        assert '"prompt_tokens": 7' in text
        _flush()
    (day,) = p.usage("acme")
    assert (day.requests, day.prompt_tokens, day.completion_tokens) == (2, 14, 6)


def test_stream_without_a_usage_event_is_metered_by_its_content_deltas(setup: Any) -> None:
    start, p, headers, _ = setup
    with start(usage=False) as c:
        _chat(c, headers)
        _flush()
    (day,) = p.usage("acme")
    assert (day.requests, day.prompt_tokens, day.completion_tokens) == (1, 0, 3)


def test_stream_usage_counts_content_deltas_without_parsing_each_event() -> None:
    """The per-token fast path counts what the parsed path counted: non-empty content
    deltas and completion texts, one per choice, never reasoning, tool-call or empty
    deltas, and never a quote inside the text."""
    from lumos_ray.serve._gateway import _StreamUsage

    def choices(*items: dict[str, Any]) -> str:
        return "data: " + json.dumps({"choices": list(items)}, separators=(",", ":")) + "\n\n"

    events = [
        choices({"index": 0, "delta": {"role": "assistant", "content": ""}}),
        choices({"index": 0, "delta": {"content": 'say "content":"x"'}}),
        choices({"index": 0, "delta": {"reasoning_content": "hmm"}}),
        choices({"index": 0, "delta": {"tool_calls": [{"function": {"arguments": "{}"}}]}}),
        choices({"index": 0, "delta": {"content": "a"}}, {"index": 1, "delta": {"content": "b"}}),
        choices({"index": 0, "text": "c"}),
        choices({"index": 0, "text": ""}),
        "data: [DONE]\n\n",
    ]
    fast, parsed = _StreamUsage(hide=False), _StreamUsage(hide=False)
    for event in events:
        assert fast.feed(event) == event
        # The parsed path, as for an event that carries usage.
        parsed.feed(event.replace('{"choices"', '{"usage":null,"choices"'))
    assert fast.totals() == parsed.totals() == (0, 4)
