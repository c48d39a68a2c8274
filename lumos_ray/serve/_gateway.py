"""The gateway: our FastAPI ingress deployment in front of every model.

It owns everything decided before model work: API-key auth, the quota hook, typed
and bounded request schemas (``_schemas``, documented in ``/openapi.json``), model
routing to LoRA adapters of the local registry, body limits, OpenAI-shaped errors with
the right status codes, ``/metrics``, health/readiness, trace context from the HTTP
``traceparent``, embeddings, and the runs API (``lumos_ray.serve._runs_api``, when
present). Model work goes through one deployment-handle call per request to
``LumosLLMServer`` (vLLM) or ``Embedder`` replicas: the validated body travels as the
client's own JSON bytes, the answer comes back encoded (``_wire``), so nothing is
parsed or serialised twice on the way. A model configured ``in_gateway`` runs in this
replica instead (:class:`GatewayWithModel`): its requests and stream chunks cross no
Ray handle at all.

The app is built on the replica (``serve.ingress(build_app)``) so optional routers
are imported where they run; routes reach the replica's :class:`Gateway` through a
module-level slot (one gateway per replica process).
"""

from __future__ import annotations

import asyncio
import gc
import importlib
import importlib.util
import logging
import random
import re
import time
from collections.abc import AsyncGenerator, Awaitable, MutableMapping
from typing import Any, NamedTuple

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from opentelemetry import trace as trace_api
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Match

from lumos_ray.adapters import AdapterRecord, AdapterRegistry
from lumos_ray.errors import AdapterError, LumosError, NotFoundError, ServeError
from lumos_ray.platform import Principal
from lumos_ray.serve import _trace
from lumos_ray.serve._admission import ClusterAdmission, LedgerSpec, LocalAdmission
from lumos_ray.serve._auth import (
    OPEN_ROUTES,
    Authenticator,
    PlatformKeys,
    StaticKey,
    StaticKeys,
    action_for,
    check_role,
    resolve_static_keys,
)
from lumos_ray.serve._config import ServeConfig, ServedModelConfig
from lumos_ray.serve._errors import REQUEST_ID, error_response, lumos_error_response
from lumos_ray.serve._metrics import CONTENT_TYPE_LATEST, GatewayMetrics
from lumos_ray.serve._schemas import (
    _MAX_TOKENS,
    ChatCompletionBody,
    ChatCompletionResponse,
    CompletionBody,
    CompletionResponse,
    EmbeddingBody,
    EmbeddingResponse,
    ErrorResponse,
    ModelCard,
    ModelList,
)
from lumos_ray.serve._wire import JsonReply
from lumos_ray.tracing import inject

__all__ = ["Gateway", "GatewayReplica", "GatewayWithModel", "build_app", "current_gateway"]

log = logging.getLogger(__name__)

_GATEWAY: dict[str, Gateway] = {}

# Probes and scraping make no spans: they would bury the traces people look for.
_UNTRACED = frozenset({"/health", "/ready", "/metrics"})


def current_gateway() -> Gateway:
    """This replica's gateway (routes in other modules reach it here)."""
    gw = _GATEWAY.get("gw")
    if gw is None:
        raise ServeError("The gateway is starting; retry in a moment.")
    return gw


_gw = current_gateway


class _BodyTooLarge(Exception):
    pass


class _BadRequest(Exception):
    def __init__(self, status: int, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param


class ModelRoute(NamedTuple):
    """Where one model request goes (:meth:`Gateway.route`)."""

    handle: Any
    #: The name the client asked for (what its answer carries back).
    name: str
    #: The id the model deployment knows it by: a base model's name, an adapter's
    #: :attr:`~lumos_ray.adapters.AdapterRecord.serve_id`, or an object-store name.
    serve_id: str
    #: The base model it runs on (its limits apply).
    base: str
    #: The model's host when it runs in this replica (``in_gateway``); None: by handle.
    local: Any = None
    #: The ``model`` label of its metrics: the name for base models and shared adapters;
    #: ``<base>:tenant-adapter`` / ``<base>:object-store-adapter`` otherwise, because
    #: /metrics is read by any tenant's admin (a tenant's adapter names are its own)
    #: and object-store names are unbounded (a label per name would grow without end).
    label: str = ""

    def call(self, kind: str, raw: bytes, carrier: dict[str, str] | None) -> Any:
        """Start the request: a streaming handle response, or the local host's answer
        behind the same small interface (async iteration and ``cancel()``)."""
        if self.local is None:
            return self.handle.generate.remote(kind, raw, carrier)
        adapter = None if self.serve_id == self.base else self.serve_id
        return _LocalAnswer(self.local.generate(kind, raw, adapter, carrier, coalesce=False))


class _LocalAnswer:
    """An in-process model answer with the part of a streaming handle response the
    gateway uses. ``cancel()`` closes the generator chain down to vLLM's own stream,
    which aborts the request in the engine (a client that left frees its batch slot)."""

    _closing: set[asyncio.Task[None]] = set()

    def __init__(self, agen: AsyncGenerator[Any, None]) -> None:
        self._agen = agen

    def __aiter__(self) -> _LocalAnswer:
        return self

    async def __anext__(self) -> Any:
        return await self._agen.__anext__()

    def cancel(self) -> None:
        task = asyncio.ensure_future(self._agen.aclose())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)


def freeze_startup_heap() -> None:
    """Take everything built so far (imported modules, the app, config, engine state:
    120-140k objects with the platform on) out of the garbage collector's full passes.

    Why: each full collection walked them all, ~55 ms with the platform on, every few
    thousand requests (what a request allocates and keeps for a while, such as cache
    entries and leases, triggers them): 7 us per request over HTTP on average and a
    55 ms stall for every request in flight. What is allocated later is collected as
    usual. Called once, at the end of a gateway replica's start (``gc.freeze``, the
    documented way for a long-running server to do this)."""
    gc.collect()
    gc.freeze()


class Gateway:
    """Per-replica state: handles, config, auth, limits, metrics.

    ``static_keys``: the config's keys as digests, resolved in the driver
    (``_auth.resolve_static_keys``) and handed over as init arguments, so every replica
    gets them however the app is started and no replica ever sees a plaintext key.
    None (a process without a driver: unit tests) resolves them here.
    ``cluster``: count rate limits in the app's limiter actor (several replicas
    share one budget); False keeps the buckets in this process (no Ray needed).
    """

    def __init__(
        self,
        config_json: str,
        llm_handles: dict[str, Any],
        embed_handle: Any | None = None,
        static_keys: list[StaticKey] | None = None,
        cluster: bool = False,
        local_models: dict[str, Any] | None = None,
    ) -> None:
        self.config = ServeConfig.model_validate_json(config_json)
        self.llm_handles = llm_handles
        #: Models whose engine runs in this replica (``in_gateway``), by name.
        self.local_models: dict[str, Any] = dict(local_models or {})
        self.embed_handle = embed_handle
        gcfg = self.config.gateway
        self.platform: Any = None
        self.auth: Authenticator
        if gcfg.platform:
            from lumos_ray.platform import Platform

            self.platform = Platform(gcfg.platform_store_url)
            self.auth = PlatformKeys(self.platform, gcfg.auth_cache_s)
        else:
            if static_keys is None:
                static_keys = resolve_static_keys(self.config.api_keys())
            self.auth = StaticKeys(static_keys)
        quota = gcfg.quota
        self.hook: Any = None
        rpm, trpm = quota.requests_per_minute, quota.tenant_requests_per_minute
        if quota.hook:
            mod, _, attr = quota.hook.partition(":")
            self.hook = getattr(importlib.import_module(mod), attr)(quota)
            rpm = trpm = None  # the hook replaces the built-in rate limit
        # Rate limits and the plan quota: one admission service per app (an actor
        # when clustered), so replicas share one budget and the quota is charged in
        # memory and written to the store in batches (see _admission).
        self.admission: Any = None
        if rpm or trpm or self.platform is not None:
            spec = None
            if self.platform is not None:
                spec = LedgerSpec(gcfg.platform_store_url, self.platform.plans, quota.flush_s)
            self.admission = (
                ClusterAdmission(self.config.app_name, rpm, trpm, spec)
                if cluster
                else LocalAdmission(rpm, trpm, spec)
            )
        self.hosts = frozenset(h.lower() for h in gcfg.allowed_hosts)
        self.metrics = GatewayMetrics()
        self.registry = AdapterRegistry(self.config.resolved_adapters_dir())
        # Old-layout tenant adapters move into their namespaces now, not inside the
        # first tenant's request (that scan reads every tenant's old entries).
        self.registry.migrate()
        self._stream_handles: dict[str, Any] = {}
        self._default_tenant: str | None = None
        _trace.setup()
        _GATEWAY["gw"] = self
        if cluster:  # a Serve replica: the process is the gateway's
            freeze_startup_heap()

    def default_tenant(self) -> str:
        """The tenant of requests when auth is off: the replica's settings."""
        if self._default_tenant is None:
            from lumos_ray.config import LumosSettings

            self._default_tenant = LumosSettings.from_env().tenant_id
        return self._default_tenant

    async def run_blocking(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """A platform call (a store read or write) off the event loop."""
        return await asyncio.to_thread(fn, *args, **kwargs)

    async def check_health(self) -> None:
        """Serve's health check: an in-gateway engine that died fails it (Serve then
        replaces the replica)."""
        for host in self.local_models.values():
            await host.check_health()

    async def shutdown(self) -> None:
        """Hand the admission actor this replica's leases and summed metering, so a
        scale-down or redeploy loses no counts (bounded: an actor that is gone must
        not hold the shutdown; it counts unsettled leases as used later)."""
        admission = getattr(self, "admission", None)
        if admission is not None:
            try:
                async with asyncio.timeout(5):
                    await admission.hand_over()
            except Exception:
                log.warning("Could not hand metering to the admission actor", exc_info=True)

    # -- model routing -------------------------------------------------------------
    def base_model_names(self) -> list[str]:
        return [m.name for m in self.config.models]

    def served_model(self, name: str) -> ServedModelConfig | None:
        """The config of the base model ``name`` (None: not a configured LLM)."""
        return next((m for m in self.config.models if m.name == name), None)

    def _base_for_adapter(self, record: AdapterRecord | None) -> str | None:
        """The base model an adapter runs on: a registered adapter by its record; a
        name in no registry namespace goes to the first LoRA model with an object store
        to fetch from."""
        lora_models = [m for m in self.config.models if m.lora.enabled]
        if record is None:
            remote = [m for m in lora_models if m.lora.object_store_path]
            return remote[0].name if remote else None
        for m in lora_models:
            if record.base_model in (m.name, m.source):
                return m.name
        if len(lora_models) == 1:
            return lora_models[0].name
        return None

    def route(self, model: str | None, tenant: str) -> ModelRoute:
        """Where a request for ``model`` from ``tenant`` goes: a base model, else the
        tenant's own adapter of that name, else a shared one, else (a well-formed name,
        with a LoRA model that has an object store) an object-store adapter.

        Only the tenant's own namespace and the shared one are read, so a name another
        tenant holds answers exactly like a name nobody holds (404). The serving id
        that reaches Serve multiplexing and vLLM comes from the registry record (or is
        a validated shared name), never from the request as sent."""
        if not model:
            if len(self.config.models) == 1:
                model = self.config.models[0].name
            else:
                raise _BadRequest(400, "`model` is required.", param="model")
        if model in self.local_models:
            return ModelRoute(None, model, model, model, self.local_models[model], model)
        if model in self.llm_handles:
            handle = self._stream_handles.get(model)
            if handle is None:
                handle = self._stream_handles[model] = self.llm_handles[model].options(stream=True)
            return ModelRoute(handle, model, model, model, None, model)
        record = self.registry.find_for(model, tenant)
        base = self._base_for_adapter(record)
        if base is None or (record is None and not AdapterRegistry.valid_name(model)):
            raise NotFoundError(
                f"The model {model!r} does not exist. Served: "
                f"{', '.join(self.list_model_ids(tenant))}."
            )
        serve_id = record.serve_id if record is not None else model
        if record is None:
            label = f"{base}:object-store-adapter"
        elif record.tenant is None:
            label = model
        else:
            label = f"{base}:tenant-adapter"
        if base in self.local_models:
            return ModelRoute(None, model, serve_id, base, self.local_models[base], label)
        handle = self._stream_handles.get(serve_id)
        if handle is None:
            # Multiplexed routing: Serve sends an adapter's requests to replicas that
            # already loaded it; LumosLLMServer loads it from the registry otherwise.
            handle = self.llm_handles[base].options(stream=True, multiplexed_model_id=serve_id)
            if record is not None:  # object-store names are not cached (unbounded set)
                self._stream_handles[serve_id] = handle
        return ModelRoute(handle, model, serve_id, base, None, label)

    def list_model_ids(self, tenant: str) -> list[str]:
        """Base models, the embedding model, and the adapters ``tenant`` may use."""
        ids = self.base_model_names()
        if self.config.embeddings.enabled:
            ids.append(self.config.embeddings.name)
        ids += [r.name for r in self.registry.list_for(tenant) if r.name not in ids]
        return ids

    def tenant_of(self, request: Request) -> str:
        """The caller's tenant: its key's, or the replica's own when auth is off."""
        principal = request.scope.get("state", {}).get("principal")
        return principal.tenant if principal is not None else self.default_tenant()


#: Requests one gateway replica takes at once (Serve's max_ongoing_requests for the
#: gateway deployment; uvicorn's limit on its own listener): 503 above.
DIRECT_MAX_ONGOING = 1000


class GatewayReplica(Gateway):
    """The gateway as a Serve replica with its models in deployments of their own.
    (The hook is not on :class:`Gateway`: a Gateway built outside Serve, as in tests,
    would leave an un-awaited coroutine to the garbage collector.)"""

    async def __del__(self) -> None:
        """Serve's graceful-shutdown hook (it awaits an async ``__del__``)."""
        await self.shutdown()


class GatewayWithModel(Gateway):
    """A gateway replica that also runs one model's engine (``in_gateway: true``).

    Why: behind a handle, every request and every chunk of a stream is a Ray round
    trip between two processes; on few cores that, not the engine, bounds tokens/s.
    Here the gateway calls vLLM's OpenAI handler in its own event loop, as
    ``vllm serve`` does, and keeps auth, quotas, metering and routing in front of it.
    """

    # Serve allows an async constructor (the engine starts inside it); mypy does not.
    async def __init__(  # type: ignore[misc]
        self, config_json: str, *args: Any, home: str = "", **kwargs: Any
    ) -> None:
        """``Gateway``'s arguments, plus ``home`` (the engine's cache lives there)."""
        from lumos_ray.serve._llm_server import ModelHost

        config = ServeConfig.model_validate_json(config_json)
        model = config.gateway_model()
        if model is None:
            raise ServeError("GatewayWithModel needs a model with in_gateway: true.")
        host = ModelHost(model, config.resolved_adapters_dir(), home)
        await host.start()
        kwargs["local_models"] = {model.name: host}
        super().__init__(config_json, *args, **kwargs)
        self.listener: Any = None
        gcfg = self.config.gateway
        if gcfg.direct_http:
            # Started last: the port answers only once the engine and the gateway are
            # ready (Serve, too, considers the replica up only when this returns).
            from lumos_ray.serve._direct_http import DirectListener

            self.listener = await DirectListener.start(
                build_app(),
                gcfg.host,
                gcfg.port,
                limit_concurrency=DIRECT_MAX_ONGOING,
                certfile=gcfg.tls_certfile,
                keyfile=gcfg.tls_keyfile,
            )

    async def check_health(self) -> None:
        """The engine and, with ``direct_http``, the listener: a replica whose port no
        longer answers is unhealthy (Serve then replaces it)."""
        await super().check_health()
        if self.listener is not None and not self.listener.serving:
            raise ServeError("The gateway replica's HTTP listener stopped.")

    async def __del__(self) -> None:
        """Serve's graceful-shutdown hook (it awaits an async ``__del__``): stop taking
        connections, hand over admission (:meth:`Gateway.shutdown`), then stop the
        engine, whose engine-core process would otherwise outlive the replica."""
        listener = getattr(self, "listener", None)
        if listener is not None:
            await listener.stop()
        await self.shutdown()
        for host in getattr(self, "local_models", {}).values():
            await host.shutdown()


async def _read_body(request: Request, limit: int) -> bytes:
    """The raw body, refused (413) as soon as it exceeds ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise _BodyTooLarge()
    chunks = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _BodyTooLarge()
        chunks.append(chunk)
    return b"".join(chunks)


def _parse(model_cls: Any, raw: bytes) -> Any:
    """Validate JSON bytes against a request schema (pydantic's Rust JSON parser).

    Not JSON or not an object -> 400; a schema violation -> 422 naming the fields.
    Messages never echo the input (it may be large or secret)."""
    from pydantic import ValidationError

    try:
        return model_cls.model_validate_json(raw)
    except ValidationError as exc:
        errors = exc.errors(include_input=False, include_url=False)
        first: dict[str, Any] = dict(errors[0]) if errors else {}
        if first.get("type") == "json_invalid":
            detail = (first.get("ctx") or {}).get("error", "")
            raise _BadRequest(400, f"The request body is not valid JSON: {detail}") from None
        if first.get("type") == "model_type" and not first.get("loc"):
            raise _BadRequest(400, "The request body must be a JSON object.") from None
        loc = ".".join(str(p) for p in first.get("loc", ()))
        msg = "; ".join(
            f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg')}" for e in errors[:5]
        )
        raise _BadRequest(422, f"Invalid request: {msg}", param=loc or None) from None


async def _llm_call(request: Request, kind: str) -> Response:
    gw = _gw()
    raw = await _read_body(request, gw.config.gateway.max_body_bytes)
    body = _parse(ChatCompletionBody if kind == "chat" else CompletionBody, raw)
    _check_fanout(body, gw.config.gateway.max_fanout)
    model_name = body.model
    if model_name == gw.config.embeddings.name and gw.config.embeddings.enabled:
        raise _BadRequest(400, f"{model_name!r} is an embedding model; use /v1/embeddings.")
    route = gw.route(model_name, gw.tenant_of(request))
    _check_request_tokens(body, gw.served_model(route.base), gw.config.gateway.max_request_tokens)
    resolved = route.serve_id
    changed = model_name != resolved
    if changed:  # defaulted, or a tenant's adapter: the engine must see its serving id
        body.model = resolved
    # A tenant adapter's answer names the model as the client did, not by serving id.
    rename = _Rename(resolved, route.name) if resolved != route.name else None
    # Never the serving id or a tenant's adapter name (see ModelRoute.label).
    label = route.label
    # A stream is metered from its final usage chunk: ask the engine for it, and hide
    # it again from a client that did not ask (see _StreamUsage).
    hide_usage = False
    if body.stream and not (body.stream_options or {}).get("include_usage"):
        body.stream_options = {**(body.stream_options or {}), "include_usage": True}
        hide_usage = changed = True
    if changed:
        raw = body.model_dump_json(exclude_unset=True).encode()
    carrier = None
    if _trace.tracing_on():
        trace_api.get_current_span().set_attribute("lumos.model", resolved)
        carrier = inject()

    gen = route.call(kind, raw, carrier)
    try:
        async with asyncio.timeout(gw.config.gateway.request_timeout_s):
            first = await gen.__anext__()
    except TimeoutError:
        gen.cancel()
        return error_response(504, "The model did not answer in time.")
    except StopAsyncIteration:
        return error_response(500, "The model deployment sent no answer; retry.")
    if isinstance(first, JsonReply):
        if first.status == 200 and (first.prompt_tokens or first.completion_tokens):
            gw.metrics.tokens.labels(label, "prompt").inc(first.prompt_tokens)
            gw.metrics.tokens.labels(label, "completion").inc(first.completion_tokens)
            await _meter(
                gw,
                request,
                prompt_tokens=first.prompt_tokens,
                completion_tokens=first.completion_tokens,
            )
        if first.status != 200:
            return _model_error(first)
        answer = first.body if rename is None else rename.json_bytes(first.body)
        return Response(answer, status_code=first.status, media_type="application/json")
    usage = _StreamUsage(hide_usage)

    async def metered() -> None:
        prompt, completion = usage.totals()
        if prompt or completion:
            gw.metrics.tokens.labels(label, "prompt").inc(prompt)
            gw.metrics.tokens.labels(label, "completion").inc(completion)
            await _meter(gw, request, prompt_tokens=prompt, completion_tokens=completion)

    return StreamingResponse(
        _relay(first, gen, usage, metered, rename), media_type="text/event-stream"
    )


class _Rename:
    """Puts the client's model name back into an answer that carries the serving id.

    vLLM writes compact JSON (``"model":"<id>"``); that exact key-value text cannot
    occur inside a JSON string value (its quotes would be escaped there), so a plain
    replace changes the ``model`` fields only."""

    def __init__(self, serve_id: str, name: str) -> None:
        import json

        self.old = f'"model":{json.dumps(serve_id)}'
        self.new = f'"model":{json.dumps(name)}'

    def text(self, chunk: str) -> str:
        return chunk.replace(self.old, self.new) if self.old in chunk else chunk

    def json_bytes(self, body: bytes) -> bytes:
        return self.text(body.decode()).encode()


#: A non-empty content delta or completion text in a stream event (see _StreamUsage).
_CONTENT = re.compile(r'"(?:content|text)":"(?!")')


class _StreamUsage:
    """Reads the token counts of a stream as it passes (SSE ``data:`` events).

    The engine's usage event (``stream_options.include_usage``; ``choices`` empty) is
    what is metered. A stream without one (an engine that ignores the option, or a
    client that left early) is metered by counting its content deltas, one token
    each, with no prompt tokens: an estimate, never more than the chunks sent.
    ``hide``: drop the usage event (the client did not ask for it)."""

    def __init__(self, hide: bool) -> None:
        self.hide = hide
        self.prompt = self.completion = 0
        self.deltas = 0
        self.reported = False

    def feed(self, chunk: str) -> str:
        import json

        if "data:" not in chunk:
            return chunk
        if '"usage"' not in chunk:
            # The common case, one event per token: no usage to read or hide, so it is
            # counted without parsing it (a content delta or a completion's text that
            # is not empty; vLLM writes compact JSON).
            self.deltas += len(_CONTENT.findall(chunk))
            return chunk
        kept: list[str] = []
        for event in chunk.split("\n\n"):
            line = event.strip()
            if line.startswith("data:") and line[5:].strip() != "[DONE]":
                try:
                    data = json.loads(line[5:])
                except ValueError:
                    data = None
                if isinstance(data, dict):
                    u = data.get("usage")
                    if isinstance(u, dict):
                        self.prompt = int(u.get("prompt_tokens") or 0)
                        self.completion = int(u.get("completion_tokens") or 0)
                        self.reported = True
                        if self.hide and not data.get("choices"):
                            continue
                    for choice in data.get("choices") or ():
                        delta = choice.get("delta") or {}
                        if delta.get("content") or choice.get("text"):
                            self.deltas += 1
            kept.append(event)
        return "\n\n".join(kept)

    def totals(self) -> tuple[int, int]:
        return (self.prompt, self.completion) if self.reported else (0, self.deltas)


def _sequences(body: Any) -> int:
    """How many sequences a request starts: ``n`` (or vLLM's ``best_of`` when larger)
    times the prompts of a batch."""
    best_of = getattr(body, "best_of", None)
    n = max(body.n or 1, best_of if isinstance(best_of, int) else 1)
    prompts = 1
    prompt = getattr(body, "prompt", None)
    if isinstance(prompt, list) and prompt and not isinstance(prompt[0], int):
        prompts = len(prompt)
    return int(n * prompts)


def _check_fanout(body: Any, limit: int) -> None:
    """Refuse (422) a request that would start more than ``limit`` sequences: ``n``
    (and vLLM's ``best_of``) times the prompts of a batch."""
    sequences = _sequences(body)
    if sequences > limit:
        raise _BadRequest(
            422,
            f"This request would start {sequences} sequences (n x prompts); the gateway "
            f"allows {limit} per request (gateway.max_fanout). Send fewer prompts or a smaller n.",
            param="n",
        )


def _context_ceiling(model: ServedModelConfig | None) -> int | None:
    """The most tokens one sequence of ``model`` can generate when the request sets no
    max_tokens: vLLM stops a sequence at ``max_model_len`` (prompt included). None
    when the config does not set it as a number (the engine then takes the model's
    own, which the gateway does not know)."""
    value = model.engine_kwargs.get("max_model_len") if model is not None else None
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    return None


def _check_request_tokens(body: Any, model: ServedModelConfig | None, limit: int) -> None:
    """Refuse (422) a request that may generate more than ``limit`` tokens in all:
    its sequences (:func:`_sequences`) x the tokens each may generate, which is
    ``max_completion_tokens`` / ``max_tokens`` (capped by the model's
    ``max_model_len``), or without them ``max_model_len``, or without that the
    schema's ceiling (every sequence may then run that long as far as the gateway can
    tell)."""
    param = "max_completion_tokens" if getattr(body, "max_completion_tokens", None) else None
    asked: int | None = getattr(body, "max_completion_tokens", None) or body.max_tokens
    ceiling = _context_ceiling(model)
    if asked is not None:
        per = min(asked, ceiling) if ceiling else asked
        why = ""
    elif ceiling is not None:
        per, why = ceiling, f"; max_tokens is not set, so each may run to max_model_len ({ceiling})"
    else:
        per = _MAX_TOKENS
        why = (
            "; max_tokens is not set and the model's engine_kwargs set no max_model_len, "
            f"so each counts at the ceiling of {_MAX_TOKENS:,}"
        )
    sequences = _sequences(body)
    total = sequences * per
    if total <= limit:
        return
    fits = limit // sequences
    fix = (
        f"Set max_tokens to at most {fits:,}, or send fewer sequences (n, prompts)."
        if fits >= 1
        else "Send fewer sequences (n, prompts)."
    )
    raise _BadRequest(
        422,
        f"This request may generate {total:,} tokens ({sequences} sequences x {per:,} "
        f"tokens{why}); the gateway allows {limit:,} per request "
        f"(gateway.max_request_tokens). {fix}",
        param=param or "max_tokens",
    )


async def _meter(gw: Gateway, request: Request, **amounts: int) -> None:
    """Record what a finished answer used against the caller's tenant (platform on)."""
    principal = request.scope.get("state", {}).get("principal")
    if gw.platform is None or principal is None:
        return
    try:
        gw.admission.record(principal.tenant, amounts)  # batched; not waited for
    except Exception:  # metering must not fail an answer already produced
        log.exception("Recording usage failed")


def _model_error(reply: JsonReply) -> Response:
    """A model replica's error, re-issued by the gateway: the status and code kept,
    the request id added, and a server error's text (which may carry an engine's
    traceback or paths) replaced."""
    import json

    try:
        err = json.loads(reply.body)["error"]
        message, code, param = str(err.get("message", "")), err.get("code"), err.get("param")
        extra = {k: err[k] for k in ("lumos_code", "fix") if k in err}
    except (ValueError, KeyError, TypeError):
        message, code, param, extra = "The model failed.", None, None, {}
    if reply.status >= 500:
        log.error("Model deployment error %s: %s", reply.status, message[:2000])
    return error_response(
        reply.status,
        message,
        code=str(code) if code is not None else None,
        param=param if isinstance(param, str) else None,
        extra=extra,
    )


async def _relay(
    first: str, gen: Any, usage: _StreamUsage, done: Any, rename: _Rename | None = None
) -> Any:
    """The SSE text as it comes; a client that leaves cancels the model's request.
    What the stream used is metered at its end (also when the client left)."""
    finished = False
    try:
        out = usage.feed(first)
        yield out if rename is None else rename.text(out)
        async for chunk in gen:
            out = usage.feed(chunk)
            if out:
                yield out if rename is None else rename.text(out)
        finished = True
    finally:
        if not finished:
            gen.cancel()
        try:
            await done()
        except Exception:  # metering must not fail a stream already sent
            log.exception("Metering a stream failed")


class _FrontMiddleware:
    """Everything decided before a route runs, in one pass: request id, Host
    allowlist, body limit, auth (key -> Principal), role per route, rate limits, plan
    quota, and metrics labelled by route TEMPLATE (never the raw path, so random paths
    cannot create series).

    Plain ASGI rather than ``@app.middleware("http")``: Starlette's BaseHTTPMiddleware
    runs each request through an extra task and memory streams, a measurable share of
    a ~3 ms non-model round trip."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = _request_id(scope)
        token = REQUEST_ID.set(request_id)
        rid_header = (b"x-request-id", request_id.encode())

        status = 500
        started = False

        async def send_status(message: MutableMapping[str, Any]) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                status = message["status"]
                started = True
                message["headers"] = [*message.get("headers", ()), rid_header]
            await send(message)

        try:
            gw = _GATEWAY.get("gw")
            if gw is None:
                resp = error_response(503, "The gateway is starting; retry in a moment.")
                await resp(scope, receive, send_status)
                return
            await self._metered(gw, scope, receive, send_status, lambda: status)
        except Exception as exc:
            # Answered here, not by Starlette's outermost handler: this answer still
            # carries the request id the log line is found by.
            if started:
                raise  # a response is under way: the server closes the connection
            await unexpected_error_response(exc)(scope, receive, send_status)
        finally:
            REQUEST_ID.reset(token)

    async def _metered(
        self, gw: Gateway, scope: dict[str, Any], receive: Any, send: Any, status: Any
    ) -> None:
        start = time.perf_counter()
        method: str = scope["method"]
        route = _route_template(scope)
        gw.metrics.inflight.inc()
        span = None
        if _trace.tracing_on() and route not in _UNTRACED:
            span = _trace.server_span(
                "gateway.request",
                _trace_headers(scope),
                {"http.request.method": method, "http.route": route},
            )
        try:
            if span is None:
                await self._handle(gw, method, route, scope, receive, send)
            else:
                with trace_api.use_span(span, end_on_exit=False):
                    await self._handle(gw, method, route, scope, receive, send)
        finally:
            code = status()
            if span is not None:
                span.set_attribute("http.response.status_code", code)
                if code >= 500:
                    span.set_status(trace_api.StatusCode.ERROR)
                span.end()
            gw.metrics.inflight.dec()
            if route != "/metrics":
                gw.metrics.requests.labels(route, _method_label(method), str(code)).inc()
                gw.metrics.latency.labels(route).observe(time.perf_counter() - start)

    async def _handle(
        self, gw: Gateway, method: str, route: str, scope: dict[str, Any], receive: Any, send: Any
    ) -> None:
        try:
            if gw.hosts and _host(scope) not in gw.hosts:
                raise _BadRequest(400, "The Host header names a host this gateway does not serve.")
            if _has_nul(scope):
                # No name or filter here holds a NUL; PostgreSQL text cannot store one
                # (a query with it failed as a 500 there, found by the API fuzzer).
                raise _BadRequest(
                    400,
                    "The URL contains a NUL character (%00); remove it from the path and query.",
                )
            limit = gw.config.gateway.max_body_bytes
            declared = _header(scope, b"content-length")
            if declared and declared.isdigit() and int(declared) > limit:
                raise _BodyTooLarge()
            principal = None
            # The dashboard (/ui) authenticates its session cookie itself, with this
            # same gw.auth (a browser sends no Authorization header on a page load).
            if route not in OPEN_ROUTES and not _dashboard_path(scope):
                authorization = _header(scope, b"authorization")
                # A key this replica already knows needs no await (see _admit).
                principal = gw.auth.cached(authorization)
                if principal is None:
                    principal = await gw.auth.authenticate(authorization)
                if principal is not None:
                    action = action_for(method, route)
                    if action is not None:
                        check_role(principal, action)
                if route != "/metrics":
                    pending = _admit(gw, principal, route)
                    if pending is not None:
                        await pending
        except LumosError as err:
            await lumos_error_response(err)(scope, receive, send)
            return
        except _BadRequest as err:
            await error_response(err.status, err.message, param=err.param)(scope, receive, send)
            return
        except _BodyTooLarge:
            await _too_large(gw)(scope, receive, send)
            return
        except Exception:
            log.exception("The gateway's admission checks failed")
            resp = error_response(503, "Admission checks are unavailable; retry in a moment.")
            await resp(scope, receive, send)
            return
        state = scope.setdefault("state", {})
        state["principal"] = principal
        state["gateway"] = gw
        await self.app(scope, _bounded(receive, limit), send)


def _admit(gw: Gateway, principal: Principal | None, route: str) -> Awaitable[None] | None:
    """The custom quota hook, then in one call to the app's admission service: the
    rate limits (cluster-wide; per key and per tenant, or one shared bucket when auth
    is off) and the plan's monthly quota (one request, counted once admitted).

    None when the call is already admitted (from a lease this replica holds), else
    what to await: most requests of a busy key then cost no coroutine at all."""
    key_id = principal.key_id if principal is not None else None
    if gw.hook is not None:
        gw.hook.check(key_id, route)
    admission = gw.admission
    if admission is None:
        return None
    tenant = principal.tenant if principal is not None else gw.default_tenant()
    counts = {"requests": 1} if gw.platform is not None and principal is not None else None
    if admission.admit_now(key_id or "anonymous", tenant, counts=counts):
        return None
    return admission.admit(key_id or "anonymous", tenant, counts=counts)


def _bounded(receive: Any, limit: int) -> Any:
    """``receive`` that refuses (413) a body growing past ``limit`` bytes: the same
    limit for every route, bodies without a Content-Length included."""
    size = 0

    async def wrapped() -> dict[str, Any]:
        nonlocal size
        message: dict[str, Any] = await receive()
        if message["type"] == "http.request":
            size += len(message.get("body", b""))
            if size > limit:
                raise StarletteHTTPException(413, f"The request body is larger than {limit} bytes.")
        return message

    return wrapped


def _too_large(gw: Gateway) -> Response:
    limit = gw.config.gateway.max_body_bytes
    return error_response(
        413, f"The request body is larger than {limit} bytes (gateway.max_body_bytes)."
    )


_METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"})


def _method_label(method: str) -> str:
    return method if method in _METHODS else "OTHER"


def _route_template(scope: dict[str, Any]) -> str:
    """The matched route's template (``/v1/runs/{run_id}``), "unmatched" for none:
    a bounded label set whatever paths clients send. Under a Serve route prefix the
    path carries the prefix (``root_path``): templates are matched without it, so
    ``/prefix/ready`` is the open ``/ready`` as Starlette's router sees it."""
    path: str = scope["path"]
    root: str = scope.get("root_path") or ""
    if root and path.startswith(root):
        path = path[len(root) :] or "/"
    app = scope.get("app")
    routes = getattr(app, "routes", None) or ()
    static = _STATIC_ROUTES.get(id(app))
    if static is None:
        static = {r.path for r in routes if "{" not in getattr(r, "path", "{")}
        _STATIC_ROUTES[id(app)] = static
    if path in static:
        return path
    for r in routes:
        if "{" not in getattr(r, "path", "{"):
            continue
        match, _ = r.matches(scope)
        if match is not Match.NONE:
            return str(r.path)
    return "unmatched"


_STATIC_ROUTES: dict[int, set[str]] = {}


def _dashboard_path(scope: dict[str, Any]) -> bool:
    """Whether the request is for the dashboard (``/ui``, under the app's route prefix)."""
    path: str = scope["path"]
    root: str = scope.get("root_path") or ""
    if root and path.startswith(root):
        path = path[len(root) :]
    return path == "/ui" or path.startswith("/ui/")


def _request_id(scope: dict[str, Any]) -> str:
    """The caller's X-Request-ID when it is a plain token, else a new one."""
    given = _header(scope, b"x-request-id")
    if given and _RID.match(given):
        return given
    # Not secrets.token_hex: that reads os.urandom, a system call per request that
    # releases the GIL, and any other thread of the replica (the quota ledger's
    # flush, Serve's metrics push) then takes it for up to a switch interval. A
    # request id needs to be unique, not unguessable; ``random`` is seeded from the
    # OS and re-seeded in forked children.
    return f"req_{random.getrandbits(96):024x}"


_RID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")


def _has_nul(scope: dict[str, Any]) -> bool:
    """Whether the decoded path or the raw query string carries a NUL character."""
    query: bytes = scope.get("query_string", b"")
    return "\x00" in scope.get("path", "") or b"\x00" in query or b"%00" in query


def _host(scope: dict[str, Any]) -> str:
    host = (_header(scope, b"host") or "").lower()
    if host.startswith("["):  # [::1]:8000
        return host.split("]")[0] + "]"
    return host.rsplit(":", 1)[0] if ":" in host else host


def _trace_headers(scope: dict[str, Any]) -> dict[str, str] | None:
    """The W3C trace context headers of the request, if it has them."""
    carrier = {}
    for key, value in scope["headers"]:
        if key in (b"traceparent", b"tracestate"):
            carrier[key.decode()] = value.decode("latin-1")
    return carrier or None


def _header(scope: dict[str, Any], name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return value.decode("latin-1")
    return None


def unexpected_error_response(exc: Exception) -> Response:
    """The answer to an exception no route handled: a LumosError it wraps as itself, a
    model deployment that is gone as a 503 to retry, anything else as a 500 whose
    text (it may carry a remote traceback) goes to the log only."""
    cause = _unwrap(exc)
    if isinstance(cause, LumosError):
        return lumos_error_response(cause)
    name = type(exc).__name__
    if name in {
        "BackPressureError",
        "RayActorError",
        "ActorDiedError",
        "ActorUnavailableError",
        "DeploymentUnavailableError",
    }:
        return error_response(503, f"The model deployment is unavailable ({name}); retry.")
    log.exception("Unexpected error in the gateway", exc_info=exc)
    return error_response(500, "Internal error in the gateway; see the gateway's log.")


def build_app() -> FastAPI:
    """The gateway's FastAPI app (built on the replica)."""
    from lumos_ray import __version__

    app = FastAPI(
        title="lumos gateway",
        version=__version__,
        description="OpenAI-compatible model serving and the lumos runs API.",
        responses=_ERRORS,
    )

    app.add_middleware(_FrontMiddleware)

    @app.exception_handler(LumosError)
    async def _lumos_error(_: Request, err: LumosError) -> Response:
        return lumos_error_response(err)

    @app.exception_handler(_BadRequest)
    async def _bad_request(_: Request, err: _BadRequest) -> Response:
        return error_response(err.status, err.message, param=err.param)

    @app.exception_handler(_BodyTooLarge)
    async def _body_too_large(_: Request, __: _BodyTooLarge) -> Response:
        return _too_large(_gw())

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> Response:
        msg = "; ".join(
            f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg')}"
            for e in exc.errors()[:5]
        )
        return error_response(422, f"Invalid request: {msg}")

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> Response:
        headers = dict(exc.headers) if exc.headers else None
        return error_response(exc.status_code, str(exc.detail), headers=headers)

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> Response:
        return unexpected_error_response(exc)

    @app.get("/health")
    async def health() -> dict[str, str]:
        """Liveness: the gateway replica answers."""
        return {"status": "ok"}

    @app.get(
        "/ready",
        responses={200: {"model": ReadyOut}, 503: {"model": ReadyOut}},
    )
    async def ready() -> Response:
        """Readiness: every model deployment answers its health check."""
        gw = _gw()
        handles = dict(gw.llm_handles)
        if gw.embed_handle is not None:
            handles[gw.config.embeddings.name] = gw.embed_handle
        results: dict[str, str] = {}
        for name, host in gw.local_models.items():
            try:
                async with asyncio.timeout(10):
                    await host.check_health()
                results[name] = "ok"
            except Exception:
                log.warning("Readiness check of %s failed", name, exc_info=True)
                results[name] = "unavailable"
        for name, h in handles.items():
            try:
                async with asyncio.timeout(10):
                    await h.check_health.remote()
                results[name] = "ok"
            except Exception:
                # Nothing of the error: a Ray error's text carries a remote traceback.
                log.warning("Readiness check of %s failed", name, exc_info=True)
                results[name] = "unavailable"
        ok = all(v == "ok" for v in results.values())
        return JSONResponse(
            {"status": "ready" if ok else "unavailable", "models": results},
            status_code=200 if ok else 503,
        )

    @app.get(
        "/metrics",
        response_class=Response,
        responses={200: {"content": {CONTENT_TYPE_LATEST: {"schema": {"type": "string"}}}}},
    )
    async def metrics() -> Response:
        return Response(_gw().metrics.render(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/models", responses={200: {"model": ModelList}})
    async def list_models(request: Request) -> dict[str, Any]:
        gw = _gw()
        tenant = gw.tenant_of(request)
        ids = gw.list_model_ids(tenant)
        return {"object": "list", "data": [_model_card(gw, m, tenant) for m in ids]}

    @app.get("/v1/models/{model_id:path}", responses={200: {"model": ModelCard}})
    async def get_model(model_id: str, request: Request) -> dict[str, Any]:
        gw = _gw()
        tenant = gw.tenant_of(request)
        if model_id not in gw.list_model_ids(tenant):
            raise NotFoundError(f"The model {model_id!r} does not exist.")
        return _model_card(gw, model_id, tenant)

    @app.post("/v1/chat/completions", responses=_answer(ChatCompletionResponse))
    async def chat(request: Request) -> Response:
        return await _llm_call(request, "chat")

    @app.post("/v1/completions", responses=_answer(CompletionResponse))
    async def completions(request: Request) -> Response:
        return await _llm_call(request, "completions")

    @app.post("/v1/embeddings", responses={200: {"model": EmbeddingResponse}})
    async def embeddings(request: Request) -> Response:
        gw = _gw()
        raw = await _read_body(request, gw.config.gateway.max_body_bytes)
        body: EmbeddingBody = _parse(EmbeddingBody, raw)
        model = body.model or gw.config.embeddings.name
        if not gw.config.embeddings.enabled or gw.embed_handle is None:
            raise NotFoundError(
                "This gateway serves no embedding model.",
                fix="Enable one in the serve config (embeddings.enabled: true) and restart "
                "the app, or call a gateway that serves embeddings.",
            )
        if model != gw.config.embeddings.name:
            raise NotFoundError(f"The embedding model {model!r} does not exist.")
        texts = [body.input] if isinstance(body.input, str) else body.input
        fmt = body.encoding_format
        principal = request.scope.get("state", {}).get("principal")
        if gw.platform is not None and principal is not None:
            # Inputs are what an embedding costs: counted (and refused over quota) first.
            await gw.admission.admit(
                principal.key_id or "anonymous",
                principal.tenant,
                rate=False,
                counts={"requests": 0, "embedding_inputs": len(texts)},
            )
        out = await gw.embed_handle.embed.remote(texts)
        vectors: list[Any] = out["data"]
        if fmt == "base64":
            import base64
            import struct

            vectors = [base64.b64encode(struct.pack(f"<{len(v)}f", *v)).decode() for v in vectors]
        gw.metrics.tokens.labels(model, "prompt").inc(out["prompt_tokens"])
        await _meter(gw, request, prompt_tokens=int(out["prompt_tokens"]))
        return JSONResponse(
            {
                "object": "list",
                "model": model,
                "data": [
                    {"object": "embedding", "index": i, "embedding": v}
                    for i, v in enumerate(vectors)
                ],
                "usage": {
                    "prompt_tokens": out["prompt_tokens"],
                    "total_tokens": out["prompt_tokens"],
                },
            }
        )

    @app.get("/v1/adapters")
    async def list_adapters(request: Request) -> dict[str, Any]:
        """The adapters the caller's tenant may use: its own and the shared ones."""
        gw = _gw()
        records = gw.registry.list_for(gw.tenant_of(request))
        return {"object": "list", "data": [r.model_dump(mode="json") for r in records]}

    if importlib.util.find_spec("lumos_ray.serve._runs_api") is not None:
        from lumos_ray.serve._runs_api import router

        app.include_router(router)
    if importlib.util.find_spec("lumos_ray.serve._dashboard") is not None:
        from lumos_ray.serve._dashboard import router as dashboard

        app.include_router(dashboard)

    _document_bodies(app)
    return app


class ReadyOut(BaseModel):
    status: str = Field(description="ready or unavailable")
    models: dict[str, str] = Field(description="model -> ok or unavailable")


#: Every route may answer these, always in one shape (ErrorResponse).
_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse, "description": text}
    for code, text in [
        (400, "Malformed request (or a Host this gateway does not serve)."),
        (401, "Missing, invalid, expired or revoked API key."),
        (403, "The key's role does not allow this route."),
        (404, "Unknown model, run or route (another tenant's run is not found)."),
        (413, "Body larger than gateway.max_body_bytes."),
        (422, "The body or a parameter does not match the schema."),
        (429, "Rate limit or plan quota exceeded; see Retry-After."),
        (500, "Unexpected error (details only in the gateway's log)."),
        (503, "A model deployment or a platform service is unavailable."),
    ]
}


def _answer(model: Any) -> dict[int | str, dict[str, Any]]:
    """A model route's 200: the JSON object, or server-sent events for stream=true."""
    return {
        200: {
            "model": model,
            "content": {"text/event-stream": {"schema": {"type": "string"}}},
        }
    }


#: Model routes read their bodies themselves (streamed against the size limit, parsed
#: once by pydantic's JSON parser); these schemas describe them in /openapi.json.
_BODIES: dict[str, Any] = {
    "/v1/chat/completions": ChatCompletionBody,
    "/v1/completions": CompletionBody,
    "/v1/embeddings": EmbeddingBody,
}


def _document_bodies(app: FastAPI) -> None:
    """Generate /openapi.json with the model routes' request schemas in it."""
    from fastapi.openapi.utils import get_openapi
    from pydantic.json_schema import models_json_schema

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = get_openapi(
            title=app.title, version=app.version, description=app.description, routes=app.routes
        )
        refs, defs = models_json_schema(
            [(m, "validation") for m in _BODIES.values()],
            ref_template="#/components/schemas/{model}",
        )
        schema.setdefault("components", {}).setdefault("schemas", {}).update(defs.get("$defs", {}))
        for path, model in _BODIES.items():
            op = schema["paths"].get(path, {}).get("post")
            if op is not None:
                op["requestBody"] = {
                    "required": True,
                    "content": {"application/json": {"schema": refs[(model, "validation")]}},
                }
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def _model_card(gw: Gateway, model_id: str, tenant: str) -> dict[str, Any]:
    card: dict[str, Any] = {
        "id": model_id,
        "object": "model",
        "created": 0,
        "owned_by": "lumos",
    }
    if model_id in gw.base_model_names():
        card["kind"] = "llm"
    elif model_id == gw.config.embeddings.name:
        card["kind"] = "embedding"
    else:
        try:
            rec = gw.registry.find_for(model_id, tenant)
        except AdapterError:
            rec = None
        if rec is not None:
            card.update(kind="lora", parent=rec.base_model, created=int(rec.created_at.timestamp()))
    return card


def _unwrap(exc: BaseException) -> BaseException:
    cur: BaseException | None = exc
    for _ in range(10):
        if cur is None or isinstance(cur, LumosError):
            break
        nxt = getattr(cur, "cause", None) or cur.__cause__
        cur = nxt if isinstance(nxt, BaseException) else None
    return cur if cur is not None else exc
