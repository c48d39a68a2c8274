"""Build the Flower strategy a config asks for, plus lumos's update guard.

Everything that aggregates is Flower's own (``flwr.serverapp.strategy``: FedAvg,
FedProx, FedAdam, FedTrimmedAvg, Krum, FedMedian, the DP wrappers). The one thing
Flower does not do is refuse a reply whose arrays hold NaN/Inf: one such site turns a
mean (and Krum's distances) into NaN. :class:`UpdateGuard` drops those replies and can
clip each site's update norm, then hands the rest to the wrapped strategy.
"""

from __future__ import annotations

from collections.abc import Iterable
from logging import WARNING
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.common import log
from flwr.serverapp import Grid
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

__all__ = ["UpdateGuard", "build_strategy"]


def build_strategy(cfg: FederationConfig, num_sites_hint: int) -> UpdateGuard:
    """The configured strategy, wrapped (DP, then the guard) as the config asks."""
    common: dict[str, Any] = {
        "fraction_train": cfg.fraction_train,
        "fraction_evaluate": cfg.fraction_evaluate,
        "min_train_nodes": cfg.min_train_sites,
        "min_evaluate_nodes": min(cfg.min_train_sites, cfg.min_available_sites),
        "min_available_nodes": cfg.min_available_sites,
    }
    base: Strategy
    robust = cfg.robust.method
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
    )


def _ndarrays(rec: ArrayRecord) -> list[np.ndarray]:
    return rec.to_numpy_ndarrays()


class UpdateGuard(Strategy):
    """Drops non-finite replies and clips update norms before the inner strategy runs."""

    def __init__(
        self,
        inner: Strategy,
        *,
        reject_non_finite: bool = True,
        max_update_norm: float | None = None,
        proximal_mu: float = 0.0,
    ) -> None:
        self.inner = inner
        self.reject_non_finite = reject_non_finite
        self.max_update_norm = max_update_norm
        self.proximal_mu = proximal_mu
        self._global: ArrayRecord | None = None
        #: (node id, reason) of replies rejected in the last aggregate_train call.
        self.last_rejected: list[tuple[int, str]] = []
        self.last_clipped: list[int] = []

    def summary(self) -> None:
        self.inner.summary()

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        self._global = arrays
        if self.proximal_mu > 0:
            # Robust aggregators don't send FedProx's term; lumos sends it for them.
            config["proximal-mu"] = self.proximal_mu
        return self.inner.configure_train(server_round, arrays, config, grid)

    def _check(self, msg: Message) -> str | None:
        for rec in msg.content.array_records.values():
            for arr in _ndarrays(rec):
                if np.issubdtype(arr.dtype, np.floating) and not np.all(np.isfinite(arr)):
                    return "update contains NaN/Inf values"
        return None

    def _clip(self, msg: Message) -> bool:
        assert self._global is not None and self.max_update_norm is not None
        glob = _ndarrays(self._global)
        clipped = False
        for key, rec in list(msg.content.array_records.items()):
            arrays = _ndarrays(rec)
            if len(arrays) != len(glob):
                continue
            deltas = [a - g for a, g in zip(arrays, glob, strict=True)]
            norm = float(np.sqrt(sum(float(np.sum(d.astype(np.float64) ** 2)) for d in deltas)))
            if norm > self.max_update_norm:
                factor = self.max_update_norm / norm
                new = [
                    (g + d * factor).astype(a.dtype)
                    for a, g, d in zip(arrays, glob, deltas, strict=True)
                ]
                msg.content[key] = ArrayRecord(
                    {k: Array(v) for k, v in zip(rec.keys(), new, strict=True)}
                )
                clipped = True
        return clipped

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        kept: list[Message] = []
        self.last_rejected = []
        self.last_clipped = []
        for msg in replies:
            if not msg.has_error() and self.reject_non_finite:
                reason = self._check(msg)
                if reason:
                    node = msg.metadata.src_node_id
                    self.last_rejected.append((node, reason))
                    log(WARNING, "lumos guard: rejected reply of node %s: %s", node, reason)
                    continue
            if not msg.has_error() and self.max_update_norm and self._global is not None:
                if self._clip(msg):
                    self.last_clipped.append(msg.metadata.src_node_id)
            kept.append(msg)
        if not [m for m in kept if not m.has_error()]:
            return None, None
        return self.inner.aggregate_train(server_round, kept)

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        return self.inner.configure_evaluate(server_round, arrays, config, grid)

    def aggregate_evaluate(
        self, server_round: int, replies: Iterable[Message]
    ) -> MetricRecord | None:
        return self.inner.aggregate_evaluate(server_round, replies)
