"""The ClientApp every site runs (simulated or real): Message API train/evaluate.

Sites hold no config file: each message carries the FederationConfig (``lumos-config``
in its ConfigRecord); the site's identity and data come from its node config
(``partition-id``/``num-partitions``, or ``data-file`` for a site's own .npz).
Local DP is Flower's LocalDpMod, applied by a small mod when the config asks for it.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np
from flwr.app import (
    Array,
    ArrayRecord,
    ConfigRecord,
    Context,
    Message,
    MessageType,
    MetricRecord,
    RecordDict,
)
from flwr.clientapp import ClientApp
from flwr.clientapp.mod import LocalDpMod

from lumos_ray.federated._apps import get_app_spec
from lumos_ray.federated._config import FederationConfig
from lumos_ray.federated._secagg import secagg_client_mod, secagg_train

__all__ = ["build_client_app"]

_CONFIG_KEY = "lumos-config"


def _cfg(msg: Message) -> FederationConfig:
    return _parse(str(msg.content["config"][_CONFIG_KEY]))


@lru_cache(maxsize=8)
def _parse(raw: str) -> FederationConfig:
    """Every message carries the same config JSON: validate it once per process."""
    return FederationConfig.model_validate_json(raw)


def _site(context: Context) -> dict[str, Any]:
    nc = dict(context.node_config)
    nc.setdefault("partition-id", 0)
    nc.setdefault("num-partitions", 1)
    return nc


def _number(conf: ConfigRecord, key: str, default: float) -> float:
    """A numeric entry of the server's round config (a ConfigRecord value may be any
    record type; anything but a number here is a server bug, said plainly)."""
    v = conf.get(key, default)
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise TypeError(f"round config {key!r} must be a number, got {type(v).__name__}")
    return float(v)


def _poison(rec: ArrayRecord, kind: str, scale: float) -> ArrayRecord:
    out = {}
    for k in rec.keys():
        a = rec[k].numpy().astype(np.float32)
        a = np.full_like(a, np.nan) if kind == "nan" else a * np.float32(scale)
        out[k] = Array(a)
    return ArrayRecord(out)


def _attack(
    cfg: FederationConfig, pid: int, arrays: ArrayRecord, metrics: dict[str, Any]
) -> ArrayRecord:
    """The drill's misbehaviour for site ``pid`` (``attack:``), if it is an attacker."""
    if pid in cfg.attack.sites:
        arrays = _poison(arrays, cfg.attack.kind, cfg.attack.scale)
    for a in cfg.attack.per_site:
        if a.site != pid:
            continue
        if a.kind == "examples":
            metrics["num-examples"] = a.examples
        else:
            arrays = _poison(arrays, a.kind, a.scale)
    return arrays


def _privacy_mod(msg: Message, context: Context, call_next: Any) -> Message:
    """Apply Flower's LocalDpMod to train replies when the run asks for local DP."""
    if msg.metadata.message_type == MessageType.TRAIN and "config" in msg.content:
        cfg = _cfg(msg)
        p = cfg.privacy
        if p.dp == "local":
            mod = LocalDpMod(p.clipping_norm, p.sensitivity, p.epsilon, p.delta)
            return mod(msg, context, call_next)
    return call_next(msg, context)


def build_client_app() -> ClientApp:
    app = ClientApp(mods=[_privacy_mod, secagg_client_mod])

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        site = _site(context)
        if "fitins.config" in msg.content.config_records:  # SecAgg+ (legacy FitIns)
            return secagg_train(msg, site)
        cfg = _cfg(msg)
        spec = get_app_spec(cfg.app)
        conf = msg.content.config_records["config"]
        arrays = msg.content.array_records["arrays"]
        rnd = int(_number(conf, "server-round", 0))
        new_arrays, metrics = spec.local_train(
            cfg,
            arrays,
            site,
            epochs=int(_number(conf, "local-epochs", cfg.local_epochs)),
            proximal_mu=_number(conf, "proximal-mu", 0.0),
            seed=cfg.seed * 10007 + rnd * 101 + int(site["partition-id"]),
        )
        new_arrays = _attack(cfg, int(site["partition-id"]), new_arrays, metrics)
        content = RecordDict({"arrays": new_arrays, "metrics": MetricRecord(metrics)})
        return Message(content=content, reply_to=msg)

    @app.evaluate()
    def evaluate(msg: Message, context: Context) -> Message:
        cfg = _cfg(msg)
        spec = get_app_spec(cfg.app)
        metrics = spec.local_evaluate(cfg, msg.content.array_records["arrays"], _site(context))
        return Message(content=RecordDict({"metrics": MetricRecord(metrics)}), reply_to=msg)

    return app
