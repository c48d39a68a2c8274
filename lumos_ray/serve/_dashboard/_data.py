"""What the pages show, read from the control-plane store of the caller's tenant.

Blocking functions (SQLAlchemy): routes call them in a worker thread. Every read is
bounded: a page of runs (keyset on (created_at, id), so page 200 costs what page 1
costs), the first MAX_EVENTS events of a run, a thread's last MAX_MESSAGES messages.
Reads go through the store's public API, the same on SQLite and PostgreSQL.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from lumos_ray.errors import InputValidationError

__all__ = [
    "MAX_CHECKPOINTS",
    "MAX_EVENTS",
    "MAX_MESSAGES",
    "PAGE_SIZES",
    "RunsPage",
    "checkpoint_rows",
    "decode_cursor",
    "encode_cursor",
    "run_checkpoints",
    "run_detail",
    "runs_page",
    "short_json",
    "step_timeline",
]

PAGE_SIZES = (25, 50, 100, 200)
MAX_EVENTS = 1000
MAX_MESSAGES = 500
#: Checkpoints a run page lists (replay and fork points); the rest are counted.
MAX_CHECKPOINTS = 1000
#: Events that go with a step's checkpoint (as in lumos_ray.workflows._forks).
_FINISHED = ("step_finished", "input_received", "step_restored")
_MAX_FINISHED_READ = 10_000
_MAX_JSON_CHARS = 20_000


@dataclass(frozen=True)
class RunsPage:
    rows: list[dict[str, Any]]
    next_cursor: str | None


def encode_cursor(created_at: float, run_id: str) -> str:
    """The opaque position after a row: ``<created_at>~<id>`` (ids have no ``~``)."""
    return f"{created_at!r}~{run_id}"


def decode_cursor(cursor: str | None) -> tuple[float, str] | None:
    if not cursor:
        return None
    ts, sep, run_id = cursor[:300].partition("~")
    try:
        value = float(ts)
    except ValueError:
        value = float("nan")
    if not sep or not run_id or value != value:
        raise InputValidationError(
            "The page position (cursor) is not one this dashboard made.",
            fix="Start again from the first page of the runs list.",
        )
    return value, run_id


def _store(tenant: str) -> Any:
    from lumos_ray.store import open_store

    return open_store(tenant_id=tenant)


def runs_page(
    tenant: str, status: str | None, workflow: str | None, cursor: str | None, limit: int
) -> RunsPage:
    """One page of the tenant's runs, newest first."""
    after = decode_cursor(cursor)
    rows = _store(tenant).runs_page(
        status=status or None,
        workflow=workflow or None,
        after=after,
        limit=limit + 1,
        newest_first=True,
    )
    more = len(rows) > limit
    rows = rows[:limit]
    nxt = encode_cursor(rows[-1]["created_at"], rows[-1]["id"]) if more and rows else None
    return RunsPage(rows, nxt)


def step_timeline(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Steps in the order they started, from the run's events: start and end times,
    attempts, status (running, finished, failed, skipped; waiting for a human step
    until its input arrives) and the last error."""
    steps: dict[str, dict[str, Any]] = {}
    for ev in events:
        data = ev.get("data") or {}
        path = data.get("step")
        if not isinstance(path, str):
            continue
        kind = ev.get("type")
        if kind == "run_suspended":  # a human step waits: it shows as a step
            steps.setdefault(path, {"step": path, "kind": "human", "start": ev["ts"]}).update(
                status="waiting", end=None
            )
            continue
        if kind == "input_received" and path in steps:
            steps[path].update(status="finished", end=ev["ts"])
            continue
        if kind not in ("step_started", "step_finished", "step_failed", "step_skipped"):
            continue
        step = steps.setdefault(
            path,
            {"step": path, "kind": data.get("kind"), "status": "running", "start": ev["ts"]},
        )
        step["attempts"] = max(int(data.get("attempt") or 1), step.get("attempts", 1))
        if kind == "step_finished":
            step.update(status="finished", end=ev["ts"])
        elif kind == "step_failed":
            step.update(status="failed", end=ev["ts"], error=data.get("error"))
        elif kind == "step_skipped":
            step.update(status="skipped", end=ev["ts"])
        elif kind == "step_started":
            step.update(status="running", end=None)
    out = list(steps.values())
    for s in out:
        s.setdefault("attempts", 1)
    t0 = min((s["start"] for s in out), default=0.0)
    t1 = max((s.get("end") or s["start"] for s in out), default=0.0)
    span = max(t1 - t0, 1e-3)
    for s in out:
        end = s.get("end") or s["start"]
        s["duration_s"] = round(end - s["start"], 3) if s.get("end") else None
        s["offset_pct"] = round(100 * (s["start"] - t0) / span, 2)
        s["width_pct"] = max(round(100 * (end - s["start"]) / span, 2), 0.5)
    return out


def short_json(value: Any) -> str:
    """Pretty JSON of a value, cut at a bound (the page shows it escaped)."""
    text = json.dumps(value, indent=2, ensure_ascii=False, default=str)
    if len(text) > _MAX_JSON_CHARS:
        return text[:_MAX_JSON_CHARS] + "\n..."
    return text


def step_definitions(body: Any) -> dict[str, dict[str, Any]]:
    """step id -> its definition in the workflow's registered body (without nested
    steps): what the step was given (templates as written, before rendering)."""
    found: dict[str, dict[str, Any]] = {}
    todo = [body]
    while todo and len(found) < 1000:
        node = todo.pop()
        if isinstance(node, list):
            todo.extend(node)
        elif isinstance(node, dict):
            if isinstance(node.get("id"), str):
                found.setdefault(
                    node["id"],
                    {
                        k: v
                        for k, v in node.items()
                        if not isinstance(v, (list, dict))
                        or k in ("args", "input", "human", "with", "when")
                    },
                )
            todo.extend(v for v in node.values() if isinstance(v, (list, dict)))
    return found


def _first_finished(first: dict[str, tuple[int, float]], events: list[dict[str, Any]]) -> None:
    """Note in ``first`` each step's earliest finishing event: (seq, ts)."""
    for ev in events:
        data = ev.get("data") or {}
        if ev.get("type") not in _FINISHED or not isinstance(data, dict) or "step" not in data:
            continue
        step, seq = str(data["step"]), int(ev["seq"])
        if step not in first or seq < first[step][0]:
            first[step] = (seq, float(ev["ts"]))


def checkpoint_rows(
    store: Any,
    run_id: str,
    outputs: dict[str, Any],
    events: list[dict[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """The run's checkpoints in the order their steps finished, with when:
    ``[{"index", "path", "seq", "ts"}]``. The same order as the runner's
    ``ordered_checkpoints`` (the first finishing event of each step, by sequence),
    which replay and fork use. ``events``: the run's whole log when the caller read
    it already (a run page, for runs of fewer than MAX_EVENTS events: no more
    queries); else the finishing events are read with the store's type filter (at
    most _MAX_FINISHED_READ of each type), not the whole log."""
    first: dict[str, tuple[int, float]] = {}
    if events is not None:
        _first_finished(first, events)
    else:
        for kind in _FINISHED:
            after, read = 0, 0
            while read < _MAX_FINISHED_READ:
                page = store.read_events(run_id, after, 1000, type=kind)
                _first_finished(first, page)
                read += len(page)
                if len(page) < 1000:
                    break
                after = int(page[-1]["seq"])
    big = 1 << 62
    paths = sorted(outputs, key=lambda p: (first[p][0] if p in first else big, p))
    return [
        {
            "index": i,
            "path": p,
            "seq": first[p][0] if p in first else None,
            "ts": first[p][1] if p in first else None,
        }
        for i, p in enumerate(paths)
    ]


def run_checkpoints(tenant: str, run_id: str) -> dict[str, Any]:
    """The run, its checkpoints' outputs and their order: what a fork form shows."""
    store = _store(tenant)
    run = store.get_run(run_id)
    outputs = store.load_checkpoints(run_id)
    return {"run": run, "outputs": outputs, "checkpoints": checkpoint_rows(store, run_id, outputs)}


def run_detail(tenant: str, run_id: str) -> dict[str, Any]:
    """The run, its checkpoints (step outputs, and in the order they finished), its
    first events, its step timeline with each step's definition (its input as
    written) and output."""
    from lumos_ray.errors import NotFoundError

    store = _store(tenant)
    run = store.get_run(run_id)
    outputs = store.load_checkpoints(run_id)
    events = store.read_events(run_id, 0, MAX_EVENTS)
    try:
        body = store.get_definition("workflow", run["workflow"], run["version"])["body"]
    except NotFoundError:
        body = None
    defs = step_definitions(body)
    steps = step_timeline(events)
    for s in steps:
        if s["step"] in outputs:
            s["output"] = short_json(outputs[s["step"]])
        d = defs.get(s["step"].rsplit(".", 1)[-1])
        if d is not None:
            s["definition"] = short_json(d)
    return {
        "run": run,
        "steps": steps,
        "events": events,
        "outputs": outputs,
        "checkpoints": checkpoint_rows(
            store, run_id, outputs, events if len(events) < MAX_EVENTS else None
        ),
        "last_seq": events[-1]["seq"] if events else 0,
    }
