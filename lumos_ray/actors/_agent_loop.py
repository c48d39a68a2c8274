"""The tool-calling loop of one agent turn, free of Ray so it is unit-testable.

The model's mistakes are data, not crashes: unparseable or schema-violating
arguments, unknown tools and tool exceptions all go back to the model as a tool
message it can correct. After ``max_tool_retries`` such errors in one turn, tools
are withdrawn and the model is asked to answer with what it has.

Each tool message the loop writes says whether its call succeeded (``TOOL_OK``), so a
turn answered again from the stored thread (a retried call) reports its tool calls as
they went, not as their text suggests: a tool may succeed with output that reads like
an error. The flag is the loop's own: it is taken off before messages go to a model
(an OpenAI-format server may refuse a key it does not know).

Secrets at rest: the turn's messages (``AgentResult.new_messages``, the ``transcript``)
are what gets stored (thread history, the runner's checkpoints) and so hold each
assistant tool call with its secret-named argument values redacted
(``lumos_ray.tools._redact``). The tools get the real values, and so does the model
for the rest of the same turn; a later turn (or a retried one answered from the store)
sees ``[REDACTED]``. Nothing re-runs a tool from stored arguments: a finished call's
result is in its tool message, and a turn that did not finish is asked of the model
again.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from lumos_ray import tracing
from lumos_ray.actors.models import ChatModel, ModelResponse, ToolCall
from lumos_ray.errors import (
    AgentStepLimitError,
    LumosError,
    ModelError,
    StepTimeoutError,
    ToolArgumentError,
    ToolError,
)

__all__ = [
    "TOOL_OK",
    "AgentResult",
    "for_model",
    "run_turn",
    "tool_message",
    "turn_key",
    "user_message",
]

EventSink = Callable[[str, dict[str, Any]], None]

#: Key of a tool message that records whether its call succeeded (True/False).
TOOL_OK = "ok"


def tool_message(call_id: str | None, content: str, ok: bool) -> dict[str, Any]:
    """A tool call's result as the thread keeps it (with its outcome, see TOOL_OK)."""
    return {"role": "tool", "tool_call_id": call_id, "content": content, TOOL_OK: ok}


def for_model(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``messages`` as a model gets them: tool messages without the loop's TOOL_OK."""
    return [
        {k: v for k, v in m.items() if k != TOOL_OK}
        if m.get("role") == "tool" and TOOL_OK in m
        else m
        for m in messages
    ]


@dataclass
class AgentResult:
    output: str | None
    thread_id: str
    new_messages: list[dict[str, Any]]
    steps: int
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    usage: dict[str, int] = field(default_factory=dict)


def _add_usage(total: dict[str, int], usage: dict[str, Any]) -> None:
    for k in ("prompt_tokens", "completion_tokens", "total_tokens"):
        if isinstance(usage.get(k), int):
            total[k] = total.get(k, 0) + usage[k]


def user_message(input: str | dict[str, Any]) -> dict[str, Any]:
    if isinstance(input, dict) and "role" in input:
        return input
    if isinstance(input, str):
        return {"role": "user", "content": input}
    return {"role": "user", "content": json.dumps(input, default=str)}


async def _call_model(
    model: ChatModel,
    messages: list[dict[str, Any]],
    tools: list[dict[str, Any]] | None,
    timeout: float | None,
    stream: bool,
    emit: EventSink | None,
) -> ModelResponse:
    async def go() -> ModelResponse:
        if not stream:
            return await model.chat(messages, tools)
        final: ModelResponse | None = None
        async for part in model.stream(messages, tools):
            if isinstance(part, ModelResponse):
                final = part
            elif emit is not None:
                emit("token", {"delta": part})
        if final is None:
            raise ModelError(f"model {model.name!r} ended its stream without a response")
        return final

    try:
        async with asyncio.timeout(timeout):
            return await go()
    except TimeoutError:
        raise StepTimeoutError(f"model {model.name!r} did not answer within {timeout} s") from None


def turn_key(
    run_id: str | None, thread_id: str, history_len: int, input: str | dict[str, Any]
) -> str:
    """Identity of one turn, the same when the turn is retried.

    A retried turn (the actor died and Ray re-ran the call, or the runner retried the
    step) starts from the same persisted history with the same input, so it gets the
    same key; the next turn of the thread starts from a longer history (or, without
    history, from another input) and gets a new one.
    """
    text = json.dumps([run_id, thread_id, history_len, input], default=str, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _call_ctx(ctx: Any, key: str | None, step: int, index: int, call: ToolCall) -> Any:
    """The context for one tool call: its idempotency key is the turn's key plus the
    call's place in the turn (model call number, position in that call) and the tool
    name. Not the model's tool-call id: served models make a new random one when a
    turn is retried, which would defeat the key."""
    from lumos_ray.tools._api import ToolContext

    if key is None or not isinstance(ctx, ToolContext):
        return ctx
    return dataclasses.replace(ctx, idempotency_key=f"{key}:{step}:{index}:{call.name}")


async def _run_tool(
    call: ToolCall, tools: dict[str, Any], ctx: Any, timeout: float | None
) -> tuple[str, bool]:
    """Run one tool call; returns (content for the model, ok)."""
    t = tools.get(call.name)
    if t is None:
        return (
            f"Error: there is no tool named {call.name!r}. Available tools: "
            f"{', '.join(sorted(tools)) or '(none)'}.",
            False,
        )
    try:
        args = json.loads(call.arguments or "{}")
        if not isinstance(args, dict):
            raise ToolArgumentError("arguments must be a JSON object")
    except json.JSONDecodeError as exc:
        return (f"Error: arguments are not valid JSON ({exc.msg} at char {exc.pos}).", False)
    except ToolArgumentError as exc:
        return (f"Error: {exc.message}", False)
    from lumos_ray.tools._api import redact_arguments

    with tracing.span(
        "agent.tool_call", tool=call.name, arguments=redact_arguments(call.arguments)
    ) as s:
        try:
            async with asyncio.timeout(timeout):
                result = await t.acall(args, ctx)
        except TimeoutError:
            s.set_attribute("error", "timeout")
            return (f"Error: tool {call.name!r} timed out after {timeout} s.", False)
        except ToolArgumentError as exc:
            s.set_attribute("error", "arguments")
            return (f"Error: {exc.message} Call the tool again with corrected arguments.", False)
        except (ToolError, LumosError) as exc:
            s.set_attribute("error", type(exc).__name__)
            return (f"Error: {exc.message}", False)
        except Exception as exc:  # a tool's own bug: report it, don't crash the run
            s.set_attribute("error", type(exc).__name__)
            return (f"Error: tool {call.name!r} raised {type(exc).__name__}: {exc}", False)
    if isinstance(result, str):
        return result, True
    return json.dumps(result, default=str), True


async def _run_tools(
    calls: list[ToolCall],
    tools: dict[str, Any],
    tool_ctx: Any,
    key: str | None,
    step: int,
    timeout_s: float | None,
    new: list[dict[str, Any]],
) -> list[tuple[str, bool]]:
    """One model call's tool calls, concurrently. Cancelled (a newer input interrupted
    the turn), the results of the calls that had finished go into ``new`` first: they
    happened, and an interrupted turn's history must say so."""
    done: dict[int, tuple[str, bool]] = {}

    async def one(i: int, c: ToolCall) -> tuple[str, bool]:
        done[i] = await _run_tool(c, tools, _call_ctx(tool_ctx, key, step, i, c), timeout_s)
        return done[i]

    try:
        return list(await asyncio.gather(*(one(i, c) for i, c in enumerate(calls))))
    except asyncio.CancelledError:
        for i, c in enumerate(calls):
            if i in done:
                new.append(tool_message(c.id, *done[i]))
        raise


async def run_turn(
    *,
    model: ChatModel,
    tools: dict[str, Any],
    instructions: str,
    history: list[dict[str, Any]],
    input: str | dict[str, Any],
    thread_id: str,
    max_steps: int,
    max_tool_retries: int,
    timeout_s: float | None,
    stream: bool = False,
    tool_ctx: Any = None,
    emit: EventSink | None = None,
    key: str | None = None,
    transcript: list[dict[str, Any]] | None = None,
) -> AgentResult:
    """Run the loop until the model answers without tool calls.

    ``key`` (see :func:`turn_key`) gives each tool call an idempotency key. Tool-call
    arguments named like secrets are redacted in emitted events, in the returned
    ``tool_calls`` log and in the new messages (returned and in ``transcript``: they
    are stored); only this turn's own model calls see its calls' real arguments.
    ``transcript``: a list the turn's new messages are appended to as they happen, so a
    caller that cancels the turn knows what it had done (tool calls that finished are
    in it even when others of the same model call had not).
    """
    from lumos_ray.tools._redact import redact_arguments, redact_message

    user = user_message(input)
    new: list[dict[str, Any]] = transcript if transcript is not None else []
    new.append(user)
    system = [{"role": "system", "content": instructions}] if instructions else []
    schemas = [t.openai_schema() for t in tools.values()] or None
    usage: dict[str, int] = {}
    calls_log: list[dict[str, Any]] = []
    # Position in `new` -> the assistant message as the model sent it, where `new`
    # holds it with secrets redacted: this turn's next model calls get the real one.
    real: dict[int, dict[str, Any]] = {}
    errors = 0
    offered = schemas
    for step in range(1, max_steps + 1):
        with tracing.span("agent.model_call", model=model.name, step=step) as s:
            shown_new = [real.get(i, m) for i, m in enumerate(new)] if real else new
            resp = await _call_model(
                model, for_model(system + history + shown_new), offered, timeout_s, stream, emit
            )
            for k, v in resp.usage.items():
                if isinstance(v, int):
                    s.set_attribute(f"gen_ai.usage.{k}", v)
        _add_usage(usage, resp.usage)
        message = resp.to_message()
        stored = redact_message(message)
        if stored is not message:
            real[len(new)] = message
        new.append(stored)
        if not resp.tool_calls:
            return AgentResult(resp.content, thread_id, new, step, calls_log, usage)
        results = await _run_tools(resp.tool_calls, tools, tool_ctx, key, step, timeout_s, new)
        for call, (content, ok) in zip(resp.tool_calls, results, strict=True):
            shown = redact_arguments(call.arguments)
            calls_log.append({"name": call.name, "arguments": shown, "ok": ok})
            if emit is not None:
                emit("tool_call", {"tool": call.name, "arguments": shown, "ok": ok})
            new.append(tool_message(call.id, content, ok))
            errors += 0 if ok else 1
        if errors > max_tool_retries and offered is not None:
            offered = None
            new.append(
                {
                    "role": "system",
                    "content": f"Tool calls failed {errors} times; tools are no longer "
                    "available. Answer with the information you have.",
                }
            )
    raise AgentStepLimitError(
        f"agent did not finish within max_steps={max_steps} model calls "
        f"(thread {thread_id!r}, {len(calls_log)} tool calls).",
    )
