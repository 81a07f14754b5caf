"""`AsyncSessionStore` over a memory cache and every database backend (the ``db`` fixture)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterable
from typing import Any

import pytest
from pydantic import BaseModel

from kvstore import AsyncCache, AsyncMemoryCache, AsyncMemoryDatabase, AsyncSessionStore, BackendUnavailableError
from kvstore._core.items import MsetItems
from kvstore._core.ttl import TTL
from tests._async.backends import AsyncHarness
from tests.clock import FakeClock


class Session(BaseModel):
    """A typed session."""

    user: int
    roles: list[str] = []


class FlakyCache(AsyncCache):
    """A memory cache that raises BackendUnavailableError while ``down`` is set."""

    backend = "flaky"
    durable = False

    def __init__(self, inner: AsyncMemoryCache) -> None:
        self.inner = inner
        self.key_prefix = inner.key_prefix
        self.down = False
        self.calls = 0

    def _check(self) -> None:
        self.calls += 1
        if self.down:
            raise BackendUnavailableError("cache is down", backend="flaky")

    async def get(self, key: str, *, touch: TTL | None = None) -> Any:
        self._check()
        return await self.inner.get(key, touch=touch)

    async def set(self, key: str, value: Any, ttl: TTL | None = None, *, only_if_absent: bool = False) -> bool:
        self._check()
        return await self.inner.set(key, value, ttl, only_if_absent=only_if_absent)

    async def delete(self, key: str) -> bool:
        self._check()
        return await self.inner.delete(key)

    async def exists(self, key: str) -> bool:
        self._check()
        return await self.inner.exists(key)

    async def mget(self, keys: Iterable[str]) -> list[Any]:
        self._check()
        return await self.inner.mget(keys)

    async def mset(self, items: MsetItems) -> None:
        self._check()
        await self.inner.mset(items)

    async def iter_keys(self, pattern: str = "*") -> AsyncIterator[str]:
        self._check()
        async for key in self.inner.iter_keys(pattern):
            yield key

    async def clear(self) -> None:
        await self.inner.clear()

    async def ttl(self, key: str) -> float | None:
        self._check()
        return await self.inner.ttl(key)

    async def expire(self, key: str, ttl: TTL | None) -> bool:
        self._check()
        return await self.inner.expire(key, ttl)

    async def ping(self) -> None:
        self._check()

    async def aclose(self) -> None:
        await self.inner.aclose()


def _scale(db: AsyncHarness) -> float:
    """1 on a fake clock; a fifth on backends that really wait."""
    return 1.0 if db.clock is not None else 0.2


def _cache(db: AsyncHarness) -> FlakyCache:
    return FlakyCache(AsyncMemoryCache(clock=db.clock or time.monotonic))


async def test_create_get_set_round_trip_a_typed_session(db: AsyncHarness) -> None:
    """A typed session is validated, written to both tiers and read back as the model."""
    cache = _cache(db)
    sessions = AsyncSessionStore(cache, db.store, model=Session)
    sid = await sessions.create({"user": 7})
    assert len(sid) >= 32
    assert await sessions.get(sid) == Session(user=7)
    assert await db.store.get(sessions.key(sid)) == {"user": 7, "roles": []}
    assert await cache.inner.get(sessions.key(sid)) == {"user": 7, "roles": []}
    await sessions.set(sid, Session(user=7, roles=["admin"]))
    assert (await sessions.get(sid)) == Session(user=7, roles=["admin"])
    assert await sessions.get("nope") is None


async def test_read_through_rewarms_the_cache(db: AsyncHarness) -> None:
    """A cache miss reads the database and puts the session back in the cache, TTL bounded by cache_ttl."""
    cache = _cache(db)
    sessions = AsyncSessionStore(cache, db.store, ttl=600, cache_ttl=60)
    sid = await sessions.create({"user": 1})
    await sessions.invalidate(sid)
    assert await cache.inner.get(sessions.key(sid)) is None
    assert await sessions.get(sid) == {"user": 1}
    assert await cache.inner.get(sessions.key(sid)) == {"user": 1}
    remaining = await cache.inner.ttl(sessions.key(sid))
    assert remaining is not None
    assert 0 < remaining <= 60


async def test_touch_slides_the_ttl_in_both_tiers(db: AsyncHarness) -> None:
    """get(touch=True) restarts the TTL; an untouched session expires from both tiers."""
    s = _scale(db)
    sessions = AsyncSessionStore(_cache(db), db.store, ttl=10 * s, clock=db.clock or time.monotonic)
    sid = await sessions.create({"user": 2})
    for _ in range(2):
        await db.advance(6 * s)
        assert await sessions.get(sid, touch=True) == {"user": 2}
    await db.advance(11 * s)
    assert await sessions.get(sid) is None
    assert await sessions.touch(sid) is False
    assert await sessions.ttl_of(sid) is None


async def test_touch_within_touch_interval_spares_the_database_write() -> None:
    """A touch soon after the last one slides only the cached copy; a later one slides the database too.

    Minutes pass here, so it runs on memory tiers sharing one fake clock (the TTL
    arithmetic is the session store's own; every backend's TTL is covered by the contract suite).
    """
    clock = FakeClock()
    database = AsyncMemoryDatabase(clock=clock)
    cache = AsyncMemoryCache(clock=clock)
    sessions = AsyncSessionStore(cache, database, ttl=600, touch_interval=60, clock=clock)
    sid = await sessions.create({"user": 5})
    clock.advance(30)
    assert await sessions.get(sid, touch=True) == {"user": 5}
    assert 569 < (await sessions.ttl_of(sid) or 0) <= 570  # the database was not written
    clock.advance(31)
    assert await sessions.get(sid, touch=True) == {"user": 5}
    assert 599 < (await sessions.ttl_of(sid) or 0) <= 600


async def test_delete_removes_both_tiers(db: AsyncHarness) -> None:
    """delete logs the session out of both tiers."""
    cache = _cache(db)
    sessions = AsyncSessionStore(cache, db.store)
    sid = await sessions.create({"user": 3})
    assert await sessions.delete(sid) is True
    assert await sessions.get(sid) is None
    assert await cache.inner.get(sessions.key(sid)) is None
    assert await sessions.delete(sid) is False


async def test_keeps_working_on_the_database_when_the_cache_is_down(db: AsyncHarness) -> None:
    """With the cache raising, every call still works; it is skipped while down, and stale copies are dropped."""
    clock = FakeClock()
    cache = _cache(db)
    sessions = AsyncSessionStore(cache, db.store, clock=clock, cache_retry_after=5)
    sid = await sessions.create({"v": 1})
    cache.down = True
    await sessions.set(sid, {"v": 2})  # the cache still holds v1: it must not be served later
    assert sessions.cache_available is False
    calls = cache.calls
    assert await sessions.get(sid) == {"v": 2}
    other = await sessions.create({"v": 9})
    assert await sessions.touch(other) is True
    assert cache.calls == calls  # skipped, not retried on every call
    cache.down = False
    clock.advance(6)
    assert await sessions.get(sid) == {"v": 2}
    assert sessions.cache_available is True
    assert await cache.inner.get(sessions.key(sid)) == {"v": 2}


async def test_database_alone(db: AsyncHarness) -> None:
    """Without a cache the store works on the database alone."""
    sessions = AsyncSessionStore(None, db.store)
    sid = await sessions.create({"user": 4})
    assert await sessions.get(sid, touch=True) == {"user": 4}
    await sessions.invalidate(sid)
    assert await sessions.delete(sid) is True


async def test_from_backends_and_bad_ttl() -> None:
    """from_backends takes a manager's tiers; a TTL <= 0 is refused up front."""
    from kvstore import AsyncMemoryDatabase, AsyncStorageManager

    async with AsyncStorageManager({"database": {"type": "memory"}}) as storage:
        sessions = AsyncSessionStore.from_backends(storage, ttl=5)
        sid = await sessions.create({"a": 1})
        assert await storage.cache.get(sessions.key(sid)) == {"a": 1}
    with pytest.raises(ValueError, match="ttl"):
        AsyncSessionStore(None, AsyncMemoryDatabase(), ttl=0)
