"""A run's trace as a span waterfall, from spans the gateway can read.

Spans are readable only when this process exports them as JSON lines
(``LUMOS_TRACE_EXPORTER=jsonl:DIR``, the exporter every lumos process on the machine
then shares): the page scans ``DIR/spans-*.jsonl`` for the run's trace id. With OTLP
or console export the spans live elsewhere (a collector, a log), so the page says
where they went instead. A trace id comes from the tenant's own run row, so a tenant
sees only traces of its runs.

Bounded: at most MAX_SCAN_BYTES read across the files (newest first), MAX_SPANS kept.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

__all__ = ["MAX_SCAN_BYTES", "MAX_SPANS", "exporter", "waterfall"]

MAX_SCAN_BYTES = 64 * 1024 * 1024
MAX_SPANS = 2000


def exporter() -> str:
    """This process's trace exporter setting ("" when tracing is off)."""
    return os.environ.get("LUMOS_TRACE_EXPORTER", "").strip()


def _spans(directory: Path, trace_id: str) -> list[dict[str, Any]]:
    needle = f'"trace_id": "{trace_id}"'.encode()
    files = sorted(directory.glob("spans-*.jsonl"), key=lambda f: f.stat().st_mtime, reverse=True)
    out: list[dict[str, Any]] = []
    budget = MAX_SCAN_BYTES
    for f in files:
        if budget <= 0 or len(out) >= MAX_SPANS:
            break
        try:
            with open(f, "rb") as fh:
                for line in fh:
                    budget -= len(line)
                    if budget <= 0:
                        break
                    if needle in line:
                        try:
                            span = json.loads(line)
                        except ValueError:
                            continue
                        if isinstance(span, dict) and span.get("trace_id") == trace_id:
                            out.append(span)
                            if len(out) >= MAX_SPANS:
                                break
        except OSError:
            continue
    return out


def waterfall(trace_id: str) -> dict[str, Any]:
    """``{"source", "readable", "spans": [...]}``: spans in start order with depth,
    offset and width (percent of the trace), duration (ms) and attributes."""
    spec = exporter()
    if not spec.startswith("jsonl:"):
        return {"source": spec or "none", "readable": False, "spans": []}
    spans = [s for s in _spans(Path(spec[6:]), trace_id) if s.get("start") and s.get("end")]
    if not spans:
        return {"source": spec, "readable": True, "spans": []}
    by_id = {s["span_id"]: s for s in spans}

    def depth(s: dict[str, Any]) -> int:
        d, cur = 0, s
        while cur.get("parent_id") in by_id and d < 50:
            cur = by_id[cur["parent_id"]]
            d += 1
        return d

    t0 = min(int(s["start"]) for s in spans)
    t1 = max(int(s["end"]) for s in spans)
    total = max(t1 - t0, 1)
    rows = []
    for s in sorted(spans, key=lambda s: (int(s["start"]), depth(s))):
        start, end = int(s["start"]), int(s["end"])
        attrs = s.get("attributes") if isinstance(s.get("attributes"), dict) else {}
        rows.append(
            {
                "name": str(s.get("name"))[:200],
                "depth": min(depth(s), 12),
                "status": str(s.get("status") or ""),
                "duration_ms": round((end - start) / 1e6, 3),
                "offset_pct": round(100 * (start - t0) / total, 2),
                "width_pct": max(round(100 * (end - start) / total, 2), 0.3),
                "attributes": json.dumps(attrs, default=str, ensure_ascii=False)[:2000],
            }
        )
    return {
        "source": spec,
        "readable": True,
        "spans": rows,
        "total_ms": round(total / 1e6, 3),
        "truncated": len(spans) >= MAX_SPANS,
    }
