"""``ModelHost``: one vLLM engine and its adapters; ``LumosLLMServer``: its Serve replica.

A module of its own so Ray pickles the deployment class by reference (a class made
inside a function is pickled by value, dragging Ray's locks along); vLLM is imported
only where an engine runs (``_vllm``): a model replica, or a gateway replica that hosts
a model itself (``ServedModelConfig.in_gateway``), never in the driver.

Per request: resolve a LoRA adapter by its serving id (an adapter's serving id,
unique across tenants: from the local :class:`~lumos_ray.adapters.AdapterRegistry`,
else a shared name from ``lora.object_store_path``), run vLLM's OpenAI handler, and
send back either one :class:`~lumos_ray.serve._wire.JsonReply` or the stream's SSE
text. Behind a handle, stream chunks that are ready together travel as one item (no
added wait): each handle item is a Ray round trip, the costliest part of a token on
2 cores.

Adapters are Serve-multiplexed models: Serve routes an adapter's requests to replicas
that already loaded it and evicts the least recently used one beyond
``lora.max_adapters_per_replica`` (we then unload it from vLLM's model list).
"""

from __future__ import annotations

import asyncio
import logging
import shutil
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from contextlib import aclosing
from pathlib import Path
from typing import Any

from ray import serve

from lumos_ray.adapters import AdapterRegistry
from lumos_ray.errors import AdapterError, LumosError
from lumos_ray.serve import _trace
from lumos_ray.serve._config import ServedModelConfig
from lumos_ray.serve._wire import JsonReply, error_body

__all__ = ["LumosLLMServer", "ModelHost", "fetch_object_store_adapter"]

log = logging.getLogger(__name__)

#: Unload tasks started from ``_Adapter.__del__`` (held so they are not collected).
_PENDING: set[asyncio.Task[None]] = set()


def fetch_object_store_adapter(prefix: str, name: str, cache_dir: Path) -> str | None:
    """Copy ``<prefix>/<name>/`` (any pyarrow filesystem URI) into ``cache_dir``.

    Returns the local adapter directory, or None when the object store has no such
    adapter. Why: adapters published to S3/GCS by other clusters are served by name
    like registry ones, without a registry entry on this node.
    """
    from pyarrow import fs

    if not AdapterRegistry.valid_name(name):  # one path segment, never ``..``
        raise AdapterError(f"Invalid adapter name {name!r}.")
    src_fs, root = fs.FileSystem.from_uri(prefix.rstrip("/") + "/" + name)
    info = src_fs.get_file_info(root + "/adapter_config.json")
    if info.type != fs.FileType.File:
        return None
    dest = cache_dir / name
    if not (dest / "adapter_config.json").is_file():
        stage = cache_dir / f".{name}.part"
        shutil.rmtree(stage, ignore_errors=True)
        stage.mkdir(parents=True)
        fs.copy_files(root, str(stage), source_filesystem=src_fs)
        shutil.rmtree(dest, ignore_errors=True)
        stage.rename(dest)
    return str(dest)


class _Adapter:
    """A loaded adapter as Serve's multiplexer holds it; eviction unloads it."""

    def __init__(self, name: str, unload: Callable[[str], Awaitable[None]]) -> None:
        self.name = name
        self._unload: Callable[[str], Awaitable[None]] | None = unload
        self._loop = asyncio.get_running_loop()

    def __del__(self) -> None:
        # Serve calls this on LRU eviction (from a worker thread); the garbage
        # collector may call it again later: only the first call acts.
        unload, self._unload = self._unload, None
        if unload is None:
            return
        name, loop = self.name, self._loop

        def start() -> None:
            task: asyncio.Task[Any] = loop.create_task(unload(name))  # type: ignore[arg-type]
            _PENDING.add(task)
            task.add_done_callback(_PENDING.discard)

        try:
            loop.call_soon_threadsafe(start)
        except RuntimeError:  # the loop is closed: the replica is going away
            pass


class ModelHost:
    """One vLLM engine with its adapters: what answers a model request, wherever it runs.

    Two homes (``ServedModelConfig.in_gateway``): a ``LumosLLMServer`` replica behind a
    deployment handle, or the gateway replica itself, where a request and every chunk
    of its stream skip a Ray round trip and a process.
    """

    def __init__(
        self, model: ServedModelConfig, adapter_root: str, home: str, engine: Any = None
    ) -> None:
        """``engine``: the vLLM host (built from ``model`` when None; tests pass one)."""
        self._model = model
        self._registry = AdapterRegistry(adapter_root)
        self._cache = Path(home) / "adapter-cache" / model.name
        if engine is None:
            from lumos_ray.serve._vllm import (
                VLLMHost,
                engine_threads,
                resolve_model_source,
                vllm_engine_kwargs,
            )

            engine = VLLMHost(
                model.name,
                resolve_model_source(model.source),
                vllm_engine_kwargs(model),
                threads=engine_threads(model),
            )
        self._host = engine
        self._adapter: Callable[[str], Awaitable[_Adapter]] | None = None

    async def start(self) -> None:
        """Load the engine (20-80 s on CPU) and set up adapter multiplexing."""
        await self._host.start()
        lora = self._model.lora
        if lora.enabled:
            # A plain function, not the bound method: Serve keeps its LRU on the
            # decorated object, and a bound method takes no attributes.
            async def load(name: str) -> _Adapter:
                return await self._load_adapter(name)

            self._adapter = serve.multiplexed(
                max_num_models_per_replica=lora.max_adapters_per_replica
            )(load)

    async def _load_adapter(self, name: str) -> _Adapter:
        """Load the adapter a serving id names (set by the gateway from the registry):
        a tenant's own (``<name>~<tenant>``) or a shared one from the registry, else a
        shared name from the object store."""
        try:
            record = await asyncio.to_thread(self._registry.get_by_serve_id, name)
        except AdapterError:
            record = None
        if record is not None:
            path = record.path
        elif self._model.lora.object_store_path and AdapterRegistry.valid_name(name):
            got = await asyncio.to_thread(
                fetch_object_store_adapter, self._model.lora.object_store_path, name, self._cache
            )
            if got is None:
                raise AdapterError(
                    f"Unknown adapter {name!r}: not in {self._registry.root} nor under "
                    f"{self._model.lora.object_store_path}."
                )
            path = got
        else:
            raise AdapterError(f"Unknown adapter {name!r} in {self._registry.root}.")
        await self._host.load_adapter(name, path)
        return _Adapter(name, self._host.unload_adapter)

    async def check_health(self) -> None:
        await self._host.check_health()

    async def shutdown(self) -> None:
        """Stop the engine and its engine-core process. Why explicit: the engine core
        is a separate process that outlives a replica killed without this (it kept a
        core busy after `lumos serve down`)."""
        await self._host.shutdown()

    async def generate(
        self,
        kind: str,
        raw: bytes,
        adapter: str | None,
        carrier: dict[str, str] | None = None,
        coalesce: bool = True,
    ) -> AsyncGenerator[JsonReply | str, None]:
        """Answer one request: a single JsonReply, or the stream's SSE text chunks.

        ``carrier`` is the caller's trace context; with tracing on, ``llm.request``
        (the whole call) and ``llm.generate`` (the engine) become its children.
        ``coalesce``: join stream chunks that are ready together (worth it when each
        item crosses a Ray handle; in the gateway's own process chunks go as they come).
        """
        # aclosing at every level: a caller that closes this generator (the client
        # left) closes vLLM's stream at once, which aborts the request in the engine.
        if not (carrier and _trace.tracing_on()):
            async with aclosing(self._generate(kind, raw, adapter, None, coalesce)) as items:
                async for item in items:
                    yield item
            return
        attrs = {"lumos.model": self._model.name, "lumos.kind": kind}
        if adapter:
            attrs["lumos.adapter"] = adapter
        request_span = _trace.server_span("llm.request", carrier, attrs)
        try:
            async with aclosing(
                self._generate(kind, raw, adapter, request_span, coalesce)
            ) as items:
                async for item in items:
                    yield item
        finally:
            request_span.end()

    async def _generate(
        self, kind: str, raw: bytes, adapter: str | None, parent: Any, coalesce: bool
    ) -> AsyncGenerator[JsonReply | str, None]:
        if adapter:
            try:
                if self._adapter is None:
                    raise AdapterError(
                        f"LoRA is disabled for {self._model.name!r}; {adapter!r} cannot be served.",
                        fix="Set lora.enabled: true for this model in the serve config.",
                    )
                await self._adapter(adapter)
            except LumosError as err:
                yield _lumos_reply(err)
                return
        span = None if parent is None else _trace.child_span(parent, "llm.generate", {})
        try:
            result = await self._host.run(kind, raw)
            if isinstance(result, JsonReply):
                if span is not None:
                    span.set_attribute("http.response.status_code", result.status)
                    span.set_attribute("gen_ai.usage.input_tokens", result.prompt_tokens)
                    span.set_attribute("gen_ai.usage.output_tokens", result.completion_tokens)
                yield result
                return
            chunks = _coalesce(result) if coalesce else _guarded(result)
            async with aclosing(chunks):
                async for chunk in chunks:
                    yield chunk
        finally:
            if span is not None:
                span.end()


class LumosLLMServer:
    """A Serve replica around one :class:`ModelHost`: OpenAI requests in by handle,
    one JsonReply or the stream's SSE text out."""

    # Serve allows an async constructor (the engine starts inside it); mypy does not.
    async def __init__(self, model_json: str, adapter_root: str, home: str) -> None:  # type: ignore[misc]
        _trace.setup()
        model = ServedModelConfig.model_validate_json(model_json)
        self._host = ModelHost(model, adapter_root, home)
        await self._host.start()

    async def check_health(self) -> None:
        await self._host.check_health()

    async def __del__(self) -> None:
        """Serve's graceful-shutdown hook (it awaits an async ``__del__``)."""
        await self._host.shutdown()

    async def generate(
        self, kind: str, raw: bytes, carrier: dict[str, str] | None = None
    ) -> AsyncIterator[JsonReply | str]:
        """One request; the adapter is Serve's ``multiplexed_model_id`` of the call."""
        adapter = serve.get_multiplexed_model_id() or None
        async for item in self._host.generate(kind, raw, adapter, carrier):
            yield item


def _lumos_reply(err: LumosError) -> JsonReply:
    import json

    from lumos_ray.serve._errors import status_for

    status = status_for(err)
    body = error_body(
        status, err.message, code=err.code, extra={"lumos_code": err.code, "fix": err.fix}
    )
    return JsonReply(status, json.dumps(body).encode())


async def _coalesce(stream: AsyncIterator[str]) -> AsyncGenerator[str, None]:
    """Yield the stream's chunks, joining those already waiting into one item.

    A reader task drains vLLM's generator into a queue; each yield takes whatever has
    arrived since the last one. No timer: under light load every chunk goes alone (no
    latency added), under heavy load fewer, larger items cross the handle. Closing this
    generator (the client went away) cancels the reader, which aborts the request in
    vLLM.
    """
    queue: asyncio.Queue[str | BaseException | None] = asyncio.Queue()

    async def read() -> None:
        try:
            async for chunk in stream:
                queue.put_nowait(chunk)
        except Exception as exc:  # surfaces in the consumer
            queue.put_nowait(exc)
        finally:
            queue.put_nowait(None)

    reader = asyncio.create_task(read())
    try:
        done = False
        while not done:
            parts = [await queue.get()]
            while not queue.empty():
                parts.append(queue.get_nowait())
            text: list[str] = []
            for part in parts:
                if part is None:
                    done = True
                elif isinstance(part, BaseException):
                    log.exception("The engine stream failed", exc_info=part)
                    text.append(_stream_error())
                    done = True
                else:
                    text.append(part)
            if text:
                yield "".join(text)
    finally:
        if not reader.done():
            reader.cancel()
            try:
                await reader
            except (asyncio.CancelledError, Exception):
                pass


async def _guarded(stream: AsyncIterator[str]) -> AsyncGenerator[str, None]:
    """The stream's chunks as they come; an engine failure ends it with an error event
    (the client already has a 200 and must see why the stream stopped)."""
    try:
        async with aclosing(stream):  # type: ignore[type-var]
            async for chunk in stream:
                yield chunk
    except Exception:
        log.exception("The engine stream failed")
        yield _stream_error()


def _stream_error() -> str:
    import json

    body = error_body(500, "The model failed while streaming; retry the request.")
    return f"data: {json.dumps(body)}\n\ndata: [DONE]\n\n"
