"""What the update guard costs per round: ``UpdateGuard(FedAvg()).aggregate_train``
against Flower's plain ``FedAvg().aggregate_train`` on the same replies, in-process.

The guard decodes every array once more (key/shape/dtype/finite checks), takes the
median of the reported example counts, and checks the aggregate; with
``--max-update-norm`` it also clips each update in float64. Payloads: ``--params``
float32 parameters per site split into ``--arrays`` arrays (the default, 16 x 65,536 =
1M parameters, is about 8x a lumos-tiny r=8 q/v adapter). Median of ``--repeats``
rounds; fresh reply messages for each (the guard may rewrite them).

    .venv/bin/python benchmarks/federated_guard_overhead.py --sites 8
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from typing import Any


def _replies(sites: int, arrays: int, params: int, seed: int) -> tuple[Any, list[Any]]:
    import numpy as np
    from flwr.app import Array, ArrayRecord, Message, MetricRecord, RecordDict

    rng = np.random.default_rng(seed)
    size = params // arrays
    glob = {f"layer{i}": np.zeros(size, np.float32) for i in range(arrays)}
    msgs = []
    for node in range(1, sites + 1):
        content = RecordDict(
            {
                "arrays": ArrayRecord(
                    {k: Array(rng.standard_normal(size).astype(np.float32)) for k in glob}
                ),
                "metrics": MetricRecord({"num-examples": 100 + node, "train_loss": 1.0}),
            }
        )
        instruction = Message(content=RecordDict(), dst_node_id=node, message_type="train")
        msgs.append(Message(content=content, reply_to=instruction))
    return ArrayRecord({k: Array(v) for k, v in glob.items()}), msgs


def _time(run: Callable[[list[Any]], Any], make: Callable[[], list[Any]], repeats: int) -> float:
    samples = []
    for _ in range(repeats):
        msgs = make()
        t0 = time.perf_counter()
        run(msgs)
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples)


def main() -> None:
    import logging

    from flwr.common.logger import FLOWER_LOGGER
    from flwr.serverapp.strategy import FedAvg

    from lumos_ray.federated import UpdateGuard

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sites", type=int, default=8)
    ap.add_argument("--arrays", type=int, default=16)
    ap.add_argument("--params", type=int, default=1 << 20)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--max-update-norm", type=float, default=None)
    args = ap.parse_args()
    FLOWER_LOGGER.setLevel(logging.ERROR)  # per-round INFO lines would dominate

    glob, _ = _replies(args.sites, args.arrays, args.params, 0)

    def make() -> list[Any]:
        return _replies(args.sites, args.arrays, args.params, 1)[1]

    plain = FedAvg()
    guard = UpdateGuard(FedAvg(), max_update_norm=args.max_update_norm)
    guard._global = glob  # what configure_train records each round
    t_plain = _time(lambda m: plain.aggregate_train(1, m), make, args.repeats)
    t_guard = _time(lambda m: guard.aggregate_train(1, m), make, args.repeats)
    print(
        json.dumps(
            {
                "sites": args.sites,
                "params_per_site": args.params,
                "arrays_per_site": args.arrays,
                "max_update_norm": args.max_update_norm,
                "fedavg_s": round(t_plain, 4),
                "guard_plus_fedavg_s": round(t_guard, 4),
                "overhead_s": round(t_guard - t_plain, 4),
                "ratio": round(t_guard / t_plain, 2),
            }
        )
    )


if __name__ == "__main__":
    main()
