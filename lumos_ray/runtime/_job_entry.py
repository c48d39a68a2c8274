"""The driver of every lumos Ray job: ``python -m lumos_ray.runtime._job_entry``.

Reads the call from ``LUMOS_JOB_CALL`` (``{"target": "module:function", "kwargs":
{...}}``), runs it inside a ``job.run`` span that continues the submitter's trace
(``TRACEPARENT``), and writes what it returned, or its error, as JSON to
``LUMOS_JOB_RESULT_PATH`` (see ``_jobs`` for why a file and its limits). The exit code
tells Ray whether the job succeeded; a LumosError is printed as its message and fix,
not a traceback.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import traceback
from typing import Any

from lumos_ray.errors import ConfigError, LumosError
from lumos_ray.runtime._jobs import (
    ENV_CALL,
    ENV_JOB_ID,
    ENV_RESULT_PATH,
    ENV_TRACEPARENT,
    ENV_TRACESTATE,
    write_result_file,
)

__all__ = ["main", "trace_carrier"]


def trace_carrier() -> dict[str, str]:
    """The submitter's trace context, as passed to this job (empty when none)."""
    carrier = {}
    if tp := os.environ.get(ENV_TRACEPARENT):
        carrier["traceparent"] = tp
        if ts := os.environ.get(ENV_TRACESTATE):
            carrier["tracestate"] = ts
    return carrier


def _load_call() -> tuple[Any, dict[str, Any]]:
    raw = os.environ.get(ENV_CALL)
    if not raw:
        raise ConfigError(f"{ENV_CALL} is not set: this module runs only as a lumos Ray job.")
    data = json.loads(raw)
    module, _, attr = str(data["target"]).partition(":")
    fn = getattr(importlib.import_module(module), attr)
    return fn, dict(data.get("kwargs") or {})


def main() -> int:
    from lumos_ray import tracing

    result_path = os.environ.get(ENV_RESULT_PATH)
    try:
        fn, kwargs = _load_call()
        with tracing.span(
            "job.run",
            trace_carrier() or None,
            target=f"{fn.__module__}:{fn.__qualname__}",
            job_id=os.environ.get(ENV_JOB_ID),
        ):
            result = fn(**kwargs)
        if hasattr(result, "model_dump"):  # a pydantic model: its JSON form
            result = result.model_dump(mode="json")
        envelope: dict[str, Any] = {"ok": True, "result": result}
        code = 0
    except LumosError as err:
        print(f"error: {err.message}\n  How to fix: {err.fix}", file=sys.stderr, flush=True)
        envelope, code = {"ok": False, "error": err.to_dict()}, 1
    except Exception as exc:
        traceback.print_exc()
        wrapped = LumosError(f"{type(exc).__name__}: {exc}")
        envelope, code = {"ok": False, "error": wrapped.to_dict()}, 1
    if result_path:
        write_result_file(result_path, envelope)
    _flush_spans()
    return code


def _flush_spans() -> None:
    """Export buffered spans before the driver exits (batch exporters would lose them)."""
    from opentelemetry import trace

    provider = trace.get_tracer_provider()
    flush = getattr(provider, "force_flush", None)
    if callable(flush):
        flush()


if __name__ == "__main__":
    sys.exit(main())
