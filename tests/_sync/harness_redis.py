# Generated from tests/_async/harness_redis.py by tools/unasync.py: do not edit; edit the async source.
"""Redis harnesses of the contract suite: real Redis, fakeredis and a real 3-master cluster."""

from __future__ import annotations

from typing import Any

import fakeredis
import pytest

from kvstore.redis import RedisCache
from tests._sync.backends import Harness
from tests.clock import FakeClock

# Every harness store lives under this prefix unless a test asks for another one.
# KVSTORE_TEST_REDIS_URL must still name a disposable database: contract tests use
# prefixes such as "a:" and "" (whose clear() removes every key outside a namespace).
PREFIX = "kvstore-test:"


def _redis(request: pytest.FixtureRequest, clock: FakeClock) -> Harness:
    server = request.getfixturevalue("redis_server")

    def open_(**options: Any) -> RedisCache:
        options.setdefault("key_prefix", PREFIX)
        return RedisCache(server.url, **options)

    # Redis keeps its own time: TTL tests really wait (clock=None).
    return Harness("redis", open_(), None, open_)


def _fakeredis(request: pytest.FixtureRequest, clock: FakeClock) -> Harness:
    server = fakeredis.FakeServer()

    def open_(**options: Any) -> RedisCache:
        options.setdefault("key_prefix", PREFIX)
        client = fakeredis.FakeRedis(server=server)
        return RedisCache(client=client, **options)

    return Harness("fakeredis", open_(), None, open_)


def _cluster(request: pytest.FixtureRequest, clock: FakeClock) -> Harness:
    nodes = request.getfixturevalue("redis_cluster")

    def open_(**options: Any) -> RedisCache:
        options.setdefault("key_prefix", PREFIX)
        return RedisCache(nodes[0].url, **options)

    return Harness("redis-cluster", open_(), None, open_)


CACHES = {
    "redis": (_redis, [pytest.mark.redis]),
    "fakeredis": (_fakeredis, []),
    "redis-cluster": (_cluster, [pytest.mark.redis]),
}
