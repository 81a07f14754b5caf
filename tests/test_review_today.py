"""Adversarial review of the PostgreSQL JSON-array append and the async SQLite queue on the loop."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import apsw
import pytest

from kvstore import AsyncQueue, KVStoreError
from kvstore.postgres import PostgresDatabase
from kvstore.sqlite import AsyncSqliteDatabase
from kvstore.sqlite._engine import LOOP_BYTES


@pytest.fixture
def pg(postgres_url: str) -> Iterator[PostgresDatabase]:
    store = PostgresDatabase(postgres_url, key_prefix=f"review-{uuid.uuid4().hex[:8]}:")
    yield store
    store.clear()
    store.close()


@pytest.mark.postgres
@pytest.mark.parametrize(
    "items",
    [
        [b"1,2"],  # one "item" that the joined array splits in two: a row past the counter
        [b"1", b"2,3"],
        [b""],  # the joined array is empty: a counter bumped with no item (a hole)
        [b"  "],
        [b"[1", b"2]"],  # two "items" that merge into one
    ],
)
def test_extend_json_of_items_that_are_not_one_json_document_each_writes_nothing(
    pg: PostgresDatabase, items: list[bytes]
) -> None:
    """Each item went to the server as its own ``json`` before 5e9fb96's JSON-array parameter; joined,
    a bad item must still be refused, not leave the list with more or fewer items than its counter
    (a row past the counter made every later append fail with a duplicate key, for good)."""
    pg.append("l", "first")
    with pytest.raises(KVStoreError):
        pg.extend_json("l", items)
    assert pg.get_length("l") == 1
    assert pg.get_range("l", 0, -1) == ["first"]
    assert pg.append("l", "next") == 2  # the list still takes appends
    assert pg.get_range("l", 0, -1) == ["first", "next"]


# --- the async SQLite queue: a task cancelled at each of its awaits --------------------------------


class _Locker:
    """Another connection on the file that takes the write lock and lets it go."""

    def __init__(self, path: Path) -> None:
        self.conn = apsw.Connection(str(path))

    def take(self) -> None:
        self.conn.execute("BEGIN IMMEDIATE")

    def give(self) -> None:
        if self.conn.in_transaction:
            self.conn.execute("COMMIT")


def _rows(path: Path) -> list[tuple[Any, ...]]:
    with apsw.Connection(str(path)) as conn:
        return conn.execute("SELECT id, state, attempt FROM kvstore_queue_jobs ORDER BY id").fetchall()


@pytest.mark.parametrize("locked", [False, True])
@pytest.mark.parametrize("large", [False, True])
@pytest.mark.parametrize("steps", [0, 1, 2, 3, 5, 8, 13])
async def test_claim_ack_enqueue_cancelled_at_each_step(tmp_path: Path, locked: bool, large: bool, steps: int) -> None:
    path = tmp_path / "q.db"
    store = AsyncSqliteDatabase(path, busy_timeout=10)
    queue: AsyncQueue[Any] = AsyncQueue(store, "jobs", lease=60)
    pad = "x" * (LOOP_BYTES + 10) if large else ""
    locker = _Locker(path)
    try:
        await queue.enqueue({"n": 0, "pad": pad})

        async def cancelled_at(coro: Any) -> Any:
            if locked:
                locker.take()
            task = asyncio.ensure_future(coro)
            for _ in range(steps):
                await asyncio.sleep(0.001 if locked else 0)
            task.cancel()
            asyncio.get_running_loop().call_later(0.02, locker.give)
            try:
                return await task
            except asyncio.CancelledError:
                return None
            finally:
                locker.give()

        # claim: the job is either this caller's (returned) or still ready, never left running.
        job = await cancelled_at(queue.claim())
        rows = _rows(path)
        if job is None:
            assert [state for _, state, _ in rows] == ["ready"]
            assert rows[0][2] == 0
            job = await queue.claim()
            assert job is not None
        else:
            assert [state for _, state, _ in rows] == ["running"]
        assert job.attempt == 1

        # ack: cancelled, it completes anyway (or had not started): then ack again succeeds or is lost-lease-free.
        await cancelled_at(queue.ack(job))
        state = _rows(path)[0][1]
        if state == "running":
            await queue.ack(job)
        assert [(s, a) for _, s, a in _rows(path)] == [("done", 1)]

        # enqueue: one row or none, never two.
        ident = await cancelled_at(queue.enqueue({"n": 1, "pad": pad}))
        rows = _rows(path)
        assert len(rows) in (1, 2)
        if ident is not None:
            assert len(rows) == 2
        assert (await queue.stats()).running == 0
    finally:
        locker.conn.close()
        await store.aclose()


async def test_queue_in_a_forked_child(tmp_path: Path) -> None:
    """The parent used the queue on its loop; a forked child uses the same objects on a loop of its own."""
    store = AsyncSqliteDatabase(tmp_path / "q.db")
    queue: AsyncQueue[Any] = AsyncQueue(store, "jobs", lease=60)
    try:
        await queue.enqueue({"n": 0})
        job = await queue.claim()
        assert job is not None
        await queue.ack(job)
        await queue.enqueue({"n": 1})
        pid = os.fork()
        if pid == 0:  # the child: a new loop, the inherited store and queue
            code = 1
            try:

                async def child() -> None:
                    await queue.enqueue({"n": 2})
                    got = [await queue.claim(), await queue.claim()]
                    assert [j.payload["n"] for j in got if j is not None] == [1, 2]
                    for j in got:
                        assert j is not None
                        await queue.ack(j)
                    listener = queue._get_engine().listener()
                    await listener.start()
                    assert not await listener.wait(0.05)

                asyncio.run(child())
                code = 0
            finally:
                os._exit(code)
        _, status = await asyncio.to_thread(os.waitpid, pid, 0)
        assert os.WEXITSTATUS(status) == 0
        stats = await queue.stats()
        assert (stats.ready, stats.running, stats.done) == (0, 0, 3)
    finally:
        await store.aclose()


async def test_two_prefixes_differing_by_one_character_share_no_job(tmp_path: Path) -> None:
    a = AsyncSqliteDatabase(tmp_path / "q.db", key_prefix="t:a")
    b = AsyncSqliteDatabase(tmp_path / "q.db", key_prefix="t:b")
    try:
        qa: AsyncQueue[Any] = AsyncQueue(a, "jobs")
        qb: AsyncQueue[Any] = AsyncQueue(b, "jobs")
        await qa.enqueue({"n": 1}, dedupe_key="same")
        await qb.enqueue({"n": 2}, dedupe_key="same")
        ja, jb = await qa.claim(), await qb.claim()
        assert ja is not None
        assert jb is not None
        assert (ja.payload, jb.payload) == ({"n": 1}, {"n": 2})
        assert await qa.claim() is None
        await qa.ack(ja)
        with pytest.raises(Exception, match="lease"):
            await qa.ack(jb)  # b's job id under a's prefix: not a's
        await qb.ack(jb)
    finally:
        await a.aclose()
        await b.aclose()
