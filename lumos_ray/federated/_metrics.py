"""Per-round metrics: the run's directory under LUMOS_HOME, the run store's event log,
and OpenTelemetry metrics.

- ``<LUMOS_HOME>/federated/<run>/status.json`` + ``rounds.jsonl``: what ``lumos
  federate status`` reads. A file works everywhere the ServerApp runs, including the
  SuperLink's subprocess, which has no Ray connection. Strict JSON, by the store's
  rule below (``jq`` and strict parsers refuse the bare ``NaN`` Python would write).
- The run store (``lumos_ray.store._sql``): events ``federated.started`` /
  ``federated.round`` / ``federated.finished`` under run id ``federated:<run>``. Only
  events, not a ``runs`` row: a row marked running would be adopted by the workflow
  runner's lease takeover, which cannot execute a Flower run. The store keeps strict
  JSON, and real training produces NaN/inf losses: such numbers are stored as null and
  the event lists their keys under ``non_finite``. A write the store still refuses, or
  a store that is down, costs that one event (a warning on stdout and in status.json's
  ``store_warnings``), never the later ones: a lost ``federated.finished`` would leave
  the run "running" on the dashboard forever.
- OpenTelemetry meter ``lumos_ray.federated``.
"""

from __future__ import annotations

import json
import math
import numbers
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "MAX_NON_FINITE_KEYS",
    "MAX_STORE_WARNINGS",
    "RoundRecord",
    "RunRecorder",
    "federated_home",
    "finite_json",
    "list_federated_runs",
    "read_federated_run",
    "strict_json",
]


#: Keys an event's ``non_finite`` list names at most (bounds the event's size).
MAX_NON_FINITE_KEYS = 50
#: Store-write warnings status.json keeps (the newest), next to their total count.
MAX_STORE_WARNINGS = 20
#: Nesting followed when replacing non-finite numbers; deeper values go to the store
#: as they are (and one that is still not JSON gets the event's fallback below).
_MAX_DEPTH = 32
#: Longest text field kept in the fallback event of a refused write.
_MAX_TEXT = 2000


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
        self._store_failures = 0
        self._event("federated.started", {"mode": mode, "config": config})

    def _event(self, kind: str, data: dict[str, Any]) -> None:
        """Append one event to the run store, best effort: a broken store must not stop
        a federated run, and one failed write must not stop the later ones.

        Non-finite numbers become null and are named under ``non_finite``. When the
        store still refuses the value (not JSON, too big), a smaller event with the
        top-level numbers and text and the reason (``store_refused``) is written
        instead, so the round and the run's state still show on the dashboard."""
        from lumos_ray.errors import InputValidationError

        clean, bad = finite_json(data)
        if bad:
            clean["non_finite"] = bad[:MAX_NON_FINITE_KEYS]
        try:
            self._append(kind, clean)
            return
        except InputValidationError as exc:
            refused = exc.message
        except Exception as exc:  # the store is down or misconfigured: skip this event
            self._store_warning(kind, data, f"run store unavailable ({exc})")
            return
        try:
            self._append(kind, _fallback(clean, refused))
            self._store_warning(
                kind,
                data,
                f"run store refused the event ({refused}); stored "
                "its top-level numbers and text only",
                partly=True,
            )
        except Exception as exc:
            self._store_warning(
                kind, data, f"run store refused the event ({refused}) and its smaller form ({exc})"
            )

    def _append(self, kind: str, data: dict[str, Any]) -> None:
        from lumos_ray.store._sql import open_store

        open_store().append_events(f"federated:{self.run_name}", [(kind, data)])

    def _store_warning(
        self, kind: str, data: dict[str, Any], reason: str, *, partly: bool = False
    ) -> None:
        """Say on stdout and in status.json (``lumos federate status --json``) which
        event the store lacks and why; the files here keep everything."""
        where = f"{kind} (round {data['round']})" if "round" in data else kind
        line = f"{where}: {reason}"[: 2 * _MAX_TEXT]
        self._store_failures += 1
        warnings = self._status.setdefault("store_warnings", [])
        warnings.append({"at": time.time(), "event": kind, "warning": line})
        del warnings[:-MAX_STORE_WARNINGS]
        self._status["store_warnings_total"] = self._store_failures
        self._write_status()
        print(
            f"[lumos federate] WARNING: {line}. The run store (what the dashboard shows) "
            f"{'has only part of' if partly else 'lacks'} this event; all of it is in "
            f"{self.dir}. Later events are still written.",
            flush=True,
        )

    def _write_status(self) -> None:
        tmp = self.dir / "status.json.tmp"
        tmp.write_text(strict_json(self._status, indent=2))
        tmp.replace(self.dir / "status.json")

    def record(self, rec: RoundRecord) -> None:
        self.rounds.append(rec)
        with (self.dir / "rounds.jsonl").open("a") as f:
            f.write(strict_json(asdict(rec)) + "\n")
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


def finite_json(value: Any) -> tuple[Any, list[str]]:
    """A copy of ``value`` whose non-finite numbers (NaN, inf) are None, and the keys
    where they were (``loss``, ``extra.loss``, ``final.losses[2]``).

    Why: the store refuses NaN (strict JSON, as PostgreSQL's json type), and NumPy
    scalars (a loss as ``np.float32``) are not JSON at all: real numbers become plain
    ``float``/``int``."""
    found: list[str] = []
    return _finite(value, "", found, 0), found


def strict_json(value: dict[str, Any], indent: int | None = None) -> str:
    """``value`` as strict JSON text for the run's files, by the store events' rule:
    non-finite numbers become null and their keys are listed under ``non_finite``;
    NumPy scalars are plain numbers. A non-finite number nested deeper than
    finite_json follows leaves only the top-level numbers and text, as a refused store
    event does: a file line must stay readable, and the round must not fail."""
    clean, bad = finite_json(value)
    if bad:
        clean["non_finite"] = bad[:MAX_NON_FINITE_KEYS]
    try:
        return json.dumps(clean, indent=indent, default=_plain, allow_nan=False)
    except ValueError as exc:
        return json.dumps(
            _fallback(clean, f"nested too deep for strict JSON ({exc})", key="not_written"),
            indent=indent,
            default=_plain,
            allow_nan=False,
        )


def _finite(value: Any, path: str, found: list[str], depth: int) -> Any:
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        x = float(value)
        if math.isfinite(x):
            return x
        found.append(path or "value")
        return None
    if depth >= _MAX_DEPTH:
        return value
    if isinstance(value, dict):
        return {
            k: _finite(v, f"{path}.{k}" if path else str(k), found, depth + 1)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [_finite(v, f"{path}[{i}]", found, depth + 1) for i, v in enumerate(value)]
    return value


def _plain(value: Any) -> Any:
    """JSON for what json cannot write in the run's files: NumPy scalars as numbers
    (a loss as ``np.float32`` must not fail the round), anything else as text."""
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    return str(value)


def _fallback(data: dict[str, Any], reason: str, key: str = "store_refused") -> dict[str, Any]:
    """What is left of a refused event: its top-level numbers, booleans and (cut) text,
    the ``non_finite`` list, and (under ``key``) why the whole event was refused."""
    out: dict[str, Any] = {}
    for k, v in data.items():
        if not isinstance(k, str):
            continue
        if v is None or isinstance(v, bool | int | float):
            out[k] = v
        elif isinstance(v, str):
            out[k] = v[:_MAX_TEXT]
    if isinstance(data.get("non_finite"), list):
        out["non_finite"] = data["non_finite"]
    out[key] = reason[:_MAX_TEXT]
    return out


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
