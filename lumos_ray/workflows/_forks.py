"""Time travel: a run's checkpoints in order, and new runs replayed or forked from one.

A run's history is its checkpoints (one per finished leaf step, keyed by its path) and
its events. The order of the checkpoints is the order their steps finished: each
``step_finished`` event is committed with its checkpoint, so the event's sequence
number orders them (parallel branches finish in some order; that order is the one
recorded).

Replaying from step K makes a **new** run of the same workflow version and input whose
store starts with the checkpoints that finished before K: executing it returns those
outputs without running their steps (as a resume does) and runs K and everything after
again. A fork does the same with some of the kept outputs edited. The original run is
never written.
"""

from __future__ import annotations

from typing import Any

from lumos_ray.errors import InputValidationError, NotFoundError
from lumos_ray.store import RunStore

__all__ = ["ordered_checkpoints", "plan_fork"]

# Events that go with a checkpoint of their step: a step finished, a human's input
# arrived, or (in a replayed or forked run) a kept checkpoint was copied in.
_FINISHED = frozenset({"step_finished", "input_received", "step_restored"})


def ordered_checkpoints(store: RunStore, run_id: str) -> list[dict[str, Any]]:
    """The run's checkpoints in the order their steps finished:
    ``[{"index", "path", "output", "seq"}]`` (``seq``: of the event committed with the
    checkpoint: ``step_finished``, ``input_received`` or ``step_restored``)."""
    done = store.load_checkpoints(run_id)
    finished: dict[str, int] = {}
    after = 0
    while True:
        page = store.read_events(run_id, after)
        if not page:
            break
        for ev in page:
            data = ev.get("data") or {}
            if ev["type"] in _FINISHED and "step" in data:
                finished.setdefault(str(data["step"]), int(ev["seq"]))
        after = int(page[-1]["seq"])
    big = 1 << 62
    paths = sorted(done, key=lambda p: (finished.get(p, big), p))
    return [
        {"index": i, "path": p, "output": done[p], "seq": finished.get(p)}
        for i, p in enumerate(paths)
    ]


def plan_fork(
    checkpoints: list[dict[str, Any]], from_step: str | int, outputs: dict[str, Any] | None
) -> dict[str, Any]:
    """The checkpoints a new run starts with: those before ``from_step`` (a checkpoint
    path, or its index in :func:`ordered_checkpoints`), with ``outputs`` replacing
    some of them (path -> new output)."""
    paths = [c["path"] for c in checkpoints]
    if isinstance(from_step, bool) or not isinstance(from_step, int | str):
        raise InputValidationError(
            f"from_step must be a checkpoint path or index, not {type(from_step).__name__}.",
            fix="List them with `lumos runs checkpoints RUN_ID`.",
        )
    if isinstance(from_step, int):
        if not 0 <= from_step <= len(paths):
            raise NotFoundError(
                f"the run has {len(paths)} checkpoints; index {from_step} is out of range.",
                fix=f"Pass 0..{len(paths)} ({len(paths)} = keep them all).",
            )
        cut = from_step
    elif from_step in paths:
        cut = paths.index(from_step)
    else:
        shown = ", ".join(paths[:20]) or "(none)"
        raise NotFoundError(
            f"the run has no checkpoint {from_step!r}.",
            fix=f"Pass one of: {shown}.",
        )
    kept = {c["path"]: c["output"] for c in checkpoints[:cut]}
    for path, value in (outputs or {}).items():
        if path not in kept:
            raise InputValidationError(
                f"cannot edit {path!r}: only checkpoints before the fork point are kept "
                f"({', '.join(kept) or 'none'}).",
                fix="Edit a step that finished before from_step, or fork from a later step.",
            )
        kept[path] = value
    return kept
