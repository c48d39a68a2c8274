"""Chat models for tests (yours and ours): deterministic, instant, no server.

They drive the real agent loop: the agent cannot tell them from a served model.

- :class:`TestModel` calls each offered tool once (arguments generated from the
  tool's JSON Schema), then answers with the tool results, like pydantic-ai's.
- :class:`ScriptedModel` plays a fixed list of replies; reply *i* is used for the
  *i*-th assistant turn of a thread, so it is stateless and survives restarts.
- :class:`FunctionModel` lets a Python function decide each reply.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from lumos_ray._imports import import_object
from lumos_ray.actors.models import ChatModel, ModelConfig, ModelResponse, ToolCall

__all__ = [
    "FunctionModel",
    "ScriptedModel",
    "TestModel",
    "call_tool",
    "reply",
]


@dataclass
class _Reply:
    text: str | None = None
    calls: list[tuple[str, Any]] = field(default_factory=list)


def reply(text: str) -> _Reply:
    """A plain assistant answer."""
    return _Reply(text=text)


def call_tool(name: str, arguments: dict[str, Any] | str | None = None, **kw: Any) -> _Reply:
    """An assistant turn that calls ``name``; a str ``arguments`` is sent verbatim
    (use it to script malformed JSON)."""
    args = arguments if arguments is not None else kw
    return _Reply(calls=[(name, args)])


def _to_response(r: Any, turn: int, model: str) -> ModelResponse:
    if isinstance(r, ModelResponse):
        return r
    if isinstance(r, str):
        r = _Reply(text=r)
    if isinstance(r, dict):  # {text: ...}, {tool: name, args: {...}} or {calls: [...]}
        calls = [(c["tool"], c.get("args", {})) for c in r.get("calls", [])]
        if "tool" in r:
            calls.insert(0, (r["tool"], r.get("args", {})))
        r = _Reply(text=r.get("text"), calls=calls)
    tool_calls = [
        ToolCall(f"call_{turn}_{i}", name, args if isinstance(args, str) else json.dumps(args))
        for i, (name, args) in enumerate(r.calls)
    ]
    content = r.text
    return ModelResponse(
        content=content,
        tool_calls=tool_calls,
        usage={"prompt_tokens": 0, "completion_tokens": len((content or "").split())},
        finish_reason="tool_calls" if tool_calls else "stop",
        model=model,
    )


def _reply_to_data(r: Any) -> Any:
    """A scripted reply as plain data (the form ``_to_response`` reads back)."""
    if isinstance(r, str | dict):
        return r
    if isinstance(r, ModelResponse):
        r = _Reply(
            text=r.content,
            calls=[(c.name, c.arguments) for c in r.tool_calls],
        )
    out: dict[str, Any] = {}
    if r.text is not None:
        out["text"] = r.text
    if r.calls:
        out["calls"] = [{"tool": n, "args": a} for n, a in r.calls]
    return out


def _assistant_turns(messages: list[dict[str, Any]]) -> int:
    return sum(1 for m in messages if m.get("role") == "assistant")


class ScriptedModel(ChatModel):
    """Replies from a script; after the last reply it repeats the final one."""

    name = "scripted"

    def __init__(self, replies: list[Any]) -> None:
        if not replies:
            raise ValueError("ScriptedModel needs at least one reply")
        self.replies = list(replies)

    @classmethod
    def from_config(cls, cfg: ModelConfig) -> ScriptedModel:
        return cls(cfg.replies or [])

    def to_config(self) -> ModelConfig:
        return ModelConfig(provider="scripted", replies=[_reply_to_data(r) for r in self.replies])

    async def chat(
        self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None
    ) -> ModelResponse:
        turn = _assistant_turns(messages)
        return _to_response(self.replies[min(turn, len(self.replies) - 1)], turn, self.name)

    async def stream(
        self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None
    ) -> AsyncIterator[str | ModelResponse]:
        resp = await self.chat(messages, tools)
        for word in (resp.content or "").split(" ") if resp.content else []:
            yield word + " "
        yield resp


class FunctionModel(ChatModel):
    """``fn(messages, tools)`` (sync or async) returns a str, a reply or a ModelResponse."""

    name = "function"

    def __init__(self, fn: Callable[..., Any]) -> None:
        self.fn = fn

    @classmethod
    def from_config(cls, cfg: ModelConfig) -> FunctionModel:
        if not cfg.function:
            raise ValueError("model.provider=function needs model.function='module:attr'")
        return cls(import_object(cfg.function))

    def to_config(self) -> ModelConfig:
        from lumos_ray._imports import function_ref

        return ModelConfig(provider="function", function=function_ref(self.fn, "model function"))

    async def chat(
        self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None
    ) -> ModelResponse:
        out = self.fn(messages, tools or [])
        if inspect.isawaitable(out):
            out = await out
        return _to_response(out, _assistant_turns(messages), self.name)


def _example(schema: dict[str, Any]) -> Any:
    """A value that validates against a (simple) JSON Schema."""
    if "default" in schema:
        return schema["default"]
    if schema.get("enum"):
        return schema["enum"][0]
    if "anyOf" in schema:
        return _example(schema["anyOf"][0])
    t: Any = schema.get("type")
    if t == "object" or "properties" in schema:
        req = schema.get("required", list(schema.get("properties", {})))
        return {k: _example(v) for k, v in schema.get("properties", {}).items() if k in req}
    return {
        "string": "a",
        "integer": 1,
        "number": 1.0,
        "boolean": True,
        "array": [],
        "null": None,
    }.get(t, "a")


class TestModel(ChatModel):
    """Calls every tool once with schema-generated arguments, then summarises.

    With no tools it echoes the last user message: handy for wiring tests.
    """

    __test__ = False  # not a pytest class
    name = "test"

    @classmethod
    def from_config(cls, cfg: ModelConfig) -> TestModel:
        return cls()

    def to_config(self) -> ModelConfig:
        return ModelConfig(provider="test")

    async def chat(
        self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None
    ) -> ModelResponse:
        turn = _assistant_turns(messages)
        last_user = max((i for i, m in enumerate(messages) if m.get("role") == "user"), default=-1)
        called = any(m.get("role") == "assistant" for m in messages[last_user + 1 :])
        if tools and not called:
            return _to_response(
                _Reply(
                    calls=[
                        (t["function"]["name"], _example(t["function"].get("parameters", {})))
                        for t in tools
                    ]
                ),
                turn,
                self.name,
            )
        results = [m.get("content") for m in messages[last_user + 1 :] if m.get("role") == "tool"]
        if results:
            return _to_response(_Reply(text=json.dumps(results)), turn, self.name)
        content = messages[last_user].get("content") if last_user >= 0 else ""
        return _to_response(_Reply(text=str(content)), turn, self.name)
