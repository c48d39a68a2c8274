"""The web dashboard the gateway serves under ``/ui`` (issue 16): runs, a run's steps
and live events, resume and cancel, replay and fork from a checkpoint, usage, threads,
adapters, fine-tuning and federated jobs; English and Simplified Chinese.
Server-rendered (Jinja2); the front-end libraries (htmx, uPlot) are pinned in
``dashboard-ui/package.json`` and shipped as built files in ``static/vendor``.
See docs/dashboard.md.
"""

from __future__ import annotations

from fastapi import APIRouter

from lumos_ray.serve._dashboard._federated_routes import router as _federated
from lumos_ray.serve._dashboard._fork_routes import router as _fork
from lumos_ray.serve._dashboard._routes import router as _pages

__all__ = ["router"]

#: Every /ui route: one router per group of pages, joined here for the gateway.
router = APIRouter(include_in_schema=False)
for _part in (_pages, _fork, _federated):
    router.include_router(_part)
