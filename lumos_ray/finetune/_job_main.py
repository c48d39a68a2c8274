"""What a fine-tuning Ray job runs on the cluster (called by the one job launcher's
entrypoint, ``lumos_ray.runtime._job_entry``, which writes the returned dict as the
job's result and continues the submitter's trace)."""

from __future__ import annotations

import os
from typing import Any

__all__ = ["job_main"]


def job_main(spec: dict[str, Any]) -> dict[str, Any]:
    """Train ``spec`` (a FinetuneJobSpec as JSON) on the job's cluster; the result."""
    from lumos_ray import runtime
    from lumos_ray.finetune._runner import run_finetune
    from lumos_ray.finetune._spec import FinetuneJobSpec

    parsed = FinetuneJobSpec.model_validate(spec)
    runtime.connect(address=os.environ.get("RAY_ADDRESS") or "auto")
    return run_finetune(parsed).model_dump(mode="json")
