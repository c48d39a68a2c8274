"""OpenAI-shaped JSON errors with the right status codes.

Clients (the ``openai`` SDK included) read ``{"error": {"message", "type", "param",
"code"}}``; we add ``lumos_code`` and ``fix`` so a person sees how to fix it.
"""

from __future__ import annotations

import contextvars
import re
from typing import Any

from starlette.responses import JSONResponse

from lumos_ray.errors import (
    AdapterError,
    AuthError,
    InputValidationError,
    LumosError,
    NotFoundError,
    PermissionDeniedError,
    QuotaExceededError,
    RunStateError,
    ServeError,
)
from lumos_ray.serve._wire import error_body

__all__ = ["REQUEST_ID", "error_response", "lumos_error_response", "safe_message", "status_for"]

#: The id of the request being handled (set by the gateway's front middleware): every
#: error body carries it, so a user can quote it and an operator find the log line.
REQUEST_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "lumos_request_id", default=None
)

#: Text that betrays a traceback or a source path: never sent to a client.
_LEAKY = re.compile(
    r"Traceback \(most recent call last\)|File \"[^\"]*\", line \d+|ray\.exceptions\."
)
_MAX_MESSAGE = 2000


def safe_message(message: str, status: int) -> str:
    """The message a client may see: server errors (5xx) and anything that looks like
    a traceback get a generic text (the details are in the gateway's log)."""
    if status >= 500 and status not in (503, 504):
        return "Internal error in the gateway; quote the request id when reporting it."
    if _LEAKY.search(message):
        return "The request failed; quote the request id when reporting it."
    return message[:_MAX_MESSAGE]


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
    request_id = REQUEST_ID.get()
    extra = {**(extra or {}), "request_id": request_id}
    body = error_body(
        status,
        safe_message(message, status),
        code=code,
        param=param,
        err_type=err_type,
        extra=extra,
    )
    return JSONResponse(body, status_code=status, headers=headers)


def status_for(err: LumosError) -> int:
    if isinstance(err, AuthError):
        return 401
    if isinstance(err, PermissionDeniedError):
        return 403
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
