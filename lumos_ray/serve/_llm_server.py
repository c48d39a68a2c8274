"""``LumosLLMServer``: Ray's LLMServer with LoRA adapters from the local registry.

A module of its own (imported only where vLLM is installed) so Ray pickles the
deployment class by reference: a class defined inside a function would be pickled by
value, dragging in Ray's thread locks.
"""

from __future__ import annotations

from typing import Any

from ray.llm._internal.common.models import global_id_manager
from ray.llm._internal.serve.core.configs.llm_config import DiskMultiplexConfig
from ray.llm._internal.serve.utils.lora_serve_utils import LoraModelLoader
from ray.serve.llm.deployment import LLMServer

from lumos_ray.adapters import AdapterRegistry
from lumos_ray.errors import AdapterError

__all__ = ["LumosLLMServer", "RegistryLoraLoader"]


class RegistryLoraLoader(LoraModelLoader):
    """LoRA by name from the local adapter registry, else from object storage."""

    adapter_root: str | None = None

    async def load_model_from_config(self, lora_model_id: str, llm_config: Any) -> Any:
        registry = AdapterRegistry(self.adapter_root)
        if registry.exists(lora_model_id):
            if lora_model_id in self.disk_cache:
                return self.disk_cache[lora_model_id]
            record = registry.get(lora_model_id)
            disk = DiskMultiplexConfig.model_validate(
                {
                    "model_id": lora_model_id,
                    "max_total_tokens": None,
                    "local_path": record.path,
                    "lora_assigned_int_id": global_id_manager.next(),
                }
            )
            self.disk_cache[lora_model_id] = disk
            return disk
        if llm_config.lora_config and llm_config.lora_config.dynamic_lora_loading_path:
            return await super().load_model_from_config(lora_model_id, llm_config)
        raise AdapterError(f"Unknown adapter {lora_model_id!r} in {registry.root}.")


class LumosLLMServer(LLMServer):
    """LLMServer whose LoRA adapters come from the lumos adapter registry."""

    async def __init__(self, llm_config: Any, *, adapter_root: str | None = None) -> None:
        loader = type("BoundRegistryLoraLoader", (RegistryLoraLoader,), {})
        loader.adapter_root = adapter_root
        await super().__init__(llm_config, model_downloader=loader)
