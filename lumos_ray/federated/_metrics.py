"""Per-round metrics: the run's directory under LUMOS_HOME, the run store's event log,
and OpenTelemetry metrics.

- ``<LUMOS_HOME>/federated/<run>/status.json`` + ``rounds.jsonl``: what ``lumos
  federate status`` reads. A file works everywhere the ServerApp runs, including the
  SuperLink's subprocess, which has no Ray connection.
- The run store (``lumos_ray.store._sql``): events ``federated.started`` /
  ``federated.round`` / ``federated.finished`` under run id ``federated:<run>``. Only
  events, not a ``runs`` row: a row marked running would be adopted by the workflow
  runner's lease takeover, which cannot execute a Flower run.
- OpenTelemetry meter ``lumos_ray.federated``.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "RoundRecord",
    "RunRecorder",
    "federated_home",
    "list_federated_runs",
    "read_federated_run",
]


def federated_home() -> Path:
    """<LUMOS_HOME>/federated: one directory per run."""
    return Path(os.environ.get("LUMOS_HOME", ".lumos")).expanduser().resolve() / "federated"


@dataclass
class RoundRecord:
    round: int
    sites_sampled: int
    sites_replied: int
    sites_failed: int
    sites_rejected: int
    bytes_sent: int
    bytes_received: int
    duration_s: float
    train_loss: float | None = None
    eval_loss: float | None = None
    eval_accuracy: float | None = None
    global_loss: float | None = None
    global_accuracy: float | None = None
    finished_at: float = field(default_factory=time.time)
    extra: dict[str, Any] = field(default_factory=dict)


class RunRecorder:
    """Writes status.json + rounds.jsonl for one run and mirrors them to OTel."""

    def __init__(self, run_name: str, *, config: dict[str, Any], mode: str) -> None:
        self.run_name = run_name
        self.dir = federated_home() / run_name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.rounds: list[RoundRecord] = []
        self._status: dict[str, Any] = {
            "run": run_name,
            "mode": mode,
            "state": "running",
            "started_at": time.time(),
            "config": config,
            "rounds_done": 0,
        }
        (self.dir / "rounds.jsonl").write_text("")
        self._write_status()
        self._otel = _Instruments.get()
        self._store_ok = True
        self._event("federated.started", {"mode": mode, "config": config})

    def _event(self, kind: str, data: dict[str, Any]) -> None:
        """Best effort: a broken store must not stop a federated run."""
        if not self._store_ok:
            return
        try:
            from lumos_ray.store._sql import open_store

            open_store().append_events(f"federated:{self.run_name}", [(kind, data)])
        except Exception as exc:
            self._store_ok = False
            print(
                f"[lumos federate] run store unavailable ({exc}); metrics stay in {self.dir}",
                flush=True,
            )

    def _write_status(self) -> None:
        tmp = self.dir / "status.json.tmp"
        tmp.write_text(json.dumps(self._status, indent=2, default=str))
        tmp.replace(self.dir / "status.json")

    def record(self, rec: RoundRecord) -> None:
        self.rounds.append(rec)
        with (self.dir / "rounds.jsonl").open("a") as f:
            f.write(json.dumps(asdict(rec)) + "\n")
        self._status["rounds_done"] = rec.round
        self._status["last_round"] = asdict(rec)
        self._write_status()
        self._otel.record(self.run_name, rec)
        self._event("federated.round", asdict(rec))
        print(_progress_line(rec), flush=True)

    def set_initial(self, metrics: dict[str, float]) -> None:
        self._status["initial"] = metrics
        self._status["initial_at"] = time.time()
        self._write_status()

    def finish(self, state: str, **extra: Any) -> None:
        self._status.update(state=state, finished_at=time.time(), **extra)
        self._write_status()
        self._event("federated.finished", {"state": state, **extra})


def _progress_line(rec: RoundRecord) -> str:
    parts = [f"[lumos federate] round {rec.round}:"]
    if rec.global_loss is not None:
        parts.append(f"global_loss={rec.global_loss:.4f}")
    if rec.global_accuracy is not None:
        parts.append(f"global_acc={rec.global_accuracy:.3f}")
    if rec.train_loss is not None:
        parts.append(f"train_loss={rec.train_loss:.4f}")
    parts.append(f"sites={rec.sites_replied}/{rec.sites_sampled}")
    if rec.sites_rejected:
        parts.append(f"rejected={rec.sites_rejected}")
    parts.append(f"bytes={rec.bytes_sent + rec.bytes_received}")
    parts.append(f"{rec.duration_s:.2f}s")
    return " ".join(parts)


class _Instruments:
    """OpenTelemetry instruments of the meter ``lumos_ray.federated`` (one set per process)."""

    _inst: _Instruments | None = None

    def __init__(self) -> None:
        from opentelemetry import metrics

        meter = metrics.get_meter("lumos_ray.federated")
        self.rounds = meter.create_counter("lumos.federated.rounds", unit="1")
        self.bytes = meter.create_counter("lumos.federated.bytes", unit="By")
        self.sites = meter.create_histogram("lumos.federated.sites", unit="1")
        self.loss = meter.create_histogram("lumos.federated.loss", unit="1")
        self.accuracy = meter.create_histogram("lumos.federated.accuracy", unit="1")
        self.duration = meter.create_histogram("lumos.federated.round.duration", unit="s")

    @classmethod
    def get(cls) -> _Instruments:
        if cls._inst is None:
            cls._inst = cls()
        return cls._inst

    def record(self, run: str, rec: RoundRecord) -> None:
        attrs = {"run": run}
        self.rounds.add(1, attrs)
        self.bytes.add(rec.bytes_sent, {**attrs, "direction": "sent"})
        self.bytes.add(rec.bytes_received, {**attrs, "direction": "received"})
        self.sites.record(rec.sites_replied, attrs)
        self.duration.record(rec.duration_s, attrs)
        loss = rec.global_loss if rec.global_loss is not None else rec.eval_loss
        if loss is not None:
            self.loss.record(loss, attrs)
        acc = rec.global_accuracy if rec.global_accuracy is not None else rec.eval_accuracy
        if acc is not None:
            self.accuracy.record(acc, attrs)


def read_federated_run(run_name: str) -> dict[str, Any] | None:
    d = federated_home() / run_name
    if not (d / "status.json").is_file():
        return None
    status = json.loads((d / "status.json").read_text())
    rounds_file = d / "rounds.jsonl"
    status["rounds"] = (
        [json.loads(line) for line in rounds_file.read_text().splitlines() if line.strip()]
        if rounds_file.is_file()
        else []
    )
    return status


def list_federated_runs() -> list[dict[str, Any]]:
    home = federated_home()
    if not home.is_dir():
        return []
    out = []
    for d in sorted(home.iterdir()):
        if (d / "status.json").is_file():
            s = json.loads((d / "status.json").read_text())
            out.append(
                {
                    k: s.get(k)
                    for k in (
                        "run",
                        "mode",
                        "state",
                        "rounds_done",
                        "started_at",
                        "finished_at",
                        "error",
                    )
                }
            )
    return sorted(out, key=lambda r: r.get("started_at") or 0)
