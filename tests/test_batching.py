"""Async auto-batching of concurrent gets (kvstore/_core/batching.py) on real PostgreSQL, SQLite and Redis."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import os
import signal
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from kvstore import (
    AsyncMemoryCache,
    AsyncMemoryDatabase,
    AsyncStorageManager,
    BackendUnavailableError,
    ClosedError,
    WrongTypeError,
)
from kvstore.base import Store
from kvstore.config import PostgresDatabaseConfig, RedisCacheConfig, SqliteDatabaseConfig
from kvstore.postgres import AsyncPostgresDatabase
from kvstore.redis import AsyncRedisCache
from kvstore.sqlite import AsyncSqliteDatabase, SqliteDatabase
from tests.fixtures_postgres import PgServer
from tests.fixtures_redis import RedisServer, start_redis_server, stop_redis_server

BACKENDS = [
    pytest.param("postgres", marks=pytest.mark.postgres),
    "sqlite",
    pytest.param("redis", marks=pytest.mark.redis),
]
VALUE = {"role": "user", "content": "hello", "n": 1}


class Spy:
    """Counts the real hooks a store calls (the store and its server stay real)."""

    def __init__(self, store: Any, *, hold: bool = False) -> None:
        self.gets: list[str] = []
        self.batches: list[list[str]] = []
        self.in_flight = asyncio.Event()
        #: With ``hold``, a batch waits for this before its round trip (a slow server, on demand).
        self.gate = asyncio.Event()
        if not hold:
            self.gate.set()
        get, batch = store._get, store._get_batch

        async def spied_get(key: str) -> Any:
            self.gets.append(key)
            # In flight for at least one tick, as a round trip is (async SQLite answers on the
            # loop at once when it can: then it has nothing in flight for others to join).
            await asyncio.sleep(0)
            raw = get(key)
            return await raw if inspect.isawaitable(raw) else raw

        async def spied_batch(keys: list[str]) -> Any:
            self.batches.append(list(keys))
            self.in_flight.set()
            await self.gate.wait()
            return await batch(keys)

        store._get, store._get_batch = spied_get, spied_batch


Opener = Callable[..., Awaitable[Any]]


@pytest.fixture
async def open_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Opener]:
    """Opens stores of the backend named by the test's ``backend`` parameter; clears and closes them after."""
    backend = request.getfixturevalue("backend")
    opened: list[Any] = []
    run = uuid.uuid4().hex[:8]

    async def open_(prefix: str = "a", **options: Any) -> Any:
        key_prefix = f"batching-{run}-{prefix}"
        if backend == "postgres":
            url = request.getfixturevalue("postgres_url")
            store: Any = AsyncPostgresDatabase(url, key_prefix=key_prefix, **options)
        elif backend == "redis":
            server: RedisServer = request.getfixturevalue("redis_server")
            # Generous timeouts: a loaded test machine must not turn a slow connect into a failure.
            options = {"socket_timeout": 5.0, "socket_connect_timeout": 5.0, **options}
            store = AsyncRedisCache(server.url, key_prefix=key_prefix, **options)
        else:
            store = AsyncSqliteDatabase(tmp_path / "kv.db", key_prefix=key_prefix, **options)
        opened.append(store)
        return store

    yield open_
    for store in opened:
        with contextlib.suppress(ClosedError):
            await store.clear()
        await store.aclose()


async def put_list(store: Any, key: str) -> None:
    """Make ``key`` hold a list: an append on a database, a raw RPUSH on Redis (its cache has no lists)."""
    if isinstance(store, AsyncRedisCache):
        await store._client.execute_command("RPUSH", store._ns + key, b"1")
    else:
        await store.append(key, 1)


@pytest.mark.parametrize("backend", BACKENDS)
async def test_gathered_gets_share_one_round_trip_and_equal_per_key_gets(backend: str, open_store: Opener) -> None:
    """100 gathered gets: one direct get plus one batch, and each result equals the get of its key alone."""
    store = await open_store()
    keys = [f"k{i}" for i in range(100)]
    await store.mset({k: {**VALUE, "n": i} for i, k in enumerate(keys) if i % 3})  # every third one missing
    expected = [await store.get(k) for k in keys]
    assert expected[0] is None
    assert expected[1] == {**VALUE, "n": 1}
    spy = Spy(store)
    assert await asyncio.gather(*[store.get(k) for k in keys]) == expected
    assert len(spy.gets) == 1
    assert len(spy.batches) == 1
    assert sorted(spy.gets + spy.batches[0]) == sorted(keys)
    assert store._batcher._busy == 0


@pytest.mark.parametrize("backend", BACKENDS)
async def test_a_lone_caller_never_waits_for_a_batch(backend: str, open_store: Opener) -> None:
    """Gets one after another go straight to the backend: no batch, no extra tick."""
    store = await open_store()
    await store.set("a", 1)
    spy = Spy(store)
    for _ in range(5):
        assert await store.get("a") == 1
    assert spy.gets == ["a"] * 5
    assert spy.batches == []


@pytest.mark.parametrize("backend", BACKENDS)
async def test_a_list_key_fails_only_its_caller(backend: str, open_store: Opener) -> None:
    """Present, missing and list keys in one batch: the list key's callers get WrongTypeError, each its own."""
    store = await open_store()
    await store.mset({"v1": 1, "v2": "two"})
    await put_list(store, "lst")
    spy = Spy(store)
    keys = ["first", "v1", "lst", "missing", "v2", "lst", "v1"]
    results = await asyncio.gather(*[store.get(k) for k in keys], return_exceptions=True)
    assert spy.batches
    assert set(spy.batches[0]) == {"v1", "lst", "missing", "v2"}
    assert results[0] is None
    assert results[1] == 1
    assert results[3] is None
    assert results[4] == "two"
    assert results[6] == 1
    errors = [results[2], results[5]]
    assert all(isinstance(e, WrongTypeError) for e in errors)
    assert errors[0] is not errors[1]
    assert all(e.key == "lst" and e.operation == "get" for e in errors)  # type: ignore[union-attr]
    with pytest.raises(WrongTypeError):  # the same error as a get on its own
        await store.get("lst")


@pytest.mark.parametrize("backend", BACKENDS)
async def test_invalid_keys_fail_before_joining_a_batch(backend: str, open_store: Opener) -> None:
    """A bad key raises in its caller before any I/O; the other callers' batch is unaffected."""
    store = await open_store()
    await store.mset({"a": 1, "b": 2})
    spy = Spy(store)
    results = await asyncio.gather(
        store.get("a"), store.get(""), store.get("b"), store.get(b"x"), store.get("a"), return_exceptions=True
    )
    assert results[0] == 1
    assert results[2] == 2
    assert results[4] == 1
    assert isinstance(results[1], ValueError)
    assert isinstance(results[3], ValueError)
    assert all(k in ("a", "b") for batch in spy.batches for k in batch)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("when", ["queued", "in_flight"])
async def test_cancelled_callers_leave_the_batch_to_the_others(backend: str, when: str, open_store: Opener) -> None:
    """Cancelling some waiters (before the batch leaves, or during its round trip) cancels only them."""
    store = await open_store()
    keys = [f"k{i}" for i in range(30)]
    await store.mset({k: i for i, k in enumerate(keys)})
    spy = Spy(store, hold=True)
    tasks = [asyncio.ensure_future(store.get(k)) for k in keys]
    if when == "queued":
        await asyncio.sleep(0)  # every task queued its key; the batch has not left
        assert not spy.batches
    else:
        await asyncio.wait_for(spy.in_flight.wait(), 5)
    doomed = tasks[3::4]
    for task in doomed:
        task.cancel()
    spy.gate.set()
    done = await asyncio.gather(*tasks, return_exceptions=True)
    for i, (task, result) in enumerate(zip(tasks, done, strict=True)):
        if task in doomed:
            assert isinstance(result, asyncio.CancelledError)
        else:
            assert result == i
    if when == "queued":  # a key whose every caller left is not read at all
        assert not set(spy.batches[0]) & {keys[i] for i in range(3, 30, 4)}
    assert store._batcher._busy == 0


@pytest.mark.parametrize("backend", BACKENDS)
async def test_a_cancelled_batch_runner_sends_its_callers_to_their_own_get(backend: str, open_store: Opener) -> None:
    """The batch's task cancelled mid round trip (a task reaper, shutdown): no caller hangs, each still answers."""
    store = await open_store()
    keys = [f"k{i}" for i in range(20)]
    await store.mset({k: i for i, k in enumerate(keys)})
    spy = Spy(store, hold=True)
    tasks = [asyncio.ensure_future(store.get(k)) for k in keys]
    await asyncio.wait_for(spy.in_flight.wait(), 5)
    (runner,) = store._batcher._tasks
    runner.cancel()
    spy.gate.set()
    assert await asyncio.wait_for(asyncio.gather(*tasks), 10) == list(range(20))
    assert len(spy.gets) == 20  # the first caller's own get, then one each for the 19 of the cancelled batch
    assert store._batcher._busy == 0


@pytest.mark.parametrize("backend", BACKENDS)
async def test_a_runner_cancelled_before_it_starts_leaves_no_caller_hanging(backend: str, open_store: Opener) -> None:
    """The batch's task cancelled before its first step (its body never runs): every caller still answers."""
    store = await open_store()
    keys = [f"k{i}" for i in range(20)]
    await store.mset({k: i for i, k in enumerate(keys)})
    spy = Spy(store)
    tasks = [asyncio.ensure_future(store.get(k)) for k in keys]
    await asyncio.sleep(0)  # every get queued; the runner is scheduled, not started
    (runner,) = store._batcher._tasks
    runner.cancel()
    assert await asyncio.wait_for(asyncio.gather(*tasks), 10) == list(range(20))
    assert spy.batches == []
    assert len(spy.gets) == 20
    assert store._batcher._busy == 0
    assert store._batcher._pending is None
    assert await asyncio.gather(*[store.get(k) for k in keys]) == list(range(20))  # batching works on


@pytest.mark.parametrize("backend", BACKENDS)
async def test_batching_false_sends_every_get_on_its_own(backend: str, open_store: Opener) -> None:
    """batching=False (the config option, or the attribute): no batch, the same results."""
    store = await open_store()
    await store.mset({"a": 1, "b": 2})
    store.batching = False
    spy = Spy(store)
    assert await asyncio.gather(*[store.get(k) for k in ["a", "b", "c"] * 5]) == [1, 2, None] * 5
    assert len(spy.gets) == 15
    assert spy.batches == []


@pytest.mark.parametrize("backend", BACKENDS)
async def test_stores_with_other_prefixes_never_share_a_batch(backend: str, open_store: Opener) -> None:
    """Two tenants (key_prefix) on one server, the same key names, gathered together: each reads its own."""
    one, two = await open_store("tenant1"), await open_store("tenant2")
    keys = [f"k{i}" for i in range(40)]
    await one.mset({k: f"one-{k}" for k in keys})
    await two.mset({k: f"two-{k}" for k in keys[::2]})
    spies = Spy(one), Spy(two)
    calls = [store.get(k) for k in keys for store in (one, two)]
    results = await asyncio.gather(*calls)
    for i, k in enumerate(keys):
        assert results[2 * i] == f"one-{k}"
        assert results[2 * i + 1] == (f"two-{k}" if i % 2 == 0 else None)
    assert all(len(spy.batches) == 1 for spy in spies)


async def test_config_batching_false_reaches_the_store(tmp_path: Path) -> None:
    """``batching = false`` in the backend's config turns batching off for a store built from it."""
    config = SqliteDatabaseConfig(path=str(tmp_path / "kv.db"), batching=False)
    store = await AsyncSqliteDatabase.from_config(config)
    try:
        assert store.batching is False
    finally:
        await store.aclose()
    store = await AsyncSqliteDatabase.from_config(SqliteDatabaseConfig(path=str(tmp_path / "kv.db")))
    try:
        assert store.batching is True
    finally:
        await store.aclose()
    assert RedisCacheConfig().batching is True
    assert PostgresDatabaseConfig().batching is True


def test_only_async_stores_batch() -> None:
    """The sync twins have no batching (nothing concurrent to coalesce); the memory stores opt out."""
    assert not hasattr(Store, "batching")
    assert not hasattr(Store, "_get_batch")
    assert not hasattr(SqliteDatabase, "batching")
    assert AsyncMemoryCache.batching is False
    assert AsyncMemoryDatabase.batching is False


@pytest.mark.parametrize("backend", BACKENDS)
async def test_touch_and_other_operations_are_not_batched(backend: str, open_store: Opener) -> None:
    """get(touch=) and exists go one by one, even when gathered."""
    store = await open_store()
    await store.mset({"a": 1, "b": 2})
    spy = Spy(store)
    assert await asyncio.gather(store.get("a", touch=60), store.get("b", touch=60)) == [1, 2]
    assert await asyncio.gather(store.exists("a"), store.exists("zz")) == [True, False]
    assert spy.batches == []
    assert spy.gets == []
    assert 0 < await store.ttl("a") <= 60


@pytest.mark.parametrize("backend", BACKENDS)
async def test_a_failed_batch_fails_every_caller_with_its_own_error(backend: str, open_store: Opener) -> None:
    """The store closed under a queued batch: every waiter gets an error of its own naming its key."""
    store = await open_store()
    await store.mset({f"k{i}": i for i in range(10)})
    Spy(store)  # the first get stays in flight for a tick, so the others queue behind it
    tasks = [asyncio.ensure_future(store.get(f"k{i}")) for i in range(10)]
    await asyncio.sleep(0)  # queued, not sent
    await store.aclose()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    errors = [r for r in results if isinstance(r, Exception)]
    assert len(errors) >= 9  # the first caller's own get may have been answered before the close
    assert len({id(e) for e in errors}) == len(errors)
    assert {e.key for e in errors[-9:]} == {f"k{i}" for i in range(1, 10)}  # type: ignore[attr-defined]


# --- a server killed under a batch ------------------------------------------------------------


async def _killed_under_batch(store: Any, kill: Callable[[], None], freeze: Callable[[], None]) -> list[Any]:
    """Freeze the server, gather 20 gets (one direct, one batch), SIGKILL it; the results, within 20 s."""
    await store.mset({f"k{i}": i for i in range(20)})
    spy = Spy(store)
    freeze()
    tasks = [asyncio.ensure_future(store.get(f"k{i}")) for i in range(20)]
    await asyncio.wait_for(spy.in_flight.wait(), 5)
    await asyncio.sleep(0.1)  # the batch's request is on the wire
    kill()
    start = time.monotonic()
    results = await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 20)
    assert time.monotonic() - start < 20
    assert store._batcher._busy == 0
    return results


@pytest.mark.redis
async def test_redis_killed_mid_batch_fails_every_waiter(tmp_path: Path) -> None:
    """kill -9 of a Redis server under a batch: every waiter gets BackendUnavailableError, none hangs."""
    server = start_redis_server(tmp_path / "redis")
    store = AsyncRedisCache(server.url, key_prefix="killed", socket_timeout=10)
    assert server.proc is not None
    pid = server.proc.pid
    try:
        results = await _killed_under_batch(
            store, lambda: os.kill(pid, signal.SIGKILL), lambda: os.kill(pid, signal.SIGSTOP)
        )
    finally:
        await store.aclose()
        stop_redis_server(server)
    assert all(isinstance(r, BackendUnavailableError) for r in results), results
    assert len({id(r) for r in results}) == 20
    assert sorted(r.key for r in results) == sorted(f"k{i}" for i in range(20))


@pytest.mark.postgres
async def test_postgres_killed_mid_batch_fails_every_waiter(owned_postgres: PgServer) -> None:
    """kill -9 of every PostgreSQL process under a batch: every waiter gets BackendUnavailableError, none hangs."""
    store = AsyncPostgresDatabase(owned_postgres.url, key_prefix="killed", statement_timeout=10, connect_timeout=1)
    stopped: list[int] = []

    def freeze() -> None:
        stopped.extend(owned_postgres.pids())
        for pid in stopped:
            os.kill(pid, signal.SIGSTOP)

    def kill() -> None:
        for pid in stopped:
            os.kill(pid, signal.SIGKILL)

    try:
        results = await _killed_under_batch(store, kill, freeze)
    finally:
        await store.aclose()
        owned_postgres.start()  # after the crash, so the fixture can stop it as usual
    assert all(isinstance(r, BackendUnavailableError) for r in results), results
    assert len({id(r) for r in results}) == 20
    assert sorted(r.key for r in results) == sorted(f"k{i}" for i in range(20))


@pytest.mark.redis
async def test_redis_cluster_batch_spans_slots_and_tells_lists_apart(redis_cluster: list[RedisServer]) -> None:
    """On a cluster the batch reads keys of every slot (no script); a list key still fails only its caller."""
    store = AsyncRedisCache(redis_cluster[0].url, key_prefix=f"batching-cluster-{uuid.uuid4().hex[:8]}")
    try:
        keys = [f"k{i}" for i in range(60)]
        await store.mset({k: i for i, k in enumerate(keys) if i % 2})
        await put_list(store, "lst")
        spy = Spy(store)
        results = await asyncio.gather(*[store.get(k) for k in [*keys, "lst"]], return_exceptions=True)
        assert len(spy.batches) == 1
        assert results[:60] == [i if i % 2 else None for i in range(60)]
        assert isinstance(results[60], WrongTypeError)
    finally:
        await store.clear()
        await store.aclose()


async def test_failover_and_telemetry_still_see_one_get_per_call(tmp_path: Path) -> None:
    """Through a manager (failover tier, counting stats) gathered gets are counted per call; the backend batches."""
    config = {
        "cache": {"type": "memory"},
        "database": {"type": "sqlite", "path": str(tmp_path / "kv.db"), "state_dir": str(tmp_path / "state")},
    }
    async with AsyncStorageManager(config, stats=True) as storage:
        database = storage.database
        await database.mset({f"k{i}": i for i in range(0, 30, 2)})
        backend = _backend_of(database)
        assert backend.batching is True
        spy = Spy(backend)
        results = await asyncio.gather(*[database.get(f"k{i}") for i in range(30)])
        assert results == [i if i % 2 == 0 else None for i in range(30)]
        assert len(spy.batches) == 1
        stats = database.stats()
        assert stats.operations["get"] == 30
        assert (stats.hits, stats.misses) == (15, 15)

    config["database"]["batching"] = False
    async with AsyncStorageManager(config) as storage:
        assert _backend_of(storage.database).batching is False


def _backend_of(store: Any) -> Any:
    """The backend store under the manager's wrappers (telemetry, then the failover tier)."""
    while not isinstance(store, AsyncSqliteDatabase):
        store = getattr(store, "_inner", None) or store.primary
    return store


@pytest.mark.redis
async def test_redis_without_scripting_batches_with_mget_and_exists(tmp_path: Path) -> None:
    """A Redis user denied scripting (ACL -@scripting): the batch falls back to MGET + EXISTS, same answers."""
    server = start_redis_server(tmp_path / "redis")
    admin = AsyncRedisCache(server.url, key_prefix="setup")
    try:
        await admin._client.execute_command("ACL", "SETUSER", "noscript", "on", ">pw", "~*", "+@all", "-@scripting")
        url = f"redis://noscript:pw@127.0.0.1:{server.port}/0"
        store = AsyncRedisCache(url, key_prefix="noscript", socket_timeout=5.0, socket_connect_timeout=5.0)
        try:
            await store.mset({"a": 1, "b": 2})
            await put_list(store, "lst")
            spy = Spy(store)
            for _ in range(2):  # the first batch learns the script is refused; the second goes straight to MGET
                results = await asyncio.gather(
                    *[store.get(k) for k in ["x", "a", "lst", "b", "c"]], return_exceptions=True
                )
                assert results[:2] == [None, 1]
                assert isinstance(results[2], WrongTypeError)
                assert results[3:] == [2, None]
            assert len(spy.batches) == 2
            assert store._no_script is True
        finally:
            await store.aclose()
    finally:
        await admin.aclose()
        stop_redis_server(server)
