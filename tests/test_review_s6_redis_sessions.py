"""Review s6 (Redis cache tier and session stores): calls in flight when a store is closed,
and sessions served by several processes at once (a delete racing a cache fill, a touch within
``touch_interval``, cancellation between the cache and the database)."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import psycopg
import pytest
from psycopg import sql

from kvstore.errors import ClosedError
from kvstore.memory import AsyncMemoryCache, AsyncMemoryDatabase
from kvstore.postgres import AsyncPostgresDatabase
from kvstore.redis import AsyncRedisCache
from kvstore.session import AsyncSessionStore
from tests.clock import FakeClock
from tests.fixtures_redis import RedisServer

BRANCH = "review-s6-c"


@pytest.fixture
def prefix() -> str:
    """A key prefix of this test's own on the shared Redis."""
    return f"{BRANCH}:{uuid.uuid4().hex[:8]}:"


@pytest.fixture
async def redis_cleanup(redis_server: RedisServer, prefix: str) -> AsyncIterator[None]:
    """Removes this test's keys from Redis afterwards."""
    yield
    async with AsyncRedisCache(redis_server.url, key_prefix=prefix) as cache:
        await cache.clear()


@pytest.fixture
def schema(postgres_url: str) -> Iterator[str]:
    """A PostgreSQL schema of this test's own, dropped afterwards."""
    name = f"kv_s6c_{uuid.uuid4().hex[:8]}"
    yield name
    with psycopg.connect(postgres_url, autocommit=True) as admin:
        admin.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name)))


def _only_closed(results: list[Any]) -> list[BaseException]:
    """The errors of ``results`` that are not `ClosedError`."""
    return [r for r in results if isinstance(r, BaseException) and not isinstance(r, ClosedError)]


# --- closing a store under calls in flight ---------------------------------------------------


@pytest.mark.redis
@pytest.mark.parametrize("batching", [True, False])
async def test_redis_calls_cut_off_by_aclose_raise_closed_error(
    redis_server: RedisServer, prefix: str, redis_cleanup: None, batching: bool
) -> None:
    """Gets and sets in flight when the Redis store is closed raise `ClosedError` (the store's own
    close, not an outage); before the fix they raised BackendUnavailableError ("Connection closed
    by server"), which a failover tier counts as an outage of the server."""
    cache = AsyncRedisCache(redis_server.url, key_prefix=prefix, max_connections=8)
    cache.batching = batching
    big = "x" * 2_000_000
    await cache.set("big", big)
    calls = [cache.get("big") for _ in range(20)] + [cache.set(f"k{i}", big) for i in range(10)]
    tasks = [asyncio.ensure_future(c) for c in calls]
    await asyncio.sleep(0.005)
    await cache.aclose()
    results = await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 5)
    assert any(isinstance(r, ClosedError) for r in results), "nothing was in flight: the test proves nothing"
    assert _only_closed(results) == []
    assert all(r is None or r is True or r == big or isinstance(r, ClosedError) for r in results)


@pytest.mark.postgres
async def test_postgres_calls_waiting_for_the_pool_when_closed_raise_closed_error(
    postgres_url: str, schema: str
) -> None:
    """Calls waiting for a pooled connection when the PostgreSQL store is closed raise `ClosedError`;
    before the fix, BackendUnavailableError ("pool is closed"), an outage to a failover tier."""
    db = AsyncPostgresDatabase(postgres_url, schema_name=schema, key_prefix="p:", min_size=1, max_size=2)
    await db.open()
    await db.set("k", {"v": 1})
    tasks = [asyncio.ensure_future(db.set(f"k{i}", {"v": i})) for i in range(30)]
    tasks += [asyncio.ensure_future(db.get("k")) for _ in range(30)]
    await asyncio.sleep(0.002)
    await db.aclose()
    results = await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 10)
    assert any(isinstance(r, ClosedError) for r in results), "nothing was waiting: the test proves nothing"
    assert _only_closed(results) == []


# --- sessions over several processes ---------------------------------------------------------


class _Paused:
    """A store proxy whose ``method`` runs, then waits until the test releases it (instrumentation
    around a real backend, to order two processes' calls deterministically)."""

    def __init__(self, store: Any, method: str) -> None:
        self._store = store
        self._method = method
        self.reached = asyncio.Event()
        self.release = asyncio.Event()
        self.armed = False

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._store, name)
        if name != self._method:
            return attr

        async def paused(*args: Any, **kwargs: Any) -> Any:
            result = await attr(*args, **kwargs)
            if self.armed:
                self.armed = False
                self.reached.set()
                await self.release.wait()
            return result

        return paused


@pytest.mark.redis
@pytest.mark.postgres
async def test_a_delete_in_another_process_is_not_undone_by_a_cache_fill(
    redis_server: RedisServer, prefix: str, redis_cleanup: None, postgres_url: str, schema: str
) -> None:
    """Process A reads a session from the database (cache miss); process B deletes it and finishes
    its invalidations before A's cache fill lands: the session must not be served afterwards. Before
    the fix A's fill put it back in the cache for the cache TTL (every reader was served it)."""
    async with contextlib.AsyncExitStack() as stack:
        stores = []
        for _ in range(3):  # three processes: each its own clients
            cache = await stack.enter_async_context(AsyncRedisCache(redis_server.url, key_prefix=prefix))
            db = await stack.enter_async_context(AsyncPostgresDatabase(postgres_url, schema_name=schema, max_size=2))
            stores.append((cache, db))
        paused = _Paused(stores[0][1], "ttl")
        a = AsyncSessionStore(stores[0][0], paused, ttl=600)  # type: ignore[arg-type]
        b = AsyncSessionStore(*stores[1], ttl=600)
        c = AsyncSessionStore(*stores[2], ttl=600)
        sid = await b.create({"user": 1})
        await b.invalidate(sid)  # a cold cache: A reads through
        paused.armed = True
        reading = asyncio.ensure_future(a.get(sid))
        await paused.reached.wait()
        assert await b.delete(sid) is True
        paused.release.set()
        assert await reading == {"user": 1}  # read before the delete: a legal answer
        assert await c.get(sid) is None
        assert await stores[2][0].get(a.key(sid)) is None


async def test_a_set_with_a_short_ttl_then_touched_slides_the_database_too() -> None:
    """A session written with a short ``ttl`` and then touched lives the store's ``ttl`` from the touch:
    before the fix the touch (within touch_interval of the write) slid only the cached copy, so the
    database copy expired after the short ttl and the touched session was lost."""
    clock = FakeClock()
    database = AsyncMemoryDatabase(clock=clock)
    cache = AsyncMemoryCache(clock=clock)
    sessions = AsyncSessionStore(cache, database, ttl=600, touch_interval=60, clock=clock)
    sid = await sessions.create({"user": 2}, ttl=5)
    clock.advance(1)
    assert await sessions.get(sid, touch=True) == {"user": 2}
    clock.advance(10)
    assert 580 < (await sessions.ttl_of(sid) or 0) <= 600
    assert await sessions.get(sid) == {"user": 2}


async def test_a_touch_within_touch_interval_never_outlives_the_database_copy() -> None:
    """A touch that spares the database (within touch_interval) slides the cached copy no further than
    the database copy lives: no process is served the session after it expired in the database.
    Before the fix the cached copy outlived it by up to touch_interval."""
    clock = FakeClock()
    database = AsyncMemoryDatabase(clock=clock)
    cache = AsyncMemoryCache(clock=clock)
    a = AsyncSessionStore(cache, database, ttl=100, cache_ttl=None, touch_interval=10, clock=clock)
    other = AsyncSessionStore(cache, database, ttl=100, cache_ttl=None, touch_interval=10, clock=clock)
    sid = await a.create({"user": 3})
    clock.advance(9)
    assert await a.get(sid, touch=True) == {"user": 3}  # within touch_interval: the database is not slid
    clock.advance(95)  # the database copy expired at 100
    assert await database.get(a.key(sid)) is None
    assert await other.get(sid) is None
    assert await a.get(sid, touch=True) is None


async def test_get_touch_cancelled_between_the_cache_and_the_database_drops_the_cached_copy() -> None:
    """get(touch=True) cancelled after its GETEX slid the cached copy, while the database copy is being
    slid: the cached copy must not outlive the database's. Before the fix it did (served after the
    session expired in the database)."""
    clock = FakeClock()
    database = AsyncMemoryDatabase(clock=clock)
    cache = AsyncMemoryCache(clock=clock)
    a = AsyncSessionStore(cache, _Never(database), ttl=100, touch_interval=10, clock=clock)  # type: ignore[arg-type]
    other = AsyncSessionStore(cache, database, ttl=100, touch_interval=10, clock=clock)
    sid = await a.create({"user": 4})
    clock.advance(50)  # past touch_interval: the touch slides the database copy too
    touching = asyncio.ensure_future(a.get(sid, touch=True))
    for _ in range(5):
        await asyncio.sleep(0)
    touching.cancel()
    with pytest.raises(asyncio.CancelledError):
        await touching
    for _ in range(5):
        await asyncio.sleep(0)
    clock.advance(60)  # the database copy expired at 100
    assert await database.get(a.key(sid)) is None
    assert await other.get(sid) is None


class _Never:
    """A database proxy whose ``expire`` never answers (a call cancelled while it waits)."""

    def __init__(self, store: Any) -> None:
        self._store = store

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    async def expire(self, key: str, ttl: Any) -> bool:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")


async def test_set_cancelled_after_the_database_write_never_leaves_the_old_session_cached() -> None:
    """set() cancelled after its database write, before its cache write: the next read must not be
    served the old session from the cache. Before the fix it was, for the cache TTL."""
    clock = FakeClock()
    database = AsyncMemoryDatabase(clock=clock)
    cache = AsyncMemoryCache(clock=clock)
    paused = _Paused(database, "set")
    a = AsyncSessionStore(cache, paused, ttl=100, clock=clock)  # type: ignore[arg-type]
    other = AsyncSessionStore(cache, database, ttl=100, clock=clock)
    sid = await a.create({"v": "old"})
    assert await other.get(sid) == {"v": "old"}
    paused.armed = True
    writing = asyncio.ensure_future(a.set(sid, {"v": "new"}))
    await paused.reached.wait()
    writing.cancel()
    with pytest.raises(asyncio.CancelledError):
        await writing
    for _ in range(5):
        await asyncio.sleep(0)
    assert await database.get(a.key(sid)) == {"v": "new"}
    assert await other.get(sid) == {"v": "new"}


@pytest.mark.redis
@pytest.mark.postgres
async def test_a_manager_disconnecting_under_calls_in_flight_counts_no_outage(
    redis_server: RedisServer, prefix: str, redis_cleanup: None, postgres_url: str, schema: str, tmp_path: Any
) -> None:
    """Writes in flight while the manager disconnects raise `ClosedError`; neither tier counts its
    own close as an outage (no failover, no breaker trip, no journal or fallback file). Before the
    fix the cut-off calls tripped the breakers and were journaled to the state directory."""
    from kvstore import AsyncStorageManager

    state = tmp_path / "state"
    config = {
        "cache": {
            "type": "redis",
            "url": redis_server.url,
            "key_prefix": prefix,
            "failure_threshold": 1,
            "state_dir": str(state),
        },
        "database": {
            "type": "postgres",
            "url": postgres_url,
            "schema_name": schema,
            "max_size": 2,
            "failure_threshold": 1,
            "state_dir": str(state),
        },
    }
    manager = AsyncStorageManager(config)
    storage = await manager.connect()
    cache, database = storage.cache, storage.database
    await database.set("warm", 1)
    big = "z" * 1_000_000
    tasks = [asyncio.ensure_future(database.set(f"d{i}", i)) for i in range(30)]
    tasks += [asyncio.ensure_future(cache.set(f"c{i}", big)) for i in range(10)]
    await asyncio.sleep(0.003)
    await manager.disconnect()
    results = await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 10)
    assert any(isinstance(r, ClosedError) for r in results), "nothing was in flight: the test proves nothing"
    assert _only_closed(results) == []
    assert cache.events["failover"] == 0
    assert database.events["failover"] == 0
    assert not state.exists() or not any(state.rglob("*"))
