"""What the LLM deployment sends back to the gateway through a Serve handle.

Why a module of its own: both sides import it (the gateway never imports vLLM), and
the shapes are kept cheap to pickle on the fast path: a finished answer is JSON bytes
already encoded in the model replica (the gateway writes them to the socket as they
are, no re-serialisation), a stream is plain ``str`` chunks of server-sent events.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["JsonReply", "error_body"]

_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    409: "conflict_error",
    413: "request_too_large",
    422: "invalid_request_error",
    429: "rate_limit_error",
    500: "internal_error",
    503: "service_unavailable",
    504: "timeout_error",
}


@dataclass(frozen=True, slots=True)
class JsonReply:
    """A complete (non-streaming) answer or an error, ready to send.

    ``body`` is the encoded JSON; the token counts feed the gateway's metrics without
    the gateway decoding the body.
    """

    status: int
    body: bytes
    prompt_tokens: int = 0
    completion_tokens: int = 0


def error_body(
    status: int,
    message: str,
    *,
    code: str | None = None,
    param: str | None = None,
    err_type: str | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """OpenAI's error shape: ``{"error": {"message", "type", "param", "code"}}``."""
    body: dict[str, Any] = {
        "message": message,
        "type": err_type or _TYPES.get(status, "error"),
        "param": param,
        "code": code or _TYPES.get(status, "error"),
    }
    if extra:
        body.update(extra)
    return {"error": body}
