"""The gateway: our FastAPI ingress deployment in front of every model.

It owns what ``ray.serve.llm``'s own ingress does not: API-key auth, the quota hook,
model routing to LoRA adapters of the local registry, body limits, OpenAI-shaped
errors with the right status codes, ``/metrics``, health/readiness, embeddings, and
the runs API (``lumos_ray.serve._runs_api``, when present). Model work is delegated
through deployment handles to ``LumosLLMServer`` (vLLM) and ``Embedder`` replicas.

The app is built on the replica (``serve.ingress(build_app)``) so optional routers
are imported where they run; routes reach the replica's :class:`Gateway` through a
module-level slot (one gateway per replica process).
"""

from __future__ import annotations

import asyncio
import importlib
import importlib.util
import json
import time
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse, Response, StreamingResponse

from lumos_ray.adapters import AdapterRegistry
from lumos_ray.errors import AdapterError, LumosError, NotFoundError, ServeError
from lumos_ray.serve._config import ServeConfig
from lumos_ray.serve._errors import error_response, lumos_error_response
from lumos_ray.serve._hooks import ApiKeyAuth, NoQuota, RateLimitQuota
from lumos_ray.serve._metrics import CONTENT_TYPE_LATEST, GatewayMetrics

__all__ = ["Gateway", "build_app"]

_GATEWAY: dict[str, Gateway] = {}

# Routes that never need a key: probes and scraping.
_OPEN_PATHS = ("/health", "/ready", "/metrics", "/docs", "/openapi.json", "/redoc")


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
        self.auth = ApiKeyAuth(self.config.api_keys())
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
        _GATEWAY["gw"] = self

    def check_health(self) -> None:
        return None

    # -- model routing -------------------------------------------------------------
    def base_model_names(self) -> list[str]:
        return [m.name for m in self.config.models]

    def _base_for_adapter(self, name: str) -> str | None:
        """The base model an adapter runs on, if it is registered and LoRA is on."""
        if not self.registry.exists(name):
            return None
        record = self.registry.get(name)
        lora_models = [m for m in self.config.models if m.lora.enabled]
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
        self._stream_handles[model] = handle
        return handle, model

    def list_model_ids(self) -> list[str]:
        ids = self.base_model_names()
        if self.config.embeddings.enabled:
            ids.append(self.config.embeddings.name)
        ids += [r.name for r in self.registry.list() if r.name not in ids]
        return ids


async def _read_json(request: Request, limit: int) -> Any:
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
    raw = b"".join(chunks)
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise _BadRequest(400, f"The request body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise _BadRequest(400, "The request body must be a JSON object.")
    return data


def _validate(model_cls: Any, data: dict[str, Any]) -> Any:
    from pydantic import ValidationError

    try:
        return model_cls.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0] if exc.errors() else {}
        loc = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        msg = "; ".join(
            f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg')}"
            for e in exc.errors()[:5]
        )
        raise _BadRequest(422, f"Invalid request: {msg}", param=loc or None) from None
    except (ValueError, TypeError) as exc:  # vLLM validators raise plain errors
        raise _BadRequest(400, f"Invalid request: {exc}") from None


async def _llm_call(request: Request, kind: str) -> Response:
    from ray.llm._internal.serve.core.configs.openai_api_models import (
        ChatCompletionRequest,
        CompletionRequest,
        ErrorResponse,
    )
    from ray.llm._internal.serve.core.ingress.utils import (
        NON_STREAMING_RESPONSE_TYPES,
        _openai_json_wrapper,
        _peek_at_generator,
        _sanitize_chat_completion_request,
    )

    gw = _gw()
    data = await _read_json(request, gw.config.gateway.max_body_bytes)
    model_name = data.get("model")
    if model_name is not None and not isinstance(model_name, str):
        raise _BadRequest(422, "`model` must be a string.", param="model")
    if model_name == gw.config.embeddings.name and gw.config.embeddings.enabled:
        raise _BadRequest(400, f"{model_name!r} is an embedding model; use /v1/embeddings.")
    handle, model_name = gw.handle_for(model_name)
    data["model"] = model_name
    if kind == "chat":
        body = _sanitize_chat_completion_request(_validate(ChatCompletionRequest, data))
    else:
        body = _validate(CompletionRequest, data)

    try:
        async with asyncio.timeout(gw.config.gateway.request_timeout_s):
            gen = getattr(handle, kind).remote(body, None)
            first, gen = await _peek_at_generator(gen)
    except TimeoutError:
        return error_response(504, "The model did not answer in time.")
    head = first[0] if isinstance(first, list) and first else first
    if isinstance(head, ErrorResponse):
        status = int(head.error.code or 500)
        return error_response(status, head.error.message, err_type=head.error.type)
    if isinstance(head, NON_STREAMING_RESPONSE_TYPES):
        content = head.model_dump()
        usage = content.get("usage") or {}
        if usage:
            gw.metrics.tokens.labels(model_name, "prompt").inc(usage.get("prompt_tokens") or 0)
            gw.metrics.tokens.labels(model_name, "completion").inc(
                usage.get("completion_tokens") or 0
            )
        return JSONResponse(content)
    return StreamingResponse(_openai_json_wrapper(gen), media_type="text/event-stream")


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
        try:
            if not path.startswith(_OPEN_PATHS):
                try:
                    key = gw.auth.authenticate(_header(scope, b"authorization"))
                    gw.quota.check(key, route)
                except LumosError as err:
                    await lumos_error_response(err)(scope, receive, send_status)
                    return
            await self.app(scope, receive, send_status)
        finally:
            gw.metrics.inflight.dec()
            if path != "/metrics":
                gw.metrics.requests.labels(route, scope["method"], str(status)).inc()
                gw.metrics.latency.labels(route).observe(time.perf_counter() - start)


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
        return error_response(exc.status_code, str(exc.detail), headers=exc.headers)

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> Response:
        cause = _unwrap(exc)
        if isinstance(cause, LumosError):
            return lumos_error_response(cause)
        name = type(exc).__name__
        if name in {"BackPressureError", "RayActorError", "ActorDiedError",
                    "ActorUnavailableError", "DeploymentUnavailableError"}:
            return error_response(503, f"The model deployment is unavailable ({name}); retry.")
        return error_response(500, f"{name}: {exc}")

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
                results[name] = f"{type(exc).__name__}: {exc}"[:300]
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
        data = await _read_json(request, gw.config.gateway.max_body_bytes)
        model = data.get("model") or gw.config.embeddings.name
        if not gw.config.embeddings.enabled or gw.embed_handle is None:
            raise ServeError("No embedding model is configured.")
        if model != gw.config.embeddings.name:
            raise NotFoundError(f"The embedding model {model!r} does not exist.")
        texts = data.get("input")
        if isinstance(texts, str):
            texts = [texts]
        if (
            not isinstance(texts, list)
            or not texts
            or not all(isinstance(t, str) for t in texts)
        ):
            raise _BadRequest(
                422, "`input` must be a non-empty string or list of strings.", param="input"
            )
        fmt = data.get("encoding_format") or "float"
        if fmt not in ("float", "base64"):
            raise _BadRequest(422, "`encoding_format` must be 'float' or 'base64'.")
        out = await gw.embed_handle.embed.remote(texts)
        vectors: list[Any] = out["data"]
        if fmt == "base64":
            import base64
            import struct

            vectors = [
                base64.b64encode(struct.pack(f"<{len(v)}f", *v)).decode() for v in vectors
            ]
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

    return app


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
