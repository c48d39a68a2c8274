"""Simulation: N virtual sites on the Ray cluster through Flower's Ray backend.

``simulate(cfg)`` runs in the driver that is connected to Ray (through
:mod:`lumos_ray.runtime`). Flower's RayBackend reuses an initialized Ray and builds its
ClientApp actor pool there, but it calls ``ray.shutdown()`` when the simulation ends,
so the driver should be a process of its own: a Ray job (``lumos federate simulate
--address http://HEAD:8265``, through the one job launcher of ``lumos_ray.runtime``,
which runs :func:`job_main`), the CLI's process (embedded cluster), or a subprocess
attached to a running cluster by address (``python -m lumos_ray.federated._job``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from lumos_ray.errors import ConfigError, FederationError
from lumos_ray.federated._config import FederationConfig, load_federation_config

__all__ = ["client_resources", "job_main", "main", "pool_size", "simulate"]

#: What a simulation returns (and a Ray job writes as its result).
SUMMARY_KEYS = ("run", "state", "rounds_done", "final", "result", "initial")


def client_resources(cfg: FederationConfig) -> dict[str, float]:
    """CPUs per ClientApp actor: 1, or a fair share of what is free right now."""
    from lumos_ray import runtime

    avail = float(runtime.available_resources().get("CPU", 0.0))
    parallel = pool_size(cfg)
    per = min(1.0, avail / parallel) if avail > 0 else 0.01
    return {"num_cpus": max(0.01, round(per, 2)), "num_gpus": 0.0}


def pool_size(cfg: FederationConfig) -> int:
    return max(1, min(cfg.simulation.max_parallel_sites, cfg.simulation.num_sites))


@contextmanager
def _pool_of(size: int) -> Iterator[None]:
    """Make Flower's Ray backend build a pool of exactly ``size`` ClientApp actors.

    Flower 1.32 sizes the pool as (each node's *total* CPUs / CPUs per client) and
    creates every actor up front; on a shared cluster some of them can never be placed,
    and a message handed to such an actor waits forever. Each actor also imports torch
    once, so on a small machine a pool of 1-2 is faster than 8. The driver of a
    simulation is a process of its own (see the module docstring), so the patch is
    confined to it and undone afterwards.
    """
    from flwr.simulation.ray_transport import ray_actor

    original = ray_actor.pool_size_from_resources

    def fixed(client_resources: dict[str, int | float]) -> int:
        return size

    ray_actor.pool_size_from_resources = fixed
    try:
        yield
    finally:
        ray_actor.pool_size_from_resources = original


def simulate(
    cfg: FederationConfig,
    *,
    address: str | None = None,
    run_name: str | None = None,
) -> dict[str, Any]:
    """Run ``cfg`` as a simulation on the Ray cluster; returns the run summary."""
    from flwr.simulation import run_simulation

    from lumos_ray import runtime, tracing
    from lumos_ray.federated._client import build_client_app
    from lumos_ray.federated._metrics import read_federated_run
    from lumos_ray.federated._server import build_server_app

    if cfg.simulation.num_sites < cfg.min_available_sites:
        raise ConfigError(
            f"simulation.num_sites ({cfg.simulation.num_sites}) is below "
            f"min_available_sites ({cfg.min_available_sites})"
        )
    runtime.connect(address=address)
    name = run_name or f"{cfg.name}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
    backend_config = {
        "client_resources": client_resources(cfg),
        "init_args": {"logging_level": "ERROR", "log_to_driver": False},
    }
    error: BaseException | None = None
    span_attrs: dict[str, Any] = {"run": name, "app": cfg.app, "rounds": cfg.rounds}
    with tracing.span("federated.simulate", sites=cfg.simulation.num_sites, **span_attrs) as span:
        try:
            with _pool_of(pool_size(cfg)):
                run_simulation(
                    server_app=build_server_app(cfg, name, mode="simulation"),
                    client_app=build_client_app(),
                    num_supernodes=cfg.simulation.num_sites,
                    backend_name="ray",
                    backend_config=backend_config,  # type: ignore[arg-type]
                )
        except BaseException as exc:  # flwr wraps ServerApp errors; the status file has ours
            error = exc
        status = read_federated_run(name)
        if status is not None:
            span.set_attribute("federated.state", str(status.get("state")))
            span.set_attribute("federated.rounds_done", int(status.get("rounds_done") or 0))
    if status is None:
        raise FederationError(f"simulation {name} failed before its first round: {error}")
    if status.get("state") != "succeeded":
        raise FederationError(f"simulation {name} failed: {status.get('error') or error}", run=name)
    return status


def main(argv: list[str] | None = None) -> int:
    """Entry point of the Ray job (and of test subprocesses attached by address)."""
    p = argparse.ArgumentParser(prog="python -m lumos_ray.federated._job")
    p.add_argument("config", nargs="?")
    p.add_argument("--config-json", default=None, help="The config inline (Ray jobs).")
    p.add_argument("--address", default=None)
    p.add_argument("--run-name", default=None)
    p.add_argument("--set", action="append", default=[], help="dotted.key=json override")
    args = p.parse_args(argv)
    if args.config_json:
        cfg = FederationConfig.model_validate_json(args.config_json)
    elif args.config:
        cfg = load_federation_config(args.config)
    else:
        p.error("CONFIG or --config-json is required")
    if args.set:
        cfg = apply_overrides(cfg, args.set)
    try:
        status = simulate(cfg, address=args.address, run_name=args.run_name)
    except FederationError as exc:
        print(f"[lumos federate] FAILED: {exc}", file=sys.stderr, flush=True)
        return 2
    # For people reading the log; programs get the summary as the job's result.
    summary = {k: status.get(k) for k in SUMMARY_KEYS}
    print("[lumos federate] done " + json.dumps(summary, default=str), flush=True)
    return 0


def job_main(config: dict[str, Any], run_name: str) -> dict[str, Any]:
    """A simulation as a Ray job (run by the job launcher's entrypoint, which writes
    the returned summary as the job's result and continues the submitter's trace)."""
    cfg = FederationConfig.model_validate(config)
    status = simulate(cfg, address=os.environ.get("RAY_ADDRESS") or "auto", run_name=run_name)
    return {k: status.get(k) for k in SUMMARY_KEYS}


def apply_overrides(cfg: FederationConfig, sets: list[str]) -> FederationConfig:
    """``a.b=VALUE`` overrides (VALUE parsed as JSON, else a string), re-validated."""
    data = cfg.model_dump(mode="json")
    for item in sets:
        key, _, raw = item.partition("=")
        if not key or not _:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        node = data
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    try:
        return FederationConfig.model_validate(data)
    except Exception as exc:
        raise ConfigError(f"--set: {exc}") from None


if __name__ == "__main__":
    sys.exit(main())
