"""Federated runs of the caller's tenant, their rounds and metric curves, from the
control-plane store.

Why the store and not ``<LUMOS_HOME>/federated`` (what ``lumos federate status``
reads): the files lie where the ServerApp ran (a Ray job's node, a SuperLink's host)
and carry no tenant, while the store is shared and tenant-scoped. A federated run
writes its events there (``lumos_ray.federated._metrics.RunRecorder``):
``federated.started`` (mode, config), one ``federated.round`` per round (a
``RoundRecord``), ``federated.finished`` (state, final metrics or error), under run id
``federated:<name>``, as the tenant its process runs as (a Ray job runs as its
submitter's tenant). There is no runs row, so these logs are listed by run-id prefix
(``RunStore.event_logs``). A run started again under the same name appends to the same
log: the page shows its latest attempt and says how many there were.

Blocking functions (SQLAlchemy): routes call them in a worker thread. Bounded: the
newest MAX_RUNS runs are listed, a run's first MAX_RUN_EVENTS events are read.
"""

from __future__ import annotations

import math
from typing import Any

from lumos_ray.errors import NotFoundError

__all__ = [
    "ACCURACY_SERIES",
    "LOSS_SERIES",
    "MAX_RUNS",
    "MAX_RUN_EVENTS",
    "PREFIX",
    "federated_run",
    "federated_runs",
    "metric_charts",
]

PREFIX = "federated:"
MAX_RUNS = 100
MAX_RUN_EVENTS = 5000
_PAGE = 1000
#: RoundRecord fields drawn as curves (one chart for losses, one for accuracies: their
#: scales differ).
LOSS_SERIES = ("train_loss", "eval_loss", "global_loss")
ACCURACY_SERIES = ("eval_accuracy", "global_accuracy")
_COUNTS = (
    "round",
    "sites_sampled",
    "sites_replied",
    "sites_failed",
    "sites_rejected",
    "bytes_sent",
    "bytes_received",
)


def _store(tenant: str) -> Any:
    from lumos_ray.store import open_store

    return open_store(tenant_id=tenant)


def _num(x: Any) -> float | None:
    """A finite number, else None (NaN would make the chart's JSON invalid)."""
    if isinstance(x, bool) or not isinstance(x, int | float):
        return None
    return float(x) if math.isfinite(x) else None


def _text(x: Any, limit: int = 500) -> str | None:
    return None if x is None else str(x)[:limit]


def _state(last: dict[str, Any] | None) -> str:
    """running, or the state a ``federated.finished`` event recorded."""
    if last is not None and last["type"] == "federated.finished":
        return _text((last.get("data") or {}).get("state"), 40) or "finished"
    return "running"


def federated_runs(tenant: str) -> list[dict[str, Any]]:
    """The tenant's newest federated runs, most recently active first: name, state,
    the last round recorded, first and last event times. Reads the last two events of
    each run (sequence numbers are 1..n per run), not its whole log."""
    store = _store(tenant)
    out = []
    for log in store.event_logs(PREFIX, MAX_RUNS):
        run_id, count = str(log["run_id"]), int(log["events"])
        tail = store.read_events(run_id, max(count - 2, 0), _PAGE)[-2:]
        last = tail[-1] if tail else None
        rounds = [ev for ev in tail if ev["type"] == "federated.round"]
        out.append(
            {
                "name": run_id[len(PREFIX) :],
                "state": _state(last),
                "round": _num((rounds[-1].get("data") or {}).get("round")) if rounds else None,
                "started_at": log["first_ts"],
                "updated_at": log["last_ts"],
            }
        )
    return out


def _round(data: Any, ts: float) -> dict[str, Any]:
    """One round's numbers (non-finite or missing ones are None)."""
    d = data if isinstance(data, dict) else {}
    row: dict[str, Any] = {k: _num(d.get(k)) for k in (*_COUNTS, "duration_s")}
    row.update({k: _num(d.get(k)) for k in (*LOSS_SERIES, *ACCURACY_SERIES)})
    row["finished_at"] = _num(d.get("finished_at")) or ts
    return row


def federated_run(tenant: str, name: str) -> dict[str, Any]:
    """A federated run's latest attempt: mode, config, state, rounds, final metrics,
    result or error. NotFoundError when the tenant has no such run."""
    store = _store(tenant)
    run_id = PREFIX + name
    events: list[dict[str, Any]] = []
    while len(events) < MAX_RUN_EVENTS:
        page = store.read_events(run_id, events[-1]["seq"] if events else 0, _PAGE)
        events += page
        if len(page) < _PAGE:
            break
    if not events:
        raise NotFoundError(
            f"No federated run {name[:200]!r} for your tenant.",
            fix="Pick one of the runs listed on the jobs page.",
        )
    starts = [i for i, ev in enumerate(events) if ev["type"] == "federated.started"]
    attempt = events[starts[-1] :] if starts else events
    started = attempt[0] if attempt[0]["type"] == "federated.started" else None
    begun = (started or {}).get("data") or {}
    finished = next((ev for ev in reversed(attempt) if ev["type"] == "federated.finished"), None)
    done = (finished or {}).get("data") or {}
    rounds = [_round(ev.get("data"), ev["ts"]) for ev in attempt if ev["type"] == "federated.round"]
    return {
        "name": name,
        "mode": _text(begun.get("mode"), 40),
        "config": begun.get("config"),
        "state": _state(finished),
        "started_at": attempt[0]["ts"],
        "finished_at": finished["ts"] if finished else None,
        "rounds": rounds,
        "final": done.get("final"),
        "result": done.get("result"),
        "error": _text(done.get("error"), 2000),
        "attempts": max(len(starts), 1),
        "truncated": len(events) >= MAX_RUN_EVENTS,
    }


def metric_charts(rounds: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """uPlot data per chart (``loss``, ``accuracy``): ``{"steps": rounds, "series":
    {name: values}}`` with only the series that have a value; a chart with none is
    left out."""
    xs = [r["round"] for r in rounds]
    charts = {}
    for chart, names in (("loss", LOSS_SERIES), ("accuracy", ACCURACY_SERIES)):
        series = {n: [r[n] for r in rounds] for n in names}
        series = {n: v for n, v in series.items() if any(x is not None for x in v)}
        if series and all(x is not None for x in xs):
            charts[chart] = {"steps": xs, "series": series}
    return charts
