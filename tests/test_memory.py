"""Memory-backend specifics beyond the contract: bounds, sweeping, threads."""

from __future__ import annotations

import threading

import pytest

from kvstore import MemoryCache, MemoryDatabase
from kvstore.memory._keyspace import MemoryKeyspace
from tests.clock import FakeClock


def test_lru_eviction_bounds_the_cache() -> None:
    """Past max_entries the least recently used key is evicted; a read refreshes a key."""
    cache = MemoryCache(max_entries=3)
    cache.set("a", 1)
    cache.set("b", 2)
    cache.set("c", 3)
    assert cache.get("a") == 1  # a is now most recent
    cache.set("d", 4)
    assert cache.get("b") is None
    assert sorted(cache.keys()) == ["a", "c", "d"]


def test_expired_entries_are_swept_without_reads() -> None:
    """Expired entries are removed by the store itself, so memory does not grow."""
    clock = FakeClock()
    space = MemoryKeyspace(backend="memory", clock=clock)
    for i in range(1000):
        space.set(f"k{i}", b"%d" % i, 1000, False)
    clock.advance(2)
    space.set("trigger", b"1", None, False)  # any write runs a due sweep
    assert len(space._data) == 1
    assert len(space._expiry) == 0


def test_sweep_heap_stays_bounded_when_keys_are_rewritten() -> None:
    """Rewriting one key with a TTL many times does not grow the expiry heap without limit."""
    clock = FakeClock()
    space = MemoryKeyspace(backend="memory", clock=clock)
    for i in range(20_000):
        space.set("same", b"%d" % i, 3_600_000, False)
    assert len(space._heap) <= 2 * len(space._expiry) + 1025


def test_threads_appending_lose_nothing() -> None:
    """8 threads x 500 appends leave exactly 4000 items, each thread's items in order."""
    database = MemoryDatabase()

    def writer(n: int) -> None:
        for i in range(500):
            database.append("h", [n, i])

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    items = database.get_range("h", 0, -1)
    assert len(items) == 4000
    for n in range(8):
        assert [i for w, i in items if w == n] == list(range(500))


def test_bad_range_indexes() -> None:
    """get_range rejects non-integer indexes."""
    database = MemoryDatabase()
    database.append("h", 1)
    with pytest.raises(TypeError):
        database.get_range("h", 0, "1")  # type: ignore[arg-type]  # the point of the test
    with pytest.raises(TypeError):
        database.get_range("h", True, 1)


def test_idempotency_ids_are_bounded_and_expire() -> None:
    """The memory keyspace keeps at most max_ids ids (oldest dropped first) and forgets those past the window."""
    clock = FakeClock()
    space = MemoryKeyspace(backend="memory", clock=clock, max_ids=3, idempotency_window=10)
    for i in range(4):
        assert space.extend("h", [b"%d" % i], f"id{i}") == i + 1
    assert len(space._ids) == 3
    assert space.extend("h", [b"0"], "id0") == 5  # the oldest was dropped: applied again
    assert space.extend("h", [b"3"], "id3") == 4  # still remembered
    clock.advance(11)
    space.sweep()
    assert len(space._ids) == 0
