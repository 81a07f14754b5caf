"""Redis Cluster under a fault: one master frozen (kill -STOP) for less than the cluster node timeout."""

from __future__ import annotations

import asyncio
import gc
import time
import warnings

import pytest
import redis

from kvstore import BackendUnavailableError
from kvstore.redis import AsyncRedisCache, RedisCache
from kvstore.redis._common import namespace
from tests.fixtures_redis import RedisServer

pytestmark = pytest.mark.redis


def _key_on(node: RedisServer, store_prefix: str) -> str:
    """A key whose slot the given master serves."""
    raw = redis.Redis(host="127.0.0.1", port=node.port)
    try:
        for i in range(10_000):
            key = f"k{i}"
            slot = int(raw.execute_command("CLUSTER", "KEYSLOT", namespace(store_prefix) + key))
            owner = raw.execute_command("CLUSTER", "NODES").decode()
            for line in owner.splitlines():
                fields = line.split()
                if f":{node.port}@" not in fields[1] or "master" not in fields[2]:
                    continue
                for span in fields[8:]:
                    lo, _, hi = span.partition("-")
                    if int(lo) <= slot <= int(hi or lo):
                        return key
    finally:
        raw.close()
    raise AssertionError("no key found for the node")


def _collect_dropped_connections() -> None:
    """redis-py's sync RedisCluster drops node connections it replaces after a timeout without
    closing them (an upstream leak); collect them here so their ResourceWarning cannot surface,
    as an error, inside some later test."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()


def test_frozen_master_fails_fast_then_recovers(redis_cluster: list[RedisServer]) -> None:
    """A get routed to a frozen master raises BackendUnavailableError within the timeout; after CONT it works."""
    node = redis_cluster[1]
    store = RedisCache(redis_cluster[0].url, key_prefix="cfault:", socket_timeout=0.3)
    key = _key_on(node, "cfault:")
    try:
        store.set(key, 1)
        node.stop()
        try:
            start = time.monotonic()
            with pytest.raises(BackendUnavailableError):
                store.get(key)
            elapsed = time.monotonic() - start
        finally:
            node.cont()
        assert elapsed < 1.0, elapsed
        deadline = time.monotonic() + 5
        while True:
            try:
                assert store.get(key) == 1
                break
            except BackendUnavailableError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
    finally:
        store.clear()
        store.close()
        _collect_dropped_connections()


async def test_frozen_master_fails_fast_then_recovers_async(redis_cluster: list[RedisServer]) -> None:
    """The async cluster store fails fast on a frozen master and serves again once it resumes."""
    node = redis_cluster[2]
    store = AsyncRedisCache(redis_cluster[0].url, key_prefix="cfault-a:", socket_timeout=0.3)
    key = _key_on(node, "cfault-a:")
    try:
        await store.set(key, 1)
        node.stop()
        try:
            start = time.monotonic()
            with pytest.raises(BackendUnavailableError):
                await store.get(key)
            elapsed = time.monotonic() - start
        finally:
            node.cont()
        assert elapsed < 1.0, elapsed
        deadline = time.monotonic() + 5
        while True:
            try:
                assert await store.get(key) == 1
                break
            except BackendUnavailableError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.05)
    finally:
        await store.clear()
        await store.aclose()
