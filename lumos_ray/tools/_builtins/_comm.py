"""Communication tools: e-mail into an outbox directory, and webhooks.

``send_email`` never talks SMTP: it writes an RFC 5322 ``.eml`` file into the
workspace outbox (``settings.email.outbox``, default ``outbox``), where a mail relay
or a human can pick it up. With an idempotency key the file name is derived from
the key, so a retried step does not send twice. ``webhook_post`` follows the HTTP
tools' network policy and forwards the idempotency key as ``Idempotency-Key``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import uuid
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from typing import Any

from lumos_ray.errors import ToolError
from lumos_ray.tools._builtins._safety import (
    ctx_or_default,
    resolve_in_workspace,
    workspace_relative,
)
from lumos_ray.tools._builtins._web import send_request
from lumos_ray.tools._context import ToolContext
from lumos_ray.tools._tool import tool

__all__ = ["TOOLS", "send_email", "webhook_post"]

_ADDR = re.compile(r"^[^@\s<>,;\"]+@[A-Za-z0-9.-]+$")


def _check_addrs(field: str, addrs: list[str]) -> None:
    bad = [a for a in addrs if not _ADDR.match(a.strip())]
    if bad:
        raise ToolError(f"{field}: not an e-mail address: {', '.join(map(repr, bad))}")


@tool
def send_email(
    to: list[str],
    subject: str,
    body: str,
    cc: list[str] | None = None,
    from_address: str | None = None,
    ctx: ToolContext | None = None,
) -> dict[str, Any]:
    """Send an e-mail by writing it to the outbox (an .eml file in the workspace).

    Args:
        to: Recipient addresses.
        subject: Subject line.
        body: Plain-text body.
        cc: Carbon-copy addresses.
        from_address: Sender address (default: settings.email.from or
            lumos@localhost).
    """
    c = ctx_or_default(ctx)
    if not to:
        raise ToolError("to: give at least one recipient")
    _check_addrs("to", to)
    _check_addrs("cc", cc or [])
    sender = from_address or c.setting("email", "from", "lumos@localhost")
    _check_addrs("from_address", [sender])
    if "\n" in subject or "\r" in subject:
        raise ToolError("subject must be a single line")
    outbox = resolve_in_workspace(c, c.setting("email", "outbox", "outbox"))
    outbox.mkdir(parents=True, exist_ok=True)
    if c.idempotency_key:
        stem = "key-" + hashlib.sha256(c.idempotency_key.encode()).hexdigest()[:24]
    else:
        stem = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:8]
    path = outbox / f"{stem}.eml"
    if path.exists():  # the same step retried: already sent once
        return {"path": workspace_relative(c, path), "duplicate": True, "to": to}
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = ", ".join(to)
    if cc:
        msg["Cc"] = ", ".join(cc)
    msg["Subject"] = subject
    msg["Date"] = format_datetime(dt.datetime.now(dt.UTC))
    msg["Message-ID"] = make_msgid(domain="lumos.local")
    if c.run_id:
        msg["X-Lumos-Run"] = c.run_id
    msg.set_content(body)
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(bytes(msg))
    tmp.replace(path)  # atomic: a reader never sees half a message
    return {
        "path": workspace_relative(c, path),
        "duplicate": False,
        "to": to,
        "message_id": msg["Message-ID"],
    }


@tool
async def webhook_post(
    url: str,
    payload: dict[str, Any],
    headers: dict[str, str] | None = None,
    timeout_s: float = 15.0,
    ctx: ToolContext | None = None,
) -> dict[str, Any]:
    """POST a JSON payload to a webhook URL (same network policy as http_request).

    Args:
        url: The webhook's http:// or https:// URL.
        payload: JSON object sent as the body.
        headers: Extra request headers.
        timeout_s: Timeout in seconds.
    """
    c = ctx_or_default(ctx)
    hdrs = dict(headers or {})
    if c.idempotency_key:
        hdrs.setdefault("Idempotency-Key", c.idempotency_key)
    resp = await send_request(
        c, "POST", url, headers=hdrs, json_body=payload, max_bytes=100_000, timeout_s=timeout_s
    )
    out = {"status": resp["status"], "ok": 200 <= resp["status"] < 300, "response": resp["text"]}
    if "json" in resp:
        out["response_json"] = resp["json"]
    return out


TOOLS = [send_email, webhook_post]
