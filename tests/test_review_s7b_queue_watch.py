"""Review s7b of the job queue and of watch: each test failed before its fix."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest

from kvstore import AsyncStorageManager
from kvstore.queue import AsyncQueue


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class _Proxy:
    """A TCP forwarder to ``target`` on ``port``, started later: PostgreSQL 'comes up' when it starts."""

    def __init__(self, port: int, target: tuple[str, int]) -> None:
        self.port = port
        self.target = target
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self.target)

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                with contextlib.suppress(OSError):
                    while data := await src.read(65536):
                        dst.write(data)
                        await dst.drain()
            finally:
                dst.close()
                with contextlib.suppress(Exception):
                    await dst.wait_closed()

        for task in (asyncio.create_task(pipe(reader, up_writer)), asyncio.create_task(pipe(up_reader, writer))):
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()


async def _forget_jobs(url: str, prefix: str) -> None:
    import psycopg

    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await conn.execute("DELETE FROM kvstore_queue_jobs WHERE ns = %s", (prefix,))


def _via(url: str, port: int) -> str:
    parts = urlsplit(url)
    netloc = parts.netloc.rsplit("@", 1)
    host = f"127.0.0.1:{port}"
    return urlunsplit(parts._replace(netloc=f"{netloc[0]}@{host}" if len(netloc) == 2 else host))


@pytest.mark.postgres
async def test_worker_started_while_postgres_is_down_waits_and_then_works(postgres_url: str, tmp_path: Path) -> None:
    """A worker whose manager connected while PostgreSQL was down (container start order) waits for it.

    Before: `jobs()` raised BackendUnavailableError at once ("not reachable at connect"), and
    a producer's `enqueue` kept raising even after the server came up, since queue calls never
    let the tier reopen its primary.
    """
    target = urlsplit(postgres_url)
    proxy = _Proxy(_free_port(), (target.hostname or "127.0.0.1", target.port or 5432))
    prefix = f"s7b-{uuid.uuid4().hex[:8]}:"
    config = {
        "cache": {"type": "memory"},
        "database": {
            "type": "postgres",
            "url": _via(postgres_url, proxy.port),
            "key_prefix": prefix,
            "connect_timeout": 0.5,
            "probe_interval": 0.2,
            "state_dir": str(tmp_path / "state"),
        },
    }
    try:
        async with AsyncStorageManager(config) as storage:
            queue: AsyncQueue[Any] = AsyncQueue(storage.database, "mail", fallback_poll=0.2)
            got: list[Any] = []

            async def work() -> None:
                async for job in queue.jobs(lease=30):
                    got.append(job.payload)
                    await queue.ack(job)

            worker = asyncio.create_task(work())
            await asyncio.sleep(0.5)
            assert not worker.done(), worker.exception()  # waiting, not dead
            await proxy.start()  # PostgreSQL "comes up"
            for _ in range(100):
                with contextlib.suppress(Exception):
                    await queue.enqueue({"n": 1})
                    break
                await asyncio.sleep(0.1)
            else:
                raise AssertionError("enqueue never succeeded after the server came up")
            for _ in range(100):
                if got:
                    break
                await asyncio.sleep(0.1)
            queue.stop()
            await asyncio.wait_for(worker, 5)
            assert got == [{"n": 1}]
    finally:
        await proxy.stop()
        await _forget_jobs(postgres_url, prefix)


# --- a claim cancelled twice (a timeout, then the task's own shutdown) ----------------------------


def _states(path: Path) -> list[tuple[str, int]]:
    import apsw

    with apsw.Connection(str(path)) as conn:
        return [(str(s), int(a)) for s, a in conn.execute("SELECT state, attempt FROM kvstore_queue_jobs ORDER BY id")]


@pytest.mark.parametrize("operation", ["claim", "jobs"])
async def test_claim_cancelled_twice_leaves_no_job_claimed(tmp_path: Path, operation: str) -> None:
    """A claim waiting for the file's write lock, cancelled, then cancelled again while it finishes.

    Before: the second cancellation cut the wait for the shielded claim, which then took the
    job for nobody: it stayed 'running', attempt counted, until its lease expired (an hour here).
    Documented: "a claim cancelled at any point either handed its job to the caller with a
    lease or left it in the queue untouched".
    """
    import apsw

    from kvstore.sqlite import AsyncSqliteDatabase

    path = tmp_path / "q.db"
    store = AsyncSqliteDatabase(path, busy_timeout=10)
    queue: AsyncQueue[Any] = AsyncQueue(store, "jobs", lease=3600)
    locker = apsw.Connection(str(path))
    try:
        await queue.enqueue({"n": 1})
        locker.execute("BEGIN IMMEDIATE")  # the claim waits for the write lock

        async def take() -> Any:
            if operation == "claim":
                return await queue.claim()
            async for job in queue.jobs():
                return job
            return None

        task = asyncio.ensure_future(take())
        await asyncio.sleep(0.05)
        task.cancel()
        await asyncio.sleep(0.01)
        task.cancel()  # again, while the cancelled claim completes
        await asyncio.sleep(0.01)
        locker.execute("COMMIT")
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await asyncio.sleep(0.2)  # anything left running in the background has finished
        assert _states(path) == [("ready", 0)]
        job = await queue.claim()
        assert job is not None
        assert job.attempt == 1
    finally:
        if locker.in_transaction:
            locker.execute("COMMIT")
        locker.close()
        await store.aclose()


@pytest.mark.postgres
async def test_watch_started_again_after_postgres_came_up_follows_it(postgres_url: str, tmp_path: Path) -> None:
    """A watch-only process (an SSE fan-out, ``degraded_reads="strict"``) whose PostgreSQL was down at connect.

    Before: every later ``watch`` raised "the database primary was never connected" for good,
    since nothing the process did let the tier open its primary once it answered.
    """
    from kvstore import BackendUnavailableError, WatchRestartError
    from kvstore.postgres import AsyncPostgresDatabase

    target = urlsplit(postgres_url)
    proxy = _Proxy(_free_port(), (target.hostname or "127.0.0.1", target.port or 5432))
    prefix = f"s7b-{uuid.uuid4().hex[:8]}:"
    config = {
        "cache": {"type": "memory"},
        "database": {
            "type": "postgres",
            "url": _via(postgres_url, proxy.port),
            "key_prefix": prefix,
            "connect_timeout": 0.5,
            "probe_interval": 0.2,
            "degraded_reads": "strict",
            "state_dir": str(tmp_path / "state"),
        },
    }
    writer = AsyncPostgresDatabase(postgres_url, key_prefix=prefix)
    try:
        async with AsyncStorageManager(config) as storage:
            early = storage.database.watch("events", start=0)
            with pytest.raises(BackendUnavailableError) as down:
                await anext(early)
            assert not isinstance(down.value, WatchRestartError)  # an outage, not a planned end
            await proxy.start()  # PostgreSQL "comes up"
            await writer.append("events", {"n": 0})
            seen: list[Any] = []
            for _ in range(50):  # what an SSE client does: reconnect until the stream opens
                await asyncio.sleep(0.1)
                try:
                    async for item in storage.database.watch("events", start=0):
                        seen.append(item.value)
                        break
                except BackendUnavailableError:
                    continue
                break
            assert seen == [{"n": 0}]
    finally:
        await writer.clear()
        await writer.aclose()
        await proxy.stop()


# --- PostgreSQL: a process's first queue call while a transaction holds the queue table ----------


@pytest.mark.postgres
async def test_first_queue_call_of_a_new_process_does_not_stall_every_worker(postgres_url: str) -> None:
    """A transaction holding a row of the jobs table (an admin's requeue script, a VACUUM) while a
    new process makes its first queue call (a worker restart, a new web process).

    Before: that first call ran ``CREATE INDEX IF NOT EXISTS`` on the existing table, which waits
    for a SHARE lock behind the open transaction, and every enqueue, claim and ack of every
    other process queued behind it: all stalled ~4 s (the lock timeout), then the new process
    got BackendBusyError, and a restarting worker's loop did it again and again.
    """
    import time

    import psycopg

    from kvstore.postgres import AsyncPostgresDatabase

    schema = f"s7b_{uuid.uuid4().hex[:8]}"
    running = AsyncPostgresDatabase(postgres_url, schema_name=schema)
    fresh = AsyncPostgresDatabase(postgres_url, schema_name=schema)
    admin = await psycopg.AsyncConnection.connect(postgres_url)
    try:
        queue: AsyncQueue[Any] = AsyncQueue(running, "jobs")
        job_id = await queue.enqueue({"n": 0})
        await admin.execute(
            psycopg.sql.SQL("UPDATE {} SET last_error = last_error WHERE id = %s").format(
                psycopg.sql.Identifier(schema, "kvstore_queue_jobs")
            ),
            (job_id,),
        )  # and the transaction stays open
        first_call = asyncio.create_task(AsyncQueue(fresh, "jobs").stats())
        await asyncio.sleep(0.3)
        started = time.monotonic()
        await queue.enqueue({"n": 1})
        job = await queue.claim()
        assert job is not None
        await queue.ack(job)
        assert time.monotonic() - started < 1.0  # the running worker was not held up
        stats = await asyncio.wait_for(first_call, 2)  # answered (it raised BackendBusyError at ~4 s)
        assert stats.ready + stats.done >= 1
    finally:
        await admin.rollback()
        await admin.close()
        await fresh.aclose()
        await running.aclose()
        async with await psycopg.AsyncConnection.connect(postgres_url, autocommit=True) as conn:
            await conn.execute(
                psycopg.sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(psycopg.sql.Identifier(schema))
            )


@pytest.mark.postgres
async def test_idle_worker_does_not_spin_on_a_due_job_another_transaction_locks(postgres_url: str) -> None:
    """The only due job's row is locked by another transaction (an admin's ``SELECT … FOR UPDATE``).

    Before: the claim skipped it (SKIP LOCKED), ``next_due`` said a job was due, the loop waited
    0 s and claimed again: ~2,000 claims a second per idle worker, most of a core, until the
    lock went. Now it backs off (and still takes a newly enqueued job at once, and the locked
    one soon after the lock goes).
    """
    import psycopg

    from kvstore.postgres import AsyncPostgresDatabase

    prefix = f"s7b-{uuid.uuid4().hex[:8]}:"
    store = AsyncPostgresDatabase(postgres_url, key_prefix=prefix)
    queue: AsyncQueue[Any] = AsyncQueue(store, "jobs")
    admin = await psycopg.AsyncConnection.connect(postgres_url)
    got: asyncio.Queue[Any] = asyncio.Queue()
    task: asyncio.Task[None] | None = None
    try:
        locked_id = await queue.enqueue("locked")
        await admin.execute("SELECT 1 FROM kvstore_queue_jobs WHERE id = %s FOR UPDATE", (locked_id,))
        engine = queue._get_engine()
        claims = 0
        claim = engine.claim

        async def counted(lease: float) -> Any:  # counts the real claims, changes nothing
            nonlocal claims
            claims += 1
            return await claim(lease)

        engine.claim = counted

        async def work() -> None:
            async for job in queue.jobs():
                await queue.ack(job)
                got.put_nowait(job.payload)

        task = asyncio.create_task(work())
        await asyncio.sleep(1.5)
        assert claims < 30, claims  # ~3,000 before
        await queue.enqueue("other")
        assert await asyncio.wait_for(got.get(), 0.5) == "other"  # the wake-up still works
        await admin.rollback()
        assert await asyncio.wait_for(got.get(), 2.5) == "locked"
        queue.stop()
        await asyncio.wait_for(task, 5)
    finally:
        if task is not None and not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        if not admin.closed:
            await admin.rollback()
            await admin.close()
        async with await psycopg.AsyncConnection.connect(postgres_url, autocommit=True) as conn:
            await conn.execute("DELETE FROM kvstore_queue_jobs WHERE ns = %s", (prefix,))
        await store.aclose()


# --- a model whose validator raises something other than ValueError ------------------------------


@pytest.mark.parametrize("backend", ["memory", "sqlite"])
async def test_a_validator_raising_type_error_dead_letters_the_job_and_the_worker_goes_on(
    tmp_path: Path, backend: str
) -> None:
    """A job whose payload makes the model's validator raise ``TypeError``/``KeyError`` (pydantic
    only wraps ``ValueError`` and ``AssertionError`` into a ``ValidationError``).

    Before: ``claim`` raised it with the job already claimed: the job stayed 'running' for
    nobody until its lease expired, a ``jobs()`` loop died with it, and every worker that
    claimed it next died the same way. Documented: "a poison job never stops a worker".
    """
    from pydantic import BaseModel, field_validator

    from kvstore.memory import AsyncMemoryDatabase
    from kvstore.sqlite import AsyncSqliteDatabase

    class Mail(BaseModel):
        to: str

        @field_validator("to")
        @classmethod
        def known(cls, value: str) -> str:
            if value == "type":
                raise TypeError("not a mailbox")
            if value == "key":
                return str({}["no such domain"])
            return value

    store: Any = AsyncMemoryDatabase() if backend == "memory" else AsyncSqliteDatabase(tmp_path / "q.db")
    try:
        producer: AsyncQueue[Any] = AsyncQueue(store, "mail")
        for to in ("type", "key", "ada"):
            await producer.enqueue({"to": to})
        worker: AsyncQueue[Mail] = AsyncQueue(store, "mail", model=Mail)
        got: list[str] = []

        async def work() -> None:
            async for job in worker.jobs():
                got.append(job.payload.to)
                await worker.ack(job)
                worker.stop()

        await asyncio.wait_for(work(), 5)
        assert got == ["ada"]
        stats = await worker.stats()
        assert (stats.running, stats.dead, stats.done) == (0, 2, 1)
        dead = await worker.dead()
        assert [job.payload for job in dead] == [{"to": "type"}, {"to": "key"}]
        assert [(job.last_error or "").split(":")[0] for job in dead] == ["TypeError", "KeyError"]
    finally:
        await store.aclose()


# --- the sweep of acknowledged jobs keeps up with the queue ---------------------------------------


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def test_sweep_of_done_jobs_keeps_up_with_more_than_1000_per_sweep(
    tmp_path: Path, backend: str, request: pytest.FixtureRequest
) -> None:
    """2,500 acknowledged jobs past ``keep_done`` when a sweep comes due.

    Before: a sweep deleted at most 1,000 rows and the next came 30 s later: a queue acking
    more than ~33 jobs a second per process grew its done rows without bound (and on
    PostgreSQL every sweep logged a failure: it fetched a row from a DELETE). Now a sweep that
    removed a full batch is followed by another at the next claim until the backlog is gone.
    """
    import psycopg

    prefix = f"s7b-{uuid.uuid4().hex[:8]}:"
    if backend == "sqlite":
        from kvstore.sqlite import AsyncSqliteDatabase

        store: Any = AsyncSqliteDatabase(tmp_path / "q.db")
    else:
        from kvstore.postgres import AsyncPostgresDatabase

        store = AsyncPostgresDatabase(request.getfixturevalue("postgres_url"), key_prefix=prefix)
    try:
        queue: AsyncQueue[Any] = AsyncQueue(store, "jobs", keep_done=0)
        for i in range(2500):
            await queue.enqueue(i)
        for _ in range(2500):
            job = await queue.claim()
            assert job is not None
            await queue.ack(job)
        assert (await queue.stats()).done == 2500
        await asyncio.sleep(0.01)
        queue._get_engine()._next_purge = 0.0  # the sweep is due now (it comes every 30 s)
        for _ in range(3):
            assert await queue.claim() is None
        assert (await queue.stats()).done == 0
    finally:
        if backend == "postgres":
            async with await psycopg.AsyncConnection.connect(
                request.getfixturevalue("postgres_url"), autocommit=True
            ) as conn:
                await conn.execute("DELETE FROM kvstore_queue_jobs WHERE ns = %s", (prefix,))
        await store.aclose()


# --- a PostgreSQL watch whose store is closed ------------------------------------------------------


@pytest.mark.postgres
async def test_postgres_watch_ends_with_closed_error_when_its_store_is_closed(postgres_url: str) -> None:
    """Closing the store (a manager's shutdown) ends its running watches, as on SQLite and memory.

    Before: a PostgreSQL watch kept its own connection and went on streaming after
    ``aclose()`` (and would reconnect for ever after a restart), for a store that answers
    every other call with ClosedError.
    """
    from kvstore import ClosedError
    from kvstore.postgres import AsyncPostgresDatabase

    prefix = f"s7b-{uuid.uuid4().hex[:8]}:"
    store = AsyncPostgresDatabase(postgres_url, key_prefix=prefix)
    writer = AsyncPostgresDatabase(postgres_url, key_prefix=prefix)
    items = store.watch("events", start=0, poll_interval=0.05)
    try:
        await writer.append("events", 1)
        assert (await anext(items)).value == 1
        await store.aclose()
        await writer.append("events", 2)
        with pytest.raises(ClosedError):
            await asyncio.wait_for(anext(items), 2)
    finally:
        await items.aclose()  # type: ignore[attr-defined]
        await writer.clear()
        await writer.aclose()
        await store.aclose()
