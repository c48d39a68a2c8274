"""The gateway replica's own HTTP listener: requests reach the engine without Serve's proxy.

Why: behind Ray Serve's HTTP proxy every request and every streamed chunk is
received by the proxy actor, sent to the gateway replica as a Ray call, and sent
again; on few cores that hop costs as much CPU as the gateway itself and caps
streaming at a third of what ``vllm serve`` delivers (``benchmarks/serve_vs_vllm.py``).
A gateway replica that runs a model's engine (``in_gateway``) therefore serves HTTP
itself, with uvicorn, as ``vllm serve`` does: one process from socket to engine.

Serve still owns the replica: it starts it, health-checks it (the engine included),
replaces it when it dies and stops it gracefully. The socket is bound with
``SO_REUSEPORT``, so several gateway replicas on one node share the port and the
kernel spreads connections over them, and a replacement replica can bind while the old
one drains. Ray Serve's own HAProxy ingress would remove the hop too, but it listens
for its stats and metrics on every interface at fixed ports; this listener binds only
``gateway.host``.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
from typing import Any

from lumos_ray.errors import ServeError

__all__ = ["DirectListener"]

log = logging.getLogger(__name__)

#: How long a started listener may take to accept connections before start fails.
_START_TIMEOUT_S = 30.0


def _bind(host: str, port: int) -> socket.socket:
    """A listening-ready TCP socket on ``host:port`` shared with sibling replicas."""
    try:
        family = socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
    except ValueError:  # a host name (e.g. localhost): IPv4
        family = socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ServeError(
            f"The gateway replica could not listen on {host}:{port}: {exc.strerror}.",
            fix="Another program holds that port without SO_REUSEPORT: stop it, or set "
            "gateway.port in the serve config to a free port.",
        ) from None
    return sock


class DirectListener:
    """A uvicorn server for ``app`` on this replica's event loop."""

    def __init__(self, server: Any, task: asyncio.Task[None], sock: socket.socket) -> None:
        self._server = server
        self._task = task
        self._sock = sock

    @classmethod
    async def start(
        cls,
        app: Any,
        host: str,
        port: int,
        *,
        limit_concurrency: int,
        certfile: str | None = None,
        keyfile: str | None = None,
        graceful_s: float = 10.0,
    ) -> DirectListener:
        """Bind, start serving, and return once connections are accepted.

        ``limit_concurrency``: connections plus in-flight requests above this get a 503
        from uvicorn at once (the bound Serve's ``max_ongoing_requests`` gave before)."""
        import uvicorn

        sock = _bind(host, port)
        config = uvicorn.Config(
            app,
            lifespan="off",  # the gateway's state is built by the replica, not by hooks
            access_log=False,
            log_level="warning",
            limit_concurrency=limit_concurrency,
            backlog=2048,
            ssl_certfile=certfile,
            ssl_keyfile=keyfile,
            timeout_graceful_shutdown=int(graceful_s),
            server_header=False,
        )
        server = uvicorn.Server(config)
        task = asyncio.get_running_loop().create_task(server.serve(sockets=[sock]))
        deadline = asyncio.get_running_loop().time() + _START_TIMEOUT_S
        while not server.started:
            if task.done():
                sock.close()
                exc = task.exception()
                raise ServeError(
                    f"The gateway replica's HTTP listener on {host}:{port} stopped at "
                    f"start: {exc or 'no error given'}.",
                    fix="Check gateway.host, gateway.port and the TLS files in the serve config.",
                )
            if asyncio.get_running_loop().time() > deadline:
                server.should_exit = True
                task.cancel()
                sock.close()
                raise ServeError(
                    f"The gateway replica's HTTP listener on {host}:{port} did not start "
                    f"in {_START_TIMEOUT_S:.0f} s.",
                    fix="The machine may be overloaded; Serve retries the replica.",
                )
            await asyncio.sleep(0.05)
        log.info("Gateway replica serving HTTP directly on %s:%s", host, port)
        return cls(server, task, sock)

    @property
    def serving(self) -> bool:
        """False once uvicorn's server task ended (it failed, or was stopped)."""
        return not self._task.done()

    async def stop(self) -> None:
        """Stop accepting, let open requests finish (uvicorn's graceful timeout), close."""
        self._server.should_exit = True
        with contextlib.suppress(Exception):
            await asyncio.wait_for(asyncio.shield(self._task), timeout=30)
        if not self._task.done():
            self._task.cancel()
        self._sock.close()
