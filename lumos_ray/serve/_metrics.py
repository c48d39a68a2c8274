"""Prometheus metrics of the gateway, on its own registry (served at ``/metrics``).

An own ``CollectorRegistry`` (not the process default) so the gateway exposes exactly
its metrics, whatever else the replica process registers. Ray's own metrics (engine,
Serve) stay on Ray's metrics endpoint; these are the per-route view users bill and
alert on.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

__all__ = ["CONTENT_TYPE_LATEST", "GatewayMetrics"]


class GatewayMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "lumos_gateway_requests",
            "HTTP requests handled by the gateway.",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "lumos_gateway_request_seconds",
            "Time to the response head (streams: to the first chunk).",
            ["route"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=self.registry,
        )
        self.inflight = Gauge(
            "lumos_gateway_inflight_requests", "Requests in flight.", registry=self.registry
        )
        self.tokens = Counter(
            "lumos_gateway_tokens",
            "Tokens processed (non-streaming responses with usage).",
            ["model", "kind"],
            registry=self.registry,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
