"""Skip ray.serve.llm's per-node "download" task for models already on local disk.

``LLMServer`` starts an extra Ray task on every node of the replica's placement group
to download weights before the engine starts. For a local model directory (lumos-tiny,
or any path) there is nothing to download, and that task costs a process that imports
vLLM: about a minute on a busy 2-core machine. Ray's own callback seam
(``CallbackBase.ctx.run_init_node``) turns it off.
"""

from __future__ import annotations

from ray.llm._internal.common.callbacks.base import CallbackBase

__all__ = ["LocalModelCallback"]


class LocalModelCallback(CallbackBase):
    async def on_before_node_init(self) -> None:
        self.ctx.run_init_node = False
