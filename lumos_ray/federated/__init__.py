"""Federated learning on Flower: simulated on Ray, or deployed across sites.

- :func:`simulate` runs a :class:`FederationConfig` on Flower's Ray backend.
- :func:`build_server_app` / :func:`build_client_app` are the Message-API apps
  (tabular PyTorch model, or federated LoRA of a causal LM).
- :mod:`lumos_ray.federated.deploy` starts SuperLinks/SuperNodes and runs ``flwr run``.
"""

from lumos_ray.federated._client import build_client_app
from lumos_ray.federated._config import (
    AttackConfig,
    DataConfig,
    DeploymentConfig,
    FederationConfig,
    LanguageModelConfig,
    PrivacyConfig,
    RobustConfig,
    SimulationConfig,
    SiteAttack,
    StrategyConfig,
    load_federation_config,
)
from lumos_ray.federated._guard import UpdateGuard
from lumos_ray.federated._metrics import federated_home, list_federated_runs, read_federated_run
from lumos_ray.federated._server import build_server_app, run_federation
from lumos_ray.federated._simulate import apply_overrides, simulate
from lumos_ray.federated._strategy import build_strategy, resolve_robust_method

__all__ = [
    "AttackConfig",
    "DataConfig",
    "DeploymentConfig",
    "FederationConfig",
    "LanguageModelConfig",
    "PrivacyConfig",
    "RobustConfig",
    "SimulationConfig",
    "SiteAttack",
    "StrategyConfig",
    "UpdateGuard",
    "apply_overrides",
    "build_client_app",
    "build_server_app",
    "build_strategy",
    "federated_home",
    "list_federated_runs",
    "load_federation_config",
    "read_federated_run",
    "resolve_robust_method",
    "run_federation",
    "simulate",
]
