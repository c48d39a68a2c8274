"""LLM deployments: one ``LumosLLMServer`` Serve deployment per configured model.

Each replica owns one vLLM engine built like ``vllm serve`` builds it (``_vllm``), and
loads LoRA adapters from the local adapter registry on first use (``_llm_server``).
This module only turns a :class:`ServedModelConfig` into Serve options and is cheap to
import: neither vLLM nor the server class is imported until a deployment is built.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from lumos_ray.serve._config import ServeConfig, ServedModelConfig

__all__ = ["llm_deployment", "llm_deployment_name", "llm_deployment_options"]


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


def llm_deployment_name(model: ServedModelConfig) -> str:
    return f"lumos-serve-llm-{model.name}"


def _engine_gpus(model: ServedModelConfig) -> int:
    kw = model.engine_kwargs
    return int(kw.get("tensor_parallel_size", 1)) * int(kw.get("pipeline_parallel_size", 1))


def llm_deployment_options(
    model: ServedModelConfig, home: str, job_env: dict[str, str]
) -> dict[str, Any]:
    """Serve options: replicas/autoscaling, back-pressure, resources, environment.

    The engine runs in the replica's process tree (vLLM starts its engine-core
    process itself), so the replica reserves the engine's resources: one CPU on top of
    ``num_cpus``, and on GPU as many GPUs as tensor x pipeline parallelism uses.
    The job's env vars (PYTHONPATH, LUMOS_*, the trace exporter) are carried over:
    a deployment's own ``env_vars`` replace the job's rather than merge.
    """
    opts: dict[str, Any] = {
        "name": llm_deployment_name(model),
        "max_ongoing_requests": model.max_ongoing_requests,
        "ray_actor_options": {
            "num_cpus": model.num_cpus + 1,
            "runtime_env": {"env_vars": {**job_env, **_vllm_env(home), **model.env}},
        },
        # Engine loading takes minutes on a busy CPU; a health check is an engine RPC.
        "health_check_timeout_s": 60,
        "graceful_shutdown_timeout_s": 30,
    }
    if model.accelerator == "gpu":
        opts["ray_actor_options"]["num_gpus"] = _engine_gpus(model)
    if model.placement is not None:  # where the replicas run (custom resources, labels)
        placed = model.placement.serve_options()
        opts["ray_actor_options"].update(placed.pop("ray_actor_options"))
        opts.update(placed)
    if model.autoscaling is not None:
        opts["autoscaling_config"] = model.autoscaling.model_dump()
    else:
        opts["num_replicas"] = model.num_replicas
    return opts


def serve_home() -> str:
    """The resolved ``$LUMOS_HOME`` replicas get (engine caches, adapters, state)."""
    from lumos_ray.runtime import current_settings

    return str(Path(current_settings().home).expanduser().resolve())


def llm_deployment(model: ServedModelConfig, cfg: ServeConfig, job_env: dict[str, str]) -> Any:
    """A bound ``LumosLLMServer`` deployment (an Application node) for one model."""
    from ray import serve

    from lumos_ray.serve._llm_server import LumosLLMServer

    home = serve_home()
    opts = llm_deployment_options(model, home, job_env)
    # serve.deployment(cls, **opts) returns a Deployment; its stub types the decorator form.
    return serve.deployment(LumosLLMServer, **opts).bind(  # type: ignore[attr-defined]
        model.model_dump_json(), cfg.resolved_adapters_dir(), home
    )
