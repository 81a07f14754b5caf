"""Redis harnesses of the contract suite: real Redis, fakeredis and a real 3-master cluster."""

from __future__ import annotations

from typing import Any

import fakeredis
import pytest

from kvstore.redis import AsyncRedisCache
from tests._async.backends import AsyncHarness
from tests.clock import FakeClock

# Every harness store lives under this prefix unless a test asks for another one.
# KVSTORE_TEST_REDIS_URL must still name a disposable database: contract tests use
# prefixes such as "a:" and "" (whose clear() removes every key outside a namespace).
PREFIX = "kvstore-test:"


async def _redis(request: pytest.FixtureRequest, clock: FakeClock) -> AsyncHarness:
    server = request.getfixturevalue("redis_server")

    async def open_(**options: Any) -> AsyncRedisCache:
        options.setdefault("key_prefix", PREFIX)
        return AsyncRedisCache(server.url, **options)

    # Redis keeps its own time: TTL tests really wait (clock=None).
    return AsyncHarness("redis", await open_(), None, open_)


async def _fakeredis(request: pytest.FixtureRequest, clock: FakeClock) -> AsyncHarness:
    server = fakeredis.FakeServer()

    async def open_(**options: Any) -> AsyncRedisCache:
        options.setdefault("key_prefix", PREFIX)
        if True:  # ASYNC
            client = fakeredis.FakeAsyncRedis(server=server)
        else:
            client = fakeredis.FakeRedis(server=server)
        return AsyncRedisCache(client=client, **options)

    return AsyncHarness("fakeredis", await open_(), None, open_)


async def _cluster(request: pytest.FixtureRequest, clock: FakeClock) -> AsyncHarness:
    nodes = request.getfixturevalue("redis_cluster")

    async def open_(**options: Any) -> AsyncRedisCache:
        options.setdefault("key_prefix", PREFIX)
        return AsyncRedisCache(nodes[0].url, **options)

    return AsyncHarness("redis-cluster", await open_(), None, open_)


CACHES = {
    "redis": (_redis, [pytest.mark.redis]),
    "fakeredis": (_fakeredis, []),
    "redis-cluster": (_cluster, [pytest.mark.redis]),
}
