"""Web and webhook tools against a real HTTP server on 127.0.0.1 (started by a fixture),
and the network policy that refuses private addresses unless allowed."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from lumos_ray.errors import ToolError, ToolNotAllowedError
from lumos_ray.tools._api import ToolContext, get_tool
from lumos_ray.tools._builtins._safety import guarded_client, ip_is_public

PAGE = b"""<html><head><title>Lumos page</title><style>p{color:red}</style></head>
<body><h1>Header</h1><script>var secret = 1;</script><p>First   paragraph.</p>
<a href="/next">Next page</a></body></html>"""


class _Handler(BaseHTTPRequestHandler):
    log: list[dict] = []

    def log_message(self, *args: object) -> None:  # keep test output clean
        pass

    def _send(self, code: int, body: bytes, ctype: str = "text/plain", **headers: str) -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in headers.items():
            self.send_header(k.replace("_", "-"), v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _record(self, body: bytes = b"") -> None:
        self.log.append(
            {"method": self.command, "path": self.path, "headers": dict(self.headers), "body": body}
        )

    def do_GET(self) -> None:
        self._record()
        p = self.path
        if p.startswith("/json"):
            self._send(200, json.dumps({"hello": "world", "path": p}).encode(), "application/json")
        elif p == "/big":
            self._send(200, b"x" * 100_000)
        elif p == "/redirect":
            self._send(302, b"", Location="/json?from=redirect")
        elif p == "/redirect-other-host":
            port = self.server.server_address[1]
            self._send(302, b"", Location=f"http://localhost:{port}/json?hop=2")
        elif p == "/redirect-ftp":
            self._send(302, b"", Location="ftp://example.com/file")
        elif p == "/loop":
            self._send(302, b"", Location="/loop")
        elif p == "/slow":
            time.sleep(3)
            self._send(200, b"late")
        elif p == "/page":
            self._send(200, PAGE, "text/html; charset=utf-8")
        else:
            self._send(404, b"not found")

    def do_POST(self) -> None:
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n)
        self._record(body)
        if self.path == "/see-other":
            self._send(303, b"", Location="/json?after=post")
            return
        echo = {"path": self.path, "body": json.loads(body or b"null")}
        self._send(201, json.dumps(echo).encode(), "application/json")


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[str, list[dict]]]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", _Handler.log
    finally:
        httpd.shutdown()
        httpd.server_close()
        t.join(timeout=5)


ALLOW = ToolContext(settings={"http": {"allow_private": True}})


async def call(name: str, args: dict, ctx: ToolContext | None = None):
    return await get_tool(name).acall(args, ctx)


async def test_http_get_reaches_a_local_server_when_private_is_allowed(server):
    base, _ = server
    r = await call("http_get", {"url": f"{base}/json"}, ALLOW)
    assert r["status"] == 200 and r["json"] == {"hello": "world", "path": "/json"}
    assert r["content_type"] == "application/json" and r["truncated"] is False
    missing = await call("http_get", {"url": f"{base}/nope"}, ALLOW)
    assert missing["status"] == 404 and missing["text"] == "not found"


@pytest.mark.parametrize(
    "host",
    [
        "127.0.0.1",
        "localhost",
        "[::1]",
        "0.0.0.0",
        "169.254.169.254",
        "10.1.2.3",
        "[::ffff:127.0.0.1]",
    ],
)
async def test_private_loopback_and_link_local_are_refused_by_default(server, host):
    base, log = server
    port = base.rsplit(":", 1)[1]
    before = len(log)
    with pytest.raises(ToolNotAllowedError, match="allow_private"):
        await call("http_get", {"url": f"http://{host}:{port}/json"})
    with pytest.raises(ToolNotAllowedError):
        await call("webhook_post", {"url": f"http://{host}:{port}/hook", "payload": {}})
    assert len(log) == before  # nothing reached the server


async def test_the_connect_time_guard_refuses_even_without_the_pre_check(server):
    """DNS rebinding defence: the transport itself re-checks the address it connects to."""
    base, log = server
    before = len(log)
    async with guarded_client(ToolContext(), timeout_s=5) as client:
        with pytest.raises(ToolNotAllowedError):
            await client.get(f"{base}/json")
    assert len(log) == before
    async with guarded_client(ALLOW, timeout_s=5) as client:
        assert (await client.get(f"{base}/json")).status_code == 200


def test_ip_classification():
    private = ["127.0.0.1", "10.0.0.1", "172.16.5.4", "192.168.1.1", "169.254.169.254", "::1"]
    private += ["fe80::1", "fc00::1", "0.0.0.0", "100.64.0.1", "224.0.0.1", "::ffff:10.0.0.1"]
    for ip in private:
        assert not ip_is_public(ip), ip
    for ip in ("8.8.8.8", "1.1.1.1", "2606:4700:4700::1111", "::ffff:8.8.8.8"):
        assert ip_is_public(ip), ip


async def test_redirects_are_followed_and_every_hop_is_checked(server):
    base, _ = server
    r = await call("http_get", {"url": f"{base}/redirect"}, ALLOW)
    assert r["status"] == 200 and r["json"]["path"] == "/json?from=redirect"
    assert r["redirects"] == [f"{base}/json?from=redirect"]
    with pytest.raises(ToolNotAllowedError, match="only http and https"):
        await call("http_get", {"url": f"{base}/redirect-ftp"}, ALLOW)
    with pytest.raises(ToolError, match="too many redirects"):
        await call("http_get", {"url": f"{base}/loop"}, ALLOW)
    # 303 after POST turns into a GET
    r = await call(
        "http_request", {"url": f"{base}/see-other", "method": "POST", "json_body": {}}, ALLOW
    )
    assert r["status"] == 200 and r["json"]["path"] == "/json?after=post"


async def test_credentials_do_not_follow_a_redirect_to_another_host(server):
    base, log = server
    r = await call(
        "http_get",
        {"url": f"{base}/redirect-other-host", "headers": {"Authorization": "Bearer s3cret"}},
        ALLOW,
    )
    assert r["status"] == 200 and r["json"]["path"] == "/json?hop=2"
    first, second = log[-2], log[-1]
    assert first["headers"].get("Authorization") == "Bearer s3cret"
    assert second["path"] == "/json?hop=2" and "Authorization" not in second["headers"]


async def test_non_http_schemes_are_refused():
    for url in ("file:///etc/passwd", "gopher://example.com/", "ftp://example.com/"):
        with pytest.raises(ToolNotAllowedError):
            await call("http_get", {"url": url}, ALLOW)


async def test_body_size_cap_and_timeout(server):
    base, _ = server
    r = await call("http_get", {"url": f"{base}/big", "max_bytes": 1000}, ALLOW)
    assert r["truncated"] is True and len(r["text"]) == 1000
    with pytest.raises(ToolError, match="timed out"):
        await call("http_get", {"url": f"{base}/slow", "timeout_s": 0.5}, ALLOW)


async def test_http_request_sends_json_params_and_headers(server):
    base, log = server
    r = await call(
        "http_request",
        {
            "url": f"{base}/things",
            "method": "POST",
            "params": {"q": "1"},
            "headers": {"X-Test": "yes"},
            "json_body": {"a": [1, 2]},
        },
        ALLOW,
    )
    assert r["status"] == 201 and r["json"] == {"path": "/things?q=1", "body": {"a": [1, 2]}}
    assert log[-1]["headers"]["X-Test"] == "yes"


async def test_webhook_post_forwards_the_idempotency_key(server):
    base, log = server
    ctx = ToolContext(idempotency_key="run-1/step-2", settings={"http": {"allow_private": True}})
    r = await call("webhook_post", {"url": f"{base}/hook", "payload": {"event": "done"}}, ctx)
    assert r["ok"] is True and r["response_json"]["body"] == {"event": "done"}
    assert log[-1]["headers"]["Idempotency-Key"] == "run-1/step-2"


async def test_fetch_page_and_html_to_text(server):
    base, _ = server
    page = await call("fetch_page", {"url": f"{base}/page"}, ALLOW)
    assert page["title"] == "Lumos page"
    assert page["text"] == "Header\n\nFirst paragraph.\n\nNext page"
    assert "secret" not in page["text"] and "color" not in page["text"]
    assert page["links"] == [{"href": "/next", "text": "Next page"}]
    with pytest.raises(ToolNotAllowedError):
        await call("fetch_page", {"url": f"{base}/page"})
