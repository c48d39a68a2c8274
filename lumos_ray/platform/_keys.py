"""API key format and hashing.

A key is ``lumos_<key_id>_<secret>``: ``key_id`` is 16 hex characters, in clear in the
store so the key can be found; ``secret`` is 32 random bytes (URL-safe base64), stored
only as ``sha256(key_id ":" secret)``.

Why sha256 and not a slow password hash (scrypt, argon2): slow hashes protect secrets
people choose, which can be guessed. These secrets are 256 random bits; nobody can
guess one, fast hash or not, and a fast hash keeps authentication to one indexed read
and one hash per request. Binding the key id into the hash means a hash copied to
another key's row does not match.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets

__all__ = ["KEY_PREFIX", "hash_secret", "new_key", "parse_key", "secret_matches"]

KEY_PREFIX = "lumos_"
_KEY_RE = re.compile(r"^lumos_([0-9a-f]{16})_([A-Za-z0-9_-]{20,128})$")


def new_key() -> tuple[str, str, str]:
    """(key_id, secret, the whole key to hand out)."""
    key_id = secrets.token_hex(8)
    secret = secrets.token_urlsafe(32)
    return key_id, secret, f"{KEY_PREFIX}{key_id}_{secret}"


def parse_key(raw: str) -> tuple[str, str] | None:
    """(key_id, secret) of a well-formed key, else None. A leading ``Bearer `` (an
    ``Authorization`` header passed as is) is accepted."""
    text = raw.strip()
    if text[:7].lower() == "bearer ":
        text = text[7:].strip()
    m = _KEY_RE.match(text)
    return (m.group(1), m.group(2)) if m else None


def hash_secret(key_id: str, secret: str) -> str:
    """The stored form of a key's secret (hex sha256, bound to its key id)."""
    return hashlib.sha256(f"{key_id}:{secret}".encode()).hexdigest()


def secret_matches(key_id: str, secret: str, stored_hash: str) -> bool:
    """Constant-time comparison of a presented secret with the stored hash."""
    return hmac.compare_digest(hash_secret(key_id, secret), stored_hash)
