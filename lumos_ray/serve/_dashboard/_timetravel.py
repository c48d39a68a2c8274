"""Replay and fork from a run's page: which checkpoint a form names, and what a fork
changes (edited checkpoint outputs, and optionally a new run input).

Why checked here and not only by the runner (which checks again): the page can then
say what is wrong next to the text the user typed, in their language, and keep that
text, instead of an error page. Every posted text is bounded (MAX_STATE_CHARS), the
state must be a JSON object whose keys are checkpoints the fork keeps, and only the
outputs that differ from the original are sent: the new run's ``run_forked`` event
then names exactly the edited steps.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from lumos_ray.errors import InputValidationError, NotFoundError

__all__ = [
    "MAX_EDITS",
    "MAX_STATE_CHARS",
    "ForkPoint",
    "changed_outputs",
    "fork_point",
    "parse_input",
    "prefill",
]

#: Characters of the edited state, and of the new input (each). Under the dashboard's
#: form bound (256 KiB) even in three-byte UTF-8 characters: the fork form is sent as
#: multipart, which does not percent-encode.
MAX_STATE_CHARS = 40_000
#: Edited outputs in one fork (the runs API's ForkRun.outputs bound).
MAX_EDITS = 1000


@dataclass(frozen=True)
class ForkPoint:
    """Where a replay or fork starts: ``from_step`` as the runs API takes it (the
    checkpoint's path, or the number of checkpoints for "after the last one"),
    ``label`` to show, and the checkpoints before it (kept by the new run)."""

    from_step: str | int
    label: str
    kept: list[str]
    form: dict[str, str]


def _problem(ui: str, message: str, fix: str, **values: Any) -> InputValidationError:
    """An InputValidationError that also names its catalog message (``ui``)."""
    return InputValidationError(message, fix=fix, ui=ui, **values)


def fork_point(checkpoints: list[dict[str, Any]], step: str | None, index: str | None) -> ForkPoint:
    """The fork point a form or link names: ``step`` (a checkpoint path) or ``index``
    (only ``len(checkpoints)``: after the last checkpoint, keeping them all)."""
    paths = [str(c["path"]) for c in checkpoints]
    if step:
        if step not in paths:
            raise NotFoundError(
                f"The run has no checkpoint {step[:200]!r}.",
                fix="Reload the run's page and pick one of its checkpoints.",
            )
        cut = paths.index(step)
        return ForkPoint(step, step, paths[:cut], {"step": step})
    if index is not None and index.isdigit() and int(index) == len(paths):
        return ForkPoint(len(paths), "", paths, {"index": str(len(paths))})
    raise NotFoundError(
        "The form names no checkpoint of this run.",
        fix="Reload the run's page and use its replay or fork buttons.",
    )


def prefill(outputs: Mapping[str, Any], kept: list[str]) -> tuple[str, bool]:
    """The state text area's first text: the kept outputs as a JSON object, or ``{}``
    when they are longer than MAX_STATE_CHARS (then True: the page says to give only
    the outputs to change)."""
    text = json.dumps({p: outputs.get(p) for p in kept}, indent=2, ensure_ascii=False)
    if len(text) > MAX_STATE_CHARS:
        return "{}", True
    return text, False


def _loads(text: str, what: str) -> Any:
    if len(text) > MAX_STATE_CHARS:
        raise _problem(
            "fork.too_long",
            f"The {what} is longer than {MAX_STATE_CHARS} characters.",
            "Keep only the outputs you change (the others are kept as they were).",
            limit=MAX_STATE_CHARS,
        )
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise _problem(
            "fork.bad_json",
            f"The {what} is not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno}).",
            "Correct the JSON and send the form again.",
            detail=exc.msg,
            line=exc.lineno,
            column=exc.colno,
        ) from None


def changed_outputs(
    text: str | None, kept: list[str], outputs: Mapping[str, Any]
) -> dict[str, Any]:
    """The edits of a fork from the state text area: a JSON object of kept checkpoint
    path -> output; only the entries that differ from the original are returned."""
    state = _loads((text or "").strip() or "{}", "edited state")
    if not isinstance(state, dict):
        raise _problem(
            "fork.not_object",
            f"The edited state must be a JSON object (checkpoint path -> output), "
            f"not {type(state).__name__}.",
            "Write an object, e.g. an empty one to change nothing.",
        )
    if len(state) > MAX_EDITS:
        raise _problem(
            "fork.too_many",
            f"The edited state names {len(state)} checkpoints (at most {MAX_EDITS}).",
            "Keep only the outputs you change.",
            limit=MAX_EDITS,
        )
    allowed = set(kept)
    for path in state:
        if path not in allowed:
            shown = ", ".join(kept[:20]) or "-"
            raise _problem(
                "fork.not_kept",
                f"{path[:200]!r} is not a checkpoint this fork keeps ({shown}).",
                "Edit only the checkpoints listed on the page, or fork from a later step.",
                path=path[:200],
                kept=shown,
            )
    return {p: v for p, v in state.items() if p not in outputs or outputs[p] != v}


def parse_input(text: str | None) -> tuple[bool, Any]:
    """(whether the fork gets a new input, the input) from the input text area: left
    empty, the new run keeps the original run's input."""
    text = (text or "").strip()
    if not text:
        return False, None
    return True, _loads(text, "new input")
