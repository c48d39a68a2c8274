"""Tracing on the serving path: the HTTP ``traceparent`` in, spans out, cheap when off.

The gateway continues a caller's W3C trace context (``traceparent`` / ``tracestate``
headers) in a server span and hands the context to the model deployment as a carrier
dict (``lumos_ray.tracing.inject``); the model deployment's spans are its children.
When no tracer provider is installed (``LUMOS_TRACE_EXPORTER`` unset) every helper
here is a single ``isinstance`` check, so the fast path pays nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from opentelemetry import trace

from lumos_ray.tracing import extract, get_tracer, setup_tracing

__all__ = ["child_span", "server_span", "setup", "tracing_on"]


def setup() -> None:
    """Install this replica's exporter from ``LUMOS_TRACE_EXPORTER`` (idempotent)."""
    setup_tracing()


def tracing_on() -> bool:
    """Whether spans are recorded in this process (a real provider is installed)."""
    return not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)


def server_span(
    name: str, carrier: Mapping[str, str] | None, attributes: dict[str, Any]
) -> trace.Span:
    """Start (not enter) a SERVER span continuing ``carrier``'s trace.

    Started rather than made current so it can end after a stream is drained, in
    whatever task that happens; children take it explicitly (:func:`child_span`).
    """
    ctx = extract(carrier) if carrier else None
    return get_tracer().start_span(
        name, context=ctx, kind=trace.SpanKind.SERVER, attributes=attributes
    )


def child_span(parent: trace.Span, name: str, attributes: dict[str, Any]) -> trace.Span:
    """Start a span under ``parent`` (ended by the caller)."""
    return get_tracer().start_span(
        name, context=trace.set_span_in_context(parent), attributes=attributes
    )
