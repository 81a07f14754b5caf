"""SQLite stores across fork (gunicorn --preload, multiprocessing): each child opens its own connection
(and, async, its own worker thread); the parent's connection is never used by a child and keeps working."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
import traceback
from pathlib import Path
from typing import Any

import apsw
import pytest

from kvstore.errors import BackendBusyError, ClosedError
from kvstore.sqlite import AsyncSqliteDatabase, SqliteDatabase
from tests.forking import CHILDREN, FORK, PER_CHILD, run_children

pytestmark = pytest.mark.slow


def _check_history(items: list[Any], before: int) -> None:
    """The parent's items first, then every child's appends exactly once, each child's in its order."""
    assert items[:before] == [{"w": "parent", "i": i} for i in range(before)]
    children = items[before:]
    assert len(children) == CHILDREN * PER_CHILD
    for w in range(CHILDREN):
        assert [item["i"] for item in children if item["w"] == w] == list(range(PER_CHILD))


def test_sync_store_in_forked_children_opens_its_own_connection(tmp_path: Path) -> None:
    """4 forked children x 200 append+get on the parent's open SqliteDatabase: exact, in order; the parent works on."""
    path = tmp_path / "kv.db"
    db = SqliteDatabase(path)
    for i in range(3):
        db.append("log", {"w": "parent", "i": i})
    db.set("before", 1)
    parent_conn = db._engine._conn
    assert parent_conn is not None

    def child(w: int, errors: Any) -> None:
        try:
            assert db.get("before") == 1  # first use in the child: a new connection
            assert db._engine._conn is not parent_conn
            for i in range(PER_CHILD):
                length = db.append("log", {"w": w, "i": i})
                assert length >= 3 + i + 1
                db.set(f"last:{w}", i)
                assert db.get(f"last:{w}") == i
            db.close()  # closes the child's connection only
        except BaseException:
            errors.put(traceback.format_exc())
            raise

    run_children(child)
    assert db._engine._conn is parent_conn  # the parent never switched connections
    _check_history(db.get_range("log", 0, -1), before=3)
    assert db.mget([f"last:{w}" for w in range(CHILDREN)]) == [PER_CHILD - 1] * CHILDREN
    assert db.append("log", "after") == 3 + CHILDREN * PER_CHILD + 1
    assert db.get("before") == 1
    db.close()
    # Nothing was lost when the parent closed last: a fresh process-level reader sees all of it.
    with SqliteDatabase(path) as again:
        assert again.get_length("log") == 3 + CHILDREN * PER_CHILD + 1
        assert again._engine._conn is not None
        assert again._engine._conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]


def test_async_store_in_forked_children_gets_a_new_worker_thread(tmp_path: Path) -> None:
    """4 forked children x 200 append+get on the parent's AsyncSqliteDatabase: no hang (new worker), exact results."""
    path = tmp_path / "kv.db"
    db = AsyncSqliteDatabase(path)

    async def prepare() -> None:
        for i in range(3):
            await db.append("log", {"w": "parent", "i": i})
        await db.set("before", 1)

    asyncio.run(prepare())
    parent_executor = db._worker._executor

    def child(w: int, errors: Any) -> None:
        async def work() -> None:
            assert db._worker._executor is not parent_executor
            assert await db.get("before") == 1
            for i in range(PER_CHILD):
                await db.append("log", {"w": w, "i": i})
                await db.set(f"last:{w}", i)
                assert await db.get(f"last:{w}") == i
            await db.aclose()

        try:
            asyncio.run(asyncio.wait_for(work(), 60))
        except BaseException:
            errors.put(traceback.format_exc())
            raise

    run_children(child)

    async def check() -> None:
        assert db._worker._executor is parent_executor
        _check_history(await db.get_range("log", 0, -1), before=3)
        assert await db.mget([f"last:{w}" for w in range(CHILDREN)]) == [PER_CHILD - 1] * CHILDREN
        assert await db.append("log", "after") == 3 + CHILDREN * PER_CHILD + 1
        await db.aclose()

    asyncio.run(check())


def test_store_forked_before_first_use_opens_in_the_child(tmp_path: Path) -> None:
    """An AsyncSqliteDatabase never used before the fork works in the child and in the parent."""
    path = tmp_path / "kv.db"
    db = AsyncSqliteDatabase(path)

    def child(w: int, errors: Any) -> None:
        async def work() -> None:
            for i in range(PER_CHILD):
                await db.append("log", {"w": w, "i": i})
            await db.aclose()

        try:
            asyncio.run(asyncio.wait_for(work(), 60))
        except BaseException:
            errors.put(traceback.format_exc())
            raise

    run_children(child)

    async def check() -> None:
        _check_history(await db.get_range("log", 0, -1), before=0)
        await db.aclose()

    asyncio.run(check())


def test_handed_connection_is_replaced_by_the_childs_own(tmp_path: Path) -> None:
    """A store on a caller's apsw connection opens its own connection to the same file in a child."""
    path = tmp_path / "kv.db"
    conn = apsw.Connection(str(path))
    conn.execute("PRAGMA journal_mode=WAL").fetchall()
    db = SqliteDatabase(conn)
    db.set("before", 1)

    def child(w: int, errors: Any) -> None:
        try:
            assert db.get("before") == 1
            assert db._engine._conn is not conn
            for i in range(PER_CHILD):
                db.append("log", {"w": w, "i": i})
            db.close()
        except BaseException:
            errors.put(traceback.format_exc())
            raise

    run_children(child)
    _check_history(db.get_range("log", 0, -1), before=0)
    db.close()
    assert conn.execute("SELECT count(*) FROM kvstore_items").fetchall() == [(CHILDREN * PER_CHILD,)]
    conn.close()


def test_memory_database_refuses_use_in_a_forked_child() -> None:
    """A ':memory:' database cannot follow a fork: the child gets a clear ClosedError, the parent keeps its data."""
    db = SqliteDatabase(":memory:")
    db.set("k", 1)
    errors = FORK.Queue()

    def child() -> None:
        try:
            with pytest.raises(ClosedError, match="forked child"):
                db.get("k")
        except BaseException:
            errors.put(traceback.format_exc())
            raise

    proc = FORK.Process(target=child)
    proc.start()
    proc.join(timeout=60)
    assert proc.exitcode == 0, errors.get(timeout=1) if not errors.empty() else proc.exitcode
    assert db.get("k") == 1
    db.close()


def test_fork_while_another_thread_waits_inside_sqlite(tmp_path: Path) -> None:
    """Forked while a parent thread waits inside SQLite: the child does not hang; it reads, and a write either
    succeeds or raises BackendBusyError (SQLite's inherited lock bookkeeping); the parent is unharmed."""
    path = tmp_path / "kv.db"
    db = SqliteDatabase(path, busy_timeout=10)
    db.set("before", 1)
    holder = apsw.Connection(str(path))
    holder.execute("BEGIN IMMEDIATE")  # the parent thread's write below waits for this lock
    waiting = threading.Thread(target=db.set, args=("k", "parent"))
    waiting.start()
    time.sleep(0.3)
    assert db._engine._lock.locked()  # the thread is inside SQLite now

    def child(w: int, errors: Any) -> None:
        try:
            db._engine.busy_timeout = 0.5  # the child's own connection gives up sooner
            assert db.get("before") == 1  # a connection of the child's own, not the parent's
            with contextlib.suppress(BackendBusyError):
                db.append("log", {"w": w, "i": 0})
            db.close()
        except BaseException:
            errors.put(traceback.format_exc())
            raise

    release = threading.Timer(1.0, lambda: holder.execute("COMMIT"))
    release.start()
    run_children(child)
    release.join()
    waiting.join(timeout=30)
    holder.close()
    assert db.get("k") == "parent"  # the waiting write went through
    assert db.append("log", "parent") >= 1
    db.close()
    with SqliteDatabase(path) as again:
        assert again._engine._conn is not None
        assert again._engine._conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
