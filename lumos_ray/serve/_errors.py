"""OpenAI-shaped JSON errors with the right status codes.

Clients (the ``openai`` SDK included) read ``{"error": {"message", "type", "param",
"code"}}``; we add ``lumos_code`` and ``fix`` so a person sees how to fix it.
"""

from __future__ import annotations

from typing import Any

from starlette.responses import JSONResponse

from lumos_ray.errors import (
    AdapterError,
    AuthError,
    InputValidationError,
    LumosError,
    NotFoundError,
    QuotaExceededError,
    RunStateError,
    ServeError,
)
from lumos_ray.serve._wire import error_body

__all__ = ["error_response", "lumos_error_response", "status_for"]


def error_response(
    status: int,
    message: str,
    *,
    code: str | None = None,
    param: str | None = None,
    err_type: str | None = None,
    extra: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body = error_body(status, message, code=code, param=param, err_type=err_type, extra=extra)
    return JSONResponse(body, status_code=status, headers=headers)


def status_for(err: LumosError) -> int:
    if isinstance(err, AuthError):
        return 401
    if isinstance(err, QuotaExceededError):
        return 429
    if isinstance(err, AdapterError | NotFoundError):
        return 404
    if isinstance(err, InputValidationError):
        return 422
    if isinstance(err, RunStateError):
        return 409
    if isinstance(err, ServeError):
        return 503
    return 500


def lumos_error_response(err: LumosError, status: int | None = None) -> JSONResponse:
    status = status or status_for(err)
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    if status == 429:
        headers = {"Retry-After": str(err.details.get("retry_after_s", 1))}
    return error_response(
        status,
        err.message,
        code=err.code,
        extra={"lumos_code": err.code, "fix": err.fix},
        headers=headers,
    )
