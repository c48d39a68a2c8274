"""OpenTelemetry tracing: one trace per run, across the client, the runner and agents.

Each process configures its exporter once from ``LUMOS_TRACE_EXPORTER`` (the runtime
forwards the driver's value to every Ray worker), and a W3C context carrier (a plain
dict) travels with every actor call so spans in other processes join the run's trace.

Exporters: ``console``, ``otlp`` / ``otlp:URL`` (OTLP over HTTP), ``jsonl:DIR`` (one
JSON line per finished span, a file per process: a trace that crosses processes can
be read back from one directory), ``memory`` (in-process, for unit tests). Unset or
``none``: OpenTelemetry's no-op tracer, so tracing costs nothing.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SimpleSpanProcessor,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from lumos_ray._files import open_private_append, private_dir
from lumos_ray.errors import ConfigError

__all__ = [
    "JsonlSpanExporter",
    "extract",
    "get_tracer",
    "inject",
    "memory_exporter",
    "read_jsonl_spans",
    "setup_tracing",
    "span",
]

_lock = threading.Lock()
_configured_for: str | None = None
_memory: InMemorySpanExporter | None = None


class JsonlSpanExporter(SpanExporter):
    """Append finished spans as JSON lines to ``DIR/spans-<pid>.jsonl``."""

    def __init__(self, directory: str | Path) -> None:
        self._dir = Path(directory)
        # spans carry prompts and tool arguments: the folder lumos creates is 0700
        private_dir(self._dir, tighten_existing=False)
        self._lock = threading.Lock()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        lines = []
        for s in spans:
            ctx = s.get_span_context()
            if ctx is None:  # an SDK span always has one; nothing to identify it by otherwise
                continue
            lines.append(
                json.dumps(
                    {
                        "name": s.name,
                        "trace_id": f"{ctx.trace_id:032x}",
                        "span_id": f"{ctx.span_id:016x}",
                        "parent_id": f"{s.parent.span_id:016x}" if s.parent else None,
                        "start": s.start_time,
                        "end": s.end_time,
                        "pid": os.getpid(),
                        "status": s.status.status_code.name,
                        "attributes": dict(s.attributes or {}),
                    },
                    default=str,
                )
            )
        path = self._dir / f"spans-{os.getpid()}.jsonl"
        with self._lock, open_private_append(path) as f:  # 0600
            f.write(("\n".join(lines) + "\n").encode())
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:  # nothing buffered
        return None


def read_jsonl_spans(directory: str | Path) -> list[dict[str, Any]]:
    """All spans written by :class:`JsonlSpanExporter` in ``directory``."""
    out: list[dict[str, Any]] = []
    for f in sorted(Path(directory).glob("spans-*.jsonl")):
        out.extend(json.loads(line) for line in f.read_text().splitlines() if line.strip())
    return out


def setup_tracing(exporter: str | None = None, *, service: str = "lumos_ray") -> None:
    """Install a tracer provider for ``exporter`` (default: $LUMOS_TRACE_EXPORTER).

    Idempotent per process; OpenTelemetry allows one global provider, so a second,
    different exporter in the same process is an error rather than silently ignored.
    Tracing that was off (no provider installed) may still be turned on later, e.g.
    once a process has read its configuration.
    """
    global _configured_for, _memory
    spec = exporter if exporter is not None else os.environ.get("LUMOS_TRACE_EXPORTER", "")
    spec = spec.strip()
    with _lock:
        if _configured_for is not None and not (spec and _configured_for in ("", "none")):
            if spec and spec != _configured_for:
                raise ConfigError(
                    f"Tracing is already configured with {_configured_for!r} in this process; "
                    f"cannot switch to {spec!r}."
                )
            return
        _configured_for = spec
        if spec in ("", "none"):
            return
        provider = TracerProvider(resource=Resource.create({"service.name": service}))
        if spec == "console":
            provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
        elif spec == "memory":
            _memory = InMemorySpanExporter()
            provider.add_span_processor(SimpleSpanProcessor(_memory))
        elif spec.startswith("jsonl:"):
            provider.add_span_processor(SimpleSpanProcessor(JsonlSpanExporter(spec[6:])))
        elif spec == "otlp" or spec.startswith("otlp:"):
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            endpoint = spec[5:] or None
            provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
        else:
            raise ConfigError(
                f"Unknown trace exporter {spec!r}.",
                fix="Use one of: none, console, otlp, otlp:URL, jsonl:DIR, memory.",
            )
        trace.set_tracer_provider(provider)


def memory_exporter() -> InMemorySpanExporter | None:
    """The in-memory exporter when tracing was set up with ``memory``."""
    return _memory


def get_tracer() -> trace.Tracer:
    if _configured_for is None:
        setup_tracing()
    return trace.get_tracer("lumos_ray")


def inject() -> dict[str, str]:
    """The current trace context as a carrier dict to send along with a Ray call."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier


def extract(carrier: Mapping[str, str] | None) -> otel_context.Context:
    return propagate.extract(dict(carrier or {}))


@contextmanager
def span(
    name: str, carrier: Mapping[str, str] | None = None, **attributes: Any
) -> Iterator[trace.Span]:
    """A span, as a child of ``carrier``'s context when given (another process)."""
    if _configured_for in ("", "none") and trace._TRACER_PROVIDER is None:
        # Tracing off and nobody installed a provider: skip OpenTelemetry entirely.
        yield trace.INVALID_SPAN
        return
    tracer = get_tracer()
    ctx = extract(carrier) if carrier else None
    attrs = {k: v for k, v in attributes.items() if v is not None}
    with tracer.start_as_current_span(name, context=ctx, attributes=attrs) as s:
        yield s
