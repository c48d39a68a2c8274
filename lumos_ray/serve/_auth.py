"""Who is calling and what each route needs: API key -> Principal, role -> route.

Two sources of principals, one shape (``lumos_ray.platform.Principal``: tenant, role,
key id), so the gateway never branches on where a key came from:

- :class:`StaticKeys`: keys from the serve config / ``LUMOS_API_KEYS``, resolved in the
  driver into SHA-256 digests (:func:`resolve_static_keys`); the replicas only ever
  hold digests, never plaintext keys.
- :class:`PlatformKeys`: the platform's tenants and hashed keys in the control-plane
  store (revocation, expiry, roles), with a short per-replica cache so a request does
  not cost a database read (a revoked key stops working within ``cache_s``).

Route -> action follows the platform's role table (``lumos_ray.platform.ACTIONS``).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import time
from dataclasses import dataclass
from typing import Any, Protocol

from lumos_ray.errors import AuthenticationError, PermissionDeniedError
from lumos_ray.platform import ACTIONS, Principal, Role
from lumos_ray.serve._config import ApiKeySpec

__all__ = [
    "OPEN_ROUTES",
    "ROUTE_ACTIONS",
    "Authenticator",
    "PlatformKeys",
    "StaticKey",
    "StaticKeys",
    "action_for",
    "check_role",
    "key_digest",
    "resolve_static_keys",
]

#: Routes that never need a key: probes, and the API description.
OPEN_ROUTES = frozenset(
    {"/health", "/ready", "/docs", "/docs/oauth2-redirect", "/openapi.json", "/redoc"}
)

#: (method, route template) -> the platform action a key's role must allow. A route
#: missing here is refused (403) rather than silently open: deny by default.
ROUTE_ACTIONS: dict[tuple[str, str], str] = {
    ("GET", "/v1/models"): "read",
    ("GET", "/v1/models/{model_id:path}"): "read",
    ("GET", "/v1/adapters"): "read",
    ("POST", "/v1/chat/completions"): "chat",
    ("POST", "/v1/completions"): "chat",
    ("POST", "/v1/embeddings"): "embed",
    ("GET", "/v1/workflows"): "read",
    ("POST", "/v1/workflows/{name}/runs"): "run",
    ("GET", "/v1/runs"): "read",
    ("GET", "/v1/runs/{run_id}"): "read",
    ("GET", "/v1/runs/{run_id}/events"): "read",
    ("POST", "/v1/runs/{run_id}/resume"): "resume",
    ("POST", "/v1/runs/{run_id}/cancel"): "cancel",
    ("GET", "/v1/runs/{run_id}/checkpoints"): "read",
    ("POST", "/v1/runs/{run_id}/replay"): "run",
    ("POST", "/v1/runs/{run_id}/fork"): "run",
    ("GET", "/v1/schedules"): "read",
    ("POST", "/v1/workflows/{name}/schedules"): "run",
    ("POST", "/v1/schedules/{schedule_id}/cancel"): "cancel",
    # Deleting (a finished run, a thread) frees storage: the developer's "cancel".
    ("DELETE", "/v1/runs/{run_id}"): "cancel",
    ("GET", "/v1/threads"): "read",
    ("GET", "/v1/threads/{agent}/{thread_id:path}"): "read",
    ("DELETE", "/v1/threads/{agent}/{thread_id:path}"): "cancel",
    ("GET", "/v1/usage"): "read",
    # Scraping shows every tenant's traffic: the platform's admin-only observing action.
    ("GET", "/metrics"): "audit",
}


def action_for(method: str, route: str) -> str | None:
    """The action ``method route`` needs (None: no such route, which 404s anyway)."""
    return ROUTE_ACTIONS.get((method, route))


def check_role(principal: Principal, action: str) -> None:
    """PermissionDeniedError (403) unless the principal's role allows ``action``."""
    need = ACTIONS[action]
    if principal.role.rank < need.rank:
        raise PermissionDeniedError(
            f"This route needs the {need.value} role; key {principal.key_id} is "
            f"{principal.role.value}.",
            fix="Use a key with a higher role (a tenant admin can create one).",
        )


def key_digest(raw_key: str) -> str:
    """SHA-256 hex of a static key (what replicas hold instead of the key)."""
    return hashlib.sha256(raw_key.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class StaticKey:
    """A static key as handed to a replica: its digest and whom it proves."""

    sha256: str
    tenant: str
    role: str
    key_id: str


def resolve_static_keys(specs: list[ApiKeySpec]) -> list[StaticKey]:
    """Digests of the config's keys (run in the driver: plaintext stays there)."""
    out = []
    for i, spec in enumerate(specs):
        digest = spec.sha256 or key_digest(spec.key or "")
        out.append(
            StaticKey(digest, spec.tenant, spec.role, spec.key_id or f"static-{digest[:8]}-{i}")
        )
    return out


def _bearer(authorization: str | None) -> str:
    if not authorization or authorization[:7].lower() != "bearer ":
        raise AuthenticationError(
            "Missing API key: send `Authorization: Bearer <key>`.",
            fix="Add the header `Authorization: Bearer <your key>` to the request.",
        )
    return authorization[7:].strip()


class Authenticator(Protocol):
    @property
    def enabled(self) -> bool:
        """Whether requests need a key at all."""

    def cached(self, authorization: str | None) -> Principal | None:
        """The caller when this replica already knows the header's key and no I/O is
        needed; None means "call :meth:`authenticate`" (never "auth is off")."""

    async def authenticate(self, authorization: str | None) -> Principal | None:
        """The caller (None when auth is off); AuthenticationError otherwise."""


class StaticKeys:
    """Static keys by digest; an empty table turns auth off."""

    def __init__(self, keys: list[StaticKey]) -> None:
        self._by_digest = {
            k.sha256.encode(): Principal(k.tenant, Role(k.role), k.key_id) for k in keys
        }

    @property
    def enabled(self) -> bool:
        return bool(self._by_digest)

    def cached(self, authorization: str | None) -> Principal | None:
        return None  # the digest comparison below is the whole check

    async def authenticate(self, authorization: str | None) -> Principal | None:
        if not self._by_digest:
            return None
        digest = key_digest(_bearer(authorization)).encode()
        found: Principal | None = None
        # compare_digest over every entry: no timing signal about which one matched.
        for known, principal in self._by_digest.items():
            if hmac.compare_digest(known, digest):
                found = principal
        if found is None:
            raise AuthenticationError("Invalid API key.", fix="Check the key you send.")
        return found


class PlatformKeys:
    """The platform's keys (``Platform.authenticate``), cached per replica.

    A cache hit costs a dict lookup on the ``Authorization`` header as sent (no
    parsing, no hashing: :meth:`cached`); a miss one store read in a worker thread,
    shared by every request of that key that arrives while it runs (when a busy key's
    entry expires, its requests in flight do not each read the store). Only successes
    are cached, for ``cache_s`` (0: every request reads the store), so a revoked or
    expired key is refused at most ``cache_s`` after the change. The cache holds the
    headers of keys that authenticated in the last ``cache_s`` (at most ``_MAX``), in
    this process's memory only, as every request does while it runs."""

    _MAX = 10_000

    def __init__(self, platform: Any, cache_s: float) -> None:
        self.platform = platform
        self.cache_s = cache_s
        # Authorization header -> (until when, whom it proves)
        self._cache: dict[str, tuple[float, Principal]] = {}
        # digest -> the store read under way for it (with the loop it runs on)
        self._reading: dict[
            str, tuple[asyncio.AbstractEventLoop, asyncio.Task[tuple[float, Principal]]]
        ] = {}

    @property
    def enabled(self) -> bool:
        return True

    def cached(self, authorization: str | None) -> Principal | None:
        hit = self._cache.get(authorization) if authorization else None
        if hit is not None and hit[0] > time.monotonic():
            return hit[1]
        return None

    async def authenticate(self, authorization: str | None) -> Principal | None:
        found = self.cached(authorization)
        if found is not None:
            return found
        raw = _bearer(authorization)
        digest = key_digest(raw)
        loop = asyncio.get_running_loop()
        reading = self._reading.get(digest)
        if reading is None or reading[0] is not loop:
            task = loop.create_task(self._read(raw))
            self._reading[digest] = (loop, task)
            task.add_done_callback(lambda t: self._done(digest, t))
        else:
            task = reading[1]
        # shield: a caller that goes away does not cancel the others' read
        until, principal = await asyncio.shield(task)
        if self.cache_s > 0 and authorization:
            if len(self._cache) >= self._MAX:
                self._cache.clear()
            self._cache[authorization] = (until, principal)
        return principal

    async def _read(self, raw: str) -> tuple[float, Principal]:
        until = time.monotonic() + self.cache_s
        principal: Principal = await asyncio.to_thread(self.platform.authenticate, raw)
        return until, principal

    def _done(self, digest: str, task: asyncio.Task[tuple[float, Principal]]) -> None:
        reading = self._reading.get(digest)
        if reading is not None and reading[1] is task:
            del self._reading[digest]
        if not task.cancelled():
            task.exception()  # retrieved: a refusal every waiter left is not logged
