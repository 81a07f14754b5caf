"""PostgreSQL stores across fork (gunicorn --preload, multiprocessing): each child opens its own
connections, the parent's sessions are never used or terminated by a child."""

from __future__ import annotations

import asyncio
import traceback
import uuid
from typing import Any

import psycopg
import pytest

from kvstore.postgres import AsyncPostgresDatabase, PostgresDatabase
from kvstore.postgres import _watchdog as wd
from tests.forking import CHILDREN, PER_CHILD, run_children

pytestmark = [pytest.mark.postgres, pytest.mark.slow]


def _with_app(url: str, app: str) -> str:
    return url + ("&" if "?" in url else "?") + f"application_name={app}"


def _sessions(url: str, app: str) -> set[int]:
    """Backend pids of the sessions that carry ``application_name`` ``app``."""
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute("SELECT pid FROM pg_stat_activity WHERE application_name = %s", (app,)).fetchall()
    return {pid for (pid,) in rows}


def _check_history(items: list[Any]) -> None:
    """Every child's appends present exactly once, each child's in its order."""
    assert len(items) == CHILDREN * PER_CHILD
    for w in range(CHILDREN):
        assert [item["i"] for item in items if item["w"] == w] == list(range(PER_CHILD))


def test_sync_store_used_in_forked_children(postgres_url: str) -> None:
    """4 forked children x 200 append+set+get on one sync store: exact results, no hang, parent intact."""
    app = f"kvfork{uuid.uuid4().hex[:8]}"
    url = _with_app(postgres_url, app)
    db = PostgresDatabase(url, key_prefix=f"fork-{uuid.uuid4().hex[:8]}:", min_size=2, max_size=2)
    try:
        db.set("before", 1)
        db.append("chat", {"w": -1, "i": -1})
        db.delete("chat")
        parent = _sessions(postgres_url, app)
        assert len(parent) == 2

        def child(w: int, errors: Any) -> None:
            try:
                for i in range(PER_CHILD):
                    db.append("chat", {"w": w, "i": i})
                    db.set(f"own:{w}", i)
                    assert db.get(f"own:{w}") == i
                    assert db.get_range("chat", -1, -1) != []
                assert db.get("before") == 1
                assert wd.current._thread is not None
                assert wd.current._thread.is_alive()
                db.close()  # closes the child's pool only
            except BaseException:
                errors.put(traceback.format_exc())
                raise

        run_children(child)
        # The parent's two sessions survived the children (nobody sent them a Terminate)...
        assert parent <= _sessions(postgres_url, app)
        # ...and the parent still works on them.
        _check_history(db.get_range("chat", 0, -1))
        assert db.mget([f"own:{w}" for w in range(CHILDREN)]) == [PER_CHILD - 1] * CHILDREN
        db.set("after", 2)
        assert db.get("after") == 2
        assert parent <= _sessions(postgres_url, app)
    finally:
        db.clear()
        db.close()


def test_async_store_used_in_forked_children(postgres_url: str) -> None:
    """The same with an async store: each child runs its own event loop and opens its own pool."""
    app = f"kvafork{uuid.uuid4().hex[:8]}"
    url = _with_app(postgres_url, app)

    async def main() -> None:
        db = AsyncPostgresDatabase(url, key_prefix=f"afork-{uuid.uuid4().hex[:8]}:", min_size=2, max_size=2)
        try:
            await db.set("before", 1)
            await asyncio.gather(db.get("before"), db.get("before"))
            parent = _sessions(postgres_url, app)
            assert len(parent) == 2

            async def work(w: int) -> None:
                for i in range(PER_CHILD):
                    await db.append("chat", {"w": w, "i": i})
                    await db.set(f"own:{w}", i)
                    assert await db.get(f"own:{w}") == i
                assert await db.get("before") == 1
                await db.aclose()

            def child(w: int, errors: Any) -> None:
                try:
                    asyncio.run(work(w))
                except BaseException:
                    errors.put(traceback.format_exc())
                    raise

            run_children(child)
            assert parent <= _sessions(postgres_url, app)
            _check_history(await db.get_range("chat", 0, -1))
            assert await db.mget([f"own:{w}" for w in range(CHILDREN)]) == [PER_CHILD - 1] * CHILDREN
            await db.set("after", 2)
            assert await db.get("after") == 2
            assert parent <= _sessions(postgres_url, app)
        finally:
            await db.clear()
            await db.aclose()

    asyncio.run(main())


def test_a_store_closed_in_the_child_leaves_the_parent_pool_open(postgres_url: str) -> None:
    """A child that closes the store without using it does not close (or terminate) the parent's pool."""
    app = f"kvfclose{uuid.uuid4().hex[:8]}"
    db = PostgresDatabase(_with_app(postgres_url, app), key_prefix=f"fc-{uuid.uuid4().hex[:8]}:", min_size=1)
    try:
        db.set("k", 1)
        parent = _sessions(postgres_url, app)

        def child(w: int, errors: Any) -> None:
            db.close()

        run_children(child)
        assert parent <= _sessions(postgres_url, app)
        assert db.get("k") == 1
    finally:
        db.clear()
        db.close()
