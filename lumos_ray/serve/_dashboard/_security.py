"""The dashboard's session cookie, CSRF checks and response headers: pure functions,
tested without a gateway (tests/unit/test_dashboard_security.py).

The session cookie holds the API key the user pasted, and nothing else. Why the key
rather than a signed token: the gateway then authenticates a page exactly as it
authenticates an API call (``gateway.auth.authenticate``: same digests, same platform
lookup, revocation and expiry seen within ``auth_cache_s``), on any replica, with no
session table and no signing secret to share between replicas. The user already holds
the key in the browser (they pasted it); the cookie keeps it away from scripts
(HttpOnly), from other sites' requests (SameSite=Strict), from the API routes
(Path=/ui) and, over HTTPS, from plain HTTP (Secure). It lasts 8 hours or until
"sign out".

State-changing requests (POST) are accepted only when BOTH hold: the browser's
``Origin`` (or, lacking it, ``Referer``) is this gateway's own origin, and the form
carries the CSRF token, an HMAC of the key that a page of another origin cannot read
or compute.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

__all__ = [
    "CSP",
    "MAX_KEY_CHARS",
    "SESSION_COOKIE",
    "SESSION_MAX_AGE_S",
    "csrf_token",
    "page_headers",
    "safe_next",
    "same_origin",
    "session_cookie",
    "valid_csrf",
]

SESSION_COOKIE = "lumos_session"
SESSION_MAX_AGE_S = 8 * 3600
#: Longest API key the login form accepts (platform and static keys are far shorter).
MAX_KEY_CHARS = 512

#: Only our own files: no inline script or style, no eval, no framing, forms post here.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self'; form-action 'self'; frame-ancestors 'none'; "
    "base-uri 'none'"
)


def page_headers() -> dict[str, str]:
    """Headers of every /ui response (pages, fragments, assets, errors)."""
    return {
        "Content-Security-Policy": CSP,
        "X-Content-Type-Options": "nosniff",
        "X-Frame-Options": "DENY",
        "Referrer-Policy": "same-origin",
        "Cache-Control": "no-store",
    }


def session_cookie(key: str, secure: bool, root: str = "") -> dict[str, Any]:
    """Keyword arguments of ``Response.set_cookie`` for the session (``root``: the
    app's route prefix)."""
    return {
        "key": SESSION_COOKIE,
        "value": key,
        "max_age": SESSION_MAX_AGE_S,
        "path": f"{root}/ui",
        "httponly": True,
        "samesite": "strict",
        "secure": secure,
    }


def csrf_token(key: str) -> str:
    """The form token of a session: HMAC-SHA256 of a fixed label under the key.
    Stateless (any replica checks it) and useless to someone who lacks the key."""
    return hmac.new(key.encode(), b"lumos-dashboard-csrf-v1", hashlib.sha256).hexdigest()[:40]


def valid_csrf(key: str, token: str | None) -> bool:
    """Whether a form's token is the session's (constant-time compare)."""
    if not token or len(token) > 100:
        return False
    return hmac.compare_digest(csrf_token(key), token)


def _origin_of(url: str) -> str | None:
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return None
    return f"{parts.scheme}://{parts.netloc}".lower()


def same_origin(headers: Mapping[str, str], scheme: str, host: str | None) -> bool:
    """Whether a POST comes from a page of this gateway: its ``Origin`` header (every
    current browser sends one on a form POST) or, without one, its ``Referer`` names
    ``scheme://host``. Neither header: refused (a browser form always sends one of
    them; a non-browser client should call the JSON API with its key instead)."""
    if not host:
        return False
    own = f"{scheme}://{host}".lower()
    origin = headers.get("origin")
    if origin is not None:
        return origin.strip().lower() == own
    referer = headers.get("referer")
    if referer:
        return _origin_of(referer[:2000]) == own
    return False


def safe_next(target: str | None, root: str = "") -> str:
    """A redirect target that stays on the dashboard: a path under ``root``/ui (the
    app's route prefix) with no scheme, host or backslash (``//evil.example`` and
    ``/ui\\..`` are refused); the runs list otherwise."""
    default = f"{root}/ui/runs"
    if not target or len(target) > 500:
        return default
    if not target.startswith(f"{root}/ui") or target.startswith("//") or "\\" in target:
        return default
    parts = urlsplit(target)
    if parts.scheme or parts.netloc:
        return default
    return target
