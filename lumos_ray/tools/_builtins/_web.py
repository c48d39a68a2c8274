"""Web tools: HTTP GET/requests and page text extraction, under the network policy.

Private, loopback and link-local destinations are refused (after DNS resolution,
at connect time, and again on every redirect hop) unless the run sets
``settings.http.allow_private``. Bodies are read up to a size cap.
"""

from __future__ import annotations

import asyncio
import json
from html.parser import HTMLParser
from typing import Any, Literal

from lumos_ray.errors import ToolError
from lumos_ray.tools._builtins._safety import check_url, ctx_or_default, guarded_client
from lumos_ray.tools._context import ToolContext
from lumos_ray.tools._tool import tool

__all__ = [
    "TOOLS",
    "fetch_page",
    "html_to_text",
    "http_get",
    "http_request",
    "send_request",
    "url_parse",
]

_MAX_BYTES = 5_000_000
_MAX_REDIRECTS = 5


async def send_request(
    ctx: ToolContext | None,
    method: str,
    url: str,
    *,
    headers: dict[str, str] | None = None,
    params: dict[str, str] | None = None,
    json_body: Any = None,
    body: str | None = None,
    max_bytes: int = 1_000_000,
    timeout_s: float = 15.0,
) -> dict[str, Any]:
    """One HTTP exchange with policy checks on every hop and a capped body, ended after
    ``timeout_s`` in total (connect, every redirect hop and the body): httpx's own
    timeout applies to each read, so a server sending a byte every few seconds would
    otherwise keep the call going for as long as it likes."""
    c = ctx_or_default(ctx)
    timeout_s = max(0.1, min(timeout_s, float(c.setting("http", "max_timeout_s", 60.0))))
    try:
        async with asyncio.timeout(timeout_s):
            return await _exchange(
                c, method, url, headers, params, json_body, body, max_bytes, timeout_s
            )
    except TimeoutError:
        raise ToolError(
            f"{method} {url} timed out after {timeout_s:g}s (the limit covers the whole "
            "exchange: connect, redirects and reading the body); it was stopped"
        ) from None


async def _exchange(
    c: ToolContext,
    method: str,
    url: str,
    headers: dict[str, str] | None,
    params: dict[str, str] | None,
    json_body: Any,
    body: str | None,
    max_bytes: int,
    timeout_s: float,
) -> dict[str, Any]:
    import httpx

    allow_private = bool(c.setting("http", "allow_private", False))
    max_bytes = max(0, min(max_bytes, int(c.setting("http", "max_bytes", _MAX_BYTES))))
    current = url
    redirects: list[str] = []
    await check_url(url, allow_private)  # refuse early, before building a client
    async with guarded_client(c, timeout_s) as client:
        for _ in range(_MAX_REDIRECTS + 1):
            await check_url(current, allow_private)
            kwargs: dict[str, Any] = {"headers": headers, "params": params}
            if json_body is not None:
                kwargs["json"] = json_body
            elif body is not None:
                kwargs["content"] = body.encode()
            try:
                req = client.build_request(method, current, **kwargs)
                resp = await client.send(req, stream=True)
            except httpx.TimeoutException:
                raise ToolError(f"{method} {current} timed out after {timeout_s:g}s") from None
            except httpx.HTTPError as exc:
                raise ToolError(f"{method} {current} failed: {type(exc).__name__}: {exc}") from None
            try:
                if resp.is_redirect and "location" in resp.headers:
                    nxt = str(resp.url.join(resp.headers["location"]))
                    redirects.append(nxt)
                    if resp.status_code == 303 or (
                        resp.status_code in (301, 302) and method not in ("GET", "HEAD")
                    ):
                        method, json_body, body = "GET", None, None
                    params = None  # already part of the Location URL, if wanted
                    if headers and httpx.URL(nxt).netloc != httpx.URL(current).netloc:
                        # like browsers and httpx: credentials never follow to another host
                        headers = {
                            k: v
                            for k, v in headers.items()
                            if k.lower() not in ("authorization", "cookie", "proxy-authorization")
                        }
                    current = nxt
                    continue
                data = bytearray()
                truncated = False
                async for chunk in resp.aiter_bytes():
                    room = max_bytes - len(data)
                    if len(chunk) > room:
                        data.extend(chunk[:room])
                        truncated = True
                        break
                    data.extend(chunk)
                return _result(resp, bytes(data), truncated, redirects)
            finally:
                await resp.aclose()
    raise ToolError(f"too many redirects (more than {_MAX_REDIRECTS}) starting at {url}")


def _result(resp: Any, data: bytes, truncated: bool, redirects: list[str]) -> dict[str, Any]:
    ctype = resp.headers.get("content-type", "")
    text = data.decode(resp.encoding or "utf-8", errors="replace")
    out: dict[str, Any] = {
        "status": resp.status_code,
        "url": str(resp.url),
        "content_type": ctype,
        "headers": {
            k: v
            for k, v in resp.headers.items()
            if k.lower() in ("content-type", "content-length", "last-modified", "etag", "location")
        },
        "text": text,
        "truncated": truncated,
    }
    if redirects:
        out["redirects"] = redirects
    if "json" in ctype and not truncated:
        try:
            out["json"] = json.loads(text)
        except ValueError:
            pass
    return out


@tool
async def http_get(
    url: str,
    headers: dict[str, str] | None = None,
    max_bytes: int = 1_000_000,
    timeout_s: float = 15.0,
    ctx: ToolContext | None = None,
) -> dict[str, Any]:
    """Fetch a URL with HTTP GET and return status, headers and body text (JSON parsed).

    Args:
        url: An http:// or https:// URL on the public internet.
        headers: Extra request headers.
        max_bytes: Stop reading the body after this many bytes (result marked truncated).
        timeout_s: Time limit of the whole request (connect, redirects, body), in
            seconds.
    """
    return await send_request(
        ctx, "GET", url, headers=headers, max_bytes=max_bytes, timeout_s=timeout_s
    )


@tool
async def http_request(
    url: str,
    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"] = "GET",
    headers: dict[str, str] | None = None,
    params: dict[str, str] | None = None,
    json_body: Any = None,
    body: str | None = None,
    max_bytes: int = 1_000_000,
    timeout_s: float = 15.0,
    ctx: ToolContext | None = None,
) -> dict[str, Any]:
    """Send an HTTP request (any common method) and return status, headers and body.

    Args:
        url: An http:// or https:// URL on the public internet.
        method: HTTP method.
        headers: Extra request headers.
        params: Query-string parameters added to the URL.
        json_body: A JSON value sent as the request body (sets Content-Type).
        body: A raw text body (ignored when json_body is given).
        max_bytes: Stop reading the response body after this many bytes.
        timeout_s: Time limit of the whole request (connect, redirects, body), in
            seconds.
    """
    return await send_request(
        ctx,
        method,
        url,
        headers=headers,
        params=params,
        json_body=json_body,
        body=body,
        max_bytes=max_bytes,
        timeout_s=timeout_s,
    )


class _TextExtractor(HTMLParser):
    _SKIP = frozenset({"script", "style", "noscript", "template", "svg", "head"})
    _BLOCK = frozenset(
        {"p", "div", "br", "li", "ul", "ol", "tr", "table", "section", "article", "h1", "h2",
         "h3", "h4", "h5", "h6", "pre", "blockquote", "header", "footer", "nav", "main"}
    )  # fmt: skip

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.links: list[dict[str, str]] = []
        self.title = ""
        self._skip = 0
        self._in_title = False
        self._href: str | None = None
        self._link_text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "title":
            self._in_title = True
        elif tag in self._SKIP:
            self._skip += 1
        if tag in self._BLOCK:
            self.parts.append("\n")
        if tag == "a":
            self._href = dict(attrs).get("href")
            self._link_text = []

    def handle_endtag(self, tag: str) -> None:
        if tag == "title":
            self._in_title = False
        elif tag in self._SKIP and self._skip:
            self._skip -= 1
        if tag in self._BLOCK:
            self.parts.append("\n")
        if tag == "a" and self._href:
            self.links.append({"href": self._href, "text": " ".join(self._link_text).strip()})
            self._href = None

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self.title += data
            return
        if self._skip:
            return
        self.parts.append(data)
        if self._href is not None:
            self._link_text.append(data.strip())

    def text(self) -> str:
        raw = "".join(self.parts)
        lines = [" ".join(line.split()) for line in raw.splitlines()]
        out: list[str] = []
        for line in lines:
            if line or (out and out[-1]):
                out.append(line)
        return "\n".join(out).strip()


@tool
def html_to_text(html: str, max_links: int = 50) -> dict[str, Any]:
    """Extract the readable text, the title and the links of an HTML document.

    Args:
        html: The HTML source.
        max_links: At most this many links are returned.
    """
    p = _TextExtractor()
    p.feed(html)
    p.close()
    return {"title": p.title.strip(), "text": p.text(), "links": p.links[: max(0, max_links)]}


@tool
async def fetch_page(
    url: str, max_chars: int = 20_000, ctx: ToolContext | None = None
) -> dict[str, Any]:
    """Fetch a web page and return its title, readable text and links (scripts and styles removed).

    Args:
        url: An http:// or https:// URL on the public internet.
        max_chars: Truncate the extracted text to this many characters.
    """
    resp = await send_request(ctx, "GET", url, max_bytes=2_000_000)
    if resp["status"] >= 400:
        raise ToolError(f"GET {url} returned HTTP {resp['status']}")
    ctype = resp["content_type"]
    if "html" in ctype or resp["text"].lstrip()[:1] == "<":
        page = html_to_text.fn(resp["text"])
    else:
        page = {"title": "", "text": resp["text"], "links": []}
    text = page["text"]
    return {
        "url": resp["url"],
        "status": resp["status"],
        "title": page["title"],
        "text": text[:max_chars],
        "truncated": resp["truncated"] or len(text) > max_chars,
        "links": page["links"],
    }


@tool
def url_parse(url: str) -> dict[str, Any]:
    """Split a URL into scheme, host, port, path, query parameters and fragment.

    Args:
        url: The URL to parse.
    """
    from urllib.parse import parse_qs, urlsplit

    try:
        u = urlsplit(url)
        port = u.port
    except ValueError as exc:
        raise ToolError(f"invalid URL {url!r}: {exc}") from None
    return {
        "scheme": u.scheme,
        "host": u.hostname,
        "port": port,
        "path": u.path,
        "query": {k: v if len(v) > 1 else v[0] for k, v in parse_qs(u.query).items()},
        "fragment": u.fragment,
        "username": u.username,
    }


TOOLS = [http_get, http_request, fetch_page, html_to_text, url_parse]
