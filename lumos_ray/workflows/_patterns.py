"""Multi-agent patterns as workflow steps: supervisor, handoff and group chat.

Each pattern is a composite step made of agent turns. Every turn is a leaf of its
own (:class:`AgentTurn`, run by the engine like an agent step: retries, timeout,
events, spans) checkpointed under the pattern's path (``3.desk/0.triage``,
``3.desk/1.billing``, ``4.chat/2.select``), so a resumed run replays the finished
turns from their checkpoints and continues the conversation where it stopped. Each
agent runs in its own actor; sub-agents of a supervisor run in theirs (as tools,
``actors/_agent_tool.py``).

What an agent sees: its own thread per conversation (``RUN/PATH/AGENT``), so its
earlier turns are its history; each turn's input is what the others said since its
last turn, one ``name: text`` paragraph per message (a lone user message as is).
The transcript the step returns lists every message as ``{"agent", "content"}``
(``"to"`` marks a request to a sub-agent or a handoff).

A replayed or forked run is a new run, so its agents' threads are new: before an
agent speaks again there, the messages of its earlier turns in the conversation (kept
in their checkpoints) are copied into its new thread once, so it continues with its
own history as it would have in the original run.
"""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any, Protocol

from lumos_ray.actors._agent_tool import handoff_tool, handoff_tool_name, tool_name_for
from lumos_ray.actors.agent import Agent
from lumos_ray.errors import AgentStepLimitError
from lumos_ray.workflows._definition import (
    AgentStep,
    GroupChatStep,
    HandoffStep,
    SupervisorStep,
    Workflow,
)
from lumos_ray.workflows._expr import render, truthy
from lumos_ray.workflows._pattern_checks import handoff_targets

__all__ = ["AgentTurn", "run_pattern", "turn_output"]

USER = "user"
_SELECT = "\0select"  # the selector's place in `seen` (it may also be a participant)


class AgentTurn(AgentStep):
    """One agent turn of a pattern: a leaf whose checkpoint is the whole turn (answer,
    new messages, tools called), not only the answer."""

    new_thread: bool = False  # the thread's first turn (no history to read on a fresh run)

    @property
    def kind(self) -> str:
        return "agent"


def turn_output(result: Any) -> dict[str, Any]:
    """What an :class:`AgentTurn` checkpoints from an ``AgentResult``."""
    return {
        "output": result.output,
        "messages": result.new_messages,
        "calls": [c["name"] for c in result.tool_calls if c.get("ok")],
        "thread": result.thread_id,
    }


class _Engine(Protocol):
    run_id: str
    tenant: str | None
    done: dict[str, Any]

    def emit(self, kind: str, data: dict[str, Any]) -> None: ...

    async def _step(
        self, wf: Workflow, step: Any, scope: dict[str, Any], path: str, keep: bool = True
    ) -> Any: ...


async def run_pattern(
    engine: _Engine, wf: Workflow, step: Any, scope: dict[str, Any], path: str
) -> dict[str, Any]:
    if isinstance(step, SupervisorStep):
        return await _supervisor(engine, wf, step, scope, path)
    if isinstance(step, HandoffStep):
        return await _handoff(engine, wf, step, scope, path)
    if isinstance(step, GroupChatStep):
        return await _group_chat(engine, wf, step, scope, path)
    raise TypeError(f"not a pattern step: {type(step).__name__}")


async def _turn(
    engine: _Engine,
    wf: Workflow,
    pattern: Any,
    spec: Agent,
    message: Any,
    thread: str,
    path: str,
    new_thread: bool,
) -> dict[str, Any]:
    """One checkpointed turn, with the pattern step's retries and timeout. The message
    and thread reach the step through its scope, never as template text: what agents
    say is not an expression."""
    turn = AgentTurn(
        agent=spec,
        input="{{ turn_input }}",
        thread="{{ turn_thread }}",
        retries=pattern.retries,
        backoff_s=pattern.backoff_s,
        backoff_max_s=pattern.backoff_max_s,
        timeout_s=pattern.timeout_s,
        new_thread=new_thread,
    )
    scope = {"turn_input": message, "turn_thread": thread}
    out: dict[str, Any] = await engine._step(wf, turn, scope, path, keep=False)
    return out


#: Per speaker of one conversation: the thread of its last turn, and the messages of
#: all its turns so far (from their checkpoints).
_Past = dict[str, tuple[str, list[dict[str, Any]]]]


async def _spoken(
    engine: _Engine,
    wf: Workflow,
    pattern: Any,
    spec: Agent,
    message: Any,
    thread: str,
    path: str,
    past: _Past,
    key: str,
) -> dict[str, Any]:
    """A turn of a speaker that may have spoken before in this conversation: its
    earlier turns are carried into a new thread first (replayed or forked runs)."""
    prev = past.get(key)
    if prev is not None and path not in engine.done:
        await _carry(engine, spec, thread, path, prev)
    out = await _turn(engine, wf, pattern, spec, message, thread, path, prev is None)
    before = prev[1] if prev is not None else []
    past[key] = (str(out.get("thread") or thread), [*before, *out["messages"]])
    return out


async def _carry(
    engine: _Engine, spec: Agent, thread: str, path: str, prev: tuple[str, list[Any]]
) -> None:
    old, messages = prev
    if old == thread or not messages or not (spec.memory.history and spec.memory.persist):
        return
    from lumos_ray.store import open_store

    store = open_store(tenant_id=engine.tenant)

    def copy() -> bool:
        if store.load_messages_many(spec.name, [thread]).get(thread):
            return False  # carried already (a resumed replay)
        store.append_messages_many(spec.name, [(thread, messages)])
        return True

    if await asyncio.to_thread(copy):
        engine.emit(
            "thread_carried",
            {"step": path, "agent": spec.name, "from": old, "messages": len(messages)},
        )


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, default=str)


def _unseen(transcript: list[dict[str, Any]], start: int, me: str | None) -> str:
    """What the others said since ``start``, as one message for ``me``."""
    entries = [e for e in transcript[start:] if e["agent"] != me]
    if len(entries) == 1 and entries[0]["agent"] == USER:
        return str(entries[0]["content"])
    lines = []
    for e in entries:
        if "to" in e:
            note = f" ({e['content']})" if e["content"] else ""
            lines.append(f"[{e['agent']} handed the conversation to {e['to']}{note}]")
        else:
            lines.append(f"{e['agent']}: {e['content']}")
    return "\n\n".join(lines) or "(nothing new was said)"


# -- supervisor -------------------------------------------------------------------------
def _supervisor_spec(wf: Workflow, step: SupervisorStep) -> Agent:
    spec = step._specs.get("supervisor")
    if spec is None:
        boss = wf.agent(step.supervisor.agent)
        have = {t.name for t in boss.tools if isinstance(t, Agent)}
        subs = [wf.agent(n) for n in step.supervisor.agents if n not in have]
        spec = step._specs["supervisor"] = boss.model_copy(update={"tools": [*boss.tools, *subs]})
    return spec


def supervisor_transcript(
    boss: str, messages: list[dict[str, Any]], subs: dict[str, str]
) -> list[dict[str, Any]]:
    """The supervisor's turn as messages between agents: its requests to sub-agents
    (tool calls), their answers (tool results) and its own text."""
    out: list[dict[str, Any]] = []
    asked: dict[str, str] = {}  # tool call id -> sub-agent
    for m in messages:
        if m.get("role") == "assistant":
            for call in m.get("tool_calls") or []:
                fn = call.get("function") or {}
                sub = subs.get(fn.get("name", ""))
                if sub is None:
                    continue
                asked[call.get("id", "")] = sub
                try:
                    request = json.loads(fn.get("arguments") or "{}").get("request", "")
                except (ValueError, AttributeError):
                    request = fn.get("arguments") or ""
                out.append({"agent": boss, "to": sub, "content": request})
            if m.get("content"):
                out.append({"agent": boss, "content": m["content"]})
        elif m.get("role") == "tool" and m.get("tool_call_id") in asked:
            out.append({"agent": asked[m["tool_call_id"]], "content": m.get("content")})
    return out


async def _supervisor(
    engine: _Engine, wf: Workflow, step: SupervisorStep, scope: dict[str, Any], path: str
) -> dict[str, Any]:
    sup = step.supervisor
    boss = _supervisor_spec(wf, step)
    message = render(sup.input, scope)
    thread = render(sup.thread, scope) if sup.thread else f"{engine.run_id}/{path}"
    out = await _turn(
        engine, wf, step, boss, message, thread, f"{path}/0.{boss.name}", not sup.thread
    )
    subs = {tool_name_for(n): n for n in sup.agents}
    # new_messages starts with the user message (the request itself).
    said = supervisor_transcript(boss.name, out["messages"][1:], subs)
    return {"output": out["output"], "transcript": [_user(message), *said]}


def _user(message: Any) -> dict[str, Any]:
    return {"agent": USER, "content": _text(message)}


# -- handoff ----------------------------------------------------------------------------
def _handoff_specs(wf: Workflow, step: HandoffStep) -> dict[str, Agent]:
    if not step._specs:
        for name in step.handoff.agents:
            base = wf.agent(name)
            extra = [handoff_tool(t) for t in handoff_targets(step.handoff, name)]
            step._specs[name] = base.model_copy(update={"tools": [*base.tools, *extra]})
    return step._specs


def _transfer(out: dict[str, Any], tools: dict[str, str], me: str) -> tuple[str, str] | None:
    """(target, reason) of the turn's first successful transfer call, if any."""
    target = next((tools[c] for c in out["calls"] if tools.get(c, me) != me), None)
    if target is None:
        return None
    reason = ""
    for m in out["messages"]:
        for call in m.get("tool_calls") or []:
            fn = call.get("function") or {}
            if fn.get("name") == handoff_tool_name(target):
                try:
                    reason = str(json.loads(fn.get("arguments") or "{}").get("reason", ""))
                except (ValueError, AttributeError):
                    reason = ""
                return target, reason
    return target, reason


async def _handoff(
    engine: _Engine, wf: Workflow, step: HandoffStep, scope: dict[str, Any], path: str
) -> dict[str, Any]:
    ho = step.handoff
    specs = _handoff_specs(wf, step)
    tools = {handoff_tool_name(n): n for n in ho.agents}
    transcript = [_user(render(ho.input, scope))]
    seen: dict[str, int] = {}
    past: _Past = {}
    current, chain, k = ho.agents[0], [ho.agents[0]], 0
    while True:
        message = _unseen(transcript, seen.get(current, 0), current)
        thread = f"{engine.run_id}/{path}/{current}"
        out = await _spoken(
            engine,
            wf,
            step,
            specs[current],
            message,
            thread,
            f"{path}/{k}.{current}",
            past,
            current,
        )
        k += 1
        moved = _transfer(out, tools, current)
        if moved is not None:
            transcript.append({"agent": current, "to": moved[0], "content": moved[1]})
        if out["output"]:
            transcript.append({"agent": current, "content": out["output"]})
        seen[current] = len(transcript)
        if moved is None:
            return {
                "output": out["output"],
                "agent": current,
                "transcript": transcript,
                "handoffs": len(chain) - 1,
            }
        chain.append(moved[0])
        if len(chain) - 1 > ho.max_handoffs:
            raise AgentStepLimitError(
                f"step {path}: the conversation was handed over more than max_handoffs="
                f"{ho.max_handoffs} times ({' -> '.join(chain)}) without an answer.",
                fix="Tell the agents (instructions) when to answer instead of transferring, "
                "restrict handoff.routes, or raise handoff.max_handoffs.",
            )
        current = moved[0]


# -- group chat -------------------------------------------------------------------------
def pick_speaker(text: str | None, names: list[str]) -> str | None:
    """The participant a selector's answer names: the whole answer, else the earliest
    name mentioned in it."""
    said = (text or "").strip().strip(".'\"`*").strip()
    for n in names:
        if said.lower() == n.lower():
            return n
    best: tuple[int, str] | None = None
    for n in names:
        m = re.search(rf"(?<![\w.-]){re.escape(n)}(?![\w-])", text or "", re.IGNORECASE)
        if m and (best is None or m.start() < best[0]):
            best = (m.start(), n)
    return best[1] if best else None


async def _select(
    engine: _Engine,
    wf: Workflow,
    step: GroupChatStep,
    transcript: list[dict[str, Any]],
    seen: dict[str, int],
    r: int,
    path: str,
    previous: str | None,
    past: _Past,
) -> str:
    gc = step.group_chat
    assert gc.selector is not None  # the definition requires it for speaker: model
    message = (
        _unseen(transcript, seen.get(_SELECT, 0), None)
        + f"\n\nWho speaks next? Answer with exactly one name from: {', '.join(gc.agents)}."
    )
    seen[_SELECT] = len(transcript)
    out = await _spoken(
        engine,
        wf,
        step,
        wf.agent(gc.selector),
        message,
        f"{engine.run_id}/{path}/select",
        f"{path}/{r}.select",
        past,
        _SELECT,
    )
    name = pick_speaker(out["output"], gc.agents)
    if name is None:  # no usable answer: the next in turn speaks, and the run says so
        i = gc.agents.index(previous) + 1 if previous in gc.agents else 0
        name = gc.agents[i % len(gc.agents)]
        engine.emit(
            "speaker_fallback",
            {"step": path, "round": r, "selector_said": out["output"], "speaker": name},
        )
    return name


async def _group_chat(
    engine: _Engine, wf: Workflow, step: GroupChatStep, scope: dict[str, Any], path: str
) -> dict[str, Any]:
    gc = step.group_chat
    transcript = [_user(render(gc.input, scope))]
    seen: dict[str, int] = {}
    past: _Past = {}
    speaker: str | None = None
    stopped, rounds = "max_rounds", 0
    for r in range(gc.max_rounds):
        if gc.speaker == "model":
            speaker = await _select(engine, wf, step, transcript, seen, r, path, speaker, past)
        else:
            speaker = gc.agents[r % len(gc.agents)]
        message = _unseen(transcript, seen.get(speaker, 0), speaker)
        out = await _spoken(
            engine,
            wf,
            step,
            wf.agent(speaker),
            message,
            f"{engine.run_id}/{path}/{speaker}",
            f"{path}/{r}.{speaker}",
            past,
            speaker,
        )
        entry = {"agent": speaker, "content": out["output"] or ""}
        transcript.append(entry)
        seen[speaker] = len(transcript)
        rounds = r + 1
        if gc.keyword and gc.keyword in entry["content"]:
            stopped = "keyword"
            break
        if gc.until and truthy(
            gc.until, {**scope, "message": entry, "transcript": transcript, "round": rounds}
        ):
            stopped = "until"
            break
    return {
        "output": transcript[-1]["content"],
        "transcript": transcript,
        "rounds": rounds,
        "stopped": stopped,
    }
