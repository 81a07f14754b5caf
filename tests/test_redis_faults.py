"""Redis faults on servers this session owns: a frozen server, an unreachable one, auth failures."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from kvstore import AsyncStorageManager, BackendUnavailableError, StorageManager
from kvstore.config import RedisCacheConfig
from kvstore.redis import AsyncRedisCache, RedisCache
from tests.fixtures_redis import RedisServer, _free_port, start_redis_server, stop_redis_server

pytestmark = pytest.mark.redis

CANARY = "canary-Pw-7f3a9c-do-not-print"
WRONG = "wrong-canary-Pw-b41d0e"


# --- a frozen server (kill -STOP) -------------------------------------------------------


def test_stalled_server_fails_within_timeout_then_recovers(owned_redis_server: RedisServer) -> None:
    """kill -STOP: get raises BackendUnavailableError within socket_timeout; kill -CONT: the next call works."""
    store = RedisCache(owned_redis_server.url, key_prefix="stall:", socket_timeout=0.3)
    try:
        store.set("k", {"v": 1})
        owned_redis_server.stop()
        try:
            start = time.monotonic()
            with pytest.raises(BackendUnavailableError) as info:
                store.get("k")
            elapsed = time.monotonic() - start
        finally:
            owned_redis_server.cont()
        assert 0.25 <= elapsed < 0.8, elapsed
        assert info.value.backend == "redis"
        assert info.value.operation == "get"
        assert info.value.key == "k"
        assert store.get("k") == {"v": 1}
    finally:
        store.clear()
        store.close()


async def test_stalled_server_fails_within_timeout_then_recovers_async(owned_redis_server: RedisServer) -> None:
    """The async store fails a get on a frozen server within socket_timeout and recovers after kill -CONT."""
    store = AsyncRedisCache(owned_redis_server.url, key_prefix="stall-async:", socket_timeout=0.3)
    try:
        await store.set("k", [1, 2])
        owned_redis_server.stop()
        try:
            start = time.monotonic()
            with pytest.raises(BackendUnavailableError):
                await store.get("k")
            elapsed = time.monotonic() - start
        finally:
            owned_redis_server.cont()
        assert 0.25 <= elapsed < 0.8, elapsed
        assert await store.get("k") == [1, 2]
    finally:
        await store.clear()
        await store.aclose()


def test_default_timeouts_fail_a_hung_server_well_under_a_second(owned_redis_server: RedisServer) -> None:
    """With the config defaults (0.5 s) a frozen server fails a call in well under a second."""
    store = RedisCache.from_config(RedisCacheConfig(url=owned_redis_server.url, key_prefix="stall-default:"))
    try:
        store.ping()
        owned_redis_server.stop()
        try:
            start = time.monotonic()
            with pytest.raises(BackendUnavailableError):
                store.set("k", 1)
            elapsed = time.monotonic() - start
        finally:
            owned_redis_server.cont()
        assert elapsed < 0.9, elapsed
    finally:
        store.close()


def test_driver_retries_are_off(owned_redis_server: RedisServer) -> None:
    """redis-py never resends a command on its own: its Retry has 0 retries."""
    store = RedisCache(owned_redis_server.url)
    try:
        retry = store._client.connection_pool.connection_kwargs["retry"]
        assert retry.get_retries() == 0
    finally:
        store.close()


# --- an unreachable server ------------------------------------------------------------


def test_unreachable_server_raises_within_connect_timeout() -> None:
    """from_config on a closed port raises BackendUnavailableError at once (one attempt, no driver retries)."""
    config = RedisCacheConfig(url=f"redis://127.0.0.1:{_free_port()}/0", connect_timeout=0.6)
    start = time.monotonic()
    with pytest.raises(BackendUnavailableError) as info:
        RedisCache.from_config(config)
    assert time.monotonic() - start < 0.3
    assert info.value.backend == "redis"


async def test_unreachable_server_raises_within_connect_timeout_async() -> None:
    """The async from_config fails at once too."""
    config = RedisCacheConfig(url=f"redis://127.0.0.1:{_free_port()}/0", connect_timeout=0.6)
    start = time.monotonic()
    with pytest.raises(BackendUnavailableError):
        await AsyncRedisCache.from_config(config)
    assert time.monotonic() - start < 0.3


def test_manager_falls_back_to_memory_when_redis_is_down(caplog: pytest.LogCaptureFixture) -> None:
    """StorageManager serves the cache tier from memory when Redis is unreachable, with one warning."""
    config = {
        "cache": {"type": "redis", "url": f"redis://127.0.0.1:{_free_port()}/0", "connect_timeout": 0.5},
        "database": {"type": "memory"},
    }
    with caplog.at_level(logging.WARNING, logger="kvstore"), StorageManager(config) as storage:
        storage.cache.set("k", 1)
        assert storage.cache.get("k") == 1
        assert storage.health().cache.active == "memory"
    assert any("redis" in r.getMessage() for r in caplog.records)


async def test_manager_connects_to_redis(redis_server: RedisServer) -> None:
    """AsyncStorageManager connects the cache tier to Redis and reports it healthy."""
    config = {"cache": {"type": "redis", "url": redis_server.url, "key_prefix": "mgr:"}, "database": {"type": "memory"}}
    async with AsyncStorageManager(config) as storage:
        await storage.cache.set("session:42", {"user": 7}, ttl=60)
        assert await storage.cache.get("session:42") == {"user": 7}
        report = await storage.health()
        assert report.cache.healthy
        assert report.cache.active == "redis"
        await storage.cache.clear()


# --- passwords are never printed ------------------------------------------------------


@pytest.fixture(scope="module")
def auth_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A throwaway redis-server that requires the canary password."""
    server = start_redis_server(Path(tmp_path_factory.mktemp("redis-auth")), "--requirepass", CANARY)
    try:
        yield server
    finally:
        stop_redis_server(server)


def test_correct_password_works_and_is_never_shown(auth_server: RedisServer) -> None:
    """A password in the URL or the config authenticates, and repr shows neither."""
    url = f"redis://:{CANARY}@127.0.0.1:{auth_server.port}/0"
    from_url = RedisCache(url, key_prefix="auth:")
    from_config = RedisCache.from_config(RedisCacheConfig(url=url, key_prefix="auth:"))
    from_field = RedisCache(host="127.0.0.1", port=auth_server.port, password=CANARY, key_prefix="auth:")
    try:
        for store in (from_url, from_config, from_field):
            store.set("k", 1)
            assert store.get("k") == 1
            assert CANARY not in repr(store)
            assert CANARY not in str(vars(store).get("_target"))
    finally:
        from_url.clear()
        for store in (from_url, from_config, from_field):
            store.close()


def test_wrong_password_is_unavailable_and_not_printed(
    auth_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    """A wrong password raises BackendUnavailableError; neither password appears in errors, repr or logs."""
    url = f"redis://:{WRONG}@127.0.0.1:{auth_server.port}/0"
    with pytest.raises(BackendUnavailableError) as info:
        RedisCache.from_config(RedisCacheConfig(url=url, connect_timeout=0.5))
    texts = [str(info.value), repr(info.value), str(info.value.__cause__), repr(info.value.__cause__)]
    store = RedisCache(url)
    texts.append(repr(store))
    with pytest.raises(BackendUnavailableError) as again:
        store.get("k")
    texts += [str(again.value), repr(again.value)]
    store.close()
    config = {"cache": {"type": "redis", "url": url, "connect_timeout": 0.5}, "database": {"type": "memory"}}
    with caplog.at_level(logging.DEBUG), StorageManager(config) as storage:
        report = storage.health()
        assert report.cache.active == "memory"
        texts += [repr(storage), repr(report), str(report.cache.last_error)]
    texts.append(caplog.text)
    assert "credentials" in str(info.value)
    for text in texts:
        assert WRONG not in text
        assert CANARY not in text


def test_missing_password_is_unavailable(auth_server: RedisServer) -> None:
    """No password against a server that requires one raises BackendUnavailableError."""
    store = RedisCache(auth_server.url)
    try:
        with pytest.raises(BackendUnavailableError):
            store.set("k", 1)
    finally:
        store.close()


async def test_a_burst_larger_than_the_pool_waits_instead_of_failing(redis_server: RedisServer) -> None:
    """200 concurrent calls on a 5-connection pool all succeed: callers wait for a free connection."""
    store = AsyncRedisCache(redis_server.url, key_prefix="burst:", max_connections=5)
    try:
        await asyncio.gather(*(store.set(f"k{i}", i) for i in range(200)))
        assert await asyncio.gather(*(store.get(f"k{i}") for i in range(200))) == list(range(200))
    finally:
        await store.clear()
        await store.aclose()


async def test_pool_exhausted_for_longer_than_pool_timeout_is_unavailable(owned_redis_server: RedisServer) -> None:
    """When every pooled connection stays busy past pool_timeout, the waiting call raises BackendUnavailableError."""
    store = AsyncRedisCache(
        owned_redis_server.url, key_prefix="pool:", max_connections=1, socket_timeout=1.0, pool_timeout=0.2
    )
    try:
        await store.ping()
        owned_redis_server.stop()
        try:
            holder = asyncio.ensure_future(store.get("k"))  # holds the only connection, waiting for a reply
            await asyncio.sleep(0.05)
            start = time.monotonic()
            with pytest.raises(BackendUnavailableError):
                await store.get("k")
            assert time.monotonic() - start < 0.6
        finally:
            owned_redis_server.cont()
        with contextlib.suppress(BackendUnavailableError):
            assert await holder is None  # the late reply arrived within its own socket_timeout
        assert await store.get("k") is None
    finally:
        await store.aclose()
