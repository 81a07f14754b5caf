"""stats(): operation counts where a store is counted, a tier's failover state and journal counts everywhere."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from kvstore import (
    AsyncMemoryCache,
    AsyncMemoryDatabase,
    AsyncStorageManager,
    BackendUnavailableError,
    MemoryCache,
    MemoryDatabase,
    SqliteDatabase,
    StorageManager,
    StorageStats,
    StoreStats,
    WrongTypeError,
    instrument,
)
from kvstore._resilience.breaker import BreakerPolicy
from kvstore._resilience.failover import FailoverDatabase

MEMORY = {"cache": {"type": "memory"}, "database": {"type": "memory"}}


def _sqlite_with_fallback(tmp_path: Path) -> dict[str, Any]:
    """A SQLite primary (falls back to memory) whose breaker opens at the first unavailability."""
    return {
        "cache": {"type": "memory"},
        "database": {
            "type": "sqlite",
            "path": str(tmp_path / "primary.db"),
            "state_dir": str(tmp_path / "state"),
            "failure_threshold": 1,
            "probe_interval": 60,
        },
    }


def _failover(manager: Any) -> Any:
    """The manager's database tier itself (under any counting wrapper)."""
    store = manager._tiers["database"].store
    assert isinstance(store, FailoverDatabase)
    return store


def test_a_store_nobody_counts_reports_no_counts() -> None:
    """Every store has stats(); an uncounted one says counting=False and 0s (nothing was added to its calls)."""
    cache = MemoryCache()
    cache.set("a", 1)
    cache.get("a")
    assert cache.stats() == StoreStats(backend="memory", tier="cache")
    assert cache.stats().calls == 0
    assert AsyncMemoryDatabase().stats().tier == "database"
    assert MemoryDatabase().stats().as_dict()["counting"] is False


def test_stats_only_wrapper_counts_calls_hits_misses_and_errors() -> None:
    """instrument(stats_only=True) counts each call, failed ones too, and per-key hits/misses of get and mget."""
    db = instrument(MemoryDatabase(), stats_only=True)
    db.set("v", 1)
    assert db.get("v") == 1
    assert db.get("absent") is None
    assert db.mget(["v", "absent", "x"]) == [1, None, None]
    db.append("list", 1)
    with pytest.raises(WrongTypeError):
        db.append("v", 2)  # a value, not a list
    stats = db.stats()
    assert stats.counting
    assert stats.operations == {"append": 2, "get": 2, "mget": 1, "set": 1}
    assert stats.errors == {"append": 1}
    assert (stats.hits, stats.misses) == (2, 3)
    assert stats.calls == 6
    assert (stats.backend, stats.tier) == ("memory", "database")


async def test_async_stats_only_wrapper_counts_too() -> None:
    """The async wrapper counts the same way, get(touch=) and iter_keys included."""
    cache = instrument(AsyncMemoryCache(), stats_only=True)
    await cache.set("s", 1, ttl=10)
    assert await cache.get("s", touch=10) == 1
    assert await cache.get("gone") is None
    assert [k async for k in cache.iter_keys()] == ["s"]
    stats = cache.stats()
    assert stats.operations == {"get": 2, "iter_keys": 1, "set": 1}
    assert (stats.hits, stats.misses, stats.errors) == (1, 1, {})
    await cache.aclose()


def test_stats_only_never_imports_opentelemetry() -> None:
    """Counting needs no OpenTelemetry: a stats-only store and a counting manager leave it unimported."""
    code = (
        "import sys, kvstore\n"
        "db = kvstore.instrument(kvstore.MemoryDatabase(), stats_only=True); db.set('k', 1)\n"
        "m = kvstore.StorageManager({'cache': {'type': 'memory'}, 'database': {'type': 'memory'}}, stats=True)\n"
        "with m as s:\n"
        "    s.cache.get('k')\n"
        "    print(m.stats().cache.store.operations, 'opentelemetry' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "{'get': 1} False"


def test_manager_counts_only_when_asked() -> None:
    """By default the manager hands out the stores themselves (no counting cost); stats=True hands out counted ones."""
    with StorageManager(MEMORY) as storage:
        assert type(storage.cache) is MemoryCache  # no wrapper: the hot path is the store's own
        storage.cache.get("k")
        stats = storage.stats()
        assert not stats.cache.store.counting
        assert stats.cache.store.operations == {}
    manager = StorageManager(MEMORY, stats=True)
    with manager as storage:
        storage.cache.set("k", 1)
        storage.cache.get("k")
        storage.database.get("k")
        stats = manager.stats()
    assert isinstance(stats, StorageStats)
    assert stats.cache.store.operations == {"get": 1, "set": 1}
    assert (stats.cache.store.hits, stats.database.store.misses) == (1, 1)
    assert stats.cache.breaker is None  # memory has no fallback chain, hence no breaker
    assert json.loads(json.dumps(stats.as_dict()))["database"]["configured"] == "memory"
    with pytest.raises(BackendUnavailableError, match="not connected"):
        manager.stats()


def test_manager_stats_follow_a_failover_its_journal_and_the_failback(tmp_path: Path) -> None:
    """An outage: breaker open, fallback active, a pending write, a failover; after failback: replayed, 0 pending."""
    manager = StorageManager(_sqlite_with_fallback(tmp_path), stats=True)
    with manager as storage:
        database = _failover(manager)
        storage.database.set("before", 1)
        healthy = manager.stats().database
        assert (healthy.configured, healthy.active, healthy.breaker, healthy.degraded) == (
            "sqlite",
            "sqlite",
            "closed",
            False,
        )
        assert healthy.pending_writes == 0
        assert not (tmp_path / "state").exists()  # stats() created nothing

        database.primary.close()  # the primary becomes unavailable (ClosedError)
        storage.database.set("during", 2)  # opens the breaker, journaled, mirrored on memory
        outage = manager.stats().database
        assert (outage.active, outage.breaker, outage.degraded, outage.pending_writes) == ("memory", "open", True, 1)
        assert (outage.store.failovers, outage.store.failbacks) == (1, 0)
        assert outage.store.operations == {"set": 2}
        assert outage.store.errors == {}  # the outage write was buffered, not refused

        database.primary = SqliteDatabase(tmp_path / "primary.db")  # the primary is back
        database.breaker.policy = BreakerPolicy(failure_threshold=1, probe_interval=0.001)
        time.sleep(0.01)
        assert storage.database.get("during") == 2  # probes, replays, fails back
        after = manager.stats().database
        assert (after.active, after.breaker, after.pending_writes, after.conflicts, after.dead_letters) == (
            "sqlite",
            "closed",
            0,
            0,
            0,
        )
        assert (after.store.failovers, after.store.failbacks, after.store.replayed) == (1, 1, 1)
        assert (after.store.hits, after.store.misses) == (1, 0)


async def test_async_manager_stats(tmp_path: Path) -> None:
    """AsyncStorageManager.stats() and backends.stats() report the same counts, the journal read off the loop."""
    manager = AsyncStorageManager(_sqlite_with_fallback(tmp_path), stats=True)
    async with manager as storage:
        await storage.database.set("k", 1)
        assert await storage.database.get("k") == 1
        stats = await storage.stats()
        assert stats == await manager.stats()
    assert stats.database.store.operations == {"get": 1, "set": 1}
    assert (stats.database.active, stats.database.breaker, stats.database.pending_writes) == ("sqlite", "closed", 0)
    assert stats.cache.store.operations == {}
