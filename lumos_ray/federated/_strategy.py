"""Build the Flower strategy a config asks for, behind lumos's update guard.

Everything that aggregates is Flower's own (``flwr.serverapp.strategy``: FedAvg,
FedProx, FedAdam, FedTrimmedAvg, Krum, FedMedian, the DP wrappers). What Flower does
not do is check what a site sends: :class:`~lumos_ray.federated._guard.UpdateGuard`
(in front of every strategy) does. ``robust.method: auto`` resolves here: a deployment
(real sites) aggregates with FedMedian, a simulation with the configured strategy.
"""

from __future__ import annotations

from logging import WARNING
from typing import Any

from flwr.common import log
from flwr.serverapp.strategy import (
    DifferentialPrivacyServerSideFixedClipping,
    FedAdam,
    FedAvg,
    FedMedian,
    FedProx,
    FedTrimmedAvg,
    Krum,
    Strategy,
)

from lumos_ray.federated._config import FederationConfig
from lumos_ray.federated._guard import UpdateGuard

__all__ = ["build_strategy", "resolve_robust_method"]

#: What ``robust.method: auto`` means in a deployment (sites lumos does not control):
#: the coordinate-wise median resists one hostile site among three, where a trimmed
#: mean with the default ``trim_beta`` trims nothing below five sites.
DEPLOYMENT_ROBUST_METHOD = "median"


def resolve_robust_method(cfg: FederationConfig, mode: str) -> tuple[str, str | None]:
    """(robust method to run, warning to log or None) for ``cfg`` in ``mode``.

    A deployment is robust unless the config opts out (``robust.method: none``, which
    is warned about) or asks for what cannot be combined with a robust aggregator
    (FedAdam's server optimizer, SecAgg+, which hides single updates)."""
    method = cfg.robust.method
    deployed = mode == "deployment"
    if method == "auto":
        if not deployed:
            return "none", None
        if cfg.strategy.name == "fedadam" or cfg.privacy.secagg:
            why = "strategy fedadam" if cfg.strategy.name == "fedadam" else "privacy.secagg"
            return "none", (
                f"robust aggregation is off: {why} cannot be combined with a robust "
                "aggregator; one site can steer the global model (the update guard "
                "still bounds example counts and rejects malformed updates)"
            )
        return DEPLOYMENT_ROBUST_METHOD, None
    if method == "none" and deployed:
        return "none", (
            "robust aggregation is off (robust.method: none): one site can steer the "
            "global model; remove the setting (auto = median) or choose trimmed_mean/krum"
        )
    return method, None


def build_strategy(
    cfg: FederationConfig, num_sites_hint: int, *, mode: str = "simulation"
) -> UpdateGuard:
    """The configured strategy, wrapped (DP, then the guard) as the config asks."""
    common: dict[str, Any] = {
        "fraction_train": cfg.fraction_train,
        "fraction_evaluate": cfg.fraction_evaluate,
        "min_train_nodes": cfg.min_train_sites,
        "min_evaluate_nodes": min(cfg.min_train_sites, cfg.min_available_sites),
        "min_available_nodes": cfg.min_available_sites,
    }
    base: Strategy
    robust, warning = resolve_robust_method(cfg, mode)
    if warning:
        log(WARNING, "lumos: %s", warning)
    if robust == "trimmed_mean":
        base = FedTrimmedAvg(**common, beta=cfg.robust.trim_beta)
    elif robust == "krum":
        base = Krum(**common, num_malicious_nodes=cfg.robust.num_malicious)
    elif robust == "median":
        base = FedMedian(**common)
    elif cfg.strategy.name == "fedprox":
        base = FedProx(**common, proximal_mu=cfg.strategy.proximal_mu)
    elif cfg.strategy.name == "fedadam":
        s = cfg.strategy
        base = FedAdam(
            **common, eta=s.eta, eta_l=s.eta_l, beta_1=s.beta_1, beta_2=s.beta_2, tau=s.tau
        )
    else:
        base = FedAvg(**common)
    if cfg.privacy.dp == "central":
        sampled = max(cfg.min_train_sites, int(num_sites_hint * cfg.fraction_train))
        base = DifferentialPrivacyServerSideFixedClipping(
            base,
            noise_multiplier=cfg.privacy.noise_multiplier,
            clipping_norm=cfg.privacy.clipping_norm,
            num_sampled_clients=sampled,
        )
    return UpdateGuard(
        base,
        reject_non_finite=cfg.robust.reject_non_finite,
        max_update_norm=cfg.robust.max_update_norm,
        proximal_mu=cfg.strategy.proximal_mu if cfg.strategy.name == "fedprox" else 0.0,
        max_site_examples=cfg.robust.max_site_examples,
        max_weight_ratio=cfg.robust.max_weight_ratio,
    )
