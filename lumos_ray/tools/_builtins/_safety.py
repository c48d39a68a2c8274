"""Shared safety rails for built-in tools: the workspace jail and the network policy.

Both are default-deny and relaxed only through ``ToolContext.settings``, so a run's
configuration, not a model's arguments, decides what a tool may touch.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import socket
from pathlib import Path
from typing import Any

from lumos_ray.errors import ToolError, ToolNotAllowedError
from lumos_ray.tools._context import ToolContext

__all__ = [
    "GuardedNetworkBackend",
    "check_url",
    "ctx_or_default",
    "ip_is_public",
    "resolve_in_workspace",
    "workspace_relative",
]


def ctx_or_default(ctx: ToolContext | None) -> ToolContext:
    return ctx if ctx is not None else ToolContext()


# --------------------------------------------------------------------------- files
def resolve_in_workspace(ctx: ToolContext | None, path: str) -> Path:
    """Resolve ``path`` against the workspace root and refuse anything outside it.

    The check runs on the fully resolved path (``..`` collapsed, every symlink
    followed), so neither traversal nor a symlink pointing out of the workspace
    escapes. Absolute paths are accepted only when they resolve inside the root.
    """
    root = ctx_or_default(ctx).workspace_root()
    if "\x00" in path:
        raise ToolNotAllowedError("path contains a NUL byte")
    p = Path(path).expanduser() if path.startswith("~") else Path(path)
    candidate = p if p.is_absolute() else root / p
    try:
        resolved = candidate.resolve()
    except (OSError, RuntimeError) as exc:  # symlink loops
        raise ToolError(f"cannot resolve path {path!r}: {exc}") from None
    if resolved != root and not resolved.is_relative_to(root):
        raise ToolNotAllowedError(
            f"path {path!r} resolves outside the workspace root ({root}); file tools only "
            "read and write inside the workspace"
        )
    return resolved


def workspace_relative(ctx: ToolContext | None, path: Path) -> str:
    root = ctx_or_default(ctx).workspace_root()
    rel = path.relative_to(root).as_posix()
    return rel or "."


# --------------------------------------------------------------------------- network
def ip_is_public(ip_text: str) -> bool:
    """True only for globally routable unicast addresses (IPv4-mapped IPv6 unwrapped)."""
    ip = ipaddress.ip_address(ip_text.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return bool(
        ip.is_global
        and not ip.is_private
        and not ip.is_loopback
        and not ip.is_link_local
        and not ip.is_multicast
        and not ip.is_reserved
        and not ip.is_unspecified
    )


async def _resolve(host: str, port: int) -> list[str]:
    try:
        ipaddress.ip_address(host.strip("[]"))
        return [host.strip("[]")]
    except ValueError:
        pass
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise ToolError(f"cannot resolve host {host!r}: {exc.strerror or exc}") from None
    return list(dict.fromkeys(info[4][0] for info in infos))


def _refuse(host: str, addr: str) -> ToolNotAllowedError:
    return ToolNotAllowedError(
        f"refused to connect to {host!r}: it resolves to {addr}, a private, loopback, "
        "link-local or otherwise non-public address. Set settings.http.allow_private=true "
        "to allow it."
    )


async def check_url(url: str, allow_private: bool) -> None:
    """Refuse non-http(s) URLs and, unless allowed, hosts that resolve to non-public IPs."""
    import httpx

    try:
        u = httpx.URL(url)
    except Exception as exc:
        raise ToolError(f"invalid URL {url!r}: {exc}") from None
    if u.scheme not in ("http", "https"):
        raise ToolNotAllowedError(f"only http and https URLs are allowed, got {u.scheme!r}")
    if not u.host:
        raise ToolError(f"URL {url!r} has no host")
    if allow_private:
        return
    port = u.port or (443 if u.scheme == "https" else 80)
    for addr in await _resolve(u.host, port):
        if not ip_is_public(addr):
            raise _refuse(u.host, addr)


class GuardedNetworkBackend:
    """httpcore network backend that re-checks the address at connect time.

    The check in :func:`check_url` alone leaves a gap (DNS rebinding: the name
    resolves to a public address for the check and to 127.0.0.1 for the connect).
    Here the connection goes to the very address that was checked; TLS still
    verifies the original host name (httpcore passes it as SNI separately).
    """

    def __init__(self, inner: Any, allow_private: bool) -> None:
        self._inner = inner
        self._allow_private = allow_private

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Any = None,
    ) -> Any:
        target = host
        if not self._allow_private:
            addrs = await _resolve(host, port)
            for addr in addrs:
                if not ip_is_public(addr):
                    raise _refuse(host, addr)
            target = addrs[0]
        return await self._inner.connect_tcp(
            target,
            port,
            timeout=timeout,
            local_address=local_address,
            socket_options=socket_options,
        )

    async def connect_unix_socket(self, *args: Any, **kwargs: Any) -> Any:
        raise ToolNotAllowedError("unix sockets are not allowed for HTTP tools")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


_SSL: Any = None


def _ssl_context() -> Any:
    """One verifying SSL context per process: building one loads the CA bundle (~0.3 s)."""
    global _SSL
    if _SSL is None:
        import ssl

        import certifi

        _SSL = ssl.create_default_context(cafile=certifi.where())
    return _SSL


def guarded_client(ctx: ToolContext | None, timeout_s: float) -> Any:
    """An httpx.AsyncClient whose every connection passes the network policy."""
    import httpx

    c = ctx_or_default(ctx)
    allow_private = bool(c.setting("http", "allow_private", False))
    transport = httpx.AsyncHTTPTransport(retries=0, verify=_ssl_context())
    pool = getattr(transport, "_pool", None)
    if pool is not None and hasattr(pool, "_network_backend"):
        pool._network_backend = GuardedNetworkBackend(pool._network_backend, allow_private)
    return httpx.AsyncClient(
        transport=transport,
        timeout=httpx.Timeout(timeout_s),
        follow_redirects=False,  # each hop is re-checked by the caller
        trust_env=bool(c.setting("http", "trust_env", False)),
        headers={"User-Agent": os.environ.get("LUMOS_HTTP_USER_AGENT", "lumos-ray-tools/0.1")},
    )
