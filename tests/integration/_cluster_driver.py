"""Driver process of the two-node kill test: connects to the cluster at argv[1], runs a
three-step durable workflow whose first two steps need the worker node's custom
resource, and prints one JSON line per milestone (run id, then the finished run)."""

from __future__ import annotations

import asyncio
import json
import sys

import lumos_ray as lr
from lumos_ray.actors.agent import Resources

STEPS = "tests.integration._cluster_steps:effect"


def workflow(log: str, sleep_s: float) -> lr.Workflow:
    on_worker = Resources(num_cpus=0.5, resources={"worker_node": 1})
    return lr.Workflow(
        name="two-node-kill",
        steps=[
            lr.FunctionStep(
                id="a", function=STEPS, args={"log": log, "step": "a"}, resources=on_worker
            ),
            lr.FunctionStep(
                id="b",
                function=STEPS,
                args={"log": log, "step": "b", "sleep_s": sleep_s},
                resources=on_worker,
                retries=5,
                backoff_s=1.0,
            ),
            lr.FunctionStep(id="c", function=STEPS, args={"log": log, "step": "c"}),
        ],
    )


async def main(address: str, log: str, sleep_s: float) -> None:
    lr.connect(address=address)
    run_id = await lr.start_run(workflow(log, sleep_s), {})
    print(json.dumps({"run_id": run_id}), flush=True)
    info = await lr.wait_run(run_id)
    checkpoints = [c.path for c in await lr.list_checkpoints(run_id)]
    print(
        json.dumps(
            {"status": info.status, "output": info.output, "checkpoints": checkpoints},
            default=str,
        ),
        flush=True,
    )


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], float(sys.argv[3])))
