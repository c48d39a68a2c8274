"""A federated run's page (``/ui/jobs/federated/{name}``): its state, rounds and
metric curves (uPlot, as a fine-tuning job's loss curve). The jobs page lists the
runs (``/ui/jobs``). Read from the caller's tenant's store only: another tenant's
run is not found."""

from __future__ import annotations

from fastapi import APIRouter, Path, Request
from starlette.responses import Response

from lumos_ray.serve._dashboard import _data
from lumos_ray.serve._dashboard._federated import (
    ACCURACY_SERIES,
    LOSS_SERIES,
    PREFIX,
    federated_run,
    metric_charts,
)
from lumos_ray.serve._dashboard._render import render
from lumos_ray.serve._dashboard._routes import _context, _gateway, _page, _session

__all__ = ["router"]

router = APIRouter(prefix="/ui", include_in_schema=False)


@router.get("/jobs/federated/{name}")
@_page
async def federated(request: Request, name: str = Path(max_length=200 - len(PREFIX))) -> Response:
    s = await _session(request)
    run = await _gateway(request).run_blocking(federated_run, s.tenant, name)
    charts = metric_charts(run["rounds"])
    labels = {n: s.t(f"fed.{n}") for n in (*LOSS_SERIES, *ACCURACY_SERIES)}
    for chart in charts.values():
        chart["labels"] = {n: labels[n] for n in chart["series"]}
        chart["xlabel"] = s.t("fed.round")
    ctx = _context(
        request,
        s,
        "jobs",
        fed=run,
        charts=charts,
        config_json=_data.short_json(run["config"]) if run["config"] is not None else None,
        final_json=_data.short_json(run["final"]) if run["final"] is not None else None,
        result_json=_data.short_json(run["result"]) if run["result"] is not None else None,
    )
    return render("federated.html", ctx)
