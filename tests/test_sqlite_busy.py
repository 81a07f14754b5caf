"""Busy is not an outage: another connection holding the SQLite write lock makes writes wait, then
raise BackendBusyError (never a plain BackendUnavailableError); reads keep working; the loop never stalls."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import apsw
import pytest

from kvstore import StorageManager
from kvstore.errors import BackendBusyError, BackendUnavailableError
from kvstore.sqlite import AsyncSqliteDatabase, SqliteDatabase

pytestmark = pytest.mark.slow

HOLD = 3.0  # seconds another connection keeps the write lock


@pytest.fixture
def path(tmp_path: Path) -> Path:
    """A database file with a value and a list already in it."""
    path = tmp_path / "kv.db"
    with SqliteDatabase(path) as db:
        db.set("v", 0)
        db.extend("h", [0, 1])
    return path


def hold_write_lock(path: Path, seconds: float) -> threading.Thread:
    """Another connection takes the write lock (BEGIN IMMEDIATE) now and commits after ``seconds``.

    Returns the thread that commits; join it to wait for the release.
    """
    conn = apsw.Connection(str(path))
    conn.execute("BEGIN IMMEDIATE")
    conn.execute("UPDATE kvstore_keys SET value = '7' WHERE key = 'v'")

    def release() -> None:
        time.sleep(seconds)
        conn.execute("COMMIT")
        conn.close()

    thread = threading.Thread(target=release)
    thread.start()
    return thread


def classify(outcomes: Counter[str], kind: str, call: Callable[..., Any], *args: Any) -> None:
    """Run one call; count success or BackendBusyError; anything else (an outage) fails the test."""
    try:
        call(*args)
    except BackendBusyError:
        outcomes[f"{kind} busy"] += 1
    else:
        outcomes[f"{kind} ok"] += 1


def test_sync_writes_wait_then_busy_reads_succeed(path: Path) -> None:
    """Threads write and read while the lock is held 3 s: reads succeed, writes succeed or raise BackendBusyError."""
    impatient = SqliteDatabase(path, busy_timeout=0.5)  # gives up while the lock is still held
    patient = SqliteDatabase(path, busy_timeout=10)  # outwaits the holder
    outcomes: Counter[str] = Counter()
    failures: list[BaseException] = []

    def worker(w: int) -> None:
        try:
            for i in range(4):
                db = impatient if w % 2 else patient
                classify(outcomes, "write", db.set, f"k{w}", i)
                classify(outcomes, "write", db.append, f"l{w}", i)
                classify(outcomes, "write", db.mset, {f"m{w}": i})
                classify(outcomes, "read", db.get, "v")
                classify(outcomes, "read", db.get_range, "h", 0, -1)
                classify(outcomes, "read", db.mget, ["v", f"k{w}"])
        except BaseException as exc:  # a plain BackendUnavailableError lands here
            failures.append(exc)

    holder = hold_write_lock(path, HOLD)
    started = time.monotonic()
    threads = [threading.Thread(target=worker, args=(w,)) for w in range(6)]
    for t in threads:
        t.start()
    # Reads from yet another store are answered at once while the lock is held (WAL).
    with SqliteDatabase(path) as reader:
        assert reader.get("v") == 0
        assert reader.get_range("h", 0, -1) == [0, 1]
        assert time.monotonic() - started < HOLD / 2
    for t in threads:
        t.join(timeout=60)
    holder.join()
    assert failures == []
    assert outcomes["read busy"] == 0
    assert outcomes["write busy"] > 0  # the impatient store gave up at least once
    assert outcomes["write ok"] > 0  # the patient one waited the holder out
    patient.set("after", 1)
    assert impatient.get("after") == 1
    assert impatient.get("v") == 7  # the holder's transaction committed
    impatient.close()
    patient.close()


async def test_async_writes_wait_off_the_loop_then_busy(path: Path) -> None:
    """Tasks write and read while the lock is held 3 s: success or BackendBusyError only; the loop keeps ticking."""
    impatient = AsyncSqliteDatabase(path, busy_timeout=0.5)
    patient = AsyncSqliteDatabase(path, busy_timeout=10)
    reader = AsyncSqliteDatabase(path)
    await reader.ping()
    outcomes: Counter[str] = Counter()

    async def attempt(kind: str, call: Callable[..., Any], *args: Any) -> None:
        try:
            await call(*args)
        except BackendBusyError:
            outcomes[f"{kind} busy"] += 1
        else:
            outcomes[f"{kind} ok"] += 1

    async def writer(db: AsyncSqliteDatabase, w: int) -> None:
        for i in range(3):
            await attempt("write", db.set, f"k{w}", i)
            await attempt("write", db.append, f"l{w}", i)
            await attempt("read", db.get, "v")

    lags: list[float] = []

    async def ticker(stop: asyncio.Event) -> None:
        while not stop.is_set():
            before = time.perf_counter()
            await asyncio.sleep(0.01)
            lags.append(time.perf_counter() - before - 0.01)

    holder = hold_write_lock(path, HOLD)
    stop = asyncio.Event()
    tick = asyncio.create_task(ticker(stop))
    started = time.monotonic()
    work = [asyncio.create_task(writer(impatient if w % 2 else patient, w)) for w in range(6)]
    # A store with no write queued answers reads at once while the lock is held.
    assert await reader.get("v") == 0
    assert await reader.get_range("h", 0, -1) == [0, 1]
    assert time.monotonic() - started < HOLD / 2
    results = await asyncio.gather(*work, return_exceptions=True)
    stop.set()
    await tick
    await asyncio.to_thread(holder.join)
    unexpected = [r for r in results if isinstance(r, BaseException)]
    assert unexpected == [], unexpected
    assert not any(isinstance(r, BackendUnavailableError) for r in results)
    assert outcomes["read busy"] == 0
    assert outcomes["write busy"] > 0
    assert outcomes["write ok"] > 0
    assert max(lags) < 0.1, f"the event loop stalled {max(lags) * 1000:.0f} ms"
    assert await patient.get("v") == 7
    for db in (impatient, patient, reader):
        await db.aclose()


def test_busy_error_carries_context(path: Path) -> None:
    """The BackendBusyError names the operation, the key and the path, and says what to do."""
    holder = hold_write_lock(path, 1.0)
    try:
        with SqliteDatabase(path, busy_timeout=0.1) as db, pytest.raises(BackendBusyError) as info:
            db.append("h", 2)
    finally:
        holder.join()
    err = info.value
    assert (err.backend, err.operation, err.key) == ("sqlite", "append", "h")
    assert str(path) in str(err)
    assert "busy timeout" in str(err)


def test_manager_does_not_fall_back_when_sqlite_is_busy(path: Path, tmp_path: Path) -> None:
    """Through the manager: writes on a locked file raise BackendBusyError, nothing moves to the fallback."""
    config = {
        "cache": {"type": "memory"},
        "database": {"type": "sqlite", "path": str(path), "busy_timeout": 0.2, "state_dir": str(tmp_path / "state")},
    }
    with StorageManager(config) as storage:
        holder = hold_write_lock(path, 2.0)
        try:
            for i in range(8):  # well past any breaker threshold
                with pytest.raises(BackendBusyError):
                    storage.database.set("k", i)
            assert storage.database.get("v") == 0  # reads are served by SQLite meanwhile
            health = storage.health().database
            assert (health.active, health.degraded) == ("sqlite", False)
        finally:
            holder.join()
        storage.database.set("k", "after")
        assert storage.health().database.degraded is False
    with SqliteDatabase(path) as db:
        assert db.get("k") == "after"  # written to the file, not to a fallback
