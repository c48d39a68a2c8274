"""Fine-tuning jobs of the caller's tenant and their loss curves, from the Ray Jobs API.

Fine-tuning jobs are Ray jobs (``lumos_ray.finetune``): the gateway lists them through
the cluster's Jobs API at ``LUMOS_JOBS_ADDRESS`` (the same setting as ``lumos jobs``),
as the tenant of the key, so another tenant's job is not listed and not found. A job
records its progress as ``LUMOS_PROGRESS {json}`` lines in its log (step, loss, eval
loss, tokens/s); the curve is read from the last MAX_LOG_CHARS of the log. Federated
runs are read from the store instead (``_federated``): they record their rounds there.
"""

from __future__ import annotations

import math
import os
from typing import Any

__all__ = ["MAX_LOG_CHARS", "MAX_POINTS", "jobs_address", "loss_curve"]

MAX_LOG_CHARS = 2_000_000
MAX_POINTS = 5000


def jobs_address() -> str | None:
    """The Jobs API address this gateway lists jobs from (None: not configured)."""
    return os.environ.get("LUMOS_JOBS_ADDRESS") or None


def _num(x: Any) -> float | None:
    return float(x) if isinstance(x, int | float) and math.isfinite(x) else None


def loss_curve(logs: str) -> dict[str, list[Any]]:
    """``{"step": [...], "loss": [...], "eval_loss": [...]}`` from a job's log (eval
    losses at their steps, None between), at most MAX_POINTS points."""
    from lumos_ray.finetune._telemetry import parse_progress_line

    points: dict[int, dict[str, float | None]] = {}
    for line in logs[-MAX_LOG_CHARS:].splitlines():
        p = parse_progress_line(line)
        if p is None or not isinstance(p.get("step"), int):
            continue
        step = int(p["step"])
        if p.get("event") == "step" and _num(p.get("loss")) is not None:
            points.setdefault(step, {})["loss"] = _num(p.get("loss"))
        elif p.get("event") == "eval" and _num(p.get("eval_loss")) is not None:
            points.setdefault(step, {})["eval_loss"] = _num(p.get("eval_loss"))
    steps = sorted(points)[-MAX_POINTS:]
    return {
        "step": steps,
        "loss": [points[s].get("loss") for s in steps],
        "eval_loss": [points[s].get("eval_loss") for s in steps],
    }
