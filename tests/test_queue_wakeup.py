"""The queue beyond the contract suite: idle workers woken by LISTEN/NOTIFY and file changes, the manager, the CLI."""

from __future__ import annotations

import asyncio
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest

from kvstore import AsyncStorageManager, BackendUnavailableError, SqliteDatabase
from kvstore.queue import AsyncQueue, Queue

ROOT = Path(__file__).resolve().parent.parent


async def _latencies(worker_store: Any, producer_store: Any, samples: int) -> list[float]:
    """Seconds from enqueue (by another store: another connection) to the idle worker holding the job."""
    name = f"wake-{uuid.uuid4().hex[:8]}"
    # A fallback poll far longer than the test: only a wake-up can explain a fast claim.
    worker: AsyncQueue[Any] = AsyncQueue(worker_store, name, fallback_poll=60.0)
    producer: AsyncQueue[Any] = AsyncQueue(producer_store, name)
    received: asyncio.Queue[tuple[float, float]] = asyncio.Queue()

    async def work() -> None:
        async for job in worker.jobs():
            received.put_nowait((job.payload, time.perf_counter()))
            await worker.ack(job)

    task = asyncio.create_task(work())
    await producer.stats()  # tables created before timing
    found = []
    try:
        for _ in range(samples):
            await asyncio.sleep(0.05)  # the worker is idle again, waiting
            await producer.enqueue(time.perf_counter())
            sent, got = await asyncio.wait_for(received.get(), 5)
            found.append(got - sent)
    finally:
        worker.stop()
        await asyncio.wait_for(task, 5)
    return found


@pytest.mark.postgres
async def test_postgres_idle_worker_woken_by_notify(postgres_url: str) -> None:
    """An idle PostgreSQL worker (fallback poll 60 s) gets a job another connection enqueues within milliseconds."""
    from kvstore.postgres import AsyncPostgresDatabase

    worker_store, producer_store = AsyncPostgresDatabase(postgres_url), AsyncPostgresDatabase(postgres_url)
    try:
        found = await _latencies(worker_store, producer_store, 30)
    finally:
        await worker_store.aclose()
        await producer_store.aclose()
    assert max(found) < 2.0, found
    assert statistics.median(found) < 0.1, found


async def test_sqlite_idle_worker_woken_by_file_change(tmp_path: Path) -> None:
    """An idle SQLite worker notices another connection's enqueue through ``data_version``."""
    from kvstore.sqlite import AsyncSqliteDatabase

    path = tmp_path / "q.db"
    worker_store, producer_store = AsyncSqliteDatabase(path), AsyncSqliteDatabase(path)
    try:
        found = await _latencies(worker_store, producer_store, 20)
    finally:
        await worker_store.aclose()
        await producer_store.aclose()
    assert max(found) < 2.0, found
    assert statistics.median(found) < 0.2, found


async def test_queue_on_the_managers_database(tmp_path: Path) -> None:
    """A queue runs on ``storage.database`` (the failover wrapper's primary)."""
    config = {"cache": {"type": "memory"}, "database": {"type": "sqlite", "path": str(tmp_path / "m.db")}}
    async with AsyncStorageManager(config) as storage:
        queue: AsyncQueue[Any] = AsyncQueue(storage.database, "mail")
        await queue.enqueue({"to": "a"})
        job = await queue.claim()
        assert job is not None
        assert job.payload == {"to": "a"}
        await queue.ack(job)
    with SqliteDatabase(tmp_path / "m.db") as direct:
        assert Queue(direct, "mail").stats().done == 1


async def test_queue_never_runs_on_the_fallback(tmp_path: Path) -> None:
    """With the configured PostgreSQL unreachable, the queue raises instead of queueing on the fallback."""
    config = {
        "cache": {"type": "memory"},
        "database": {
            "type": "postgres",
            "url": "postgresql://127.0.0.1:1/nothing",
            "connect_timeout": 0.5,
            "state_dir": str(tmp_path / "state"),
        },
    }
    async with AsyncStorageManager(config) as storage:
        queue: AsyncQueue[Any] = AsyncQueue(storage.database, "mail")
        with pytest.raises(BackendUnavailableError, match="never split"):
            await queue.enqueue(1)


def test_cli_queue_stats(tmp_path: Path) -> None:
    """``kvstore queue stats NAME`` prints the counts, as text or JSON; a bad name exits 1."""
    path = tmp_path / "cli.db"
    with SqliteDatabase(path) as store:
        queue: Queue[Any] = Queue(store, "emails")
        queue.enqueue(1)
        queue.enqueue(2, delay=3600)
        job = queue.claim()
        assert job is not None
        queue.fail(job, "nope", retry=False)
        queue.enqueue(3)

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        cmd = [sys.executable, "-m", "kvstore", "queue", "stats", *args, "--url", f"sqlite:///{path}"]
        return subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, check=False, timeout=60)

    shown = run("emails", "--json")
    assert shown.returncode == 0, shown.stderr
    assert orjson.loads(shown.stdout) == {"ready": 1, "delayed": 1, "running": 0, "failed": 0, "dead": 1, "done": 0}
    text = run("emails")
    assert "dead     1" in text.stdout
    bad = run("")
    assert bad.returncode == 1
    assert "must not be empty" in bad.stderr


@pytest.mark.postgres
def test_postgres_tables_created_by_many_at_once(postgres_url: str) -> None:
    """Eight stores creating the queue table at the same moment (a fresh table prefix) all succeed."""
    import threading

    from kvstore.postgres import PostgresDatabase

    prefix = f"qrace_{uuid.uuid4().hex[:6]}_"
    stores = [PostgresDatabase(postgres_url, table_prefix=prefix, max_size=1) for _ in range(8)]
    for store in stores:
        store.open()
    barrier = threading.Barrier(len(stores))
    errors: list[BaseException] = []

    def create(store: PostgresDatabase) -> None:
        barrier.wait()
        try:
            Queue(store, "race").enqueue(1)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=create, args=(s,)) for s in stores]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    try:
        assert errors == []
        assert Queue(stores[0], "race").stats().ready == 8
    finally:
        import psycopg

        with psycopg.connect(postgres_url, autocommit=True) as conn:
            for table in ("queue_jobs", "entries", "list_items", "meta", "ids", "tombstones", "cleared"):
                conn.execute(f'DROP TABLE IF EXISTS "{prefix}{table}" CASCADE')
            conn.execute(f'DROP FUNCTION IF EXISTS "{prefix}drop_items"() CASCADE')
        for store in stores:
            store.close()


@pytest.mark.postgres
async def test_postgres_worker_survives_a_server_restart(owned_postgres: Any) -> None:
    """An idle worker's loop outlives a PostgreSQL restart and its listener comes back (no 60 s fallback wait)."""
    from kvstore.postgres import AsyncPostgresDatabase

    worker_store = AsyncPostgresDatabase(owned_postgres.url, connect_timeout=2.0)
    producer_store = AsyncPostgresDatabase(owned_postgres.url, connect_timeout=2.0)
    worker: AsyncQueue[Any] = AsyncQueue(worker_store, "restart", fallback_poll=60.0)
    producer: AsyncQueue[Any] = AsyncQueue(producer_store, "restart")
    got: asyncio.Queue[Any] = asyncio.Queue()

    async def work() -> None:
        async for job in worker.jobs():
            await worker.ack(job)
            got.put_nowait(job.payload)

    task = asyncio.create_task(work())
    try:
        await producer.enqueue("before")
        assert await asyncio.wait_for(got.get(), 10) == "before"
        await asyncio.to_thread(owned_postgres.restart, "fast")
        deadline = time.monotonic() + 20
        while True:  # the producer's pool notices the restart too: retry until the server answers
            try:
                await producer.enqueue("after", dedupe_key="after")
                break
            except BackendUnavailableError:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.2)
        assert await asyncio.wait_for(got.get(), 15) == "after"
    finally:
        worker.stop()
        await asyncio.wait_for(task, 10)
        await worker_store.aclose()
        await producer_store.aclose()
