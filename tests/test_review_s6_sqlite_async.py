"""Review (session 6, a): the async SQLite store on the event loop, async auto-batching, chat history reads.

Real SQLite files (and real servers where named); no mock of a backend.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kvstore.chat import AsyncChatHistory
from kvstore.sqlite import AsyncSqliteDatabase, SqliteDatabase, SqliteDiskFullError
from kvstore.sqlite import _engine as engine_module
from tests.test_sqlite_async_loop import other_process_holds_write_lock, prepared

ROOT = Path(__file__).resolve().parent.parent


async def test_a_commit_on_the_loop_is_never_interrupted_so_no_batch_is_appended_twice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SQLite calls the progress handler also as a statement ends, after its work: at the end of a
    COMMIT, which has committed already. A write on the loop interrupted there was run again on the
    worker: the batch appended twice (an incr counted twice, a delete answering False...).

    The handler interrupts at its LOOP_PROGRESS-th call within one engine call, and the cached COMMIT
    statement (a few VM steps a run) meets it once every few hundred commits: with the default 10 a
    write whose body made exactly 9 calls (deleting a list of ~1500 items) is hit then. With 2, a
    batch of 15-35 items (0-2 calls) is: the same path, often enough for a test.
    """
    monkeypatch.setattr(engine_module, "LOOP_PROGRESS", 2)
    path = tmp_path / "kv.db"
    store = AsyncSqliteDatabase(path)
    await store.ping()
    expected: list[str] = []
    for i in range(3000):
        batch = [f"{i}-{j}" for j in range(15 + i % 20)]
        await store.extend("log", batch)
        expected += batch
    await store.aclose()
    with SqliteDatabase(path) as db:
        log = db.get_range("log", 0, -1)
        assert len(log) == len(expected), f"{len(log) - len(expected)} items stored twice"
        assert log == expected


async def test_begin_and_commit_on_the_loop_are_never_interrupted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the handler interrupting at its first call, a BEGIN interrupted as it ends left its
    transaction open ("cannot start a transaction within a transaction" from then on) and a COMMIT
    interrupted as it ends had committed: appends, incrs and ``set(only_if_absent=True)`` stay exact."""
    monkeypatch.setattr(engine_module, "LOOP_PROGRESS", 1)
    path = tmp_path / "kv.db"
    store = AsyncSqliteDatabase(path)
    await store.ping()
    n = 1500
    written_absent = 0
    for i in range(n):
        await store.append("log", i)
        await store.incr("counter")
        written_absent += await store.set(f"once{i}", i, only_if_absent=True)
    await store.aclose()
    with SqliteDatabase(path) as db:
        assert db.get_range("log", 0, -1) == list(range(n))
        assert db.get("counter") == n
        assert written_absent == n, "a set(only_if_absent=True) that wrote answered False"
        assert db.mget([f"once{i}" for i in range(n)]) == list(range(n))


# --- chat history reads while another process appends and trims -------------------------------

CHAT_WRITER = textwrap.dedent(
    """
    import random, sys, time
    from kvstore.chat import ChatHistory
    from kvstore.sqlite import SqliteDatabase

    path, seconds = sys.argv[1], float(sys.argv[2])
    rng = random.Random(3)
    with SqliteDatabase(path) as db:
        history = ChatHistory(db, "c1", model=dict)
        n = 0
        print("ready", flush=True)
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            batch = []
            for _ in range(rng.randrange(1, 4)):
                # Some long messages: a page of them is more than the loop may copy (re-read elsewhere).
                pad = "x" * rng.choice((0, 10, 30_000))
                batch.append({"role": "user", "content": f"{n}|{pad}"})
                n += 1
            history.extend(batch)
            if rng.random() < 0.3:
                history.trim(rng.randrange(5, 60))
        print("wrote", n, flush=True)
    """
)


def _seqs(messages: list[Any]) -> list[int]:
    return [int(m["content"].split("|")[0]) for m in messages]


async def test_chat_pages_stay_whole_while_another_process_appends_and_trims(tmp_path: Path) -> None:
    """``last`` and every ``page`` of a walk are each a run of consecutive messages (none reordered,
    doubled or skipped), while another process appends (some messages longer than the loop copies)
    and trims the same conversation."""
    path = tmp_path / "chat.db"
    with SqliteDatabase(path) as db:
        db.ping()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        CHAT_WRITER,
        str(path),
        "2.5",
        stdout=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert proc.stdout is not None
    assert (await asyncio.wait_for(proc.stdout.readline(), 30)).strip() == b"ready"
    store = AsyncSqliteDatabase(path)
    history = AsyncChatHistory(store, "c1", model=dict)
    reads = 0
    try:
        end = time.monotonic() + 2.0
        while time.monotonic() < end:
            for got in (await history.last(20), (await history.page(limit=15)).messages):
                seqs = _seqs(got)
                assert seqs == list(range(seqs[0], seqs[0] + len(seqs))) if seqs else True, seqs
            page = await history.page(limit=7)
            while page.before is not None:
                seqs = _seqs(page.messages)
                assert seqs == list(range(seqs[0], seqs[0] + len(seqs))) if seqs else True, seqs
                page = await history.page(before=page.before, limit=7)
            reads += 1
            await asyncio.sleep(0)
    finally:
        out = await asyncio.wait_for(proc.stdout.read(), 30)
        assert await proc.wait() == 0
        await store.aclose()
    assert b"wrote" in out
    assert reads > 20


# --- one store used by two event loops (two threads, each running asyncio) ------------------------


def test_two_event_loops_in_two_threads_share_one_store(tmp_path: Path) -> None:
    """Each thread's loop appends, writes batches the worker runs and reads (the gets batch on the
    worker) on one store. The worker's patient calls set the connection's busy timeout while the
    other loop ran a statement on it: ``apsw.ThreadingViolationError`` (not even a KVStoreError)
    raised to a caller whose write had been committed. Now every call succeeds, the lists are exact."""
    store = AsyncSqliteDatabase(tmp_path / "kv.db")
    errors: list[BaseException] = []
    n = 1200

    async def work(name: str) -> None:
        for i in range(n):
            try:
                await store.append(f"log-{name}", i)
                if i % 10 == 0:
                    await store.mset({f"{name}-{j}": j for j in range(200)})  # > 128 keys: the worker
                await asyncio.gather(*(store.get(f"{name}-{(i + j) % 200}") for j in range(3)))
            except Exception as exc:  # every error counts
                errors.append(exc)

    threads = [threading.Thread(target=asyncio.run, args=(work(f"t{t}"),)) for t in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not any(thread.is_alive() for thread in threads)

    async def check() -> None:
        try:
            for t in range(2):
                assert await store.get_range(f"log-t{t}", 0, -1) == list(range(n))
        finally:
            await store.aclose()

    asyncio.run(check())
    assert errors == [], f"{len(errors)} errors, first: {errors[0]!r}"


# --- cancellation at every await while another process holds the write lock ----------------------


@pytest.mark.parametrize("released", [False, True])
@pytest.mark.parametrize("delay", [0, 1, 0.004, 0.03])
async def test_writes_cancelled_while_another_process_holds_the_lock_are_all_or_nothing(
    tmp_path: Path, delay: float, released: bool
) -> None:
    """Every kind of write (on the loop, or the worker's: a large value, a long batch), cancelled after
    ``delay`` (0: at once, 1: one loop step, else seconds) while another process holds the write lock:
    after the lock is released each is applied whole or not at all, nothing twice, and the next write of
    the same key (issued at once) wins. The file is checked through another connection. With ``released``
    the lock is released just before the delay: the calls are cancelled while they run (on the worker)."""
    path = prepared(tmp_path / "kv.db")
    store = AsyncSqliteDatabase(path, busy_timeout=10)
    await store.extend("t", list(range(10)))
    await store.set("d", "gone?")
    big = "x" * 300_000
    calls = {
        "set": lambda: store.set("s", "first"),
        "set_big": lambda: store.set("sb", big),
        "append": lambda: store.append("a", "first"),
        "extend_long": lambda: store.extend("e", list(range(300))),
        "trim": lambda: store.trim("t", -3, -1),
        "delete": lambda: store.delete("d"),
        "mset_long": lambda: store.mset({f"m{i}": i for i in range(300)}),
    }
    async with other_process_holds_write_lock(path, 30) as holder:
        tasks = {name: asyncio.ensure_future(call()) for name, call in calls.items()}
        await asyncio.sleep(0.02)  # each one is waiting for the lock
        if released:
            holder.release()
            await asyncio.sleep(0.002)
        if delay == 1:
            await asyncio.sleep(0)
        elif delay:
            await asyncio.sleep(delay)
        for task in tasks.values():
            task.cancel()
        reads = await asyncio.gather(store.get("v"), store.get_range("h", 0, -1), store.mget(["k1", "k2"]))
        assert reads[1:] == [[0, 1], [1, 2]]  # reads go on meanwhile
        holder.release()
    done = await asyncio.gather(*tasks.values(), return_exceptions=True)
    assert all(isinstance(r, asyncio.CancelledError) or r in (True, None, 1, 7, 300) for r in done), done
    # The same task's next writes, issued now, come after whatever the cancelled ones did.
    assert await store.set("s", "second") is True
    assert await store.append("a", "second") in (1, 2)
    await store.aclose()
    with SqliteDatabase(path) as db:
        assert db.get("s") == "second"
        assert db.get("sb") in (None, big)
        assert db.get_range("a", 0, -1) in (["second"], ["first", "second"])
        assert db.get_range("e", 0, -1) in ([], list(range(300)))
        assert db.get_range("t", 0, -1) in (list(range(10)), [7, 8, 9])
        assert db.get("d") in (None, "gone?")
        assert db.mget([f"m{i}" for i in range(300)]) in ([None] * 300, list(range(300)))
        conn = db._engine._conn
        assert conn is not None
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]


# --- a full disk under writes on the loop -----------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 3 MB tmpfs (root only; skipped elsewhere), unmounted after the test."""
    where = tmp_path / "disk"
    where.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3M", "tmpfs", str(where)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode(errors='replace').strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


async def test_a_full_disk_under_loop_writes_is_typed_loses_nothing_and_recovers(small_disk: Path) -> None:
    """Writes on the loop until the disk is full: `SqliteDiskFullError`, every acknowledged write in the
    file, the failed one not half there; reads go on; once space is freed the same store writes again."""
    path = small_disk / "kv.db"
    store = AsyncSqliteDatabase(path)
    await store.set("seed", 1)
    await store.append("log", 0)
    filler = small_disk / "filler"
    filler.write_bytes(b"\0" * (3 * 1024 * 1024 - 600_000))
    acknowledged = 0

    async def fill() -> None:
        nonlocal acknowledged
        for i in range(1, 200):
            await store.set(f"k{i}", "v" * 20_000 + str(i))
            await store.append("log", i)
            acknowledged = i

    with pytest.raises(SqliteDiskFullError):
        await fill()
    assert await store.get("seed") == 1
    assert await store.get_range("log", 0, -1) == list(range(acknowledged + 1))
    filler.unlink()
    for j in range(3):
        await store.set(f"after{j}", "x" * 20_000)
        await store.append("log", -1)
    await store.aclose()
    with SqliteDatabase(path) as db:
        assert db.get_range("log", 0, -1) == [*range(acknowledged + 1), -1, -1, -1]
        assert all(db.get(f"k{i}") == "v" * 20_000 + str(i) for i in range(1, acknowledged + 1))
        conn = db._engine._conn
        assert conn is not None
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
