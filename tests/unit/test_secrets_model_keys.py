"""Model API keys go only to the base URLs their environment binds them to.

A real HTTP server on 127.0.0.1 records the Authorization header of every request; the
model is built the way a workflow's YAML builds it (``build_model`` from a config
dict), so the base URL is the workflow's choice and the key is the environment's.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from lumos_ray.actors._keys import choose_key, url_allowed
from lumos_ray.actors.models import OpenAIChatModel, build_model
from lumos_ray.errors import ConfigError, ModelError

SECRET = "sk-test-secret-0123456789abcdef"
_ENV_VARS = (
    "OPENAI_API_KEY",
    "LUMOS_API_KEY",
    "OPENAI_BASE_URL",
    "LUMOS_OPENAI_BASE_URL",
    "LUMOS_MODEL_KEY_URLS",
    "MY_SERVICE_KEY",
)


class _Recorder(BaseHTTPRequestHandler):
    seen: list[str | None]
    status = 200
    location = ""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        type(self).seen.append(self.headers.get("Authorization"))
        if self.status in (301, 302, 307, 308):
            self.send_response(self.status)
            self.send_header("Location", self.location)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if self.status == 401:
            body = b'{"error": {"message": "missing key"}}'
        else:
            body = json.dumps(
                {
                    "model": "m",
                    "choices": [{"message": {"content": "ok"}, "finish_reason": "stop"}],
                }
            ).encode()
        self.send_response(self.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


def _serve(status: int = 200, location: str = "") -> tuple[ThreadingHTTPServer, type[_Recorder]]:
    handler = type("Handler", (_Recorder,), {"seen": [], "status": status, "location": location})
    srv = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv, handler


@pytest.fixture
def server() -> Iterator[tuple[str, type[_Recorder]]]:
    srv, handler = _serve()
    yield f"http://127.0.0.1:{srv.server_address[1]}/v1", handler
    srv.shutdown()
    srv.server_close()


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in _ENV_VARS:
        monkeypatch.delenv(var, raising=False)


def _chat(model: Any) -> Any:
    async def go() -> Any:
        try:
            return await model.chat([{"role": "user", "content": "hi"}])
        finally:
            await model.aclose()

    return asyncio.run(go())


def _workflow_model(base_url: str, **extra: Any) -> Any:
    """The model as a workflow's YAML names it."""
    return build_model({"provider": "openai", "name": "m", "base_url": base_url, **extra})


def test_openai_key_is_not_sent_to_a_base_url_a_workflow_names(
    server: tuple[str, type[_Recorder]], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, rec = server
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    monkeypatch.setenv("LUMOS_API_KEY", SECRET + "-lumos")
    assert _chat(_workflow_model(url)).content == "ok"  # a keyless server still works
    assert rec.seen == [None]


def test_a_named_key_env_that_is_not_bound_is_refused_before_any_request(
    server: tuple[str, type[_Recorder]], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, rec = server
    monkeypatch.setenv("MY_SERVICE_KEY", SECRET)
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    for env_name in ("MY_SERVICE_KEY", "OPENAI_API_KEY"):
        with pytest.raises(ConfigError) as err:
            _chat(_workflow_model(url, api_key_env=env_name))
        assert env_name in err.value.message and url in err.value.message
        assert "LUMOS_MODEL_KEY_URLS" in (err.value.fix or "")
        assert SECRET not in str(err.value) + (err.value.fix or "")
    assert rec.seen == []


def test_a_key_bound_in_lumos_model_key_urls_is_sent_there(
    server: tuple[str, type[_Recorder]], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, rec = server
    monkeypatch.setenv("MY_SERVICE_KEY", SECRET)
    monkeypatch.setenv("LUMOS_MODEL_KEY_URLS", f"OTHER=https://x.example/v1;MY_SERVICE_KEY={url}")
    _chat(_workflow_model(url, api_key_env="MY_SERVICE_KEY"))
    # any port on a host, when the operator says so
    port_any = url.replace(url.split(":")[2].split("/")[0], "*")
    monkeypatch.setenv("LUMOS_MODEL_KEY_URLS", f"MY_SERVICE_KEY={port_any}")
    _chat(_workflow_model(url, api_key_env="MY_SERVICE_KEY"))
    assert rec.seen == [f"Bearer {SECRET}", f"Bearer {SECRET}"]


def test_the_operators_base_url_variable_binds_the_implicit_key(
    server: tuple[str, type[_Recorder]], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, rec = server
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    monkeypatch.setenv("OPENAI_BASE_URL", url)
    _chat(build_model("m"))  # no base_url: the operator's
    assert rec.seen == [f"Bearer {SECRET}"]


def test_a_401_says_which_key_was_withheld_without_showing_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    srv, rec = _serve(status=401)
    url = f"http://127.0.0.1:{srv.server_address[1]}/v1"
    try:
        monkeypatch.setenv("OPENAI_API_KEY", SECRET)
        with pytest.raises(ModelError) as err:
            _chat(_workflow_model(url))
    finally:
        srv.shutdown()
        srv.server_close()
    assert rec.seen == [None]
    msg = err.value.message
    assert "OPENAI_API_KEY" in msg and "LUMOS_MODEL_KEY_URLS" in msg and SECRET not in msg


def test_a_redirect_is_not_followed_so_the_key_stays_with_its_server(
    server: tuple[str, type[_Recorder]], monkeypatch: pytest.MonkeyPatch
) -> None:
    other_url, other = server
    srv, rec = _serve(status=307, location=other_url + "/chat/completions")
    url = f"http://127.0.0.1:{srv.server_address[1]}/v1"
    try:
        with pytest.raises(ModelError) as err:
            _chat(OpenAIChatModel("m", url, api_key=SECRET))
    finally:
        srv.shutdown()
        srv.server_close()
    assert rec.seen == [f"Bearer {SECRET}"] and other.seen == []
    assert "307" in err.value.message and "redirect" in err.value.message


@pytest.mark.parametrize(
    ("base_url", "allowed"),
    [
        ("https://api.openai.com/v1", True),
        ("https://API.openai.com:443/v1/", True),
        ("https://api.openai.com/v1/sub", True),
        ("http://api.openai.com/v1", False),  # scheme downgrade
        ("https://api.openai.com/v10", False),  # not below /v1
        ("https://api.openai.com.evil.example/v1", False),
        ("https://api.openai.com@evil.example/v1", False),  # userinfo trick
        ("https://evil.example/v1?x=https://api.openai.com/v1", False),
        ("https://api.openai.com:8443/v1", False),
        ("not a url", False),
    ],
)
def test_openai_key_default_binding_matches_only_api_openai_com(
    base_url: str, allowed: bool
) -> None:
    assert url_allowed("OPENAI_API_KEY", base_url, env={}) is allowed
    assert (choose_key(base_url, env={"OPENAI_API_KEY": SECRET}).key == SECRET) is allowed


@pytest.mark.parametrize("value", ["MY_KEY", "=https://x/v1", "MY_KEY=ftp://x", "K=http://h:p/"])
def test_a_malformed_binding_is_a_config_error(value: str) -> None:
    with pytest.raises(ConfigError) as err:
        choose_key("http://h/v1", api_key_env="K", env={"K": SECRET, "LUMOS_MODEL_KEY_URLS": value})
    assert "LUMOS_MODEL_KEY_URLS" in err.value.message


def test_a_refusal_never_shows_a_password_in_a_url() -> None:
    env = {"K": SECRET, "LUMOS_MODEL_KEY_URLS": "K=https://u:hunter2@proxy.example/v1"}
    with pytest.raises(ConfigError) as err:
        choose_key("https://u:pw2@other.example/v1", api_key_env="K", env=env)
    assert "hunter2" not in err.value.message and "pw2" not in err.value.message
    assert "proxy.example" in err.value.message and "***@" in err.value.message
