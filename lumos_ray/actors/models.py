"""The chat model interface agents talk to (OpenAI chat shape).

Messages are plain OpenAI-format dicts (``{"role", "content", "tool_calls",
"tool_call_id"}``): they go over the wire to any OpenAI-compatible server unchanged
and are cheap to store and pickle. A model returns a :class:`ModelResponse`; a
streaming model also yields text deltas before it.
"""

from __future__ import annotations

import json
import os
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from lumos_ray.actors._keys import choose_key
from lumos_ray.errors import ConfigError, ModelError, WorkflowDefinitionError

__all__ = [
    "ChatModel",
    "ModelConfig",
    "ModelResponse",
    "OpenAIChatModel",
    "ToolCall",
    "build_model",
    "model_to_config",
]


@dataclass
class ToolCall:
    id: str
    name: str
    arguments: str  # raw JSON text, exactly as the model produced it

    def to_openai(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "type": "function",
            "function": {"name": self.name, "arguments": self.arguments},
        }


@dataclass
class ModelResponse:
    content: str | None = None
    tool_calls: list[ToolCall] = field(default_factory=list)
    usage: dict[str, int] = field(default_factory=dict)
    finish_reason: str | None = None
    model: str | None = None

    def to_message(self) -> dict[str, Any]:
        msg: dict[str, Any] = {"role": "assistant", "content": self.content}
        if self.tool_calls:
            msg["tool_calls"] = [t.to_openai() for t in self.tool_calls]
        return msg


class ChatModel(ABC):
    """A chat model; subclasses must be picklable (they travel to agent actors)."""

    name: str = "model"

    @abstractmethod
    async def chat(
        self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None
    ) -> ModelResponse: ...

    async def stream(
        self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None
    ) -> AsyncIterator[str | ModelResponse]:
        """Text deltas, then the complete response. Default: one delta, no streaming."""
        resp = await self.chat(messages, tools)
        if resp.content:
            yield resp.content
        yield resp

    async def aclose(self) -> None:
        """Release connections (on the loop that opened them). Default: nothing held."""
        return None

    def to_config(self) -> ModelConfig:
        """This model as data, for durable runs (which store config, never objects).
        Models that cannot be described as config raise."""
        raise WorkflowDefinitionError(
            f"model {type(self).__name__} cannot be stored in a durable run as config.",
            fix="Give the agent a ModelConfig (provider openai / function / scripted / test) "
            "or implement to_config() on the model class.",
        )


class OpenAIChatModel(ChatModel):
    """Any OpenAI-compatible ``/v1/chat/completions`` endpoint (our gateway included).

    The API key: ``api_key`` as given, else the variable ``api_key_env`` names, else
    ``LUMOS_API_KEY`` / ``OPENAI_API_KEY``; a key from the environment is sent only
    to base URLs that environment binds it to (``lumos_ray.actors._keys``: by default
    ``OPENAI_API_KEY`` only to api.openai.com, more via ``LUMOS_MODEL_KEY_URLS``)."""

    def __init__(
        self,
        model: str,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        api_key_env: str | None = None,
        timeout_s: float = 120.0,
        extra_body: dict[str, Any] | None = None,
    ) -> None:
        self.name = model
        self.model = model
        self.base_url = (
            base_url
            or os.environ.get("LUMOS_OPENAI_BASE_URL")
            or os.environ.get("OPENAI_BASE_URL")
            or "http://127.0.0.1:8000/v1"
        ).rstrip("/")
        self.api_key = api_key
        self.api_key_env = api_key_env
        self.timeout_s = timeout_s
        self.extra_body = extra_body or {}
        self._client: Any = None
        self._key_hint = ""

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_client"] = None  # an httpx client is bound to its process and loop
        return state

    async def aclose(self) -> None:
        """Close the HTTP client. It is bound to the event loop that made it, so a caller
        that runs the model under short-lived loops (``asyncio.run`` per batch) uses a
        ``copy.copy`` per loop (copies start without a client) and closes it there."""
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    def _http(self) -> Any:
        import httpx

        if self._client is None:
            # The key is read here, where the agent runs, and only where the
            # environment binds it to this base URL (see lumos_ray.actors._keys).
            choice = choose_key(self.base_url, api_key=self.api_key, api_key_env=self.api_key_env)
            self._key_hint = choice.hint(self.base_url)
            headers = {"Authorization": f"Bearer {choice.key}"} if choice.key else {}
            self._client = httpx.AsyncClient(
                base_url=self.base_url,
                headers=headers,
                timeout=self.timeout_s,
                follow_redirects=False,  # a redirect must not carry the key elsewhere
            )
        return self._client

    def _status_error(self, status: int, text: str) -> ModelError:
        if status < 400:  # a redirect: not followed, so the key stays with this server
            return ModelError(
                f"{self.base_url} answered {status} (a redirect); redirects are not "
                "followed, so the API key never travels to another server.",
                fix="Set the model's base_url to the server's final URL.",
            )
        hint = getattr(self, "_key_hint", "") if status == 401 else ""
        return ModelError(f"{self.base_url} answered {status}: {text[:500]}{hint}")

    def to_config(self) -> ModelConfig:
        if self.api_key and not self.api_key_env:
            raise ConfigError(
                f"OpenAIChatModel({self.model!r}) holds a literal api_key, and durable runs "
                "never store secrets.",
                fix="Pass api_key_env='NAME_OF_ENV_VAR' instead (read where the agent runs), "
                "or set LUMOS_API_KEY / OPENAI_API_KEY on the cluster.",
            )
        return ModelConfig(
            provider="openai",
            name=self.model,
            base_url=self.base_url,
            api_key_env=self.api_key_env,
            extra_body=self.extra_body,
            timeout_s=self.timeout_s,
        )

    def _body(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None) -> dict:
        body: dict[str, Any] = {"model": self.model, "messages": messages, **self.extra_body}
        if tools:
            body["tools"] = tools
        return body

    async def chat(
        self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None
    ) -> ModelResponse:
        import httpx

        try:
            r = await self._http().post(
                "/chat/completions", json=self._body(messages, tools), headers=_trace_headers()
            )
        except httpx.HTTPError as exc:
            raise ModelError(f"{self.base_url}: {type(exc).__name__}: {exc}") from None
        if r.status_code >= 300:
            raise self._status_error(r.status_code, r.text)
        data = r.json()
        choice = data["choices"][0]
        msg = choice.get("message") or {}
        return ModelResponse(
            content=msg.get("content"),
            tool_calls=[
                ToolCall(
                    tc.get("id") or f"call_{i}",
                    tc["function"]["name"],
                    tc["function"].get("arguments") or "{}",
                )
                for i, tc in enumerate(msg.get("tool_calls") or [])
            ],
            usage=data.get("usage") or {},
            finish_reason=choice.get("finish_reason"),
            model=data.get("model"),
        )

    async def stream(
        self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None
    ) -> AsyncIterator[str | ModelResponse]:
        import httpx

        body = self._body(messages, tools) | {
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        text: list[str] = []
        calls: dict[int, dict[str, str]] = {}
        usage: dict[str, int] = {}
        finish = None
        try:
            async with self._http().stream(
                "POST", "/chat/completions", json=body, headers=_trace_headers()
            ) as r:
                if r.status_code >= 300:
                    raise self._status_error(r.status_code, repr((await r.aread())[:500]))
                async for line in r.aiter_lines():
                    if not line.startswith("data:"):
                        continue
                    payload = line[5:].strip()
                    if payload == "[DONE]":
                        break
                    chunk = json.loads(payload)
                    usage = chunk.get("usage") or usage
                    for choice in chunk.get("choices") or []:
                        delta = choice.get("delta") or {}
                        finish = choice.get("finish_reason") or finish
                        if delta.get("content"):
                            text.append(delta["content"])
                            yield delta["content"]
                        for tc in delta.get("tool_calls") or []:
                            slot = calls.setdefault(
                                tc.get("index", 0), {"id": "", "name": "", "arguments": ""}
                            )
                            slot["id"] = tc.get("id") or slot["id"]
                            fn = tc.get("function") or {}
                            slot["name"] += fn.get("name") or ""
                            slot["arguments"] += fn.get("arguments") or ""
        except httpx.HTTPError as exc:
            raise ModelError(f"{self.base_url}: {type(exc).__name__}: {exc}") from None
        yield ModelResponse(
            content="".join(text) or None,
            tool_calls=[
                ToolCall(c["id"] or f"call_{i}", c["name"], c["arguments"] or "{}")
                for i, c in sorted(calls.items())
            ],
            usage=usage,
            finish_reason=finish,
            model=self.model,
        )


class ModelConfig(BaseModel):
    """A model named in YAML: ``provider`` picks the implementation."""

    model_config = ConfigDict(extra="forbid")

    provider: Literal["openai", "function", "scripted", "test"] = "openai"
    name: str | None = Field(default=None, description="Model name sent to the server.")
    base_url: str | None = None
    api_key_env: str | None = Field(default=None, description="Env var holding the API key.")
    function: str | None = Field(default=None, description="'module:attr' for provider=function")
    replies: list[Any] | None = Field(default=None, description="For provider=scripted.")
    extra_body: dict[str, Any] = Field(default_factory=dict)
    timeout_s: float = Field(default=120.0, gt=0, le=3600)


def _trace_headers() -> dict[str, str]:
    """W3C trace context of the current span, so the server continues the trace."""
    from lumos_ray import tracing

    return {k: v for k, v in tracing.inject().items() if k in ("traceparent", "tracestate")}


_PROVIDERS_GROUP = "lumos_ray.chat_models"


def _provider(name: str) -> Any:
    """A chat-model class registered under ``name`` in the ``lumos_ray.chat_models``
    entry-point group (the shipped test models are registered there like any plugin,
    so production code does not import them)."""
    from importlib.metadata import entry_points

    for ep in entry_points(group=_PROVIDERS_GROUP):
        if ep.name == name:
            return ep.load()
    raise ConfigError(
        f"Unknown model provider {name!r}.",
        fix=f"Use provider openai, or install the package that registers {name!r} in the "
        f"{_PROVIDERS_GROUP!r} entry-point group (`pip install -e .` registers the test ones).",
    )


def model_to_config(ref: ChatModel | ModelConfig | str, *, agent: str = "") -> dict[str, Any]:
    """A model reference as stored data (see ``ChatModel.to_config``)."""
    if isinstance(ref, str):
        return ModelConfig(provider="test").model_dump(mode="json", exclude_defaults=True) | (
            {} if ref == "test" else {"provider": "openai", "name": ref.removeprefix("openai:")}
        )
    cfg = ref if isinstance(ref, ModelConfig) else ref.to_config()
    if not isinstance(cfg, ModelConfig):
        raise ConfigError(f"model of agent {agent!r}: to_config() must return a ModelConfig")
    return {"provider": cfg.provider, **cfg.model_dump(mode="json", exclude_defaults=True)}


def build_model(ref: ChatModel | ModelConfig | dict[str, Any] | str) -> ChatModel:
    """Turn a model reference from a spec into a ChatModel.

    Strings: ``"test"`` (the shipped TestModel), ``"openai:NAME"`` or plain ``"NAME"``
    (an OpenAI-compatible server at LUMOS_OPENAI_BASE_URL). Configs with another
    provider than ``openai`` are built by the class registered for that provider.
    """
    if isinstance(ref, ChatModel):
        return ref
    if isinstance(ref, str):
        if ref == "test":
            return _provider("test").from_config(ModelConfig(provider="test"))
        return OpenAIChatModel(ref.removeprefix("openai:"))
    cfg = ref if isinstance(ref, ModelConfig) else ModelConfig.model_validate(ref)
    if cfg.provider != "openai":
        model: ChatModel = _provider(cfg.provider).from_config(cfg)
        return model
    if not cfg.name:
        raise ConfigError("model.name is required for provider=openai")
    return OpenAIChatModel(
        cfg.name,
        cfg.base_url,
        api_key_env=cfg.api_key_env,
        extra_body=cfg.extra_body,
        timeout_s=cfg.timeout_s,
    )
