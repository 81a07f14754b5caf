"""Chat histories on the manager's database tier take the one-pass path (``get_range_json`` /
``extend_json``) through the failover and the instrumented wrappers, healthy and in an outage.

The first part runs on in-process stores (memory primary and fallback, a real journal file);
the last test runs a conversation through `AsyncStorageManager` on a throwaway PostgreSQL
that dies mid-conversation and comes back.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest

from kvstore import (
    AsyncChatHistory,
    AsyncMemoryDatabase,
    AsyncStorageManager,
    BackendUnavailableError,
    ChatHistory,
    StorageManager,
    WrongTypeError,
)
from kvstore._resilience.breaker import BreakerPolicy, BreakerState, CircuitBreaker
from kvstore._resilience.failover_async import AsyncFailoverDatabase
from kvstore.base_async import AsyncDatabase
from tests.test_degraded_mode import _pg, _probe_soon


class _DecodedOnly(AsyncMemoryDatabase):
    """A store with the decoded list calls only (as a third-party backend may be)."""

    async def get_range_json(self, key: str, start: int, end: int) -> None:
        return None

    async def extend_json(self, key: str, items: list[bytes], *, idempotency_id: str | None = None) -> None:
        return None


def _failover(tmp_path: Path, primary: AsyncDatabase, threshold: int = 1) -> AsyncFailoverDatabase:
    return AsyncFailoverDatabase(
        primary,
        AsyncMemoryDatabase(),
        journal_path=tmp_path / "journal.db",
        breaker=CircuitBreaker(BreakerPolicy(failure_threshold=threshold, probe_interval=60)),
    )


def _tripwire(db: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the decoded list calls of ``db`` fail the test: the history must not need them."""

    async def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the decoded path was taken")

    for name in ("get_range", "append", "extend"):
        monkeypatch.setattr(db, name, refuse)


def _kinds(db: AsyncFailoverDatabase) -> list[str]:
    assert db.journal is not None
    return [entry.kind for entry in db.journal.pending()]


async def test_healthy_failover_serves_the_one_pass_calls_from_the_primary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The primary's stored bytes come back as they are; writes store the caller's bytes; no journal."""
    primary = AsyncMemoryDatabase()
    db = _failover(tmp_path, primary)
    assert await db.extend_json("l", [b'{"a":1}', b"[2]"]) == 2
    assert await db.extend_json("l", [b'"x"'], idempotency_id="once") == 3
    assert await db.extend_json("l", [b'"x"'], idempotency_id="once") == 3  # a retry: stored once
    assert await db.get_range_json("l", 0, -1) == [b'{"a":1}', b"[2]", b'"x"']
    assert await primary.get_range("l", 0, -1) == [{"a": 1}, [2], "x"]
    assert await db.get_range_json("missing", 0, -1) == []
    await db.set("v", 1)
    with pytest.raises(WrongTypeError):
        await db.get_range_json("v", 0, -1)
    with pytest.raises(WrongTypeError):
        await db.extend_json("v", [b"1"])
    _tripwire(db, monkeypatch)
    history: AsyncChatHistory[Any] = AsyncChatHistory(db, "c")
    assert await history.add({"role": "user", "content": "hi"}, id="t1") == 0
    assert await history.extend([{"role": "assistant", "content": "a"}, {"role": "user", "content": "b"}]) == range(
        1, 3
    )
    assert [m.content for m in await history.last(20)] == ["hi", "a", "b"]
    assert not (tmp_path / "journal.db").exists()
    await db.aclose()


async def test_a_primary_without_the_one_pass_calls_gets_decoded_values(tmp_path: Path) -> None:
    """A primary answering None: the failover writes decoded values in the same call (one id), reads fall back."""
    primary = _DecodedOnly()
    db = _failover(tmp_path, primary)
    assert await db.extend_json("l", [b'{"a":1}'], idempotency_id="i1") == 1
    assert await db.extend_json("l", [b'{"a":1}'], idempotency_id="i1") == 1
    assert await db.get_range_json("l", 0, -1) is None
    history: AsyncChatHistory[Any] = AsyncChatHistory(db, "c")
    await history.add({"role": "user", "content": "hi"}, id="t1")
    await history.add({"role": "user", "content": "hi"}, id="t1")
    assert [m.content for m in await history.last(5)] == ["hi"]
    assert await primary.get_range("l", 0, -1) == [{"a": 1}]
    await db.aclose()


async def test_outage_writes_are_journaled_and_reads_answer_only_the_truth(tmp_path: Path) -> None:
    """During an outage extend_json journals like extend (ids kept), get_range_json answers the journal's
    tail as JSON or raises; the failback replays each write once."""
    primary = AsyncMemoryDatabase()
    db = _failover(tmp_path, primary)
    history: AsyncChatHistory[Any] = AsyncChatHistory(db, "c")
    for i in range(3):
        await history.add({"role": "user", "content": f"m{i}"}, id=f"m{i}")
    db.breaker.trip("outage for the test")
    assert await history.add({"role": "user", "content": "o1"}, id="o1") is None
    assert await history.add({"role": "user", "content": "o1"}, id="o1") is None  # a retry
    assert await history.extend([{"role": "user", "content": "o2"}, {"role": "user", "content": "o3"}]) is None
    assert _kinds(db) == ["append", "append"]  # the retry of o1 is known to the journal
    assert [m.content for m in await history.last(3)] == ["o1", "o2", "o3"]
    raw = await db.get_range_json(history.key, -2, -1)
    assert raw is not None
    assert [orjson.loads(item)["content"] for item in raw] == ["o2", "o3"]  # the journal's items as JSON
    assert [m.content for m in await history.last(2)] == ["o2", "o3"]
    with pytest.raises(BackendUnavailableError, match="truthfully"):
        await history.last(10)  # reaches messages only the primary has
    with pytest.raises(BackendUnavailableError, match="truthfully"):
        await db.get_range_json(history.key, 0, -1)
    await db.delete("gone")
    assert await db.get_range_json("gone", 0, -1) == []  # deleted in this outage: truly empty
    await db.set("value", 1)
    with pytest.raises(WrongTypeError):
        await db.get_range_json("value", 0, -1)
    assert len(await primary.get_range(history.key, 0, -1)) == 3  # nothing reached the primary
    # A late retry of a write the primary applied before the outage: journaled (only the primary
    # knows its id), then dropped by the primary's id check on replay.
    assert await history.add({"role": "user", "content": "m0"}, id="m0") is None
    _probe_soon(db)
    assert [m.content for m in await history.last(20)] == ["m0", "m1", "m2", "o1", "o2", "o3"]
    assert db.breaker.state is BreakerState.CLOSED
    assert await history.count() == 6
    assert await history.add({"role": "user", "content": "o1"}, id="o1") == 3  # its replayed position
    await db.aclose()


async def test_a_failing_read_counts_once_against_the_breaker(tmp_path: Path) -> None:
    """One `last` on an unavailable primary is one failure (no second count from a decoded retry)."""
    primary = AsyncMemoryDatabase()
    db = _failover(tmp_path, primary, threshold=2)
    history: AsyncChatHistory[Any] = AsyncChatHistory(db, "c")
    await history.add({"role": "user", "content": "m0"})
    assert len(await history.last(5)) == 1  # the history now knows it has no trim offset: one read per `last`

    async def down(*args: Any, **kwargs: Any) -> Any:
        raise BackendUnavailableError("refused", backend="memory")

    primary._get_range = down  # type: ignore[method-assign]  # the raw hook: an unavailable server
    with pytest.raises(BackendUnavailableError, match="refused"):
        await history.last(5)
    assert db.breaker.state is BreakerState.CLOSED  # one failure of two
    assert db.breaker._failures == 1


def test_counted_tiers_count_one_operation_per_history_call(tmp_path: Path) -> None:
    """StorageManager(stats=True): add counts one append, extend one extend, last one get_range (the failover's
    one-pass calls are counted once, as the decoded ones were)."""
    config = {"cache": {"type": "memory"}, "database": {"type": "sqlite", "path": str(tmp_path / "db.sqlite")}}
    with StorageManager(config, stats=True) as storage:
        history = ChatHistory(storage.database, "c")
        history.add({"role": "user", "content": "hi"})
        history.extend([{"role": "user", "content": "a"}, {"role": "user", "content": "b"}])
        assert [m.content for m in history.last(20)] == ["hi", "a", "b"]
        history.last(20)
        ops = storage.stats().database.store.operations
        # ``get``: the first read's look for a kvstore 0.1 trim offset.
        assert ops == {"append": 1, "extend": 1, "get_range": 2, "get": 1}


# --- a real PostgreSQL that dies mid-conversation ------------------------------------------


async def _wait_until_up(db: AsyncFailoverDatabase) -> None:
    deadline = time.monotonic() + 30.0
    while True:
        try:
            await db.primary.ping()
            return
        except BackendUnavailableError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)


@pytest.mark.postgres
@pytest.mark.slow
async def test_history_on_the_manager_tier_through_a_postgres_outage(
    owned_postgres: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Healthy: one pass, no decoded call. Server killed: adds are journaled (retries once), reads
    answer the outage tail or raise. Server back: the journal replays once, in order."""
    config = _pg(owned_postgres.url, tmp_path, probe_interval=60, failure_threshold=2)
    config["database"]["key_prefix"] = f"c{uuid.uuid4().hex[:6]}:"
    async with AsyncStorageManager(config) as storage:
        db = storage.database
        assert isinstance(db, AsyncFailoverDatabase)
        history: AsyncChatHistory[Any] = AsyncChatHistory(db, "conv")
        with monkeypatch.context() as patch:
            _tripwire(db, patch)
            for i in range(5):
                assert await history.add({"role": "user", "content": f"m{i}"}, id=f"m{i}") == i
            assert [m.content for m in await history.last(20)] == [f"m{i}" for i in range(5)]
        await asyncio.to_thread(owned_postgres.pg_ctl, "-m", "immediate", "-w", "stop")
        with pytest.raises(BackendUnavailableError):
            await history.last(3)  # the first failure of two: raised, not diverted
        assert db.breaker.state is BreakerState.CLOSED
        assert await history.add({"role": "user", "content": "o1"}, id="o1") is None  # opens it: journaled
        assert db.breaker.state is BreakerState.OPEN
        assert await history.add({"role": "user", "content": "o2"}, id="o2") is None
        assert await history.add({"role": "user", "content": "o2"}, id="o2") is None  # a retry
        assert await history.extend([{"role": "user", "content": "o3"}, {"role": "user", "content": "o4"}]) is None
        assert _kinds(db) == ["append", "append", "append"]  # the retry of o2 is known to the journal
        assert [m.content for m in await history.last(4)] == ["o1", "o2", "o3", "o4"]
        with pytest.raises(BackendUnavailableError, match="truthfully"):
            await history.last(10)
        await asyncio.to_thread(owned_postgres.start)
        await _wait_until_up(db)
        _probe_soon(db)
        expected = [f"m{i}" for i in range(5)] + ["o1", "o2", "o3", "o4"]
        assert [m.content for m in await history.last(20)] == expected  # probes, replays, fails back
        assert db.breaker.state is BreakerState.CLOSED
        assert await history.add({"role": "user", "content": "o2"}, id="o2") == 6  # replayed once
        assert await history.count() == 9
        assert [m.content for m in await history.last(20)] == expected
