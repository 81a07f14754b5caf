"""Redis stores across fork (gunicorn --preload, multiprocessing): each child connects anew; the parent's
sockets are never used (nor closed) by a child, so the parent's replies never get mixed up."""

from __future__ import annotations

import asyncio
import traceback
import uuid
from typing import Any

import pytest
import redis

from kvstore.redis import AsyncRedisCache, RedisCache
from tests.fixtures_redis import RedisServer
from tests.forking import CHILDREN, PER_CHILD, run_children

pytestmark = [pytest.mark.redis, pytest.mark.slow]


def _client_names(server_url: str, name: str) -> int:
    """How many connections to the server carry the client name ``name``."""
    admin = redis.Redis.from_url(server_url)
    try:
        return sum(1 for c in admin.client_list() if c.get("name") == name)
    finally:
        admin.close()


def _value(w: int, i: int) -> dict[str, Any]:
    return {"w": w, "i": i, "pad": "x" * (i % 50)}


def test_sync_store_in_forked_children(redis_server: RedisServer) -> None:
    """4 forked children x 200 set+get on the parent's RedisCache: exact results; the parent works on."""
    prefix = f"fork-sync-{uuid.uuid4().hex[:8]}:"
    store = RedisCache(redis_server.url, key_prefix=prefix, max_connections=4)
    store.set("before", 1)
    pool = store._client.connection_pool
    parent_connections = set(map(id, pool._connections if hasattr(pool, "_connections") else []))

    def child(w: int, errors: Any) -> None:
        try:
            assert store.get("before") == 1
            for i in range(PER_CHILD):
                store.set(f"{w}:{i}", _value(w, i))
                assert store.get(f"{w}:{i}") == _value(w, i)
                store.set(f"last:{w}", i)
            child_pool = store._client.connection_pool
            if hasattr(child_pool, "_connections"):
                assert not set(map(id, child_pool._connections)) & parent_connections
            store.close()  # closes the child's connections only
        except BaseException:
            errors.put(traceback.format_exc())
            raise

    run_children(child)
    assert store.get("before") == 1  # the parent's connection was not closed or confused by a child
    assert store.mget([f"last:{w}" for w in range(CHILDREN)]) == [PER_CHILD - 1] * CHILDREN
    assert store.mget([f"{w}:{PER_CHILD - 1}" for w in range(CHILDREN)]) == [
        _value(w, PER_CHILD - 1) for w in range(CHILDREN)
    ]
    assert len(store.keys("*:*")) == CHILDREN * PER_CHILD + CHILDREN
    store.clear()
    store.close()


def test_async_store_in_forked_children(redis_server: RedisServer) -> None:
    """4 forked children x 200 set+get on the parent's AsyncRedisCache: each child uses sockets of its own."""
    prefix = f"fork-async-{uuid.uuid4().hex[:8]}:"
    store = AsyncRedisCache(redis_server.url, key_prefix=prefix, max_connections=4)
    name = f"kv-parent-{uuid.uuid4().hex[:8]}"

    async def prepare() -> None:
        await store.set("before", 1)
        await store._client.execute_command("CLIENT", "SETNAME", name)  # marks the parent's pooled connection

    loop = asyncio.new_event_loop()
    loop.run_until_complete(prepare())
    parent_client = store._client
    assert _client_names(redis_server.url, name) == 1

    def child(w: int, errors: Any) -> None:
        async def work() -> None:
            assert await store.get("before") == 1
            assert store._client is not parent_client
            for i in range(PER_CHILD):
                await store.set(f"{w}:{i}", _value(w, i))
                assert await store.get(f"{w}:{i}") == _value(w, i)
                await store.set(f"last:{w}", i)
            # No connection of the child carries the parent's name: it never used the parent's socket.
            assert await store._client.execute_command("CLIENT", "GETNAME") is None
            await store.aclose()

        try:
            asyncio.run(asyncio.wait_for(work(), 60))
        except BaseException:
            errors.put(traceback.format_exc())
            raise

    run_children(child)

    async def check() -> None:
        assert store._client is parent_client
        assert await store.get("before") == 1
        assert await store.mget([f"last:{w}" for w in range(CHILDREN)]) == [PER_CHILD - 1] * CHILDREN
        assert len(await store.keys("*:*")) == CHILDREN * PER_CHILD + CHILDREN
        assert await store._client.execute_command("CLIENT", "GETNAME") == name.encode()
        await store.clear()
        await store.aclose()

    assert _client_names(redis_server.url, name) == 1  # the children left the parent's connection open
    loop.run_until_complete(check())
    loop.close()


@pytest.mark.parametrize("api", ["sync", "async"])
def test_cluster_store_in_forked_children(redis_cluster: list[RedisServer], api: str) -> None:
    """Redis Cluster: 4 forked children x 200 set+get on the parent's store, exact; the parent works on."""
    prefix = f"fork-cluster-{api}-{uuid.uuid4().hex[:8]}:"
    url = redis_cluster[0].url
    if api == "sync":
        sync_store = RedisCache(url, key_prefix=prefix)
        sync_store.set("before", 1)

        def child(w: int, errors: Any) -> None:
            try:
                assert sync_store.get("before") == 1
                for i in range(PER_CHILD):
                    sync_store.set(f"{w}:{i}", _value(w, i))
                    assert sync_store.get(f"{w}:{i}") == _value(w, i)
                sync_store.close()
            except BaseException:
                errors.put(traceback.format_exc())
                raise

        run_children(child)
        assert sync_store.get("before") == 1
        assert len(sync_store.keys("*:*")) == CHILDREN * PER_CHILD
        sync_store.clear()
        sync_store.close()
        return

    async_store = AsyncRedisCache(url, key_prefix=prefix)
    loop = asyncio.new_event_loop()
    loop.run_until_complete(async_store.set("before", 1))

    def async_child(w: int, errors: Any) -> None:
        async def work() -> None:
            assert await async_store.get("before") == 1
            for i in range(PER_CHILD):
                await async_store.set(f"{w}:{i}", _value(w, i))
                assert await async_store.get(f"{w}:{i}") == _value(w, i)
            await async_store.aclose()

        try:
            asyncio.run(asyncio.wait_for(work(), 60))
        except BaseException:
            errors.put(traceback.format_exc())
            raise

    run_children(async_child)

    async def check() -> None:
        assert await async_store.get("before") == 1
        assert len(await async_store.keys("*:*")) == CHILDREN * PER_CHILD
        await async_store.clear()
        await async_store.aclose()

    loop.run_until_complete(check())
    loop.close()
