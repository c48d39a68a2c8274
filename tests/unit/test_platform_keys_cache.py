"""The gateway's platform-key cache: one store read per key at a time, whatever the
number of requests that find its entry missing or expired."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from lumos_ray.errors import AuthenticationError
from lumos_ray.platform import Principal, Role
from lumos_ray.serve._auth import PlatformKeys


class _Store:
    """Platform.authenticate's shape: a slow read that knows one key."""

    def __init__(self) -> None:
        self.reads = 0
        self._lock = threading.Lock()

    def authenticate(self, raw: str) -> Principal:
        with self._lock:
            self.reads += 1
        time.sleep(0.1)
        if raw != "good":
            raise AuthenticationError("Invalid API key.")
        return Principal("acme", Role.DEVELOPER, "k1")


def test_concurrent_misses_of_one_key_share_one_store_read() -> None:
    store = _Store()
    keys = PlatformKeys(store, cache_s=60)

    async def main() -> list[Principal | None]:
        return await asyncio.gather(*(keys.authenticate("Bearer good") for _ in range(20)))

    got = asyncio.run(main())
    assert store.reads == 1
    assert {p.tenant for p in got if p is not None} == {"acme"} and None not in got
    asyncio.run(main())  # cached now
    assert store.reads == 1


def test_a_refused_key_fails_every_waiter_and_is_read_again_next_time() -> None:
    store = _Store()
    keys = PlatformKeys(store, cache_s=60)

    async def main() -> list[object]:
        return await asyncio.gather(
            *(keys.authenticate("Bearer bad") for _ in range(10)), return_exceptions=True
        )

    got = asyncio.run(main())
    assert store.reads == 1
    assert all(isinstance(e, AuthenticationError) for e in got)
    with pytest.raises(AuthenticationError):
        asyncio.run(keys.authenticate("Bearer bad"))  # refusals are not cached
    assert store.reads == 2


def test_a_caller_that_leaves_does_not_cancel_the_others_read() -> None:
    store = _Store()
    keys = PlatformKeys(store, cache_s=60)

    async def main() -> Principal | None:
        first = asyncio.ensure_future(keys.authenticate("Bearer good"))
        second = asyncio.ensure_future(keys.authenticate("Bearer good"))
        await asyncio.sleep(0.01)
        first.cancel()
        return await second

    got = asyncio.run(main())
    assert got is not None and got.key_id == "k1"
    assert store.reads == 1


def test_cached_knows_a_key_only_after_it_authenticated_and_until_its_entry_expires() -> None:
    """The gateway's await-free path: a header is known once authenticate proved it,
    a refused one never is, and an entry past cache_s is not used."""
    store = _Store()
    # cache_s leaves ~1.9 s between the read's end and the first lookup (the read
    # itself takes 0.1 s): a stalled CI machine does not expire the entry early.
    keys = PlatformKeys(store, cache_s=2.0)
    assert keys.cached("Bearer good") is None and keys.cached(None) is None
    got = asyncio.run(keys.authenticate("Bearer good"))
    hit = keys.cached("Bearer good")
    assert hit is not None and hit == got and hit.key_id == "k1"
    with pytest.raises(AuthenticationError):
        asyncio.run(keys.authenticate("Bearer bad"))
    assert keys.cached("Bearer bad") is None
    time.sleep(2.05)
    assert keys.cached("Bearer good") is None  # expired: the next request reads again
    asyncio.run(keys.authenticate("Bearer good"))
    assert store.reads == 3
