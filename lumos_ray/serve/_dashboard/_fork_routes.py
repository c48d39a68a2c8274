"""Replay and fork from the run page (``/ui/runs/{id}/replay``, ``/ui/runs/{id}/fork``).

Both call the runs API's own handlers (``POST /v1/runs/{id}/replay`` and ``/fork``):
the same tenant scoping, storage check and audit (``run.started`` with ``replay_of``
or ``fork_of``). They need the role the API needs for them (``run``: developer): a
viewer sees no buttons, and gets 403 posting, as from the API. POSTs carry the CSRF
checks of every dashboard form. Success redirects to the new run's page.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Query, Request
from starlette.responses import Response

from lumos_ray.errors import LumosError
from lumos_ray.serve._dashboard import _data
from lumos_ray.serve._dashboard._render import render
from lumos_ray.serve._dashboard._routes import (
    _RUN_ID,
    Session,
    _check_post,
    _context,
    _form,
    _gateway,
    _page,
    _redirect,
    _require,
    _session,
    _status,
    _unwrap,
)
from lumos_ray.serve._dashboard._timetravel import (
    MAX_STATE_CHARS,
    ForkPoint,
    changed_outputs,
    fork_point,
    parse_input,
    prefill,
)

__all__ = ["router"]

router = APIRouter(prefix="/ui", include_in_schema=False)


async def _checkpoints(request: Request, s: Session, run_id: str) -> dict[str, Any]:
    from lumos_ray.serve._tenant_runs import check_run_id

    check_run_id(run_id)
    return dict(await _gateway(request).run_blocking(_data.run_checkpoints, s.tenant, run_id))


def _fork_page(
    request: Request,
    s: Session,
    found: dict[str, Any],
    point: ForkPoint,
    *,
    state: str | None = None,
    new_input: str | None = None,
    problem: str | None = None,
    fix: str | None = None,
    status: int = 200,
) -> Response:
    run = found["run"]
    first_state, too_big = prefill(found["outputs"], point.kept)
    first_input = _data.short_json(run.get("input"))
    if len(first_input) > MAX_STATE_CHARS or first_input.endswith("\n..."):
        first_input = ""  # too long to edit here: left empty, the input is kept
    ctx = _context(
        request,
        s,
        "runs",
        run=run,
        point=point,
        total=len(found["checkpoints"]),
        state=first_state if state is None else state,
        new_input=first_input if new_input is None else new_input,
        too_big=too_big,
        max_chars=MAX_STATE_CHARS,
        problem=problem,
        fix=fix,
    )
    return render("fork.html", ctx, status=status)


@router.post("/runs/{run_id}/replay")
@_page
async def replay(request: Request, run_id: str = _RUN_ID) -> Response:
    """A new run that keeps the checkpoints before the chosen one and runs the rest."""
    from lumos_ray.serve._runs_api import ReplayRun
    from lumos_ray.serve._runs_api import replay as api_replay

    s = await _session(request)
    _require(s, "run")
    form = await _form(request)
    _check_post(request, s, form)
    found = await _checkpoints(request, s, run_id)
    point = fork_point(found["checkpoints"], form.get("step"), form.get("index"))
    new = await api_replay(run_id, ReplayRun(from_step=point.from_step), request)
    return _redirect(request, f"/ui/runs/{quote(new.id)}")


@router.get("/runs/{run_id}/fork")
@_page
async def fork_form(
    request: Request,
    run_id: str = _RUN_ID,
    step: str | None = Query(default=None, max_length=200),
    index: str | None = Query(default=None, max_length=10),
) -> Response:
    """The fork form: the kept checkpoints' outputs and the run input, editable."""
    s = await _session(request)
    _require(s, "run")
    found = await _checkpoints(request, s, run_id)
    return _fork_page(request, s, found, fork_point(found["checkpoints"], step, index))


@router.post("/runs/{run_id}/fork")
@_page
async def fork(request: Request, run_id: str = _RUN_ID) -> Response:
    """A new run from the chosen checkpoint with the edited outputs (and input); a
    problem with the posted text is shown on the form, the text kept."""
    from lumos_ray.serve._runs_api import ForkRun
    from lumos_ray.serve._runs_api import fork as api_fork

    s = await _session(request)
    _require(s, "run")
    form = await _form(request)
    _check_post(request, s, form)
    found = await _checkpoints(request, s, run_id)
    point = fork_point(found["checkpoints"], form.get("step"), form.get("index"))
    state, raw_input = form.get("state"), form.get("input")
    try:
        edits = changed_outputs(state, point.kept, found["outputs"])
        new_input, value = parse_input(raw_input)
        if new_input and value == found["run"].get("input"):
            new_input, value = False, None  # left as it was: keep the original's
        body = ForkRun(
            from_step=point.from_step, outputs=edits or None, input=value, new_input=new_input
        )
        new = await api_fork(run_id, body, request)
    except Exception as exc:
        err = _unwrap(exc)
        if not isinstance(err, LumosError):
            raise
        ui = err.details.get("ui")
        problem = s.t(str(ui), **err.details) if ui else err.message
        return _fork_page(
            request,
            s,
            found,
            point,
            state=state,
            new_input=raw_input,
            problem=problem,
            fix=None if ui else err.fix,
            status=_status(err),
        )
    return _redirect(request, f"/ui/runs/{quote(new.id)}")
