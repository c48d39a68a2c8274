"""Secure aggregation: Flower's SecAgg+ (the server only ever sees the sum of updates).

Flower 1.32 ships SecAgg+ for its legacy strategy API only (``SecAggPlusWorkflow``
inside ``DefaultWorkflow`` with a ``LegacyContext``, and ``secaggplus_mod`` on the
ClientApp), not for the Message-API strategies the rest of lumos uses. So a run with
``privacy.secagg`` takes this path: legacy FedAvg driven by Flower's workflow, the
same app code for local training and central evaluation, the same per-round records.
Robust aggregation and central DP need single updates and are refused by the config.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, Context, Message
from flwr.serverapp import Grid

from lumos_ray.federated._apps import AppSpec, get_app_spec
from lumos_ray.federated._config import FederationConfig
from lumos_ray.federated._metrics import RoundRecord, RunRecorder

__all__ = ["is_secagg_message", "run_secagg", "secagg_client_mod", "secagg_train"]

CONFIG_KEY = "lumos-config"


def _to_record(keys: list[str], ndarrays: list[np.ndarray]) -> ArrayRecord:
    return ArrayRecord({k: Array(np.asarray(a)) for k, a in zip(keys, ndarrays, strict=True)})


def run_secagg(
    grid: Grid,
    context: Context,
    cfg: FederationConfig,
    recorder: RunRecorder,
    spec: AppSpec,
    initial_arrays: ArrayRecord,
    wait_for_sites: Any,
) -> ArrayRecord:
    from flwr.common import ndarrays_to_parameters, parameters_to_ndarrays
    from flwr.server import LegacyContext, ServerConfig
    from flwr.server.strategy import FedAvg as LegacyFedAvg
    from flwr.server.workflow import DefaultWorkflow, SecAggPlusWorkflow

    keys = list(initial_arrays.keys())
    cfg_json = cfg.model_dump_json()
    state: dict[str, Any] = {
        "t0": time.monotonic(),
        "final": initial_arrays,
        "results": 0,
        "failures": 0,
    }
    payload = int(initial_arrays.count_bytes())

    class _CountingFedAvg(LegacyFedAvg):
        def aggregate_fit(self, server_round, results, failures):
            state["results"], state["failures"] = len(results), len(failures)
            return super().aggregate_fit(server_round, results, failures)

    def on_fit_config(server_round: int) -> dict[str, Any]:
        wait_for_sites(f"round {server_round}")
        state["t0"] = time.monotonic()
        return {
            CONFIG_KEY: cfg_json,
            "local-epochs": cfg.local_epochs,
            "server-round": server_round,
        }

    def evaluate_fn(server_round: int, ndarrays: list[np.ndarray], _c: dict) -> Any:
        if server_round == 0:
            return None
        arrays = _to_record(keys, ndarrays)
        state["final"] = arrays
        m = spec.central_evaluate(cfg, arrays)
        # SecAgg+ hides who sent what: the workflow reports the sites whose masked
        # vectors were unmasked; each carried one payload up and got one down.
        active = int(state["results"]) or 0
        recorder.record(
            RoundRecord(
                round=server_round,
                sites_sampled=active + int(state["failures"]),
                sites_replied=active,
                sites_failed=int(state["failures"]),
                sites_rejected=0,
                bytes_sent=payload * active,
                bytes_received=payload * active,
                duration_s=round(time.monotonic() - state["t0"], 4),
                global_loss=m.get("loss"),
                global_accuracy=m.get("accuracy"),
                extra={"secagg": True},
            )
        )
        return float(m["loss"]), {k: float(v) for k, v in m.items()}

    strategy = _CountingFedAvg(
        fraction_fit=cfg.fraction_train,
        fraction_evaluate=0.0,
        min_fit_clients=cfg.min_train_sites,
        min_available_clients=cfg.min_available_sites,
        initial_parameters=ndarrays_to_parameters(initial_arrays.to_numpy_ndarrays()),
        evaluate_fn=evaluate_fn,
        on_fit_config_fn=on_fit_config,
    )
    legacy = LegacyContext(
        context=context,
        config=ServerConfig(num_rounds=cfg.rounds, round_timeout=cfg.round_timeout_s),
        strategy=strategy,
    )
    p = cfg.privacy
    workflow = DefaultWorkflow(
        fit_workflow=SecAggPlusWorkflow(
            num_shares=p.secagg_num_shares,
            reconstruction_threshold=p.secagg_reconstruction_threshold,
            clipping_range=p.secagg_clipping_range,
            quantization_range=p.secagg_quantization_range,
            timeout=cfg.round_timeout_s,
        )
    )
    workflow(grid, legacy)
    if len(recorder.rounds) < cfg.rounds:
        from lumos_ray.errors import FederationError

        raise FederationError(
            f"SecAgg+ finished {len(recorder.rounds)} of {cfg.rounds} round(s): too few "
            f"sites completed the protocol (reconstruction_threshold="
            f"{p.secagg_reconstruction_threshold}, min_train_sites={cfg.min_train_sites})"
        )
    _ = parameters_to_ndarrays  # (kept for symmetry with the client side)
    return state["final"]


def is_secagg_message(msg: Message) -> bool:
    from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS

    return RECORD_KEY_CONFIGS in msg.content.config_records


def secagg_client_mod(msg: Message, context: Context, call_next: Any) -> Message:
    """Flower's ``secaggplus_mod``, only for messages of the SecAgg+ protocol."""
    if msg.metadata.message_type == "train" and is_secagg_message(msg):
        from flwr.client.mod import secaggplus_mod

        return secaggplus_mod(msg, context, call_next)
    return call_next(msg, context)


def secagg_train(msg: Message, site: dict[str, Any]) -> Message:
    """The legacy FitIns -> FitRes train step the SecAgg+ protocol wraps."""
    import flwr.compat.common.recorddict_compat as compat
    from flwr.common import Code, FitRes, Status, ndarrays_to_parameters, parameters_to_ndarrays

    fitins = compat.recorddict_to_fitins(msg.content, keep_input=True)
    cfg = FederationConfig.model_validate_json(str(fitins.config[CONFIG_KEY]))
    spec = get_app_spec(cfg.app)
    keys = list(spec.initial_arrays(cfg).keys())
    arrays = _to_record(keys, parameters_to_ndarrays(fitins.parameters))
    rnd = int(fitins.config.get("server-round", 0))
    new_arrays, metrics = spec.local_train(
        cfg,
        arrays,
        site,
        epochs=int(fitins.config.get("local-epochs", cfg.local_epochs)),
        proximal_mu=0.0,
        seed=cfg.seed * 10007 + rnd * 101 + int(site["partition-id"]),
    )
    fitres = FitRes(
        status=Status(code=Code.OK, message=""),
        parameters=ndarrays_to_parameters(new_arrays.to_numpy_ndarrays()),
        num_examples=int(metrics["num-examples"]),
        metrics={"train_loss": float(metrics["train_loss"])},
    )
    return Message(compat.fitres_to_recorddict(fitres, keep_input=True), reply_to=msg)
