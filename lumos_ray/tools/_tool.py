"""The tool class and ``@tool``: typed Python functions that agents (and workflow
steps) can call.

``@tool`` turns a sync or async function into a :class:`Tool` whose JSON Schema comes
from the type hints and the docstring, so what the model is told and what is
validated are the same thing. A tool that asks for resources (``num_cpus``,
``num_gpus``, ``memory``, ``resources``) runs as a Ray task with those options; any
other tool runs in the caller's process (a sync one in a worker thread, so an async
agent actor's event loop is never blocked).

Finding tools by name lives in ``_registry`` (which imports this module, never the
reverse), so tools -> registry -> built-ins has no cycle.
"""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
import datetime as _dt
import importlib
import inspect
import json
import os
import sys
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from pydantic import BaseModel, ValidationError

from lumos_ray.errors import ConfigError, LumosError, ToolArgumentError, ToolError
from lumos_ray.tools._context import ToolContext

__all__ = ["CANCEL_GRACE_S", "Tool", "ToolContext", "ToolInterrupted", "to_jsonable", "tool"]


class Tool:
    """A callable with a name, a description and a JSON Schema for its arguments.

    Picklable with cloudpickle (Ray ships it to actors and tasks): the pydantic
    validator is rebuilt lazily on the other side instead of being pickled.
    """

    def __init__(
        self,
        fn: Callable[..., Any],
        *,
        name: str | None = None,
        description: str | None = None,
        num_cpus: float | None = None,
        num_gpus: float | None = None,
        memory: int | None = None,
        resources: dict[str, float] | None = None,
        category: str | None = None,
        source: str = "function",
    ) -> None:
        from lumos_ray.tools._schema import (
            build_args_model,
            clean_schema,
            parse_docstring,
            resolve_hints,
        )

        if not callable(fn):
            raise ConfigError(f"@tool needs a function, got {type(fn).__name__}")
        self.fn = fn
        self.name = name or getattr(fn, "__name__", None) or "tool"
        if not _valid_name(self.name):
            raise ConfigError(
                f"Tool name {self.name!r} is invalid: use letters, digits, '_' or '-' "
                "(at most 64 characters), as chat model APIs require."
            )
        doc = parse_docstring(inspect.getdoc(fn))
        self.description = (description or doc.summary or self.name).strip()
        self.num_cpus = num_cpus
        self.num_gpus = num_gpus
        self.memory = memory
        self.resources = dict(resources) if resources else None
        self.category = category
        self.source = source
        self._param_docs = doc.params
        self._hints = resolve_hints(fn)
        model, self._ctx_param = build_args_model(fn, self.name, doc.params, self._hints)
        self._args_model: type[BaseModel] | None = model
        self.parameters: dict[str, Any] = clean_schema(model.model_json_schema())
        self._is_async = inspect.iscoroutinefunction(fn)
        self.__doc__ = inspect.getdoc(fn)
        self.__name__ = self.name
        self.__wrapped__ = fn

    # -- pickling: drop the dynamic pydantic model, rebuild on first use -------------
    def __reduce__(self) -> tuple[Any, ...]:
        """By reference when the tool is a module attribute (built-ins, plugins, users'
        modules), so plain pickle works and workers import it; by value otherwise."""
        mod = getattr(self.fn, "__module__", None)
        qual = getattr(self.fn, "__qualname__", "")
        if mod and mod != "__main__" and "<locals>" not in qual and "." not in qual:
            module = sys.modules.get(mod)
            if module is not None and getattr(module, qual, None) is self and not _by_value(mod):
                return (_tool_by_reference, (mod, qual, self.category, self.source))
        return (_tool_from_state, (type(self), self.__getstate__()))

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_args_model"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    @property
    def args_model(self) -> type[BaseModel]:
        if self._args_model is None:
            from lumos_ray.tools._schema import build_args_model

            self._args_model, _ = build_args_model(
                self.fn, self.name, self._param_docs, self._hints
            )
        return self._args_model

    # -- description for models --------------------------------------------------------
    @property
    def uses_ray(self) -> bool:
        """True when the tool asked for resources, so it runs as a Ray task."""
        return any(
            v is not None for v in (self.num_cpus, self.num_gpus, self.memory, self.resources)
        )

    def openai_schema(self) -> dict[str, Any]:
        """The OpenAI ``tools=[...]`` entry for this tool."""
        return {
            "type": "function",
            "function": {
                "name": self.name,
                "description": self.description,
                "parameters": self.parameters,
            },
        }

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready summary (``lumos tools list --json``)."""
        return {
            "name": self.name,
            "category": self.category,
            "description": self.description,
            "source": self.source,
            "parameters": self.parameters,
            "resources": {
                k: v
                for k, v in (
                    ("num_cpus", self.num_cpus),
                    ("num_gpus", self.num_gpus),
                    ("memory", self.memory),
                    ("resources", self.resources),
                )
                if v is not None
            },
        }

    # -- validation and calls ------------------------------------------------------------
    def validate(self, args: dict[str, Any] | str | None) -> dict[str, Any]:
        """Validate (and coerce) ``args``; the result is ready to pass as keyword arguments.

        Raises ToolArgumentError whose message lists every bad field, so a chat model
        can correct its next call. A JSON string (as chat APIs deliver arguments) is
        accepted too.
        """
        if args is None:
            args = {}
        if isinstance(args, str):
            try:
                args = json.loads(args) if args.strip() else {}
            except json.JSONDecodeError as exc:
                raise ToolArgumentError(
                    f"Invalid arguments for tool {self.name!r}: not valid JSON ({exc.msg} at "
                    f"position {exc.pos}). Send a JSON object matching the schema.",
                    tool=self.name,
                ) from None
        if not isinstance(args, dict):
            raise ToolArgumentError(
                f"Invalid arguments for tool {self.name!r}: expected a JSON object, got "
                f"{type(args).__name__}.",
                tool=self.name,
            )
        try:
            model = self.args_model.model_validate(args)
        except ValidationError as exc:
            from lumos_ray.tools._schema import format_args_error

            raise ToolArgumentError(
                format_args_error(self.name, exc),
                tool=self.name,
                errors=[
                    {"loc": [str(p) for p in e["loc"]], "msg": e["msg"], "type": e["type"]}
                    for e in exc.errors()
                ],
            ) from None
        # Field by field (not model_dump) so nested models reach the function as models.
        return {k: getattr(model, k) for k in type(model).model_fields}

    async def acall(self, args: dict[str, Any] | str | None, ctx: ToolContext | None = None) -> Any:
        """Validate ``args`` and run the tool; the result is JSON-ready.

        Errors: ToolArgumentError (bad arguments), ToolNotAllowedError (a safety
        refusal), ToolError (anything the tool itself raised, with its message).
        """
        kwargs = self.validate(args)
        if self._ctx_param is not None:
            kwargs[self._ctx_param] = ctx if ctx is not None else ToolContext()
        try:
            if self.uses_ray:
                result = await self._call_as_ray_task(kwargs)
            elif self._is_async:
                result = await self.fn(**kwargs)
            else:
                result = await _in_tool_thread(self.fn, kwargs)
            if inspect.isawaitable(result):  # e.g. a partial or callable object that is async
                result = await result
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            raise _as_tool_error(self.name, exc) from None
        return to_jsonable(result)

    def call(self, args: dict[str, Any] | str | None = None, ctx: ToolContext | None = None) -> Any:
        """Blocking form of :meth:`acall` for scripts and tests (not inside an event loop)."""
        return asyncio.run(self.acall(args, ctx))

    async def _call_as_ray_task(self, kwargs: dict[str, Any]) -> Any:
        from lumos_ray import runtime, tracing

        opts = runtime.TaskOptions(
            name=f"tool:{self.name}",
            num_cpus=self.num_cpus,
            num_gpus=self.num_gpus,
            memory=self.memory,
            resources=self.resources,
            max_retries=0,
            cancel_grace_s=CANCEL_GRACE_S,
        )
        # The trace context travels with the task so its span joins the run's trace. If
        # the caller gives up (a step timeout), the handle stops the task: first a
        # KeyboardInterrupt (the tool can clean up), then its worker is killed if the
        # task still runs after CANCEL_GRACE_S (stuck in C code, or swallowing it).
        return await runtime.submit_task(
            _tool_task_body, self, kwargs, tracing.inject(), options=opts
        )

    def options(self, **overrides: Any) -> Tool:
        """A copy with other settings (``None`` keeps the current value), e.g. run a
        built-in as a Ray task: ``get_tool("csv_stats").options(num_cpus=1)``."""
        allowed = {"name", "description", "num_cpus", "num_gpus", "memory", "resources",
                   "category"}  # fmt: skip
        unknown = set(overrides) - allowed
        if unknown:
            raise ConfigError(f"Unknown tool option(s): {', '.join(sorted(unknown))}")
        kw = {k: getattr(self, k) for k in allowed}
        kw.update({k: v for k, v in overrides.items() if v is not None})
        return Tool(self.fn, source=self.source, **kw)

    def run_sync(self, kwargs: dict[str, Any]) -> Any:
        """Run the function with already-validated kwargs in this process (Ray task body)."""
        if self._is_async:
            return asyncio.run(self.fn(**kwargs))
        return self.fn(**kwargs)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Call the original function directly (for users' own unit tests)."""
        return self.fn(*args, **kwargs)

    def __repr__(self) -> str:
        return f"Tool(name={self.name!r}, source={self.source!r})"


def _tool_by_reference(module: str, attr: str, category: str | None, source: str) -> Tool:
    t = getattr(importlib.import_module(module), attr)
    if t.category is None:
        t.category = category
    if t.source == "function":
        t.source = source
    return t


def _tool_from_state(cls: type[Tool], state: dict[str, Any]) -> Tool:
    t = cls.__new__(cls)
    t.__setstate__(state)
    return t


def _by_value(module_name: str) -> bool:
    """Whether the module's code is sent by value (``lumos_ray.runtime.pickle_by_value``:
    ``lumos dev`` ships each reloaded version of the user's tools this way, so a
    long-lived agent actor runs the new code, not the copy it imported first)."""
    cloudpickle = sys.modules.get("cloudpickle")  # nothing is registered before its import
    if cloudpickle is None:
        return False
    registry = cloudpickle.list_registry_pickle_by_value()
    return any(module_name == m or module_name.startswith(m + ".") for m in registry)


_POOL: ThreadPoolExecutor | None = None
_POOL_LOCK = threading.Lock()


def _tool_pool() -> ThreadPoolExecutor:
    """Threads for sync tools, separate from the loop's default executor.

    The default executor has only ``min(32, cpus + 4)`` threads and also serves DNS
    lookups (``loop.getaddrinfo``): a few slow sync tools (a shell command, a big
    SQLite query) would stall every HTTP tool of the actor. Size: LUMOS_TOOL_THREADS.
    """
    global _POOL
    with _POOL_LOCK:
        if _POOL is None:
            size = int(os.environ.get("LUMOS_TOOL_THREADS") or 64)
            _POOL = ThreadPoolExecutor(max_workers=size, thread_name_prefix="lumos-tool")
        return _POOL


class ToolInterrupted(BaseException):
    """Raised inside a sync tool's thread when its caller stopped waiting (a timeout).

    A BaseException, like KeyboardInterrupt, so a tool's ``except Exception`` does not
    swallow it."""


def _interrupt_thread(ident: int) -> None:
    """Raise :class:`ToolInterrupted` in thread ``ident`` at its next bytecode.

    CPython's public ``PyThreadState_SetAsyncExc``: the one way to stop a Python
    thread from outside. It takes effect between bytecodes, so code stuck inside one
    long C call (a huge integer power, a regex in ``re``) stops only when that call
    returns; the built-ins bound such calls themselves."""
    import ctypes

    ctypes.pythonapi.PyThreadState_SetAsyncExc(
        ctypes.c_ulong(ident), ctypes.py_object(ToolInterrupted)
    )


class _Running:
    """Which thread runs a tool call, so a caller that gives up can interrupt it (and
    only while the call still runs: never the pool thread's next task)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.ident: int | None = None
        self.done = False

    def run(self, cv: contextvars.Context, fn: Callable[..., Any], kwargs: dict[str, Any]) -> Any:
        with self.lock:
            self.ident = threading.get_ident()
        try:
            try:
                return cv.run(fn, **kwargs)
            finally:
                with self.lock:
                    self.done = True
        except ToolInterrupted:
            raise ToolError("the tool was stopped: its caller's time limit passed") from None

    def interrupt(self) -> None:
        with self.lock:
            if self.ident is not None and not self.done:
                _interrupt_thread(self.ident)


async def _in_tool_thread(fn: Callable[..., Any], kwargs: dict[str, Any]) -> Any:
    """Run a sync tool in the tool pool; if the caller stops waiting (its timeout, or
    the turn is cancelled), the tool's thread is interrupted instead of running on."""
    # Copy contextvars (as asyncio.to_thread does) so tracing context follows the call.
    cv = contextvars.copy_context()
    loop = asyncio.get_running_loop()
    running = _Running()
    fut = loop.run_in_executor(_tool_pool(), running.run, cv, fn, kwargs)
    try:
        return await fut
    except asyncio.CancelledError:
        running.interrupt()
        raise


#: Seconds a cancelled tool task gets to stop on its KeyboardInterrupt before its
#: worker is killed.
CANCEL_GRACE_S = 5.0


def _tool_task_body(t: Tool, kwargs: dict[str, Any], carrier: dict[str, str]) -> Any:
    """What a Ray-task tool runs on the worker (SIGINT handling is the runtime's)."""
    from lumos_ray import tracing

    with tracing.span("tool.task", carrier, tool=t.name):
        return to_jsonable(t.run_sync(kwargs))


def _unwrap_ray_error(exc: BaseException) -> BaseException:
    """Ray wraps task exceptions in RayTaskError; find the tool's own exception."""
    cur: BaseException = exc
    for _ in range(5):
        cause = getattr(cur, "cause", None)
        if isinstance(cause, BaseException) and cause is not cur:
            cur = cause
        else:
            break
    return cur


def _as_tool_error(name: str, exc: BaseException) -> LumosError:
    exc = _unwrap_ray_error(exc)
    if isinstance(exc, ToolError):
        return exc
    if isinstance(exc, LumosError):
        return ToolError(f"Tool {name!r} failed: {exc.message}", tool=name, cause_code=exc.code)
    msg = str(exc) or type(exc).__name__
    return ToolError(f"Tool {name!r} failed: {type(exc).__name__}: {msg}", tool=name)


def _json_default(obj: Any) -> Any:
    if isinstance(obj, BaseModel):
        return obj.model_dump(mode="json")
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.asdict(obj)
    if isinstance(obj, set | frozenset | tuple):
        return list(obj)
    if isinstance(obj, _dt.datetime | _dt.date | _dt.time):
        return obj.isoformat()
    if isinstance(obj, bytes):
        return obj.decode("utf-8", errors="replace")
    return str(obj)


def to_jsonable(value: Any) -> Any:
    """A JSON-serialisable copy of a tool result (unknown objects become ``str()``)."""
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return json.loads(json.dumps(value, default=_json_default))


def _valid_name(name: str) -> bool:
    return bool(name) and len(name) <= 64 and all(c.isalnum() or c in "_-" for c in name)


def tool(
    fn: Callable[..., Any] | None = None,
    *,
    name: str | None = None,
    description: str | None = None,
    num_cpus: float | None = None,
    num_gpus: float | None = None,
    memory: int | None = None,
    resources: dict[str, float] | None = None,
    category: str | None = None,
) -> Any:
    """Make a :class:`Tool` from a typed function: ``@tool`` or ``@tool(num_cpus=1)``.

    The schema comes from the type hints (pydantic: defaults, Optional, Literal,
    lists, nested models); the description and per-argument help from the
    docstring (Google ``Args:`` or NumPy ``Parameters`` sections). A parameter
    annotated ``ToolContext`` is injected at call time and hidden from the schema.
    """

    def wrap(f: Callable[..., Any]) -> Tool:
        if isinstance(f, Tool):  # re-wrap an existing tool with other options
            return f.options(
                name=name,
                description=description,
                num_cpus=num_cpus,
                num_gpus=num_gpus,
                memory=memory,
                resources=resources,
                category=category,
            )
        return Tool(
            f,
            name=name,
            description=description,
            num_cpus=num_cpus,
            num_gpus=num_gpus,
            memory=memory,
            resources=resources,
            category=category,
        )

    return wrap if fn is None else wrap(fn)
