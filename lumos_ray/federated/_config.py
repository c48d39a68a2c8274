"""Pydantic models for a federation: one YAML file drives simulation and deployment.

Why one model for both: the same ServerApp/ClientApp run in Flower's Ray simulation and
on real SuperLink/SuperNode processes, so the knobs (strategy, sampling, privacy,
robustness) must mean the same thing in both. The server ships the validated config to
every site inside each round's ConfigRecord, so sites never need a copy of the file.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from lumos_ray.config import load_yaml_model
from lumos_ray.finetune import LoraSpec

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
    "is_loopback",
    "load_federation_config",
]

_FORBID = ConfigDict(extra="forbid")


class StrategyConfig(BaseModel):
    """Which Flower aggregation strategy runs on the server."""

    model_config = _FORBID
    name: Literal["fedavg", "fedprox", "fedadam"] = "fedavg"
    proximal_mu: float = Field(0.1, ge=0, description="FedProx proximal term weight.")
    eta: float = Field(0.05, gt=0, description="FedAdam server learning rate.")
    eta_l: float = Field(0.1, gt=0, description="FedAdam client learning rate (informative).")
    beta_1: float = Field(0.9, ge=0, lt=1)
    beta_2: float = Field(0.99, ge=0, lt=1)
    tau: float = Field(1e-3, gt=0, description="FedAdam adaptivity.")


class RobustConfig(BaseModel):
    """Defences against poisoned or broken site updates.

    ``method: auto`` (the default) is robust where sites are not under one operator's
    control: a deployment (real SuperNodes) aggregates with Flower's ``FedMedian``; a
    simulation (all sites are this process's own virtual sites) with the configured
    strategy. ``method: none`` in a deployment is an explicit opt-out and is logged as a
    warning. The example-count bounds apply in every mode."""

    model_config = _FORBID
    method: Literal["auto", "none", "trimmed_mean", "krum", "median"] = "auto"
    trim_beta: float = Field(0.2, gt=0, lt=0.5, description="Fraction cut at each end.")
    num_malicious: int = Field(1, ge=0, description="Krum: tolerated malicious sites.")
    reject_non_finite: bool = Field(
        True, description="Drop replies whose arrays hold NaN/Inf before aggregation."
    )
    max_update_norm: float | None = Field(
        None, gt=0, description="Clip each site's update (reply - global) to this L2 norm."
    )
    max_site_examples: int | None = Field(
        None,
        ge=1,
        description="Cap on the example count (aggregation weight) one site may report.",
    )
    max_weight_ratio: float | None = Field(
        3.0,
        ge=1,
        description="Clip each site's reported example count to this many times the "
        "median count of the round's accepted replies (None = no relative clip).",
    )


class PrivacyConfig(BaseModel):
    """Differential privacy and secure aggregation, both provided by Flower."""

    model_config = _FORBID
    dp: Literal["none", "central", "local"] = "none"
    clipping_norm: float = Field(1.0, gt=0)
    noise_multiplier: float = Field(0.0, ge=0, description="Central DP Gaussian noise.")
    epsilon: float = Field(10.0, gt=0, description="Local DP: epsilon per round per site.")
    delta: float = Field(1e-5, gt=0, lt=1, description="Local DP delta per round.")
    sensitivity: float = Field(1.0, ge=0, description="Local DP sensitivity.")
    secagg: bool = Field(False, description="SecAgg+ (server never sees one site's update).")
    secagg_num_shares: int = Field(3, ge=2)
    secagg_reconstruction_threshold: int = Field(2, ge=1)
    secagg_clipping_range: float = Field(8.0, gt=0)
    secagg_quantization_range: int = Field(4194304, gt=0)


class DataConfig(BaseModel):
    """Synthetic tabular data (classification), split into one partition per site."""

    model_config = ConfigDict(extra="forbid", frozen=True)  # hashable: cached per config
    num_samples: int = Field(2000, ge=20)
    num_features: int = Field(10, ge=1)
    num_classes: int = Field(3, ge=2)
    iid: bool = True
    dirichlet_alpha: float = Field(0.5, gt=0, description="Label skew when iid is false.")
    test_fraction: float = Field(0.2, gt=0, lt=1)
    noise: float = Field(1.0, ge=0, description="Class overlap; larger = harder task.")
    seed: int = 0


class LanguageModelConfig(BaseModel):
    """The LoRA app's causal LM, its text, and where the final adapter goes.

    The adapter itself is ``lora:`` (:class:`~lumos_ray.finetune.LoraSpec`, the same
    spec as a fine-tuning job's); this section is what federation adds around it."""

    model_config = _FORBID
    base_model: str | None = Field(None, description="Local HF model dir; None = lumos-tiny.")
    seq_len: int = Field(48, ge=8, description="Tokens per example (fine-tuning's seq_len).")
    samples_per_site: int = Field(24, ge=1, description="Synthetic sentences per site.")
    heldout_samples: int = Field(24, ge=1, description="Server-side held-out sentences.")
    adapter_name: str = Field("federated-lora", min_length=1)
    register_adapter: bool = Field(True, description="Register the final adapter in the registry.")


# Keys the federated `lora:` section held before it became the shared LoraSpec, and
# where each one lives now.
_MOVED_FROM_LORA = {
    "base_model": "lm.base_model",
    "max_length": "lm.seq_len",
    "samples_per_site": "lm.samples_per_site",
    "heldout_samples": "lm.heldout_samples",
    "adapter_name": "lm.adapter_name",
    "register_adapter": "lm.register_adapter",
}


class SiteAttack(BaseModel):
    """One site's misbehaviour in a drill (``attack.per_site``)."""

    model_config = _FORBID
    site: int = Field(ge=0, description="Partition id of the attacking site.")
    kind: Literal["nan", "scale", "examples"] = "scale"
    scale: float = Field(1e4, description="kind scale: multiply the trained arrays by this.")
    examples: float = Field(1e15, description="kind examples: the example count reported.")


class AttackConfig(BaseModel):
    """Make chosen sites misbehave: a drill for robust aggregation, never for production."""

    model_config = _FORBID
    sites: list[int] = Field(default_factory=list, description="Partition ids that attack.")
    kind: Literal["nan", "scale"] = "scale"
    scale: float = 1e4
    per_site: list[SiteAttack] = Field(
        default_factory=list, description="Different attacks at different sites."
    )


class SimulationConfig(BaseModel):
    """Flower's Ray backend: N virtual sites on the Ray cluster."""

    model_config = _FORBID
    num_sites: int = Field(4, ge=1)
    max_parallel_sites: int = Field(
        2, ge=1, description="ClientApp actors in the pool (each imports torch once)."
    )


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and any loopback IP (127.0.0.0/8, ::1)."""
    h = host.strip().strip("[]")
    if h.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(h).is_loopback
    except ValueError:
        return False


class DeploymentConfig(BaseModel):
    """Where the SuperLink listens and how `flwr run` reaches it. Never port 8000.

    ``host`` is where the Fleet API (SuperNodes) listens. The Control API is where
    ``flwr run`` ships the app code every SuperNode then executes; open-source Flower
    1.32 has no authentication on it (account auth is Flower Enterprise), so it binds
    on ``control_host``, which must be a loopback address: reach it from elsewhere
    through an SSH tunnel. SuperNode authentication is on unless opted out."""

    model_config = _FORBID
    host: str = "127.0.0.1"
    control_host: str = Field(
        "127.0.0.1", description="Control API bind address; loopback only (no auth)."
    )
    fleet_port: int = Field(9092, ge=1, le=65535)
    control_port: int = Field(9093, ge=1, le=65535)
    serverappio_port: int = Field(9091, ge=1, le=65535)
    certs_dir: str | None = Field(None, description="From `lumos federate certs`; None=insecure.")
    supernode_auth: bool = Field(
        True, description="Only registered SuperNodes may connect (false = opt out)."
    )

    @field_validator("control_host")
    @classmethod
    def _control_on_loopback(cls, v: str) -> str:
        if not is_loopback(v):
            raise ValueError(
                f"control_host {v!r} is not a loopback address. The Control API (where "
                "`flwr run` ships code that every SuperNode executes) has no "
                "authentication in open-source Flower 1.32, so it binds on 127.0.0.1 "
                "only; from another machine use an SSH tunnel "
                "(ssh -L 9093:127.0.0.1:9093 SUPERLINK_HOST)"
            )
        return v

    @model_validator(mode="after")
    def _no_serve_port(self) -> DeploymentConfig:
        ports = [self.fleet_port, self.control_port, self.serverappio_port]
        if 8000 in ports:
            raise ValueError("port 8000 is Ray Serve's; pick another SuperLink port")
        if len(set(ports)) != 3:
            raise ValueError("fleet_port, control_port and serverappio_port must differ")
        return self


class FederationConfig(BaseModel):
    """A federated run: app, rounds, sampling, strategy, privacy, robustness."""

    model_config = _FORBID
    name: str = Field("federation", pattern=r"^[A-Za-z0-9._-]+$")
    app: Literal["tabular", "lora"] = "tabular"
    rounds: int = Field(3, ge=1)
    local_epochs: int = Field(1, ge=1)
    learning_rate: float = Field(0.1, gt=0)
    batch_size: int = Field(32, ge=1)
    hidden_units: int = Field(0, ge=0, description="Tabular MLP width; 0 = linear model.")
    fraction_train: float = Field(1.0, gt=0, le=1)
    fraction_evaluate: float = Field(1.0, ge=0, le=1)
    min_available_sites: int = Field(2, ge=1)
    min_train_sites: int = Field(2, ge=1, description="Replies needed for a round to count.")
    round_timeout_s: float = Field(300.0, gt=0)
    wait_for_sites_s: float = Field(120.0, gt=0)
    seed: int = 0
    strategy: StrategyConfig = Field(default_factory=StrategyConfig)
    robust: RobustConfig = Field(default_factory=RobustConfig)
    privacy: PrivacyConfig = Field(default_factory=PrivacyConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    lora: LoraSpec = Field(
        default_factory=LoraSpec, description="The adapter (app: lora), as in fine-tuning."
    )
    lm: LanguageModelConfig = Field(default_factory=LanguageModelConfig)
    attack: AttackConfig = Field(default_factory=AttackConfig)
    simulation: SimulationConfig = Field(default_factory=SimulationConfig)
    deployment: DeploymentConfig = Field(default_factory=DeploymentConfig)

    @field_validator("lora", mode="before")
    @classmethod
    def _moved_out_of_lora(cls, v: Any) -> Any:
        """Settings that are not about the adapter left ``lora:``; name where they went,
        rather than failing with a bare "extra field" error."""
        if isinstance(v, dict):
            moved = [k for k in v if k in _MOVED_FROM_LORA]
            if moved:
                where = ", ".join(f"lora.{k} -> {_MOVED_FROM_LORA[k]}" for k in moved)
                raise ValueError(
                    f"moved out of lora: {where}. lora: now holds only the adapter "
                    "(r, alpha, dropout, target_modules, bias, quantization), the same "
                    "spec as a fine-tuning job's lora:"
                )
        return v

    @model_validator(mode="after")
    def _consistent(self) -> FederationConfig:
        if self.min_train_sites > self.min_available_sites:
            raise ValueError("min_train_sites cannot exceed min_available_sites")
        if self.strategy.name == "fedadam" and self.robust.method not in ("none", "auto"):
            raise ValueError(
                "strategy fedadam (server optimizer) cannot be combined with robust.method;"
                " use fedavg or fedprox with a robust method"
            )
        robust_on = self.robust.method not in ("none", "auto")
        if self.privacy.secagg and (robust_on or self.privacy.dp == "central"):
            raise ValueError(
                "privacy.secagg hides single updates from the server, so robust.method and"
                " central DP (which inspect them) cannot be combined with it"
            )
        if self.privacy.secagg and self.strategy.name != "fedavg":
            raise ValueError("privacy.secagg runs with strategy fedavg only")
        return self


def load_federation_config(path: str | Path) -> FederationConfig:
    """Load and validate a federation YAML (errors name the file and the field)."""
    return load_yaml_model(path, FederationConfig)
