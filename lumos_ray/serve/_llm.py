"""LLM deployments: Ray's own ``ray.serve.llm`` LLMServer (vLLM engine) + local LoRA.

Why a subclass and not a rewrite: ``LLMServer`` already owns the vLLM engine
(``AsyncLLM``), OpenAI request handling, tool parsing, streaming batches and
Serve multiplexing. Its only gap for us is where LoRA adapters come from: its loader
accepts object-store URIs only (``LoraConfig.dynamic_lora_loading_path`` must be
``s3://``, ``gs://``...). :class:`RegistryLoraLoader` resolves an adapter name in the
local :class:`~lumos_ray.adapters.AdapterRegistry` first and hands vLLM the local
path (vLLM's own ``load_lora_adapter``, via ``LLMServer``'s ``resolve_lora``); names not
in the registry fall back to Ray's object-store loader when a path is configured.
Adapters registered after start are picked up on first use: no restart.
The server class itself lives in ``_llm_server`` (imports vLLM).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from lumos_ray.serve._config import ModelConfig, ServeConfig

__all__ = ["build_llm_config", "llm_deployment", "llm_deployment_name"]


def _vllm_env(home: str) -> dict[str, str]:
    cache = Path(home) / "vllm-cache"
    return {
        "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1"),
        "HF_HUB_OFFLINE": "1",
        "VLLM_NO_USAGE_STATS": "1",
        "DO_NOT_TRACK": "1",
        "VLLM_CACHE_ROOT": os.environ.get("VLLM_CACHE_ROOT", str(cache)),
        # Transformers must not try the hub for the locally built tokenizer either.
        "TRANSFORMERS_OFFLINE": "1",
    }


def resolve_model_source(source: str) -> str:
    """'lumos-tiny' -> the cached local build; anything else is passed through."""
    from lumos_ray.models import TINY_MODEL_NAME, tiny_model_path

    if source == TINY_MODEL_NAME:
        return str(tiny_model_path())
    p = Path(source).expanduser()
    return str(p.resolve()) if p.exists() else source


def llm_deployment_name(model: ModelConfig) -> str:
    return f"lumos-serve-llm-{model.name}"


def build_llm_config(model: ModelConfig, cfg: ServeConfig, job_env: dict[str, str]) -> Any:
    """A ``ray.serve.llm.LLMConfig`` for one model entry of the serve config."""
    from ray.serve.llm import LLMConfig

    from lumos_ray.runtime import current_settings

    home = str(Path(current_settings().home).expanduser().resolve())
    engine_kwargs = dict(model.engine_kwargs)
    lora_config = None
    if model.lora.enabled:
        engine_kwargs.setdefault("enable_lora", True)
        engine_kwargs.setdefault("max_lora_rank", model.lora.max_lora_rank)
        engine_kwargs.setdefault("max_loras", model.lora.max_adapters_per_replica)
        lora_config = {
            "max_num_adapters_per_replica": model.lora.max_adapters_per_replica,
            "dynamic_lora_loading_path": model.lora.object_store_path,
        }
    if model.autoscaling is not None:
        deployment_config: dict[str, Any] = {
            "autoscaling_config": model.autoscaling.model_dump(),
        }
    else:
        deployment_config = {"num_replicas": model.num_replicas}
    deployment_config["max_ongoing_requests"] = model.max_ongoing_requests
    deployment_config["ray_actor_options"] = {"num_cpus": model.num_cpus}
    # LLMServer merges runtime_env at the top level, so our env_vars would replace
    # the job's (PYTHONPATH, LUMOS_*): carry them over explicitly.
    env = {**job_env, **_vllm_env(home), **model.env}
    source = resolve_model_source(model.source)
    extra: dict[str, Any] = {}
    if Path(source).is_dir():
        # Weights are already on this (single) node: skip Ray's download task.
        extra["callback_config"] = {
            "callback_class": "lumos_ray.serve._llm_callback:LocalModelCallback"
        }
    return LLMConfig(
        model_loading_config={"model_id": model.name, "model_source": source},
        accelerator_config={"kind": model.accelerator},
        engine_kwargs=engine_kwargs,
        lora_config=lora_config,
        deployment_config=deployment_config,
        runtime_env={"env_vars": env},
        log_engine_metrics=False,
        **extra,
    )


def llm_deployment(model: ModelConfig, cfg: ServeConfig, job_env: dict[str, str]) -> Any:
    """A bound LLMServer deployment (an Application node) for one model."""
    from ray.serve.llm import build_llm_deployment

    from lumos_ray.serve._llm_server import LumosLLMServer

    llm_config = build_llm_config(model, cfg, job_env)
    return build_llm_deployment(
        llm_config,
        deployment_cls=LumosLLMServer,
        override_serve_options={"name": llm_deployment_name(model)},
        bind_kwargs={"adapter_root": cfg.resolved_adapters_dir()},
    )
