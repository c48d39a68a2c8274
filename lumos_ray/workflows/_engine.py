"""Executes one workflow run, durably, inside the runner actor.

Durability is replay: every finished step's output is checkpointed under a
deterministic path (``0.fetch``, ``2.fan/1.b``, ``3.each/[4]``, ``5.loop/it2/0.x``).
Re-running a workflow from the top returns checkpointed outputs without executing,
which rebuilds the state exactly, and executes only what never finished. Leaf work
runs on Ray: agent turns are actor calls, functions (and tools that ask for
resources) are Ray tasks, so independent steps run concurrently; the engine only
awaits them. A tool that asks for no resources runs in the runner's process, as in an
agent's loop (the tool API's contract: see lumos_ray.tools._tool).
"""

from __future__ import annotations

import asyncio
import inspect
import random
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any

from lumos_ray import tracing
from lumos_ray.errors import (
    InputValidationError,
    LumosError,
    StepTimeoutError,
    WorkflowDefinitionError,
)
from lumos_ray.runtime import (
    await_ref,
    cancel_ref,
    is_remote_task_error,
    remote_function,
    unwrap_error,
)
from lumos_ray.store import ThreadMessages
from lumos_ray.workflows._definition import (
    AgentStep,
    FunctionStep,
    GroupChatStep,
    HandoffStep,
    HumanStep,
    IfStep,
    LoopStep,
    MapStep,
    ParallelStep,
    SequenceStep,
    SupervisorStep,
    ToolStep,
    Workflow,
    WorkflowStep,
    get_workflow,
)
from lumos_ray.workflows._expr import evaluate, render, truthy
from lumos_ray.workflows._patterns import AgentTurn, run_pattern, turn_output

__all__ = ["Engine", "Suspend", "validate_json"]


class Suspend(Exception):
    """Unwinds a run that waits for human input."""

    def __init__(self, path: str, prompt: str, schema: dict[str, Any]) -> None:
        super().__init__(path)
        self.path, self.prompt, self.schema = path, prompt, schema


def validate_json(value: Any, schema: dict[str, Any] | None, what: str) -> None:
    if not schema:
        return
    import jsonschema

    try:
        jsonschema.validate(value, schema)
    except jsonschema.ValidationError as exc:
        where = "/".join(str(p) for p in exc.absolute_path) or "(root)"
        raise InputValidationError(
            f"{what} is invalid at {where}: {exc.message}", schema=schema
        ) from None


def _storable(value: Any, path: str) -> Any:
    """Step outputs are checkpointed as JSON: typed outputs (pydantic models,
    dataclasses) are stored as their JSON form; anything else must already be JSON."""
    import dataclasses
    import json

    from pydantic import BaseModel

    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = dataclasses.asdict(value)
    try:
        json.dumps(value)
    except (TypeError, ValueError) as exc:
        raise WorkflowDefinitionError(
            f"step {path} returned {type(value).__name__}, which cannot be checkpointed: {exc}",
            fix="Return JSON-compatible data (dict, list, str, number, bool, None), a "
            "pydantic model or a dataclass.",
        ) from None
    return value


def _error_dict(exc: BaseException, path: str) -> dict[str, Any]:
    exc = unwrap_error(exc)
    if isinstance(exc, LumosError):
        return {**exc.to_dict(), "step": path}
    return {"type": type(exc).__name__, "message": str(exc), "step": path}


# Ray tasks for leaf steps. Defined once: a remote function is registered (pickled,
# exported) on first use per process, not per call.
@remote_function
def _call_function(
    fn: Callable[..., Any], args: dict[str, Any] | None, state: Any, carrier: Any
) -> Any:
    with tracing.span("step.function", carrier, function=getattr(fn, "__name__", str(fn))):
        out = fn(**args) if args is not None else fn(state)
        if inspect.isawaitable(out):
            out = asyncio.run(_await(out))
        return out


async def _await(aw: Any) -> Any:
    return await aw


@remote_function
def _call_tool(tool: Any, args: dict[str, Any], ctx: Any, carrier: Any) -> Any:
    with tracing.span("step.tool", carrier, tool=tool.name):
        return asyncio.run(tool.acall(args, ctx))


_LEAVES = (AgentStep, ToolStep, FunctionStep, HumanStep)

# Tool and function steps are mostly glue (I/O, small transforms): reserving a whole
# CPU each, Ray's task default, would serialise a fan-out on a laptop and can starve
# behind a served model's reservation. A step that computes sets resources.num_cpus.
DEFAULT_STEP_CPUS = 0.1
_MAX_AGENT_HANDLES = 1000  # distinct agent specs whose handles a runner keeps


class Engine:
    """One run's execution. ``record(path, output, thread)`` persists a checkpoint
    (``thread``: the step's agent turn when it is saved with the checkpoint, else
    None); ``emit(type, data)`` records an event."""

    def __init__(
        self,
        run_id: str,
        workflow: Workflow,
        checkpoints: dict[str, Any],
        record: Callable[[str, Any, ThreadMessages | None], Any],
        emit: Callable[[str, dict[str, Any]], None],
        agents: OrderedDict[int, tuple[Any, Any]] | None = None,
        fresh: bool = False,
        durable: Callable[[], Awaitable[None]] | None = None,
        tenant: str | None = None,
        local: Callable[[Any], Awaitable[Callable[..., Awaitable[Any]] | None]] | None = None,
    ) -> None:
        self.run_id = run_id
        # ``local(spec)``: the turn function of an agent actor this engine runs inside
        # (its ``run``), or None for every other agent: that agent's turns are plain
        # calls, no actor hop (a run hosted by its agent's actor: _runner.hosted_execute).
        self.local = local
        self.tenant = tenant
        # Awaited before a step starts: the checkpoints recorded so far are durable
        # (the runner queues them for a group commit instead of waiting in `record`).
        self.durable = durable
        # A run that never executed before: its steps' default agent threads are new,
        # so a first attempt's turn needs no history read.
        self.fresh = fresh
        self.wf = workflow
        self.done = checkpoints
        self.record = record
        self.emit = emit
        # An agent step on the run's own thread leaves saving its turn to `record`, in
        # the step's checkpoint transaction: one commit less on a durable run's path,
        # and the turn and its checkpoint are stored together or not at all. Only the
        # run's own threads: a named thread may be another run's or a user's, whose
        # next turn must see this one as soon as the agent answers.
        self._unsaved: dict[str, ThreadMessages] = {}
        # Agent handles by spec identity, shared across runs by the runner: finding an
        # agent's actors and checking its spec cost a round trip each, once per spec
        # instead of once per run. The spec is kept with its handle (an id is unique
        # only while its object lives).
        self._agents: OrderedDict[int, tuple[Any, Any]] = (
            agents if agents is not None else OrderedDict()
        )

    async def _handle(self, spec: Any) -> Any:
        from lumos_ray.actors.agent import AgentHandle

        hit = self._agents.get(id(spec))
        if hit is not None and hit[0] is spec:
            self._agents.move_to_end(id(spec))
            return hit[1]
        # Finding (or creating) named actors is a blocking Ray call: not on the loop.
        handle = await asyncio.to_thread(AgentHandle, spec, tenant=self.tenant)
        self._agents[id(spec)] = (spec, handle)
        while len(self._agents) > _MAX_AGENT_HANDLES:
            self._agents.popitem(last=False)
        return handle

    async def run(self, input: Any) -> Any:
        return await self._run_workflow(self.wf, input, prefix="")

    async def _run_workflow(self, wf: Workflow, input: Any, prefix: str) -> Any:
        state: dict[str, Any] = {}
        scope = {"input": input, "state": state}
        await self._steps(wf, wf.steps, scope, prefix)
        validate_json(state, wf.state_schema, f"final state of workflow {wf.name!r}")
        if wf.output is None:
            return state
        return render(wf.output, scope)

    async def _steps(
        self, wf: Workflow, steps: list[Any], scope: dict[str, Any], prefix: str
    ) -> None:
        for i, step in enumerate(steps):
            await self._step(wf, step, scope, f"{prefix}{i}.{step.id or step.kind}")

    async def _step(
        self, wf: Workflow, step: Any, scope: dict[str, Any], path: str, keep: bool = True
    ) -> Any:
        leaf = isinstance(step, _LEAVES)
        if leaf and path in self.done:
            value = self.done[path]
        else:
            if step.when is not None and not truthy(step.when, scope):
                self.emit("step_skipped", {"step": path})
                return None
            # Composite steps are re-entered on replay: their children restore the
            # state they wrote from their own checkpoints. Only leaves are recorded.
            value = await self._execute(wf, step, scope, path)
            if leaf:
                value = _storable(value, path)
                await self.record(path, value, self._unsaved.pop(path, None))
                self.done[path] = value
        key = step.key()
        if keep and key:
            scope["state"][key] = value
            if wf.state_schema:
                partial = {k: v for k, v in wf.state_schema.items() if k != "required"}
                validate_json(scope["state"], partial, f"state after step {path}")
        return value

    async def _execute(self, wf: Workflow, step: Any, scope: dict[str, Any], path: str) -> Any:
        if isinstance(step, SequenceStep):
            await self._steps(wf, step.steps, scope, path + "/")
            return None
        if isinstance(step, ParallelStep):
            return await self._parallel(wf, step, scope, path)
        if isinstance(step, MapStep):
            return await self._map(wf, step, scope, path)
        if isinstance(step, IfStep):
            branch = step.then if truthy(step.if_, scope) else step.else_
            await self._steps(
                wf, branch, scope, path + ("/then/" if branch is step.then else "/else/")
            )
            return branch is step.then
        if isinstance(step, LoopStep):
            return await self._loop(wf, step, scope, path)
        if isinstance(step, SupervisorStep | HandoffStep | GroupChatStep):
            # Composite: each agent turn is a checkpointed leaf (see _patterns).
            return await run_pattern(self, wf, step, scope, path)
        if isinstance(step, HumanStep):
            raise Suspend(path, render(step.human.prompt, scope), step.human.input_schema)
        if isinstance(step, WorkflowStep):
            child = (
                step.workflow
                if isinstance(step.workflow, Workflow)
                else get_workflow(step.workflow)
            )
            child_input = render(step.input, scope)
            validate_json(
                child_input, child.input_schema, f"input of nested workflow {child.name!r}"
            )
            return await self._run_workflow(child, child_input, prefix=path + "/")
        return await self._leaf(wf, step, scope, path)

    async def _parallel(
        self, wf: Workflow, step: ParallelStep, scope: dict[str, Any], path: str
    ) -> Any:
        results = await _gather(
            [
                self._step(wf, s, scope, f"{path}/{i}.{s.id or s.kind}")
                for i, s in enumerate(step.parallel)
            ]
        )
        return {
            (s.key() or str(i)): r
            for i, (s, r) in enumerate(zip(step.parallel, results, strict=True))
        }

    async def _map(
        self, wf: Workflow, step: MapStep, scope: dict[str, Any], path: str
    ) -> list[Any]:
        items = evaluate(step.map.over, scope)
        if not isinstance(items, list | tuple):
            raise WorkflowDefinitionError(
                f"step {path}: map.over must give a list, got {type(items).__name__}"
            )
        sem = asyncio.Semaphore(step.map.max_concurrency)

        async def one(i: int, item: Any) -> Any:
            async with sem:
                sub = {**scope, "item": item, "index": i}
                return await self._step(wf, step.map.step, sub, f"{path}/[{i}]", keep=False)

        return await _gather([one(i, it) for i, it in enumerate(items)])

    async def _loop(self, wf: Workflow, step: LoopStep, scope: dict[str, Any], path: str) -> int:
        for it in range(step.loop.max_iterations):
            scope["iteration"] = it
            await self._steps(wf, step.loop.steps, scope, f"{path}/it{it}/")
            if step.loop.until is not None and truthy(step.loop.until, scope):
                return it + 1
        return step.loop.max_iterations

    async def _leaf(self, wf: Workflow, step: Any, scope: dict[str, Any], path: str) -> Any:
        if self.durable is not None:
            await self.durable()  # what this step may depend on is stored
        attempts = step.retries + 1
        for attempt in range(1, attempts + 1):
            self.emit("step_started", {"step": path, "kind": step.kind, "attempt": attempt})
            with tracing.span("workflow.step", step=path, kind=step.kind, attempt=attempt) as sp:
                try:
                    value = await self._attempt(wf, step, scope, path, attempt)
                except (Suspend, asyncio.CancelledError):
                    raise
                except Exception as exc:
                    err = _error_dict(exc, path)
                    sp.set_attribute("error", err["message"][:500])
                    if attempt == attempts:
                        self.emit("step_failed", {"step": path, "attempt": attempt, "error": err})
                        raise
                    delay = min(step.backoff_s * 2 ** (attempt - 1), step.backoff_max_s)
                    delay *= 1 + random.random() * 0.1  # jitter: retries of a fan-out spread out
                    self.emit(
                        "step_retry",
                        {"step": path, "attempt": attempt, "error": err, "delay_s": delay},
                    )
                    await asyncio.sleep(delay)
                    continue
            self.emit("step_finished", {"step": path, "attempt": attempt})
            return value
        raise AssertionError("unreachable")

    async def _attempt(
        self, wf: Workflow, step: Any, scope: dict[str, Any], path: str, attempt: int
    ) -> Any:
        carrier = tracing.inject()
        # The same for every attempt (and a resumed run): a retried tool step must not
        # repeat the side effect its first attempt may already have had.
        key = f"{self.run_id}:{path}"
        if isinstance(step, AgentStep):
            return await self._agent(wf, step, scope, path, carrier, attempt)
        opts = {"num_cpus": DEFAULT_STEP_CPUS, **step.resources.ray_options()}
        if isinstance(step, FunctionStep):
            fn = step.function
            if isinstance(fn, str):
                from lumos_ray._imports import import_object

                fn = import_object(fn)
            args = render(step.args, scope) if step.args is not None else None
            state = dict(scope["state"]) if args is None else None
            ref = _call_function.options(**opts).remote(fn, args, state, carrier)
        elif isinstance(step, ToolStep):
            from lumos_ray.tools._api import ToolContext, get_tool

            t = get_tool(step.tool)
            args = render(step.args, scope)
            ctx = ToolContext(
                run_id=self.run_id,
                idempotency_key=key,
                tenant=self.tenant,
                workspace=step.workspace,
                settings=step.settings,
            )
            if not t.uses_ray and not step.resources.ray_options():
                # The tool API's contract, as in an agent's loop: a tool that asks for no
                # resources runs in the caller's process (sync ones in a worker thread,
                # never on this event loop). A Ray task of 0.1 CPU per step cost a worker
                # process start whenever steps ran concurrently (Ray keeps only num_cpus
                # idle workers): 40 runs/s at 1 concurrent fell to 5-9 at 4-64.
                with tracing.span("step.tool", carrier, tool=t.name):
                    return await _with_timeout(t.acall(args, ctx), step.timeout_s, path)
            ref = _call_tool.options(**opts).remote(t, args, ctx, carrier)
        else:  # pragma: no cover - the discriminator admits nothing else
            raise WorkflowDefinitionError(f"unknown step kind at {path}")
        return await _await_ref(ref, step.timeout_s, path)

    async def _agent(
        self,
        wf: Workflow,
        step: AgentStep,
        scope: dict[str, Any],
        path: str,
        carrier: dict,
        attempt: int = 1,
    ) -> Any:
        spec = wf.agent(step.agent) if isinstance(step.agent, str) else step.agent
        local = await self.local(spec) if self.local is not None and not spec.stream else None
        thread = render(step.thread, scope) if step.thread else f"{self.run_id}/{path}"
        new_thread = not step.thread or (isinstance(step, AgentTurn) and step.new_thread)
        fresh = self.fresh and new_thread and attempt == 1
        defer = not step.thread and spec.memory.history and spec.memory.persist
        turn_id = uuid.uuid4().hex  # the same if Ray retries the call
        message = render(step.input, scope)
        kwargs: dict[str, Any] = {"run_id": self.run_id, "turn_id": turn_id}
        # Only what differs from the actor's defaults: Ray serialises every argument
        # (and every keyword) on its own, on the run's critical path.
        if carrier:
            kwargs["carrier"] = carrier
        if fresh:
            kwargs["fresh"] = True
        if defer:
            kwargs["defer_save"] = True
        if step.concurrent_input is not None:
            kwargs["concurrent_input"] = step.concurrent_input
        if spec.stream:
            handle = await self._handle(spec)
            await handle.ensure_current()
            actor = handle.actor(thread)

            async def consume() -> Any:
                gen = actor.run_stream.remote(message, thread, **kwargs)
                async for ref in gen:
                    ev = await ref
                    if ev["type"] == "result":
                        return ev["result"]
                    self.emit(
                        ev["type"], {"step": path, **{k: v for k, v in ev.items() if k != "type"}}
                    )
                return None

            result = await _with_timeout(consume(), step.timeout_s, path)
            if result is None:
                return None
        else:
            if local is not None:  # this process is the agent's actor: no hop
                turn = local(message, thread, **kwargs)
                result = await _with_timeout(turn, step.timeout_s, path)
            else:
                handle = await self._handle(spec)
                await handle.ensure_current()
                ref = handle.actor(thread).run.remote(message, thread, **kwargs)
                result = await _await_ref(ref, step.timeout_s, path)
            for call in result.tool_calls:
                # The same fields a streamed turn's tool_call event has (arguments
                # with secret-named values already redacted by the agent loop).
                self.emit(
                    "tool_call",
                    {
                        "step": path,
                        "tool": call["name"],
                        "arguments": call.get("arguments"),
                        "ok": call["ok"],
                    },
                )
        if defer and result.new_messages:
            self._unsaved[path] = ThreadMessages(spec.name, thread, result.new_messages, turn_id)
        if isinstance(step, AgentTurn):
            return turn_output(result)
        return result.output


async def _with_timeout(aw: Any, timeout: float | None, path: str) -> Any:
    try:
        return await asyncio.wait_for(aw, timeout)
    except TimeoutError:
        raise StepTimeoutError(f"step {path} timed out after {timeout} s") from None


async def _await_ref(ref: Any, timeout: float | None, path: str) -> Any:
    """Await a Ray ref; on timeout or cancellation, cancel the remote work too."""
    try:
        return await asyncio.wait_for(await_ref(ref), timeout)
    except TimeoutError:
        cancel_ref(ref)  # tasks: their worker is killed; actor calls: interrupted
        raise StepTimeoutError(f"step {path} timed out after {timeout} s") from None
    except asyncio.CancelledError:
        cancel_ref(ref)
        raise
    except Exception as exc:
        if is_remote_task_error(exc):
            raise unwrap_error(exc) from None
        raise


async def _gather(coros: list[Any]) -> list[Any]:
    """Run concurrently; on the first failure cancel the siblings (no orphans)."""
    try:
        async with asyncio.TaskGroup() as tg:
            tasks = [tg.create_task(c) for c in coros]
    except BaseExceptionGroup as group:
        for kind in (Suspend, LumosError, Exception):
            for exc in group.exceptions:
                if isinstance(exc, kind):
                    raise exc from None
        raise
    return [t.result() for t in tasks]
