# Generated from tests/_async/test_pubsub.py by tools/unasync.py: do not edit; edit the async source.
"""`publish` / `subscribe` on every cache backend (the cluster is left out: not supported yet)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from kvstore import InvalidKeyError
from kvstore.errors import ClosedError, ConfigError
from tests._sync.backends import CACHES, Harness
from tests._sync.conftest import _harness, _params

PUBSUB = {name: entry for name, entry in CACHES.items() if name != "redis-cluster"}


@pytest.fixture(params=_params(PUBSUB, "cache"))
def cache(request: pytest.FixtureRequest) -> Iterator[Harness]:
    yield from _harness(request)


def next_message(subscription: Any) -> Any:
    for message in subscription:
        return message
    raise AssertionError("a subscription never ends")


def test_subscribers_receive_published_json_in_order(cache: Harness) -> None:
    first = cache.store.subscribe("news")
    second = cache.store.subscribe("news")
    try:
        messages: list[Any] = [{"a": [1, 2]}, "text ✓", 3, None]
        for message in messages:
            assert cache.store.publish("news", message) == 2
        assert [next_message(first) for _ in messages] == messages
        assert [next_message(second) for _ in messages] == messages
    finally:
        first.close()
        second.close()


def test_publish_without_subscribers_reaches_nobody_and_close_unsubscribes(cache: Harness) -> None:
    assert cache.store.publish("empty", 1) == 0
    with cache.store.subscribe("empty") as subscription:
        assert cache.store.publish("empty", 2) == 1
        assert next_message(subscription) == 2
    subscription.close()  # idempotent
    deadline = time.monotonic() + 5
    while cache.store.publish("empty", 3) and time.monotonic() < deadline:
        time.sleep(0.05)  # Redis sees the unsubscribe asynchronously
    assert cache.store.publish("empty", 3) == 0


def test_channels_live_in_the_store_namespace(cache: Harness) -> None:
    other = cache.sibling(key_prefix="other-namespace:")
    with other.subscribe("shared") as theirs, cache.store.subscribe("shared") as ours:
        assert cache.store.publish("shared", "mine") == 1
        assert other.publish("shared", "theirs") == 1
        assert next_message(ours) == "mine"
        assert next_message(theirs) == "theirs"


def test_channel_names_follow_the_key_rules(cache: Harness) -> None:
    with pytest.raises(InvalidKeyError):
        cache.store.publish("", 1)
    with pytest.raises(InvalidKeyError):
        cache.store.subscribe("bad\x00name")


def test_pubsub_after_close_raises_closed(cache: Harness) -> None:
    store = cache._open()  # not a sibling: the harness would clear it after the test
    store.close()
    with pytest.raises(ClosedError):
        store.publish("news", 1)
    with pytest.raises((ClosedError, ConfigError)):
        store.subscribe("news")
