"""`publish` / `subscribe` on every cache backend (the cluster is left out: not supported yet)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from kvstore import InvalidKeyError
from kvstore.errors import ClosedError, ConfigError
from tests._async.backends import CACHES, AsyncHarness
from tests._async.conftest import _harness, _params

PUBSUB = {name: entry for name, entry in CACHES.items() if name != "redis-cluster"}


@pytest.fixture(params=_params(PUBSUB, "cache"))
async def cache(request: pytest.FixtureRequest) -> AsyncIterator[AsyncHarness]:
    async for harness in _harness(request):
        yield harness


async def next_message(subscription: Any) -> Any:
    async for message in subscription:
        return message
    raise AssertionError("a subscription never ends")


async def test_subscribers_receive_published_json_in_order(cache: AsyncHarness) -> None:
    first = await cache.store.subscribe("news")
    second = await cache.store.subscribe("news")
    try:
        messages: list[Any] = [{"a": [1, 2]}, "text ✓", 3, None]
        for message in messages:
            assert await cache.store.publish("news", message) == 2
        assert [await next_message(first) for _ in messages] == messages
        assert [await next_message(second) for _ in messages] == messages
    finally:
        await first.aclose()
        await second.aclose()


async def test_publish_without_subscribers_reaches_nobody_and_close_unsubscribes(cache: AsyncHarness) -> None:
    assert await cache.store.publish("empty", 1) == 0
    async with await cache.store.subscribe("empty") as subscription:
        assert await cache.store.publish("empty", 2) == 1
        assert await next_message(subscription) == 2
    await subscription.aclose()  # idempotent
    deadline = time.monotonic() + 5
    while await cache.store.publish("empty", 3) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)  # Redis sees the unsubscribe asynchronously
    assert await cache.store.publish("empty", 3) == 0


async def test_channels_live_in_the_store_namespace(cache: AsyncHarness) -> None:
    other = await cache.sibling(key_prefix="other-namespace:")
    async with await other.subscribe("shared") as theirs, await cache.store.subscribe("shared") as ours:
        assert await cache.store.publish("shared", "mine") == 1
        assert await other.publish("shared", "theirs") == 1
        assert await next_message(ours) == "mine"
        assert await next_message(theirs) == "theirs"


async def test_channel_names_follow_the_key_rules(cache: AsyncHarness) -> None:
    with pytest.raises(InvalidKeyError):
        await cache.store.publish("", 1)
    with pytest.raises(InvalidKeyError):
        await cache.store.subscribe("bad\x00name")


async def test_pubsub_after_close_raises_closed(cache: AsyncHarness) -> None:
    store = await cache._open()  # not a sibling: the harness would clear it after the test
    await store.aclose()
    with pytest.raises(ClosedError):
        await store.publish("news", 1)
    with pytest.raises((ClosedError, ConfigError)):
        await store.subscribe("news")
