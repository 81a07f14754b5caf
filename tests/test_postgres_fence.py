"""PostgreSQL: a call cut at its deadline is never overtaken by the store's next statement.

A server process that is frozen (SIGSTOP here; a stalled VM or a frozen server in production) when a
call reaches it makes the call miss its deadline: the watchdog cuts the socket and the caller gets
`BackendUnavailableError` (outcome unknown). The frozen process still holds the statement it was sent
and runs it when it thaws. Before the fence, the store's next append, on a new connection, committed
first, and the failed append landed after it: a writer's items out of its order (found by the
multi-instance history check, ``tests/test_history_multi_instance.py``: "w2's item 7329 after its item
7330"). Real server processes, real signals; each test stops only its own store's backend.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import threading
import time
import uuid
from collections.abc import Iterator

import psycopg
import pytest

from kvstore.errors import BackendBusyError, BackendUnavailableError
from kvstore.postgres import AsyncPostgresDatabase, PostgresDatabase

pytestmark = pytest.mark.postgres


def _alive(postgres_url: str, pid: int) -> bool:
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        return conn.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone() is not None


def _wait_gone(postgres_url: str, pid: int, seconds: float = 10.0) -> None:
    stop = time.monotonic() + seconds
    while _alive(postgres_url, pid):
        assert time.monotonic() < stop, f"server process {pid} never ended"
        time.sleep(0.02)


def _cut_an_append(db: PostgresDatabase, stopped: list[int]) -> int:
    """Append 0; stop the store's one server process; append 1, cut at its deadline. The stopped pid."""
    db.append("l", 0)
    pid = int(db._run("test", None, "SELECT pg_backend_pid()", None, "one")[0])
    os.kill(pid, signal.SIGSTOP)
    stopped.append(pid)
    with pytest.raises(BackendUnavailableError):  # cut at its deadline; the stopped process holds it
        db.append("l", 1)
    return pid


@pytest.fixture
def stopped() -> Iterator[list[int]]:
    """Server processes a test stopped: continued at teardown whatever happened."""
    pids: list[int] = []
    yield pids
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)


async def test_an_async_append_after_one_cut_at_its_deadline_waits_for_it(
    postgres_url: str, stopped: list[int]
) -> None:
    """The append after a cut one waits until the cut one's server process has ended, then lands after
    whatever it did: the list reads [0, 2] or [0, 1, 2], never [0, 2, 1]."""
    db = AsyncPostgresDatabase(
        postgres_url, key_prefix=f"fence-{uuid.uuid4().hex[:8]}:", min_size=1, max_size=1, statement_timeout=0.5
    )
    await db.open()
    try:
        await db.append("l", 0)
        row = await db._run("test", None, "SELECT pg_backend_pid()", None, "one")
        pid = int(row[0])
        os.kill(pid, signal.SIGSTOP)
        stopped.append(pid)
        with pytest.raises(BackendUnavailableError):  # cut at its deadline; its process holds it
            await db.append("l", 1)
        second = asyncio.ensure_future(db.append("l", 2))
        await asyncio.sleep(0.3)
        assert not second.done()  # waiting for the stopped process, not overtaking it
        os.kill(pid, signal.SIGCONT)
        assert await second in (2, 3)
        _wait_gone(postgres_url, pid)
        assert await db.get_range("l", 0, -1) in ([0, 2], [0, 1, 2])
    finally:
        await db.clear()
        await db.aclose()


def test_a_sync_append_after_one_cut_at_its_deadline_waits_for_it(postgres_url: str, stopped: list[int]) -> None:
    """The same with the sync store, the next append in another thread."""
    db = PostgresDatabase(
        postgres_url, key_prefix=f"fence-{uuid.uuid4().hex[:8]}:", min_size=1, max_size=1, statement_timeout=0.5
    )
    db.open()
    try:
        pid = _cut_an_append(db, stopped)
        result: list[object] = []
        thread = threading.Thread(target=lambda: result.append(db.append("l", 2)))
        thread.start()
        thread.join(0.3)
        assert thread.is_alive()  # waiting for the stopped process
        os.kill(pid, signal.SIGCONT)
        thread.join(5)
        assert result
        assert result[0] in (2, 3)
        _wait_gone(postgres_url, pid)
        assert db.get_range("l", 0, -1) in ([0, 2], [0, 1, 2])
    finally:
        db.clear()
        db.close()


def test_a_process_that_stays_stopped_makes_the_next_call_busy_then_it_goes_through(
    postgres_url: str, stopped: list[int]
) -> None:
    """Still stopped at the next call's deadline: BackendBusyError (the server answers), nothing written;
    once the process has ended, calls go through in order."""
    db = PostgresDatabase(
        postgres_url, key_prefix=f"fence-{uuid.uuid4().hex[:8]}:", min_size=1, max_size=1, statement_timeout=0.5
    )
    db.open()
    try:
        pid = _cut_an_append(db, stopped)
        started = time.monotonic()
        with pytest.raises(BackendBusyError, match="has not ended"):
            db.append("l", 2)
        assert time.monotonic() - started < 1.0  # within the call deadline (0.75 s)
        with pytest.raises(BackendBusyError):
            db.get("k")  # reads wait too: nothing of this store's runs before it
        os.kill(pid, signal.SIGCONT)
        _wait_gone(postgres_url, pid)
        assert db.append("l", 3) in (2, 3)
        assert db.get_range("l", 0, -1) in ([0, 3], [0, 1, 3])
    finally:
        db.clear()
        db.close()


async def test_a_cut_read_is_fenced_too_and_another_store_is_not_held_up(postgres_url: str, stopped: list[int]) -> None:
    """The fence is the store's own: another store (another tenant) on the same server keeps working
    while the first waits for its stopped process."""
    first = AsyncPostgresDatabase(
        postgres_url, key_prefix=f"fence-{uuid.uuid4().hex[:8]}:", min_size=1, max_size=1, statement_timeout=0.5
    )
    other = AsyncPostgresDatabase(postgres_url, key_prefix=f"fence-{uuid.uuid4().hex[:8]}:", max_size=1)
    await first.open()
    await other.open()
    try:
        row = await first._run("test", None, "SELECT pg_backend_pid()", None, "one")
        pid = int(row[0])
        os.kill(pid, signal.SIGSTOP)
        stopped.append(pid)
        with pytest.raises(BackendUnavailableError):
            await first.get("k")
        assert await other.set("k", 1) is True
        assert await other.get("k") == 1
        with pytest.raises(BackendBusyError):
            await first.set("k", 2)
        os.kill(pid, signal.SIGCONT)
        _wait_gone(postgres_url, pid)
        assert await first.set("k", 3) is True
        assert await first.get("k") == 3
        assert await other.get("k") == 1
    finally:
        for db in (first, other):
            await db.clear()
            await db.aclose()
