"""The ServerApp: Flower's strategy hooks, driven by a lumos round loop.

Why not ``Strategy.start``: it waits forever for ``min_available_nodes`` (a site that
never comes back hangs the run) and it records nothing per round. This loop calls the
same strategy hooks (configure/aggregate train and evaluate) but waits for sites with a
deadline, gives every round a reply timeout, fails with a clear FederationError when
too few sites answer, and records loss, accuracy, participating sites and bytes moved.
"""

from __future__ import annotations

import time
from typing import Any

from flwr.app import ArrayRecord, ConfigRecord, Context, Message
from flwr.serverapp import Grid, ServerApp

from lumos_ray.errors import FederationError
from lumos_ray.federated._apps import get_app_spec
from lumos_ray.federated._config import FederationConfig
from lumos_ray.federated._guard import UpdateGuard
from lumos_ray.federated._metrics import RoundRecord, RunRecorder
from lumos_ray.federated._strategy import build_strategy, resolve_robust_method

__all__ = ["CONFIG_KEY", "RUN_NAME_KEY", "build_server_app", "run_federation"]

#: run_config / ConfigRecord key carrying the validated FederationConfig as JSON.
CONFIG_KEY = "lumos-config"
RUN_NAME_KEY = "lumos-run-name"


def _msg_bytes(msgs: list[Message]) -> int:
    total = 0
    for m in msgs:
        if m.has_error():
            continue
        for rec in m.content.array_records.values():
            total += int(rec.count_bytes())
    return total


def _wait_for_sites(grid: Grid, cfg: FederationConfig, what: str) -> int:
    deadline = time.monotonic() + cfg.wait_for_sites_s
    while True:
        n = len(list(grid.get_node_ids()))
        if n >= cfg.min_available_sites:
            return n
        if time.monotonic() > deadline:
            raise FederationError(
                f"{what}: only {n} site(s) connected after waiting "
                f"{cfg.wait_for_sites_s:.0f}s; min_available_sites is "
                f"{cfg.min_available_sites}.",
                connected=n,
            )
        time.sleep(0.5)


def _metric(rec: Any, key: str) -> float | None:
    if rec is None or key not in rec:
        return None
    return float(rec[key])


def run_federation(
    grid: Grid,
    cfg: FederationConfig,
    run_name: str,
    *,
    mode: str,
    context: Context | None = None,
) -> dict[str, Any]:
    """Run all rounds; returns the summary also written to the run's status.json."""
    spec = get_app_spec(cfg.app)
    recorder = RunRecorder(run_name, config=cfg.model_dump(mode="json"), mode=mode)
    try:
        n_sites = _wait_for_sites(grid, cfg, "start")
        strategy = build_strategy(cfg, n_sites, mode=mode)
        arrays: ArrayRecord = spec.initial_arrays(cfg)
        initial = spec.central_evaluate(cfg, arrays)
        recorder.set_initial(initial)
        print(f"[lumos federate] initial: {initial}", flush=True)
        cfg_json = cfg.model_dump_json()
        final = initial
        if cfg.privacy.secagg:
            from lumos_ray.federated._secagg import run_secagg

            if context is None:
                raise FederationError("SecAgg+ needs the ServerApp context")
            arrays = run_secagg(
                grid,
                context,
                cfg,
                recorder,
                spec,
                arrays,
                lambda what: _wait_for_sites(grid, cfg, what),
            )
            final = spec.central_evaluate(cfg, arrays)
        for rnd in range(1, cfg.rounds + 1 if not cfg.privacy.secagg else 1):
            t0 = time.monotonic()
            _wait_for_sites(grid, cfg, f"round {rnd}")
            train_cfg = ConfigRecord({CONFIG_KEY: cfg_json, "local-epochs": cfg.local_epochs})
            msgs = list(strategy.configure_train(rnd, arrays, train_cfg, grid))
            sent = _msg_bytes(msgs)
            replies = list(grid.send_and_receive(msgs, timeout=cfg.round_timeout_s))
            ok = [r for r in replies if not r.has_error()]
            received = _msg_bytes(ok)
            new_arrays, train_metrics = strategy.aggregate_train(rnd, replies)
            rejected = len(strategy.last_rejected)
            accepted = len(ok) - rejected
            if accepted < cfg.min_train_sites:
                reasons = [r.error.reason for r in replies if r.has_error()]
                reasons += [reason for _, reason in strategy.last_rejected]
                missing = len(msgs) - len(replies)
                raise FederationError(
                    f"round {rnd}: {accepted} usable update(s) from {len(msgs)} sampled "
                    f"site(s), below min_train_sites={cfg.min_train_sites} "
                    f"({missing} no reply within {cfg.round_timeout_s:.0f}s"
                    + (f"; errors: {reasons[:3]}" if reasons else "")
                    + ")",
                    round=rnd,
                )
            if new_arrays is not None:
                arrays = new_arrays
            elif strategy.last_skipped:
                print(f"[lumos federate] round {rnd} skipped: {strategy.last_skipped}", flush=True)
            eval_metrics = None
            if cfg.fraction_evaluate > 0:
                _wait_for_sites(grid, cfg, f"round {rnd} evaluation")
                eval_cfg = ConfigRecord({CONFIG_KEY: cfg_json})
                emsgs = list(strategy.configure_evaluate(rnd, arrays, eval_cfg, grid))
                sent += _msg_bytes(emsgs)
                ereplies = list(grid.send_and_receive(emsgs, timeout=cfg.round_timeout_s))
                eval_metrics = strategy.aggregate_evaluate(rnd, ereplies)
            final = spec.central_evaluate(cfg, arrays)
            recorder.record(
                RoundRecord(
                    round=rnd,
                    sites_sampled=len(msgs),
                    sites_replied=accepted,
                    sites_failed=len(msgs) - len(ok),
                    sites_rejected=rejected,
                    bytes_sent=sent,
                    bytes_received=received,
                    duration_s=round(time.monotonic() - t0, 4),
                    train_loss=_metric(train_metrics, "train_loss"),
                    eval_loss=_metric(eval_metrics, "eval_loss"),
                    eval_accuracy=_metric(eval_metrics, "eval_accuracy"),
                    global_loss=final.get("loss"),
                    global_accuracy=final.get("accuracy"),
                    extra=_guard_extra(strategy),
                )
            )
        result = spec.finalize(cfg, arrays, run_name)
        result["model"] = _save_model(arrays, recorder.dir)
        # What robust.method (auto by default) resolved to in this mode.
        result["robust_method"] = resolve_robust_method(cfg, mode)[0]
        result.update(_privacy_report(cfg))
        recorder.finish("succeeded", final=final, result=result)
        return {
            "run": run_name,
            "state": "succeeded",
            "initial": initial,
            "final": final,
            "rounds": [r.__dict__ for r in recorder.rounds],
            "result": result,
            "dir": str(recorder.dir),
        }
    except FederationError as exc:
        recorder.finish("failed", error=exc.message)
        raise
    except Exception as exc:
        recorder.finish("failed", error=f"{type(exc).__name__}: {exc}")
        raise


def _save_model(arrays: ArrayRecord, run_dir: Any) -> str:
    """The final global model (arrays by key) as ``<run dir>/model.npz``: what the run
    produced, loadable with ``numpy.load`` (no pickle)."""
    import numpy as np

    path = run_dir / "model.npz"
    named: dict[str, Any] = {k: arrays[k].numpy() for k in arrays.keys()}
    np.savez(path, allow_pickle=False, **named)
    return str(path)


def _guard_extra(strategy: UpdateGuard) -> dict[str, Any]:
    """What the update guard did this round, for rounds.jsonl and the run store."""
    out: dict[str, Any] = {
        "clipped_sites": len(strategy.last_clipped),
        "weight_clipped_sites": len(strategy.last_weight_clipped),
    }
    if strategy.last_unweighted:
        out["unweighted_sites"] = len(strategy.last_unweighted)
    if strategy.last_rejected:
        out["rejected"] = [{"node": n, "reason": r} for n, r in strategy.last_rejected]
    if strategy.last_skipped:
        out["skipped"] = strategy.last_skipped
    if strategy.last_eval_skipped:
        out["eval_skipped"] = strategy.last_eval_skipped
    return out


def _privacy_report(cfg: FederationConfig) -> dict[str, Any]:
    p = cfg.privacy
    out: dict[str, Any] = {}
    if p.secagg:
        out = {
            "secagg": "SecAgg+",
            "secagg_num_shares": p.secagg_num_shares,
            "secagg_reconstruction_threshold": p.secagg_reconstruction_threshold,
        }
    return {**out, **_dp_report(cfg)}


def _dp_report(cfg: FederationConfig) -> dict[str, Any]:
    p = cfg.privacy
    if p.dp == "local":
        # Flower's LocalDpMod is an (epsilon, delta) Gaussian mechanism per round; basic
        # composition over the rounds bounds the total (a loose upper bound).
        return {
            "dp": "local",
            "epsilon_per_round": p.epsilon,
            "delta_per_round": p.delta,
            "epsilon_total_basic_composition": p.epsilon * cfg.rounds,
        }
    if p.dp == "central":
        return {
            "dp": "central",
            "noise_multiplier": p.noise_multiplier,
            "clipping_norm": p.clipping_norm,
            "epsilon": None,
            "note": "Flower's fixed-clipping wrapper reports no epsilon",
        }
    return {}


def build_server_app(
    cfg: FederationConfig | None = None, run_name: str | None = None, *, mode: str = "simulation"
) -> ServerApp:
    """A ServerApp for ``cfg``; without one it reads the config from the run config
    (``flwr run`` of the app directory written by ``lumos federate run``)."""
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        c = cfg
        if c is None:
            raw = context.run_config.get(CONFIG_KEY)
            if not raw:
                raise FederationError(f"run config has no {CONFIG_KEY!r}")
            c = FederationConfig.model_validate_json(str(raw))
        name = (
            run_name
            or str(context.run_config.get(RUN_NAME_KEY) or "")
            or (f"{c.name}-{context.run_id}")
        )
        run_federation(grid, c, name, mode=mode, context=context)

    return app
