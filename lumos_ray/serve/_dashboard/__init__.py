"""The web dashboard the gateway serves under ``/ui`` (issue 16): runs, a run's steps
and live events, resume and cancel, usage, threads, adapters; English and Simplified
Chinese. Server-rendered (Jinja2); the front-end libraries (htmx, uPlot) are pinned
in ``dashboard-ui/package.json`` and shipped as built files in ``static/vendor``.
See docs/dashboard.md.
"""

from __future__ import annotations

from lumos_ray.serve._dashboard._routes import router

__all__ = ["router"]
