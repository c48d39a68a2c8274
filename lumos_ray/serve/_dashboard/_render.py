"""Server-side rendering: one Jinja2 environment with autoescaping on for every
template, and the response wrapper that adds the /ui security headers.

Data for scripts never goes inside a ``<script>`` that runs: pages put it in a
``<script type="application/json">`` block through Jinja's ``tojson`` filter (which
escapes ``<``, ``>``, ``&`` and ``'``), and ``static/dashboard.js`` parses it.
"""

from __future__ import annotations

import datetime as dt
import functools
from typing import Any

from jinja2 import Environment, PackageLoader
from starlette.responses import HTMLResponse

from lumos_ray.serve._dashboard._security import page_headers

__all__ = ["environment", "render"]


def _when(ts: Any) -> str:
    """A Unix time as UTC ``YYYY-MM-DD HH:MM:SS``."""
    try:
        return dt.datetime.fromtimestamp(float(ts), dt.UTC).strftime("%Y-%m-%d %H:%M:%S")
    except (TypeError, ValueError, OverflowError, OSError):
        return ""


@functools.cache
def environment() -> Environment:
    """The template environment (built once; autoescape on for ALL templates)."""
    env = Environment(
        loader=PackageLoader("lumos_ray.serve._dashboard", "templates"),
        autoescape=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["when"] = _when
    return env


def render(template: str, context: dict[str, Any], status: int = 200) -> HTMLResponse:
    """A rendered page with the dashboard's headers (CSP, nosniff, no-store, ...)."""
    html = environment().get_template(template).render(**context)
    return HTMLResponse(html, status_code=status, headers=page_headers())
