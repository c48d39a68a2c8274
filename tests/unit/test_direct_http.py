"""The gateway replica's own HTTP listener (``serve/_direct_http.py``) and when the serve
config turns it on (``gateway.direct_http``). No Ray: the listener is plain uvicorn on
127.0.0.1, exercised with real HTTP."""

from __future__ import annotations

import asyncio
import os
import socket

import httpx
import pytest
from fastapi import FastAPI

from lumos_ray.errors import ConfigError, ServeError
from lumos_ray.serve._config import ServeConfig
from lumos_ray.serve._direct_http import DirectListener


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _app() -> FastAPI:
    app = FastAPI()

    @app.get("/pid")
    async def pid() -> dict[str, int]:
        return {"pid": os.getpid()}

    return app


async def _get(url: str) -> httpx.Response:
    async with httpx.AsyncClient(timeout=10) as client:
        return await client.get(url)


def test_listener_serves_the_app_and_stops() -> None:
    port = _free_port()

    async def scenario() -> None:
        listener = await DirectListener.start(_app(), "127.0.0.1", port, limit_concurrency=8)
        r = await _get(f"http://127.0.0.1:{port}/pid")
        assert r.status_code == 200 and r.json() == {"pid": os.getpid()}
        assert listener.serving
        await listener.stop()
        assert not listener.serving
        with pytest.raises(httpx.ConnectError):
            await _get(f"http://127.0.0.1:{port}/pid")

    asyncio.run(scenario())


def test_two_replicas_share_one_port() -> None:
    """Sibling gateway replicas on a node (and a replacement starting while the old one
    drains) bind the same port; both answer."""
    port = _free_port()

    async def scenario() -> None:
        a = await DirectListener.start(_app(), "127.0.0.1", port, limit_concurrency=8)
        b = await DirectListener.start(_app(), "127.0.0.1", port, limit_concurrency=8)
        try:
            await a.stop()
            r = await _get(f"http://127.0.0.1:{port}/pid")  # b alone still serves
            assert r.status_code == 200
        finally:
            await b.stop()

    asyncio.run(scenario())


def test_a_port_held_by_another_program_is_a_clear_error() -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))  # no SO_REUSEPORT: nobody may share it
        holder.listen()
        port = holder.getsockname()[1]

        async def scenario() -> None:
            await DirectListener.start(_app(), "127.0.0.1", port, limit_concurrency=8)

        with pytest.raises(ServeError) as exc:
            asyncio.run(scenario())
    assert f"127.0.0.1:{port}" in str(exc.value)
    assert "gateway.port" in (exc.value.fix or "")


def _cfg(**gateway: object) -> dict[str, object]:
    return {"gateway": {"port": 8123, **gateway}}


def test_direct_http_defaults_on_for_one_fixed_model_in_the_gateway() -> None:
    cfg = ServeConfig.model_validate(_cfg())
    assert cfg.gateway_model() is not None
    assert cfg.gateway.direct_http is True


def test_direct_http_defaults_off_with_autoscaling_no_hosted_model_or_port_0() -> None:
    scaled = ServeConfig.model_validate(
        {**_cfg(), "models": [{"autoscaling": {"min_replicas": 1, "max_replicas": 2}}]}
    )
    assert scaled.gateway.direct_http is False
    handle_path = ServeConfig.model_validate({**_cfg(), "models": [{"in_gateway": False}]})
    assert handle_path.gateway.direct_http is False
    any_port = ServeConfig.model_validate({"gateway": {"port": 0}})
    assert any_port.gateway.direct_http is False


@pytest.mark.parametrize(
    ("extra", "models", "needle"),
    [
        ({}, [{"in_gateway": False}], "needs a model in the gateway"),
        ({}, [{"autoscaling": {"min_replicas": 1, "max_replicas": 2}}], "autoscaling"),
        ({"port": 0}, None, "fixed gateway.port"),
    ],
)
def test_direct_http_true_where_it_cannot_work_is_refused(
    extra: dict[str, object], models: list[dict[str, object]] | None, needle: str
) -> None:
    data: dict[str, object] = {"gateway": {"port": 8123, "direct_http": True, **extra}}
    if models is not None:
        data["models"] = models
    with pytest.raises((ValueError, ConfigError)) as exc:
        ServeConfig.model_validate(data)
    assert needle in str(exc.value)
