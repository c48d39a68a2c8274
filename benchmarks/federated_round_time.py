"""Federated round time: lumos simulation vs raw Flower simulation of the same app.

Both variants run the same ClientApp work (the tabular app's local training on the
same partitions) on Flower's Ray backend, on a fresh embedded Ray cluster each, with
the same actor pool size. "raw" is the plain Flower pattern: ``FedAvg.start`` with an
``evaluate_fn`` for the central held-out evaluation. "lumos" is ``simulate(cfg)``: the
lumos round loop (site wait deadline, reply timeout, NaN guard), config shipped in every
message, per-round JSON + OpenTelemetry metrics. Round time = wall time between the
ends of consecutive rounds' central evaluations; round 1 (actor start, torch import) is
excluded; median over the rest.

Also: bytes moved per round for federated LoRA (only adapter tensors travel) vs the
full lumos-tiny model, from the real ArrayRecords the apps send.

    .venv/bin/python benchmarks/federated_round_time.py --rounds 8 --sites 4
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import tempfile
import time


def _cfg(rounds: int, sites: int):
    from lumos_ray.federated import FederationConfig

    return FederationConfig.model_validate(
        {
            "name": "bench",
            "app": "tabular",
            "rounds": rounds,
            "fraction_evaluate": 0.0,
            "min_available_sites": sites,
            "min_train_sites": sites,
            "learning_rate": 0.05,
            "hidden_units": 64,
            "data": {"num_samples": 8000, "num_features": 32, "noise": 3.0},
            "simulation": {"num_sites": sites, "max_parallel_sites": 2},
        }
    )


def run_lumos(rounds: int, sites: int) -> list[float]:
    from lumos_ray import runtime
    from lumos_ray.federated import simulate

    cfg = _cfg(rounds, sites)
    runtime.connect()
    status = simulate(cfg, run_name=f"bench-lumos-{os.getpid()}-{time.time_ns()}")
    runtime.shutdown()
    # Same clock as raw: time between the ends of consecutive central evaluations, so
    # lumos's per-round bookkeeping (JSON, OTel, progress line) is inside the interval.
    ends = [status["initial_at"]] + [r["finished_at"] for r in status["rounds"]]
    return [b - a for a, b in itertools.pairwise(ends)]


def run_raw(rounds: int, sites: int) -> list[float]:
    from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
    from flwr.clientapp import ClientApp
    from flwr.serverapp import Grid, ServerApp
    from flwr.serverapp.strategy import FedAvg
    from flwr.simulation import run_simulation

    from lumos_ray import runtime
    from lumos_ray.federated._apps import get_app_spec
    from lumos_ray.federated._simulate import client_resources

    cfg = _cfg(rounds, sites)
    spec = get_app_spec("tabular")
    stamps: list[float] = []

    client = ClientApp()

    @client.train()
    def train(msg: Message, context: Context) -> Message:
        site = dict(context.node_config)
        rnd = int(msg.content["config"]["server-round"])
        arrays, metrics = spec.local_train(
            cfg,
            msg.content["arrays"],
            site,
            epochs=cfg.local_epochs,
            proximal_mu=0.0,
            seed=cfg.seed * 10007 + rnd * 101 + int(site["partition-id"]),
        )
        return Message(
            RecordDict({"arrays": arrays, "metrics": MetricRecord(metrics)}), reply_to=msg
        )

    server = ServerApp()

    @server.main()
    def main(grid: Grid, context: Context) -> None:
        strategy = FedAvg(fraction_evaluate=0.0, min_train_nodes=sites, min_available_nodes=sites)

        def central(rnd: int, arrays: ArrayRecord) -> MetricRecord:
            m = spec.central_evaluate(cfg, arrays)
            stamps.append(time.monotonic())
            return MetricRecord(m)

        strategy.start(
            grid=grid,
            initial_arrays=spec.initial_arrays(cfg),
            num_rounds=rounds,
            train_config=ConfigRecord({}),
            evaluate_fn=central,
        )

    runtime.connect()
    run_simulation(
        server_app=server,
        client_app=client,
        num_supernodes=sites,
        backend_name="ray",
        backend_config={
            "client_resources": client_resources(cfg),
            "init_args": {"logging_level": "ERROR"},
        },
    )
    runtime.shutdown()
    return [b - a for a, b in itertools.pairwise(stamps)]


def lora_bytes(sites: int) -> dict[str, float]:
    from lumos_ray.federated import FederationConfig
    from lumos_ray.federated._apps import get_app_spec
    from lumos_ray.federated._lora import base_model_dir

    cfg = FederationConfig.model_validate({"app": "lora"})
    adapter = int(get_app_spec("lora").initial_arrays(cfg).count_bytes())
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base_model_dir(cfg.lm))
    full = sum(p.numel() * p.element_size() for p in model.parameters())
    per_round = lambda payload: 2 * sites * payload  # noqa: E731  (down + up, each site)
    return {
        "lora_payload_bytes": adapter,
        "full_payload_bytes": full,
        "lora_bytes_per_round": per_round(adapter),
        "full_bytes_per_round": per_round(full),
        "ratio_full_over_lora": full / adapter,
    }


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--rounds", type=int, default=8)
    p.add_argument("--sites", type=int, default=4)
    p.add_argument("--reps", type=int, default=1)
    args = p.parse_args()
    os.environ.setdefault("LUMOS_HOME", tempfile.mkdtemp(prefix="lumos-fedbench-"))
    lumos_times: list[float] = []
    raw_times: list[float] = []
    for _ in range(args.reps):
        raw_times += run_raw(args.rounds, args.sites)[1:]  # drop the warm-up round
        lumos_times += run_lumos(args.rounds, args.sites)[1:]
    raw_med, ours_med = statistics.median(raw_times), statistics.median(lumos_times)
    out = {
        "rounds": args.rounds,
        "sites": args.sites,
        "reps": args.reps,
        "raw_flower_round_s_median": round(raw_med, 4),
        "lumos_round_s_median": round(ours_med, 4),
        "ratio_lumos_over_raw": round(ours_med / raw_med, 3),
        "raw_rounds_s": [round(x, 4) for x in raw_times],
        "lumos_rounds_s": [round(x, 4) for x in lumos_times],
        **lora_bytes(args.sites),
    }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
