"""Agents: what "each agent is a Ray actor" means. The agent spec, its actor (many
threads per actor), the tool-calling loop that runs inside it, memory, and the chat
model clients the loop talks to."""

from __future__ import annotations

from lumos_ray.actors.agent import (
    Agent,
    AgentHandle,
    AgentResult,
    MemoryConfig,
    Resources,
    RestartPolicy,
)
from lumos_ray.actors.models import ChatModel, ModelConfig, ModelResponse, OpenAIChatModel, ToolCall

__all__ = [
    "Agent",
    "AgentHandle",
    "AgentResult",
    "ChatModel",
    "MemoryConfig",
    "ModelConfig",
    "ModelResponse",
    "OpenAIChatModel",
    "Resources",
    "RestartPolicy",
    "ToolCall",
]
