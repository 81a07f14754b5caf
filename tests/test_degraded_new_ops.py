"""incr, delete_many, get(touch=) and trim through the failover: healthy, journaled, replayed, conflicts, cancellation.

The first part runs on in-process stores (a memory primary and fallback, a real journal
file); the second on real PostgreSQL / SQLite primaries with the outage helpers of
``tests/test_degraded_mode.py``. The PostgreSQL and SQLite tests whose healthy path,
fallback mirror or replay calls those backends' new raw hooks (``_incr``,
``_delete_many``, ``_get_touch``, ``_trim``) pass once those backends implement them.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from kvstore import (
    AsyncMemoryDatabase,
    BackendUnavailableError,
    MemoryCache,
    MemoryDatabase,
    StorageManager,
    WrongTypeError,
)
from kvstore._core.items import LowerBound
from kvstore._resilience.breaker import BreakerPolicy, BreakerState, CircuitBreaker
from kvstore._resilience.failover import FailoverCache, FailoverDatabase
from kvstore._resilience.failover_async import AsyncFailoverDatabase
from kvstore._resilience.records import RECORDS, decode_record
from tests.test_degraded_mode import _failover, _primary_config, _probe_soon


def _database(tmp_path: Path, primary: MemoryDatabase | None = None) -> FailoverDatabase:
    return FailoverDatabase(
        primary or MemoryDatabase(),
        MemoryDatabase(),
        journal_path=tmp_path / "journal.db",
        breaker=CircuitBreaker(BreakerPolicy(failure_threshold=1, probe_interval=60)),
    )


def _cache(primary: MemoryCache, **options: Any) -> FailoverCache:
    return FailoverCache(
        primary, MemoryCache(), breaker=CircuitBreaker(BreakerPolicy(failure_threshold=1, probe_interval=60)), **options
    )


def _kinds(db: FailoverDatabase) -> list[str]:
    assert db.journal is not None
    return [entry.kind for entry in db.journal.pending()]


# --- healthy path: delegated to the primary ---------------------------------------------


def test_healthy_new_operations_run_on_the_primary_and_write_nothing_locally(tmp_path: Path) -> None:
    """With the primary up, incr/delete_many/get(touch=)/trim are the primary's own answers; no journal is made."""
    primary = MemoryDatabase()
    db = _database(tmp_path, primary)
    assert db.incr("n") == 1
    assert db.incr("n", 41) == 42
    db.mset({"a": 1, "b": 2})
    assert db.delete_many(["a", "b", "a", "missing"]) == 2
    db.set("s", "v", 100)
    assert db.get("s", touch=5) == "v"
    ttl = primary.ttl("s")
    assert ttl is not None
    assert 4 < ttl <= 5
    db.extend("l", range(10))
    assert db.trim("l", 2, -3) == 4
    assert primary.get_range("l", 0, -1) == [2, 3, 4, 5, 6, 7]
    assert primary.get("n") == 42
    assert not (tmp_path / "journal.db").exists()
    with pytest.raises(WrongTypeError):
        db.incr("s")
    with pytest.raises(WrongTypeError):
        db.trim("s", 0, 1)
    db.close()


def test_healthy_cache_new_operations_run_on_the_primary() -> None:
    """The cache failover delegates incr, delete_many and get(touch=) to the primary while it is up."""
    primary = MemoryCache()
    cache = _cache(primary)
    assert cache.incr("hits", 3) == 3
    cache.set("x", 1, 100)
    assert cache.get("x", touch=2) == 1
    ttl = primary.ttl("x")
    assert ttl is not None
    assert ttl <= 2
    assert cache.delete_many(["x", "hits", "nope"]) == 2
    assert primary.keys() == []
    cache.close()


# --- outage: journaled as typed records, replayed on failback ---------------------------


def test_outage_incr_counts_what_the_outage_knows_and_replays_the_result(tmp_path: Path) -> None:
    """incr of a key the outage set or deleted is computed from the journal, keeps the TTL, and replays exactly."""
    primary = MemoryDatabase()
    primary.set("n", 1000)
    db = _database(tmp_path, primary)
    db.breaker.trip("outage for the test")
    db.set("n", 10, 100)
    assert db.incr("n") == 11
    assert db.incr("n", -20) == -9
    db.delete("fresh")
    assert db.incr("fresh", 5) == 5
    assert db.get("n") == -9
    ttl = db.ttl("n")
    assert ttl is not None
    assert 90 < ttl <= 100  # an existing key keeps its TTL
    assert db.ttl("fresh") is None  # a new one has none
    assert _kinds(db) == ["set", "incr", "incr", "delete", "incr"]
    db._failback()
    assert db.breaker.state is BreakerState.CLOSED
    assert primary.get("n") == -9
    assert primary.get("fresh") == 5
    primary_ttl = primary.ttl("n")
    assert primary_ttl is not None
    assert 90 < primary_ttl <= 100
    db.close()


def test_outage_incr_of_a_key_only_the_primary_knows_is_refused(tmp_path: Path) -> None:
    """incr of a key not written during the outage raises BackendUnavailableError and journals nothing."""
    primary = MemoryDatabase()
    primary.set("n", 7)
    db = _database(tmp_path, primary)
    db.breaker.trip("outage for the test")
    db.set("other", 1)
    with pytest.raises(BackendUnavailableError, match="only the primary knows"):
        db.incr("n")
    assert _kinds(db) == ["set"]
    db.degraded_reads = "fallback"  # answering reads from the fallback does not make a count knowable
    with pytest.raises(BackendUnavailableError, match="only the primary knows"):
        db.incr("n")
    assert _kinds(db) == ["set"]
    assert db.fallback is not None
    assert db.fallback.get("n") is None
    db.close()


def test_outage_incr_of_a_non_integer_a_list_or_past_64_bits_raises_and_journals_nothing(tmp_path: Path) -> None:
    """WrongTypeError for a float, a bool, a list key or an overflow, decided from the journal; nothing written."""
    db = _database(tmp_path)
    db.breaker.trip("outage for the test")
    db.mset({"f": 1.5, "b": True, "big": 2**63 - 1})
    db.delete("l")
    db.append("l", 1)
    before = _kinds(db)
    for key in ("f", "b", "l"):
        with pytest.raises(WrongTypeError):
            db.incr(key)
    with pytest.raises(WrongTypeError, match="64-bit"):
        db.incr("big")
    with pytest.raises(TypeError):
        db.incr("big", 1.0)  # type: ignore[arg-type]
    assert _kinds(db) == before
    assert db.get("big") == 2**63 - 1
    db.close()


def test_outage_delete_many_is_one_journal_entry_replayed_key_by_key(tmp_path: Path) -> None:
    """delete_many during an outage: one entry touching every key, read back as absent, replayed onto the primary."""
    primary = MemoryDatabase()
    primary.mset({"a": 1, "b": 2, "keep": 3})
    primary.extend("h", [1, 2])
    db = _database(tmp_path, primary)
    db.breaker.trip("outage for the test")
    db.set("c", 3)
    db.delete("gone")
    # Counted as delete counts: known keys exactly, unknown ones as "may have been there".
    assert db.delete_many(["a", "b", "c", "gone", "h", "a"]) == 4
    assert db.delete_many([]) == 0
    for key in ("a", "b", "c", "gone", "h"):
        assert db.exists(key) is False
    assert db.get_length("h") == 0
    assert _kinds(db) == ["set", "delete", "delete_many"]
    assert db.journal is not None
    (entry,) = [e for e in db.journal.pending() if e.kind == "delete_many"]
    assert entry.data == {"ks": ["a", "b", "c", "gone", "h"]}
    db._failback()
    assert primary.keys() == ["keep"]
    db.close()


def test_outage_get_touch_is_the_degraded_read_plus_a_journaled_expiry(tmp_path: Path) -> None:
    """get(touch=) during an outage: an outage value is returned and re-journaled with its new expiry;
    an unknown key raises; a list raises WrongTypeError; a known-absent key returns None and journals nothing."""
    primary = MemoryDatabase()
    primary.set("old", "pre-outage", 1000)
    db = _database(tmp_path, primary)
    db.breaker.trip("outage for the test")
    db.set("s", {"user": 7}, 1)
    assert db.get("s", touch=50) == {"user": 7}
    ttl = db.ttl("s")
    assert ttl is not None
    assert 45 < ttl <= 50
    with pytest.raises(BackendUnavailableError, match="truthfully"):
        db.get("old", touch=50)
    db.delete("l")
    db.append("l", 1)
    with pytest.raises(WrongTypeError):
        db.get("l", touch=5)
    db.delete("absent")
    assert db.get("absent", touch=5) is None
    assert _kinds(db) == ["set", "set", "delete", "append", "delete"]
    time.sleep(1.1)  # the first set's own TTL has run out: the touched copy decides
    assert db.get("s") == {"user": 7}
    db._failback()
    assert primary.get("s") == {"user": 7}
    primary_ttl = primary.ttl("s")
    assert primary_ttl is not None
    assert 40 < primary_ttl <= 50
    old_ttl = primary.ttl("old")
    assert old_ttl is not None
    assert old_ttl > 900  # the refused touch slid nothing
    db.close()


def test_outage_get_touch_answering_from_the_fallback_journals_an_expire(tmp_path: Path) -> None:
    """With degraded_reads='fallback', get(touch=) reads the fallback and journals an expire that replays."""
    primary = MemoryDatabase()
    db = _database(tmp_path, primary)
    db.breaker.trip("outage for the test")
    db.degraded_reads = "fallback"
    db.set("s", "v")
    assert db.get("s", touch=30) == "v"
    assert db.get("nothing", touch=30) is None
    assert _kinds(db) == ["set", "expire"]
    db._failback()
    ttl = primary.ttl("s")
    assert ttl is not None
    assert 25 < ttl <= 30
    db.close()


def test_outage_trim_of_a_list_the_outage_knows_whole_is_exact_and_replays(tmp_path: Path) -> None:
    """A list deleted then filled in the outage: trim counts exactly, reads back exactly, replays onto the primary."""
    primary = MemoryDatabase()
    primary.extend("h", ["pre"] * 5)
    db = _database(tmp_path, primary)
    db.breaker.trip("outage for the test")
    db.delete("h")
    db.extend("h", range(10))
    removed = db.trim("h", 2, -3)
    assert removed == 4
    assert not isinstance(removed, LowerBound)
    assert db.get_range("h", 0, -1) == [2, 3, 4, 5, 6, 7]
    assert db.get_length("h") == 6
    assert db.trim("h", 5, 1) == 6  # an empty selection removes the list
    assert db.exists("h") is False
    assert db.trim("h", 0, -1) == 0  # a missing list: nothing journaled
    db.extend("h", ["a", "b"])
    db.set("v", 1)
    with pytest.raises(WrongTypeError):
        db.trim("v", 0, 1)
    assert _kinds(db) == ["delete", "append", "trim", "trim", "append", "set"]
    db._failback()
    assert primary.get_range("h", 0, -1) == ["a", "b"]
    db.close()


def test_outage_trim_of_a_list_with_older_items_reads_only_what_it_can_know(tmp_path: Path) -> None:
    """A list holding pre-outage items: a tail trim is known exactly, a head trim makes the list unknown (strict
    reads raise), counts are LowerBounds; the primary ends as the trims say."""
    primary = MemoryDatabase()
    primary.extend("tail", ["p1", "p2", "p3"])
    primary.extend("head", ["p1", "p2", "p3"])
    primary.extend("keep", ["p1", "p2"])
    db = _database(tmp_path, primary)
    db.breaker.trip("outage for the test")
    db.extend("tail", ["o1", "o2", "o3"])
    removed = db.trim("tail", -2, -1)  # inside the known tail: the list is exactly o2, o3
    assert isinstance(removed, LowerBound)
    assert removed == 1
    assert db.get_range("tail", 0, -1) == ["o2", "o3"]
    assert db.get_length("tail") == 2
    db.extend("head", ["o1"])
    assert db.trim("head", 1, -1) == 0  # how many go depends on the primary's part
    with pytest.raises(BackendUnavailableError, match="truthfully"):
        db.get_range("head", -1, -1)
    with pytest.raises(BackendUnavailableError, match="truthfully"):
        db.exists("head")
    db.extend("keep", ["o1", "o2", "o3"])
    db.trim("keep", 0, -2)  # drops the last item; the known tail up to it stays the tail
    assert db.get_range("keep", -2, -1) == ["o1", "o2"]
    with pytest.raises(BackendUnavailableError, match="truthfully"):
        db.get_length("keep")
    assert db.trim("unknown", 0, 1) == 0
    assert isinstance(db.trim("unknown", 0, 1), LowerBound)
    db._failback()
    assert primary.get_range("tail", 0, -1) == ["o2", "o3"]
    assert primary.get_range("head", 0, -1) == ["p2", "p3", "o1"]
    assert primary.get_range("keep", 0, -1) == ["p1", "p2", "o1", "o2"]
    db.close()


def test_an_append_retried_after_a_trim_that_hid_the_list_is_not_shown_twice(tmp_path: Path) -> None:
    """append(id), a trim whose outcome only the primary knows, then the same append again: reads stay strict."""
    primary = MemoryDatabase()
    primary.extend("h", ["p1", "p2"])
    db = _database(tmp_path, primary)
    db.breaker.trip("outage for the test")
    db.append("h", "m", idempotency_id="turn-1")
    db.trim("h", 1, 1)
    db.append("h", "m", idempotency_id="turn-1")  # a retry: applied once, here and on replay
    with pytest.raises(BackendUnavailableError, match="truthfully"):
        db.get_range("h", -1, -1)
    db._failback()
    assert primary.get_range("h", 0, -1) == ["p2"]
    db.close()


def test_every_new_record_round_trips_through_json_and_replays_idempotently(tmp_path: Path) -> None:
    """Each journaled incr/delete_many/touch/trim decodes to an equal record; an incr replayed twice counts once."""
    db = _database(tmp_path)
    db.breaker.trip("outage for the test")
    db.set("n", 1)
    db.incr("n", 2)
    db.get("n", touch=10)
    db.delete_many(["x", "y"])
    db.extend("l", [1, 2, 3])
    db.trim("l", -2, -1)
    assert db.journal is not None
    records = [decode_record(e.kind, e.data) for e in db.journal.pending()]
    assert {"incr", "delete_many", "trim"} <= set(RECORDS)
    for record in records:
        assert decode_record(record.kind, record.to_json()) == record
    once, twice = MemoryDatabase(), MemoryDatabase()
    for record in records:
        record.apply(once)
        if record.kind != "append":  # appends are replayed idempotently by their own id (tested elsewhere)
            record.apply(twice)
        record.apply(twice)  # a replay whose reply was lost is applied again
    assert once.get("n") == twice.get("n") == 3
    assert once.get_range("l", 0, -1) == twice.get_range("l", 0, -1) == [2, 3]
    db.close()


def test_on_outage_fail_refuses_the_new_writes(tmp_path: Path) -> None:
    """on_outage='fail': incr, delete_many, get(touch=) and trim raise during an outage; nothing is journaled."""
    db = FailoverDatabase(
        MemoryDatabase(),
        MemoryDatabase(),
        journal_path=tmp_path / "journal.db",
        breaker=CircuitBreaker(BreakerPolicy(failure_threshold=1, probe_interval=60)),
        on_outage="fail",
    )
    db.breaker.trip("outage for the test")
    for call in (
        lambda: db.incr("n"),
        lambda: db.delete_many(["a"]),
        lambda: db.get("s", touch=5),
        lambda: db.trim("l", 0, 1),
    ):
        with pytest.raises(BackendUnavailableError, match="on_outage"):
            call()
    assert db.journal is None
    db.close()


# --- the cache tier: the cache's own rules ------------------------------------------------


def test_cache_outage_incr_and_delete_many_use_the_fallback_and_are_invalidated_on_failback() -> None:
    """Cache incr counts on the fallback (from 0: a miss is legal); incr'd and deleted keys are invalidated after."""
    primary = MemoryCache()
    primary.mset({"hits": 50, "a": 1, "b": 2, "untouched": 3})
    cache = _cache(primary)
    cache.breaker.trip("outage for the test")
    assert cache.incr("hits") == 1
    assert cache.incr("hits", 4) == 5
    cache.set("a", "outage")
    assert cache.delete_many(["a", "b"]) == 1  # the fallback held only a
    assert cache.fallback.get("hits") == 5
    cache._failback()
    assert cache.breaker.state is BreakerState.CLOSED
    assert primary.get("hits") is None  # invalidated: never the stale 50 next to a count of 5
    assert primary.get("a") is None
    assert primary.get("b") is None
    assert primary.get("untouched") == 3
    assert cache.fallback.keys() == []
    cache.close()


def test_cache_outage_get_touch_is_a_read_of_the_fallback_and_invalidates_nothing() -> None:
    """Cache get(touch=) during an outage slides the fallback's copy only; even on_outage='fail' allows it."""
    primary = MemoryCache()
    primary.set("s", "primary", 100)
    cache = _cache(primary, on_outage="fail")
    cache.breaker.trip("outage for the test")
    assert cache.get("s", touch=5) is None  # a miss: legal for a cache
    cache.fallback.set("t", "fallback", 100)
    assert cache.get("t", touch=5) == "fallback"
    ttl = cache.fallback.ttl("t")
    assert ttl is not None
    assert ttl <= 5
    with pytest.raises(BackendUnavailableError, match="on_outage"):
        cache.incr("n")
    cache._failback()
    assert primary.get("s") == "primary"
    cache.close()


# --- cancellation: both or neither ----------------------------------------------------------


async def _cancel_at_random(calls: list[Any], seed: int) -> int:
    """Start every call as a task, cancel random ones at random points; the number cancelled."""
    rng = random.Random(seed)
    tasks = []
    for call in calls:
        tasks.append(asyncio.ensure_future(call))
        if rng.random() < 0.5:
            await asyncio.sleep(0)
        tasks[rng.randrange(len(tasks))].cancel()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    return sum(isinstance(r, asyncio.CancelledError) for r in results)


async def _settle(database: AsyncFailoverDatabase) -> None:
    await asyncio.sleep(0.2)  # the shielded writes of cancelled callers finish
    async with database._outage_lock:
        pass


async def _async_database(tmp_path: Path, primary: AsyncMemoryDatabase) -> AsyncFailoverDatabase:
    database = AsyncFailoverDatabase(
        primary,
        AsyncMemoryDatabase(),
        journal_path=tmp_path / "journal.db",
        breaker=CircuitBreaker(BreakerPolicy(failure_threshold=1, probe_interval=60)),
    )
    database.breaker.trip("outage for the test")
    return database


async def test_cancelled_outage_incrs_are_journaled_and_mirrored_together_and_replay_exactly(tmp_path: Path) -> None:
    """300 incrs cancelled at random: the journal's count, the fallback's value and the replayed primary agree."""
    primary = AsyncMemoryDatabase()
    database = await _async_database(tmp_path, primary)
    await database.set("n", 0)
    cancelled = await _cancel_at_random([database.incr("n") for _ in range(300)], seed=1)
    await _settle(database)
    assert database.journal is not None
    journaled = sum(e.kind == "incr" for e in database.journal.pending(limit=10_000))
    fallback = database.fallback
    assert fallback is not None
    print(f"\n{cancelled} of 300 incrs cancelled; {journaled} journaled")
    assert cancelled > 30
    assert await fallback.get("n") == journaled == await database.get("n")
    await database._failback()
    assert await primary.get("n") == journaled
    await database.aclose()


async def test_cancelled_outage_delete_many_and_trims_are_both_or_neither(tmp_path: Path) -> None:
    """Cancelled delete_many and trim calls: every one the fallback shows is journaled, and nothing else is."""
    primary = AsyncMemoryDatabase()
    database = await _async_database(tmp_path, primary)
    await database.mset({f"k{i}": i for i in range(200)})
    await database.delete("l")
    await database.extend("l", range(300))
    calls = [database.delete_many([f"k{2 * i}", f"k{2 * i + 1}"]) for i in range(100)]
    calls += [database.trim("l", 1, -1) for _ in range(150)]
    await _cancel_at_random(calls, seed=2)
    await _settle(database)
    assert database.journal is not None
    pending = database.journal.pending(limit=10_000)
    deleted = {key for e in pending if e.kind == "delete_many" for key in e.data["ks"]}
    trims = sum(e.kind == "trim" for e in pending)
    fallback = database.fallback
    assert fallback is not None
    assert set(await fallback.keys("k*")) == {f"k{i}" for i in range(200)} - deleted
    assert await fallback.get_range("l", 0, -1) == list(range(trims, 300))
    assert await database.get_range("l", 0, -1) == list(range(trims, 300))
    assert 0 < trims <= 150
    await database._failback()
    assert set(await primary.keys("k*")) == {f"k{i}" for i in range(200)} - deleted
    assert await primary.get_range("l", 0, -1) == list(range(trims, 300))
    await database.aclose()


async def test_cancelled_outage_touches_leave_the_fallback_with_the_last_journaled_expiry(tmp_path: Path) -> None:
    """get(touch=) cancelled at random: the fallback's TTL is the one of the last journaled touch."""
    primary = AsyncMemoryDatabase()
    database = await _async_database(tmp_path, primary)
    await database.set("s", "v")
    await _cancel_at_random([database.get("s", touch=1000 + 10 * i) for i in range(100)], seed=3)
    await _settle(database)
    assert database.journal is not None
    last = [e for e in database.journal.pending(limit=10_000) if e.data.get("k") == "s"][-1]
    fallback = database.fallback
    assert fallback is not None
    ttl = await fallback.ttl("s")
    assert ttl is not None
    assert abs((last.data["x"] - time.time()) - ttl) < 2
    await database.aclose()


# --- real primaries: replay and conflicts -------------------------------------------------
#
# Postgres (its fallback is SQLite) and SQLite (memory fallback). Marked below: the tests
# that need those backends' new raw hooks.


@pytest.mark.postgres
@pytest.mark.parametrize("kind", ["postgres", "sqlite"])
def test_real_primary_healthy_new_operations(postgres_url: str, tmp_path: Path, kind: str) -> None:
    """Through the manager on a healthy PostgreSQL/SQLite: incr, delete_many, get(touch=), trim.
    (Needs the backend's _incr/_delete_many/_get_touch/_trim hooks.)"""
    with StorageManager(_primary_config(kind, postgres_url, tmp_path)) as storage:
        db = _failover(storage)
        run = uuid.uuid4().hex[:8]
        assert db.incr(f"n-{run}", 2) == 2
        assert db.incr(f"n-{run}") == 3
        db.set(f"s-{run}", "v", 100)
        assert db.get(f"s-{run}", touch=5) == "v"
        ttl = db.ttl(f"s-{run}")
        assert ttl is not None
        assert ttl <= 5
        db.extend(f"l-{run}", range(6))
        assert db.trim(f"l-{run}", 1, -2) == 2
        assert db.get_range(f"l-{run}", 0, -1) == [1, 2, 3, 4]
        assert db.delete_many([f"n-{run}", f"s-{run}", f"l-{run}", f"none-{run}"]) == 3
        assert db.journal is None


@pytest.mark.postgres
@pytest.mark.parametrize("kind", ["postgres", "sqlite"])
def test_real_primary_replays_outage_incr_and_touch(postgres_url: str, tmp_path: Path, kind: str) -> None:
    """Outage incrs and a touch of an outage value replay onto PostgreSQL/SQLite: the primary holds what callers saw."""
    with StorageManager(_primary_config(kind, postgres_url, tmp_path)) as storage:
        db = _failover(storage)
        db.set("n", 1000)
        db.set("s", "session", 1000)
        db.breaker.trip("outage for the test")
        db.set("n", 10)
        assert [db.incr("n") for _ in range(3)] == [11, 12, 13]
        db.delete("c")
        assert db.incr("c", 7) == 7
        db.set("s", "session", 1)
        assert db.get("s", touch=100) == "session"
        time.sleep(1.1)  # the outage set's own TTL has run out; the touch decides
        _probe_soon(db)
        assert db.get("n") == 13  # probes, replays, fails back
        assert db.breaker.state.value == "closed"
        assert db.get("c") == 7
        assert db.get("s") == "session"
        ttl = db.ttl("s")
        assert ttl is not None
        assert 90 < ttl <= 100
        assert storage.health().database.conflicts == 0
        assert storage.health().database.pending_writes == 0


@pytest.mark.postgres
@pytest.mark.parametrize("kind", ["postgres", "sqlite"])
@pytest.mark.parametrize("when", ["after-the-incr", "between-set-and-incr"])
def test_real_primary_incr_on_a_key_another_instance_changed_is_a_conflict(
    postgres_url: str, tmp_path: Path, kind: str, when: str
) -> None:
    """B counted k from its outage set; A wrote k meanwhile: B's set and incr are conflicts, k keeps A's write."""
    base = _primary_config(kind, postgres_url, tmp_path)["database"]
    configs = {
        name: {"cache": {"type": "memory"}, "database": {**base, "state_dir": str(tmp_path / name)}}
        for name in ("a", "b")
    }
    with StorageManager(configs["a"]) as a, StorageManager(configs["b"]) as b:
        a.database.set("k", 0)
        _failover(b).breaker.trip("B lost the primary")
        b.database.set("k", 10)
        if when == "between-set-and-incr":
            time.sleep(0.05)
            a.database.set("k", 100)
            time.sleep(0.05)
            assert b.database.incr("k") == 11  # what B's outage knows; decided by the basis on replay
        else:
            assert b.database.incr("k") == 11
            time.sleep(0.05)
            a.database.set("k", 100)
        _probe_soon(_failover(b))
        assert b.database.get("k") == 100  # probes, replays, fails back
        assert _failover(b).breaker.state.value == "closed"
        journal = _failover(b).journal
        assert journal is not None
        assert [(entry.kind, keys) for entry, keys in journal.conflicts()] == [("set", ["k"]), ("incr", ["k"])]
        assert b.health().database.conflicts == 2


@pytest.mark.postgres
@pytest.mark.parametrize("kind", ["postgres", "sqlite"])
def test_real_primary_replays_delete_many_key_by_key_keeping_conflicts(
    postgres_url: str, tmp_path: Path, kind: str
) -> None:
    """B's outage delete_many replays per key: keys nobody touched are deleted, one A rewrote survives as a conflict.
    (PostgreSQL: needs the SQLite fallback's _delete_many hook.)"""
    base = _primary_config(kind, postgres_url, tmp_path)["database"]
    configs = {
        name: {"cache": {"type": "memory"}, "database": {**base, "state_dir": str(tmp_path / name)}}
        for name in ("a", "b")
    }
    with StorageManager(configs["a"]) as a, StorageManager(configs["b"]) as b:
        a.database.mset({"x": 1, "y": 2, "z": 3})
        _failover(b).breaker.trip("B lost the primary")
        assert b.database.delete_many(["x", "y", "z"]) == 3
        assert b.database.exists("x") is False
        time.sleep(0.05)
        a.database.set("y", "A-newer")
        _probe_soon(_failover(b))
        b.database.exists("probe")  # probes, replays, fails back
        assert _failover(b).breaker.state.value == "closed"
        assert a.database.mget(["x", "y", "z"]) == [None, "A-newer", None]
        journal = _failover(b).journal
        assert journal is not None
        assert [(entry.kind, keys) for entry, keys in journal.conflicts()] == [("delete_many", ["y"])]


@pytest.mark.postgres
@pytest.mark.parametrize("kind", ["postgres", "sqlite"])
def test_real_primary_replays_an_outage_trim(postgres_url: str, tmp_path: Path, kind: str) -> None:
    """An outage trim of a list with pre-outage items replays onto PostgreSQL/SQLite as LTRIM.
    (Needs the primary's _trim hook, and for PostgreSQL the SQLite fallback's.)"""
    with StorageManager(_primary_config(kind, postgres_url, tmp_path)) as storage:
        db = _failover(storage)
        db.extend("h", ["p1", "p2", "p3"])
        db.breaker.trip("outage for the test")
        db.extend("h", ["o1", "o2"])
        removed = db.trim("h", -3, -1)  # removes p1, p2: how many only the primary knows
        assert isinstance(removed, LowerBound)
        assert removed == 0
        assert db.get_range("h", -2, -1) == ["o1", "o2"]  # the tail it kept is known
        with pytest.raises(BackendUnavailableError, match="truthfully"):
            db.get_range("h", 0, -1)
        _probe_soon(db)
        db.exists("probe")  # probes, replays, fails back
        assert db.breaker.state.value == "closed"
        assert db.get_range("h", 0, -1) == ["p3", "o1", "o2"]
        assert storage.health().database.conflicts == 0


@pytest.mark.postgres
@pytest.mark.parametrize("kind", ["postgres", "sqlite"])
def test_real_primary_trim_of_a_list_another_instance_appended_to_is_a_conflict(
    postgres_url: str, tmp_path: Path, kind: str
) -> None:
    """B trimmed h in its outage; A appended to h afterwards: the trim is not replayed (a conflict), A's item stays.
    (PostgreSQL: needs the SQLite fallback's _trim hook.)"""
    base = _primary_config(kind, postgres_url, tmp_path)["database"]
    configs = {
        name: {"cache": {"type": "memory"}, "database": {**base, "state_dir": str(tmp_path / name)}}
        for name in ("a", "b")
    }
    with StorageManager(configs["a"]) as a, StorageManager(configs["b"]) as b:
        a.database.extend("h", [1, 2, 3])
        _failover(b).breaker.trip("B lost the primary")
        b.database.trim("h", 2, -1)
        time.sleep(0.05)
        a.database.append("h", 4)
        _probe_soon(_failover(b))
        b.database.exists("probe")  # probes, replays, fails back
        assert _failover(b).breaker.state.value == "closed"
        assert a.database.get_range("h", 0, -1) == [1, 2, 3, 4]
        journal = _failover(b).journal
        assert journal is not None
        assert [(entry.kind, keys) for entry, keys in journal.conflicts()] == [("trim", ["h"])]


@pytest.mark.postgres
@pytest.mark.parametrize("kind", ["postgres", "sqlite"])
async def test_real_primary_cancelled_outage_incrs_replay_exactly(postgres_url: str, tmp_path: Path, kind: str) -> None:
    """200 outage incrs cancelled at random on PostgreSQL/SQLite: fallback, journal and replayed primary agree."""
    from kvstore import AsyncStorageManager

    async with AsyncStorageManager(_primary_config(kind, postgres_url, tmp_path)) as storage:
        database = storage.database
        assert isinstance(database, AsyncFailoverDatabase)
        database.breaker.trip("outage for the test")
        await database.set("n", 0)
        cancelled = await _cancel_at_random([database.incr("n") for _ in range(200)], seed=4)
        await _settle(database)
        assert database.journal is not None
        journaled = sum(e.kind == "incr" for e in database.journal.pending(limit=10_000))
        fallback = database.fallback
        assert fallback is not None
        assert cancelled > 20
        assert await fallback.get("n") == journaled == await database.get("n")
        database.breaker.policy = BreakerPolicy(failure_threshold=1, probe_interval=0.001)
        await asyncio.sleep(0.01)
        assert await database.get("n") == journaled  # probes, replays, fails back
        assert database.breaker.state.value == "closed"
