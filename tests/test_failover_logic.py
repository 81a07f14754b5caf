"""Failover bookkeeping on real in-process stores: dead letters, the replay lease, conditional writes, probes."""

from __future__ import annotations

from pathlib import Path

import pytest

from kvstore import BackendUnavailableError, MemoryCache, MemoryDatabase, MissingDependencyError
from kvstore._resilience.breaker import BreakerPolicy, BreakerState, CircuitBreaker
from kvstore._resilience.failover import FailoverCache, FailoverDatabase
from kvstore._resilience.journal import LEASE_SECONDS, Journal
from tests.clock import FakeClock


def _database(tmp_path: Path, primary: MemoryDatabase | None = None) -> FailoverDatabase:
    store = FailoverDatabase(
        primary or MemoryDatabase(),
        MemoryDatabase(),
        journal_path=tmp_path / "journal.db",
        breaker=CircuitBreaker(BreakerPolicy(failure_threshold=1, probe_interval=1.0)),
    )
    return store


def test_a_refused_entry_is_dead_lettered_and_the_rest_replayed(tmp_path: Path) -> None:
    """A journaled append the primary refuses (a value lives there) goes to dead letters; later writes still land."""
    primary = MemoryDatabase()
    primary.set("k", "a value")
    store = _database(tmp_path, primary)
    store.breaker.trip("down for the test")
    store.append("k", 1)  # fine on the fallback, refused by the primary later
    store.set("other", 2)
    store._failback()
    assert store.breaker.state is BreakerState.CLOSED
    assert primary.get("other") == 2
    assert primary.get("k") == "a value"
    dead = store.journal.dead_letters()
    assert [(entry.kind, entry.data["k"]) for entry, _ in dead] == [("append", "k")]
    assert "WrongTypeError" in dead[0][1]
    assert len(store.journal) == 0
    store.close()


def test_one_replayer_at_a_time_on_a_shared_journal(tmp_path: Path) -> None:
    """Two journals on one file: the second cannot replay while the first holds the lease."""
    a, b = Journal(tmp_path / "j.db"), Journal(tmp_path / "j.db")
    assert a.acquire_replay()
    assert a.acquire_replay()  # renewing is fine
    assert not b.acquire_replay()
    a.release_replay()
    assert b.acquire_replay()
    b.close()
    a.close()


def test_a_dead_replayer_loses_its_lease(tmp_path: Path) -> None:
    """A lease whose holder stopped heart-beating is taken over."""
    a, b = Journal(tmp_path / "j.db"), Journal(tmp_path / "j.db")
    assert a.acquire_replay()
    with b._lock:
        b._conn.execute("UPDATE replayer SET heartbeat = heartbeat - ?", (LEASE_SECONDS + 1,))
    assert b.acquire_replay()
    a.close()
    b.close()


def test_failback_waits_while_another_process_replays(tmp_path: Path) -> None:
    """A tier whose journal is being replayed elsewhere stays on its fallback and tries again later."""
    store = _database(tmp_path)
    store.breaker.trip("down")
    store.append("h", 1)
    other = Journal(tmp_path / "journal.db")
    assert other.acquire_replay()
    with pytest.raises(BackendUnavailableError, match="another process"):
        store._failback()
    assert store.breaker.state is not BreakerState.CLOSED
    other.release_replay()
    store._failback()
    assert store.primary.get_range("h", 0, -1) == [1]
    other.close()
    store.close()


@pytest.mark.parametrize("tier", ["cache", "database"])
def test_conditional_writes_are_never_buffered(tmp_path: Path, tier: str) -> None:
    """set(only_if_absent=True) during an outage raises instead of deciding on the fallback's partial data."""
    if tier == "cache":
        store: FailoverCache | FailoverDatabase = FailoverCache(
            MemoryCache(), MemoryCache(), breaker=CircuitBreaker(BreakerPolicy(failure_threshold=1))
        )
    else:
        store = _database(tmp_path)
    assert store.set("lock", "owner-A", only_if_absent=True) is True
    store.breaker.trip("down")
    with pytest.raises(BackendUnavailableError, match="conditional"):
        store.set("lock", "owner-B", only_if_absent=True)
    store.set("plain", 1)  # unconditional writes are still served
    store.close()


def test_a_primary_that_cannot_even_be_opened_never_reaches_callers() -> None:
    """A probe that fails to reopen the primary (e.g. a missing extra) keeps serving from the fallback silently."""
    clock = FakeClock()

    def reopen() -> MemoryCache:
        raise MissingDependencyError("redis", "redis", "redis")

    store = FailoverCache(
        None,
        MemoryCache(),
        breaker=CircuitBreaker(BreakerPolicy(failure_threshold=1, probe_interval=1.0), clock=clock),
        reopen=reopen,
    )
    store.breaker.trip("never connected")
    for _ in range(5):
        clock.advance(1.5)
        store.set("k", 1)
        assert store.get("k") == 1
    assert store.active == "memory"
    assert "kvstore-sdk[redis]" in (store.breaker.last_error or "")
    store.close()


def test_iter_keys_streams_from_the_active_store(tmp_path: Path) -> None:
    """iter_keys on a failover tier streams from whichever store is serving."""
    store = _database(tmp_path)
    store.mset({f"k{i}": i for i in range(10)})
    assert sorted(store.iter_keys("k*")) == sorted(f"k{i}" for i in range(10))
    store.breaker.trip("down")
    store.set("during", 1)
    # Strict degraded reads: listing keys needs the primary (it alone knows the older keys).
    with pytest.raises(BackendUnavailableError, match="listing keys"):
        list(store.iter_keys("*"))
    store.degraded_reads = "fallback"
    assert list(store.iter_keys("*")) == ["during"]
    store.close()
