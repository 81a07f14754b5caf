# Generated from tests/_async/test_session.py by tools/unasync.py: do not edit; edit the async source.
"""`SessionStore` over a memory cache and every database backend (the ``db`` fixture)."""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from typing import Any

import pytest
from pydantic import BaseModel

from kvstore import BackendUnavailableError, Cache, MemoryCache, MemoryDatabase, SessionStore
from kvstore._core.items import MsetItems
from kvstore._core.ttl import TTL
from tests._sync.backends import Harness
from tests.clock import FakeClock


class Session(BaseModel):
    """A typed session."""

    user: int
    roles: list[str] = []


class FlakyCache(Cache):
    """A memory cache that raises BackendUnavailableError while ``down`` is set."""

    backend = "flaky"
    durable = False

    def __init__(self, inner: MemoryCache) -> None:
        self.inner = inner
        self.key_prefix = inner.key_prefix
        self.down = False
        self.calls = 0

    def _check(self) -> None:
        self.calls += 1
        if self.down:
            raise BackendUnavailableError("cache is down", backend="flaky")

    def get(self, key: str, *, touch: TTL | None = None) -> Any:
        self._check()
        return self.inner.get(key, touch=touch)

    def set(self, key: str, value: Any, ttl: TTL | None = None, *, only_if_absent: bool = False) -> bool:
        self._check()
        return self.inner.set(key, value, ttl, only_if_absent=only_if_absent)

    def delete(self, key: str) -> bool:
        self._check()
        return self.inner.delete(key)

    def exists(self, key: str) -> bool:
        self._check()
        return self.inner.exists(key)

    def mget(self, keys: Iterable[str]) -> list[Any]:
        self._check()
        return self.inner.mget(keys)

    def mset(self, items: MsetItems) -> None:
        self._check()
        self.inner.mset(items)

    def iter_keys(self, pattern: str = "*") -> Iterator[str]:
        self._check()
        yield from self.inner.iter_keys(pattern)

    def clear(self) -> None:
        self.inner.clear()

    def ttl(self, key: str) -> float | None:
        self._check()
        return self.inner.ttl(key)

    def expire(self, key: str, ttl: TTL | None) -> bool:
        self._check()
        return self.inner.expire(key, ttl)

    def ping(self) -> None:
        self._check()

    def close(self) -> None:
        self.inner.close()


def _scale(db: Harness) -> float:
    """1 on a fake clock; a fifth on backends that really wait."""
    return 1.0 if db.clock is not None else 0.2


def _cache(db: Harness) -> FlakyCache:
    return FlakyCache(MemoryCache(clock=db.clock or time.monotonic))


def test_create_get_set_round_trip_a_typed_session(db: Harness) -> None:
    """A typed session is validated, written to both tiers and read back as the model."""
    cache = _cache(db)
    sessions = SessionStore(cache, db.store, model=Session)
    sid = sessions.create({"user": 7})
    assert len(sid) >= 32
    assert sessions.get(sid) == Session(user=7)
    assert db.store.get(sessions.key(sid)) == {"user": 7, "roles": []}
    assert cache.inner.get(sessions.key(sid)) == {"user": 7, "roles": []}
    sessions.set(sid, Session(user=7, roles=["admin"]))
    assert (sessions.get(sid)) == Session(user=7, roles=["admin"])
    assert sessions.get("nope") is None


def test_read_through_rewarms_the_cache(db: Harness) -> None:
    """A cache miss reads the database and puts the session back in the cache, TTL bounded by cache_ttl."""
    cache = _cache(db)
    sessions = SessionStore(cache, db.store, ttl=600, cache_ttl=60)
    sid = sessions.create({"user": 1})
    sessions.invalidate(sid)
    assert cache.inner.get(sessions.key(sid)) is None
    assert sessions.get(sid) == {"user": 1}
    assert cache.inner.get(sessions.key(sid)) == {"user": 1}
    remaining = cache.inner.ttl(sessions.key(sid))
    assert remaining is not None
    assert 0 < remaining <= 60


def test_touch_slides_the_ttl_in_both_tiers(db: Harness) -> None:
    """get(touch=True) restarts the TTL; an untouched session expires from both tiers."""
    s = _scale(db)
    sessions = SessionStore(_cache(db), db.store, ttl=10 * s, clock=db.clock or time.monotonic)
    sid = sessions.create({"user": 2})
    for _ in range(2):
        db.advance(6 * s)
        assert sessions.get(sid, touch=True) == {"user": 2}
    db.advance(11 * s)
    assert sessions.get(sid) is None
    assert sessions.touch(sid) is False
    assert sessions.ttl_of(sid) is None


def test_touch_within_touch_interval_spares_the_database_write() -> None:
    """A touch soon after the last one slides only the cached copy; a later one slides the database too.

    Minutes pass here, so it runs on memory tiers sharing one fake clock (the TTL
    arithmetic is the session store's own; every backend's TTL is covered by the contract suite).
    """
    clock = FakeClock()
    database = MemoryDatabase(clock=clock)
    cache = MemoryCache(clock=clock)
    sessions = SessionStore(cache, database, ttl=600, touch_interval=60, clock=clock)
    sid = sessions.create({"user": 5})
    clock.advance(30)
    assert sessions.get(sid, touch=True) == {"user": 5}
    assert 569 < (sessions.ttl_of(sid) or 0) <= 570  # the database was not written
    clock.advance(31)
    assert sessions.get(sid, touch=True) == {"user": 5}
    assert 599 < (sessions.ttl_of(sid) or 0) <= 600


def test_delete_removes_both_tiers(db: Harness) -> None:
    """delete logs the session out of both tiers."""
    cache = _cache(db)
    sessions = SessionStore(cache, db.store)
    sid = sessions.create({"user": 3})
    assert sessions.delete(sid) is True
    assert sessions.get(sid) is None
    assert cache.inner.get(sessions.key(sid)) is None
    assert sessions.delete(sid) is False


def test_keeps_working_on_the_database_when_the_cache_is_down(db: Harness) -> None:
    """With the cache raising, every call still works; it is skipped while down, and stale copies are dropped."""
    clock = FakeClock()
    cache = _cache(db)
    sessions = SessionStore(cache, db.store, clock=clock, cache_retry_after=5)
    sid = sessions.create({"v": 1})
    cache.down = True
    sessions.set(sid, {"v": 2})  # the cache still holds v1: it must not be served later
    assert sessions.cache_available is False
    calls = cache.calls
    assert sessions.get(sid) == {"v": 2}
    other = sessions.create({"v": 9})
    assert sessions.touch(other) is True
    assert cache.calls == calls  # skipped, not retried on every call
    cache.down = False
    clock.advance(6)
    assert sessions.get(sid) == {"v": 2}
    assert sessions.cache_available is True
    assert cache.inner.get(sessions.key(sid)) == {"v": 2}


def test_database_alone(db: Harness) -> None:
    """Without a cache the store works on the database alone."""
    sessions = SessionStore(None, db.store)
    sid = sessions.create({"user": 4})
    assert sessions.get(sid, touch=True) == {"user": 4}
    sessions.invalidate(sid)
    assert sessions.delete(sid) is True


def test_from_backends_and_bad_ttl() -> None:
    """from_backends takes a manager's tiers; a TTL <= 0 is refused up front."""
    from kvstore import MemoryDatabase, StorageManager

    with StorageManager({"database": {"type": "memory"}}) as storage:
        sessions = SessionStore.from_backends(storage, ttl=5)
        sid = sessions.create({"a": 1})
        assert storage.cache.get(sessions.key(sid)) == {"a": 1}
    with pytest.raises(ValueError, match="ttl"):
        SessionStore(None, MemoryDatabase(), ttl=0)
