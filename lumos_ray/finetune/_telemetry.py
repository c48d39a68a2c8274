"""Progress of a running job: a JSONL file next to its checkpoints, and OpenTelemetry
metrics from the ``lumos_ray.finetune`` meter.

The file is how progress leaves the Ray Train workers: the job entrypoint tails it
into the job's log (``LUMOS_PROGRESS {...}`` lines), and the CLI draws its progress
bar from those lines, so a client that attaches late or reconnects sees the same
thing.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

__all__ = ["PROGRESS_PREFIX", "ProgressWriter", "metrics_provider", "parse_progress_line"]

PROGRESS_PREFIX = "LUMOS_PROGRESS "


class ProgressWriter:
    """Rank 0's sink for progress events (file + OpenTelemetry instruments)."""

    def __init__(self, path: str | Path, job_name: str, meter: Any | None = None) -> None:
        from opentelemetry import metrics

        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._attrs = {"lumos.finetune.job": job_name}
        self._last_step = 0
        # The global meter provider's exporter decides where metrics go (none = no-op).
        meter = meter or metrics.get_meter("lumos_ray.finetune")
        self._steps = meter.create_counter(
            "lumos.finetune.steps", unit="{step}", description="Optimizer steps done."
        )
        self._tokens = meter.create_counter(
            "lumos.finetune.tokens", unit="{token}", description="Training tokens processed."
        )
        self._loss = meter.create_histogram(
            "lumos.finetune.loss", description="Training loss per optimizer step."
        )
        self._eval_loss = meter.create_histogram(
            "lumos.finetune.eval_loss", description="Held-out loss at each evaluation."
        )
        self._tps = meter.create_histogram(
            "lumos.finetune.tokens_per_second", unit="{token}/s", description="Throughput."
        )
        self._eta = meter.create_histogram(
            "lumos.finetune.eta_seconds", unit="s", description="Estimated time left."
        )

    def _write(self, event: dict[str, Any]) -> None:
        event = {"time": time.time(), **event}
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(event) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def step(
        self,
        *,
        step: int,
        total_steps: int,
        loss: float,
        tokens: int,  # since the previous step event
        tokens_per_s: float,
        eta_s: float,
        lr: float,
        epoch: int,
    ) -> None:
        # Step events may be sparse (log_every_steps): count the steps since the last one.
        self._steps.add(max(0, step - self._last_step), self._attrs)
        self._last_step = step
        self._tokens.add(tokens, self._attrs)
        self._loss.record(loss, self._attrs)
        self._tps.record(tokens_per_s, self._attrs)
        self._eta.record(eta_s, self._attrs)
        self._write(
            {
                "event": "step",
                "step": step,
                "total_steps": total_steps,
                "loss": loss,
                "tokens_per_s": tokens_per_s,
                "eta_s": eta_s,
                "lr": lr,
                "epoch": epoch,
            }
        )

    def eval(self, *, step: int, eval_loss: float) -> None:
        self._eval_loss.record(eval_loss, self._attrs)
        self._write({"event": "eval", "step": step, "eval_loss": eval_loss})

    def start(self, *, step: int, **fields: Any) -> None:
        """A (re)started run: steps before ``step`` were counted by the killed run."""
        self._last_step = step
        self.event("start", step=step, **fields)

    def event(self, name: str, **fields: Any) -> None:
        self._write({"event": name, **fields})


def parse_progress_line(line: str) -> dict[str, Any] | None:
    """The progress event in one log line, or None for other output."""
    idx = line.find(PROGRESS_PREFIX)
    if idx < 0:
        return None
    try:
        data = json.loads(line[idx + len(PROGRESS_PREFIX) :])
    except json.JSONDecodeError:
        return None
    return data if isinstance(data, dict) else None


def metrics_provider(exporter: str | None) -> Any | None:
    """A MeterProvider for a job's rank-0 worker, or None to use the global one.

    ``exporter``: ``console``, ``otlp`` / ``otlp:URL`` (OTLP over HTTP) or
    ``jsonl:DIR`` (one JSON document per export in ``DIR/metrics-<pid>.jsonl``).
    A provider of our own, not the global one, because a worker process may be reused
    and the global provider can only be set once.
    """
    if not exporter or exporter == "none":
        return None
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import (
        ConsoleMetricExporter,
        MetricExporter,
        MetricExportResult,
        PeriodicExportingMetricReader,
    )
    from opentelemetry.sdk.resources import Resource

    class _JsonlExporter(MetricExporter):
        def __init__(self, directory: str) -> None:
            super().__init__()
            self.path = Path(directory) / f"metrics-{os.getpid()}.jsonl"
            self.path.parent.mkdir(parents=True, exist_ok=True)

        def export(self, metrics_data: Any, timeout_millis: float = 10_000, **_: Any) -> Any:
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(json.dumps(json.loads(metrics_data.to_json())) + "\n")
            return MetricExportResult.SUCCESS

        def force_flush(self, timeout_millis: float = 10_000) -> bool:
            return True

        def shutdown(self, timeout_millis: float = 30_000, **_: Any) -> None:
            return None

    if exporter == "console":
        exp: Any = ConsoleMetricExporter()
    elif exporter.startswith("otlp"):
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter

        url = exporter.partition(":")[2] or None
        exp = OTLPMetricExporter(endpoint=url) if url else OTLPMetricExporter()
    elif exporter.startswith("jsonl:"):
        exp = _JsonlExporter(exporter[len("jsonl:") :])
    else:
        from lumos_ray.errors import ConfigError

        raise ConfigError(
            f"unknown metrics exporter {exporter!r}",
            fix="Use console, otlp, otlp:URL or jsonl:DIR (or leave it unset).",
        )
    reader = PeriodicExportingMetricReader(exp, export_interval_millis=10_000)
    return MeterProvider(
        metric_readers=[reader],
        resource=Resource.create({"service.name": "lumos_ray.finetune"}),
    )
