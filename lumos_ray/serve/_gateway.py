"""The gateway: our FastAPI ingress deployment in front of every model.

It owns everything decided before model work: API-key auth, the quota hook, typed
and bounded request schemas (``_schemas``, documented in ``/openapi.json``), model
routing to LoRA adapters of the local registry, body limits, OpenAI-shaped errors with
the right status codes, ``/metrics``, health/readiness, trace context from the HTTP
``traceparent``, embeddings, and the runs API (``lumos_ray.serve._runs_api``, when
present). Model work goes through one deployment-handle call per request to
``LumosLLMServer`` (vLLM) or ``Embedder`` replicas: the validated body travels as the
client's own JSON bytes, the answer comes back encoded (``_wire``), so nothing is
parsed or serialised twice on the way.

The app is built on the replica (``serve.ingress(build_app)``) so optional routers
are imported where they run; routes reach the replica's :class:`Gateway` through a
module-level slot (one gateway per replica process).
"""

from __future__ import annotations

import asyncio
import importlib
import importlib.util
import logging
import time
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from opentelemetry import trace as trace_api
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse, Response, StreamingResponse

from lumos_ray.adapters import AdapterRegistry
from lumos_ray.errors import AdapterError, LumosError, NotFoundError, ServeError
from lumos_ray.serve import _trace
from lumos_ray.serve._config import ServeConfig
from lumos_ray.serve._errors import error_response, lumos_error_response
from lumos_ray.serve._hooks import ApiKeyAuth, NoQuota, RateLimitQuota
from lumos_ray.serve._metrics import CONTENT_TYPE_LATEST, GatewayMetrics
from lumos_ray.serve._schemas import ChatCompletionBody, CompletionBody, EmbeddingBody
from lumos_ray.serve._wire import JsonReply
from lumos_ray.tracing import inject

__all__ = ["Gateway", "build_app"]

log = logging.getLogger(__name__)

_GATEWAY: dict[str, Gateway] = {}

# Routes that never need a key: probes and scraping.
_OPEN_PATHS = ("/health", "/ready", "/metrics", "/docs", "/openapi.json", "/redoc")
# Probes and scraping make no spans: they would bury the traces people look for.
_UNTRACED = frozenset({"/health", "/ready", "/metrics"})


def _gw() -> Gateway:
    gw = _GATEWAY.get("gw")
    if gw is None:
        raise ServeError("The gateway is starting; retry in a moment.")
    return gw


class _BodyTooLarge(Exception):
    pass


class _BadRequest(Exception):
    def __init__(self, status: int, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param


class Gateway:
    """Per-replica state: handles, config, hooks, metrics."""

    def __init__(
        self,
        config_json: str,
        llm_handles: dict[str, Any],
        embed_handle: Any | None = None,
    ) -> None:
        self.config = ServeConfig.model_validate_json(config_json)
        self.llm_handles = llm_handles
        self.embed_handle = embed_handle
        self.auth = ApiKeyAuth([s.key for s in self.config.api_keys() if s.key])
        quota = self.config.gateway.quota
        if quota.hook:
            mod, _, attr = quota.hook.partition(":")
            self.quota = getattr(importlib.import_module(mod), attr)(quota)
        elif quota.requests_per_minute:
            self.quota = RateLimitQuota(quota.requests_per_minute)
        else:
            self.quota = NoQuota()
        self.metrics = GatewayMetrics()
        self.registry = AdapterRegistry(self.config.resolved_adapters_dir())
        self._stream_handles: dict[str, Any] = {}
        _trace.setup()
        _GATEWAY["gw"] = self

    def check_health(self) -> None:
        return None

    # -- model routing -------------------------------------------------------------
    def base_model_names(self) -> list[str]:
        return [m.name for m in self.config.models]

    def _base_for_adapter(self, name: str) -> str | None:
        """The base model an adapter runs on: registered adapters by their record;
        other names go to the first LoRA model with an object store to fetch from."""
        lora_models = [m for m in self.config.models if m.lora.enabled]
        if not self.registry.exists(name):
            remote = [m for m in lora_models if m.lora.object_store_path]
            return remote[0].name if remote else None
        record = self.registry.get(name)
        for m in lora_models:
            if record.base_model in (m.name, m.source):
                return m.name
        if len(lora_models) == 1:
            return lora_models[0].name
        return None

    def handle_for(self, model: str | None) -> tuple[Any, str]:
        """(stream handle, model name) for a base model or a registered adapter."""
        if not model:
            if len(self.config.models) == 1:
                model = self.config.models[0].name
            else:
                raise _BadRequest(400, "`model` is required.", param="model")
        if model in self._stream_handles:
            return self._stream_handles[model], model
        if model in self.llm_handles:
            handle = self.llm_handles[model].options(stream=True)
        else:
            base = self._base_for_adapter(model)
            if base is None:
                raise NotFoundError(
                    f"The model {model!r} does not exist. Served: "
                    f"{', '.join(self.list_model_ids())}."
                )
            # Multiplexed routing: Serve sends an adapter's requests to replicas that
            # already loaded it; LumosLLMServer loads it from the registry otherwise.
            handle = self.llm_handles[base].options(stream=True, multiplexed_model_id=model)
            if not self.registry.exists(model):
                return handle, model  # an object-store name: not cached (unbounded set)
        self._stream_handles[model] = handle
        return handle, model

    def list_model_ids(self) -> list[str]:
        ids = self.base_model_names()
        if self.config.embeddings.enabled:
            ids.append(self.config.embeddings.name)
        ids += [r.name for r in self.registry.list() if r.name not in ids]
        return ids


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
    model_name = body.model
    if model_name == gw.config.embeddings.name and gw.config.embeddings.enabled:
        raise _BadRequest(400, f"{model_name!r} is an embedding model; use /v1/embeddings.")
    handle, resolved = gw.handle_for(model_name)
    if model_name != resolved:  # defaulted: the engine must see the model's name
        body.model = resolved
        raw = body.model_dump_json(exclude_unset=True).encode()
    carrier = None
    if _trace.tracing_on():
        trace_api.get_current_span().set_attribute("lumos.model", resolved)
        carrier = inject()

    gen = handle.generate.remote(kind, raw, carrier)
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
            gw.metrics.tokens.labels(resolved, "prompt").inc(first.prompt_tokens)
            gw.metrics.tokens.labels(resolved, "completion").inc(first.completion_tokens)
        return Response(first.body, status_code=first.status, media_type="application/json")
    return StreamingResponse(_relay(first, gen), media_type="text/event-stream")


async def _relay(first: str, gen: Any) -> Any:
    """The SSE text as it comes; a client that leaves cancels the model's request."""
    finished = False
    try:
        yield first
        async for chunk in gen:
            yield chunk
        finished = True
    finally:
        if not finished:
            gen.cancel()


class _FrontMiddleware:
    """Auth, quota and metrics for every route, in one pass.

    Plain ASGI rather than ``@app.middleware("http")``: Starlette's BaseHTTPMiddleware
    runs each request through an extra task and memory streams, a measurable share of
    a ~3 ms non-model round trip; here the only per-request work is the header scan,
    the hooks and the metric updates."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        gw = _GATEWAY.get("gw")
        if gw is None:
            resp = error_response(503, "The gateway is starting; retry in a moment.")
            await resp(scope, receive, send)
            return
        start = time.perf_counter()
        route = path if not path.startswith("/v1/runs/") else "/v1/runs/{id}"
        status = 500

        async def send_status(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        gw.metrics.inflight.inc()
        span = None
        if _trace.tracing_on() and path not in _UNTRACED:
            span = _trace.server_span(
                "gateway.request",
                _trace_headers(scope),
                {"http.request.method": scope["method"], "http.route": route},
            )
        try:
            if span is None:
                await self._handle(gw, path, route, scope, receive, send_status)
            else:
                with trace_api.use_span(span, end_on_exit=False):
                    await self._handle(gw, path, route, scope, receive, send_status)
        finally:
            if span is not None:
                span.set_attribute("http.response.status_code", status)
                if status >= 500:
                    span.set_status(trace_api.StatusCode.ERROR)
                span.end()
            gw.metrics.inflight.dec()
            if path != "/metrics":
                gw.metrics.requests.labels(route, scope["method"], str(status)).inc()
                gw.metrics.latency.labels(route).observe(time.perf_counter() - start)

    async def _handle(
        self, gw: Gateway, path: str, route: str, scope: dict[str, Any], receive: Any, send: Any
    ) -> None:
        if not path.startswith(_OPEN_PATHS):
            try:
                key = gw.auth.authenticate(_header(scope, b"authorization"))
                gw.quota.check(key, route)
            except LumosError as err:
                await lumos_error_response(err)(scope, receive, send)
                return
        await self.app(scope, receive, send)


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


def build_app() -> FastAPI:
    """The gateway's FastAPI app (built on the replica)."""
    from lumos_ray import __version__

    app = FastAPI(
        title="lumos gateway",
        version=__version__,
        description="OpenAI-compatible model serving and the lumos runs API.",
    )

    app.add_middleware(_FrontMiddleware)

    @app.exception_handler(LumosError)
    async def _lumos_error(_: Request, err: LumosError) -> Response:
        return lumos_error_response(err)

    @app.exception_handler(_BadRequest)
    async def _bad_request(_: Request, err: _BadRequest) -> Response:
        return error_response(err.status, err.message, param=err.param)

    @app.exception_handler(_BodyTooLarge)
    async def _too_large(_: Request, __: _BodyTooLarge) -> Response:
        limit = _gw().config.gateway.max_body_bytes
        return error_response(413, f"The request body is larger than {limit} bytes.")

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
        # The exception text may carry a remote traceback: it goes to the log only.
        log.exception("Unexpected error in the gateway", exc_info=exc)
        return error_response(500, "Internal error in the gateway; see the gateway's log.")

    @app.get("/health")
    async def health() -> dict[str, str]:
        """Liveness: the gateway replica answers."""
        return {"status": "ok"}

    @app.get("/ready")
    async def ready() -> Response:
        """Readiness: every model deployment answers its health check."""
        gw = _gw()
        handles = dict(gw.llm_handles)
        if gw.embed_handle is not None:
            handles[gw.config.embeddings.name] = gw.embed_handle
        results: dict[str, str] = {}
        for name, h in handles.items():
            try:
                async with asyncio.timeout(10):
                    await h.check_health.remote()
                results[name] = "ok"
            except Exception as exc:
                # The type only: the text of a Ray error carries a remote traceback.
                results[name] = f"unavailable ({type(exc).__name__})"
        ok = all(v == "ok" for v in results.values())
        return JSONResponse(
            {"status": "ready" if ok else "unavailable", "models": results},
            status_code=200 if ok else 503,
        )

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(_gw().metrics.render(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/models")
    async def list_models() -> dict[str, Any]:
        gw = _gw()
        return {"object": "list", "data": [_model_card(gw, m) for m in gw.list_model_ids()]}

    @app.get("/v1/models/{model_id:path}")
    async def get_model(model_id: str) -> dict[str, Any]:
        gw = _gw()
        if model_id not in gw.list_model_ids():
            raise NotFoundError(f"The model {model_id!r} does not exist.")
        return _model_card(gw, model_id)

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Response:
        return await _llm_call(request, "chat")

    @app.post("/v1/completions")
    async def completions(request: Request) -> Response:
        return await _llm_call(request, "completions")

    @app.post("/v1/embeddings")
    async def embeddings(request: Request) -> Response:
        gw = _gw()
        raw = await _read_body(request, gw.config.gateway.max_body_bytes)
        body: EmbeddingBody = _parse(EmbeddingBody, raw)
        model = body.model or gw.config.embeddings.name
        if not gw.config.embeddings.enabled or gw.embed_handle is None:
            raise ServeError("No embedding model is configured.")
        if model != gw.config.embeddings.name:
            raise NotFoundError(f"The embedding model {model!r} does not exist.")
        texts = [body.input] if isinstance(body.input, str) else body.input
        fmt = body.encoding_format
        out = await gw.embed_handle.embed.remote(texts)
        vectors: list[Any] = out["data"]
        if fmt == "base64":
            import base64
            import struct

            vectors = [base64.b64encode(struct.pack(f"<{len(v)}f", *v)).decode() for v in vectors]
        gw.metrics.tokens.labels(model, "prompt").inc(out["prompt_tokens"])
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
    async def list_adapters() -> dict[str, Any]:
        gw = _gw()
        return {
            "object": "list",
            "data": [r.model_dump(mode="json") for r in gw.registry.list()],
        }

    if importlib.util.find_spec("lumos_ray.serve._runs_api") is not None:
        from lumos_ray.serve._runs_api import router

        app.include_router(router)

    _document_bodies(app)
    return app


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


def _model_card(gw: Gateway, model_id: str) -> dict[str, Any]:
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
            rec = gw.registry.get(model_id)
            card.update(kind="lora", parent=rec.base_model, created=int(rec.created_at.timestamp()))
        except AdapterError:
            pass
    return card


def _unwrap(exc: BaseException) -> BaseException:
    cur: BaseException | None = exc
    for _ in range(10):
        if cur is None or isinstance(cur, LumosError):
            break
        nxt = getattr(cur, "cause", None) or cur.__cause__
        cur = nxt if isinstance(nxt, BaseException) else None
    return cur if cur is not None else exc
