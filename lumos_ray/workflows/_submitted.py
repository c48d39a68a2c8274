"""The cluster side of `lumos submit`: what a submitted workflow job runs.

It lives with the workflows (not the CLI) because it runs on the cluster, started by
the job launcher by import path; nothing imports the CLI.
"""

from __future__ import annotations

import json
import os
from typing import Any

__all__ = ["run_workflow_job"]


def run_workflow_job(workflow: str, input_json: str | None = None) -> dict[str, Any]:
    """Cluster side of `lumos submit`: run the workflow to its end or suspension."""
    from lumos_ray import runtime
    from lumos_ray.errors import JobError
    from lumos_ray.workflows import run_workflow
    from lumos_ray.workflows._definition import get_workflow

    runtime.connect(address=os.environ.get("RAY_ADDRESS") or "auto")
    data = json.loads(input_json) if input_json is not None else None
    info = run_workflow(get_workflow(workflow), data).model_dump(mode="json")
    print(json.dumps({"run": info}, default=str), flush=True)  # for people reading the log
    if info.get("status") in ("failed", "cancelled"):
        err = info.get("error") or {}
        raise JobError(
            f"run {info.get('id')} {info.get('status')}: {err.get('message', '')}".strip(),
            run_id=info.get("id"),
        )
    return {"run": info}
