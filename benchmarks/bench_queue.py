"""Job queue: kvstore's `AsyncQueue` vs pgqueuer and procrastinate (PostgreSQL) and huey (SQLite).

1. Throughput: ``--jobs`` jobs enqueued one call each by one producer, then drained by 1
   and by 4 workers (each worker its own connection/store; a worker claims one job,
   acknowledges it, and stops when the queue is empty; every contender checks it drained
   exactly the jobs it enqueued). Reported: enqueues/s, claim+ack/s and the whole cycle
   (enqueue + claim + ack) per second, median of ``--rounds`` rounds after a warm-up, each
   round running every contender once in an order that rotates from round to round.
   PostgreSQL: kvstore, a raw ``FOR UPDATE SKIP LOCKED`` loop on psycopg (the floor: one
   statement to claim, one to delete), pgqueuer (``Queries.enqueue`` / ``dequeue``
   with ``batch_size=1`` / ``log_jobs``, on psycopg), procrastinate (``defer_async``,
   then ``run_worker_async(concurrency=W, wait=False)`` over a pool of W + 2 connections).
   SQLite: kvstore, a raw apsw floor (``BEGIN IMMEDIATE``, oldest row, ``DELETE``,
   ``COMMIT``) and huey's ``SqliteStorage`` (``enqueue`` / ``dequeue``; huey's dequeue
   deletes the row: no lease, no ack, so it does strictly less work per job), all WAL +
   ``synchronous=NORMAL``; kvstore both async (`AsyncQueue`, one worker thread hop per
   call) and sync (`Queue` in threads, as huey runs).
2. Latency: an idle kvstore worker (``jobs()``), another connection enqueues one job
   every ~5 ms; time from ``enqueue`` returning to the worker holding the job, p50/p99
   after a warm-up (PostgreSQL LISTEN/NOTIFY; SQLite ``data_version`` polled every 10 ms).

Run: ``.venv/bin/python -m benchmarks.bench_queue`` (peers: ``pip install --group bench``); in the report:
``python -m benchmarks --only queue`` (`run`). ``rows(url=..., jobs=1000, rounds=5, samples=300)``
returns one dict per contender and measure (see `rows`); ``--quick`` is 150 jobs, 3 rounds.
PostgreSQL: ``--url`` or ``KVSTORE_BENCH_POSTGRES_URL`` (default the local server, db
``test``); everything runs in a database ``bench_queue_<pid>_<run>`` created for the run and
dropped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import shutil
import statistics
import tempfile
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import orjson
import psycopg

from kvstore.postgres import AsyncPostgresDatabase
from kvstore.queue import AsyncQueue, Queue
from kvstore.sqlite import AsyncSqliteDatabase, SqliteDatabase

DEFAULT_URL = os.environ.get("KVSTORE_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
RUN = uuid.uuid4().hex[:6]
PAYLOAD = {"to": "user@example.com", "template": "welcome", "vars": {"name": "Ada", "plan": "pro"}}

#: (enqueue all, drain with W workers) -> seconds of each phase
Contender = Callable[[int, int], Awaitable[tuple[float, float]]]


def _all_done(name: str, done: int, jobs: int) -> None:
    """A contender that drained fewer (or more) jobs than were enqueued would time the wrong thing."""
    if done != jobs:
        raise AssertionError(f"{name}: {done} jobs done of {jobs} enqueued")


# --- PostgreSQL ---------------------------------------------------------------------------------


def _db_url(url: str, dbname: str) -> str:
    info = psycopg.conninfo.conninfo_to_dict(url)
    info["dbname"] = dbname
    return psycopg.conninfo.make_conninfo(**info)


def kvstore_postgres(url: str) -> Contender:
    async def run(jobs: int, workers: int) -> tuple[float, float]:
        name = f"bench-{uuid.uuid4().hex[:6]}"
        producer = AsyncPostgresDatabase(url, max_size=1)
        stores = [AsyncPostgresDatabase(url, max_size=1) for _ in range(workers)]
        try:
            queue: AsyncQueue[Any] = AsyncQueue(producer, name)
            await queue.stats()
            started = time.perf_counter()
            for i in range(jobs):
                await queue.enqueue({**PAYLOAD, "i": i})
            enqueued = time.perf_counter()

            async def work(store: AsyncPostgresDatabase) -> None:
                q: AsyncQueue[Any] = AsyncQueue(store, name)
                while (job := await q.claim()) is not None:
                    await q.ack(job)

            await asyncio.gather(*(work(s) for s in stores))
            drained = time.perf_counter()
            assert (await queue.stats()).done == jobs
            return enqueued - started, drained - enqueued
        finally:
            for store in [producer, *stores]:
                await store.aclose()

    return run


def raw_postgres(url: str) -> Contender:
    async def run(jobs: int, workers: int) -> tuple[float, float]:
        table = f"bench_raw_{uuid.uuid4().hex[:6]}"
        conns = [await psycopg.AsyncConnection.connect(url, autocommit=True) for _ in range(workers + 1)]
        try:
            producer = conns[0]
            await producer.execute(f"CREATE TABLE {table} (id bigserial PRIMARY KEY, payload json NOT NULL)")
            data = psycopg.types.json.Json(PAYLOAD)
            done: list[int] = []
            started = time.perf_counter()
            for _ in range(jobs):
                await producer.execute(f"INSERT INTO {table} (payload) VALUES (%s)", (data,))
            enqueued = time.perf_counter()

            async def work(conn: psycopg.AsyncConnection[Any]) -> None:
                claim = (
                    f"SELECT id, payload FROM {table} ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED"  # in a transaction
                )
                while True:
                    async with conn.transaction():
                        row = await (await conn.execute(claim)).fetchone()
                        if row is None:
                            return
                        await conn.execute(f"DELETE FROM {table} WHERE id = %s", (row[0],))
                        done.append(1)

            await asyncio.gather(*(work(c) for c in conns[1:]))
            drained = time.perf_counter()
            _all_done("raw postgres", sum(done), jobs)
            await producer.execute(f"DROP TABLE {table}")
            return enqueued - started, drained - enqueued
        finally:
            for conn in conns:
                await conn.close()

    return run


def pgqueuer_postgres(url: str) -> Contender:
    from pgqueuer.adapters.drivers.psycopg import PsycopgDriver
    from pgqueuer.queries import EntrypointExecutionParameter, Queries

    async def run(jobs: int, workers: int) -> tuple[float, float]:
        conns = [await psycopg.AsyncConnection.connect(url, autocommit=True) for _ in range(workers + 1)]
        try:
            producer = Queries(PsycopgDriver(conns[0]))
            if not await producer.has_table("pgqueuer"):
                await producer.install()
            entry = f"bench_{uuid.uuid4().hex[:6]}"
            body = orjson.dumps(PAYLOAD)
            done: list[int] = []
            started = time.perf_counter()
            for _ in range(jobs):
                await producer.enqueue(entry, body, 0)
            enqueued = time.perf_counter()

            async def work(conn: psycopg.AsyncConnection[Any]) -> None:
                q = Queries(PsycopgDriver(conn))
                params = {entry: EntrypointExecutionParameter(concurrency_limit=0)}
                manager = uuid.uuid4()
                while True:
                    found = await q.dequeue(
                        batch_size=1,
                        entrypoints=params,
                        queue_manager_id=manager,
                        global_concurrency_limit=None,
                        heartbeat_timeout=timedelta(seconds=30),
                    )
                    if not found:
                        return
                    await q.log_jobs([(job, "successful", None) for job in found])
                    done.append(len(found))

            await asyncio.gather(*(work(c) for c in conns[1:]))
            drained = time.perf_counter()
            _all_done("pgqueuer", sum(done), jobs)
            return enqueued - started, drained - enqueued
        finally:
            for conn in conns:
                await conn.close()

    return run


def procrastinate_postgres(url: str) -> Contender:
    import procrastinate

    logging.getLogger("procrastinate").setLevel(logging.ERROR)
    state: dict[str, Any] = {}

    async def run(jobs: int, workers: int) -> tuple[float, float]:
        app = procrastinate.App(
            connector=procrastinate.PsycopgConnector(conninfo=url, min_size=1, max_size=workers + 2)
        )
        queue_name = f"bench_{uuid.uuid4().hex[:6]}"
        done: list[int] = []

        @app.task(name=f"bench_task_{queue_name}", queue=queue_name)
        async def task(**payload: Any) -> None:
            done.append(1)

        async with app.open_async():
            if not state.get("schema"):
                with contextlib.suppress(Exception):  # already applied (a previous run in this database)
                    await app.schema_manager.apply_schema_async()
                state["schema"] = True
            started = time.perf_counter()
            for i in range(jobs):
                await task.defer_async(**PAYLOAD, i=i)
            enqueued = time.perf_counter()
            await app.run_worker_async(
                queues=[queue_name], concurrency=workers, wait=False, install_signal_handlers=False
            )
            drained = time.perf_counter()
        _all_done("procrastinate", sum(done), jobs)
        return enqueued - started, drained - enqueued

    return run


# --- SQLite ----------------------------------------------------------------------------------


def kvstore_sqlite(directory: Path) -> Contender:
    async def run(jobs: int, workers: int) -> tuple[float, float]:
        path = directory / f"kv-{uuid.uuid4().hex[:6]}.db"
        producer = AsyncSqliteDatabase(path)
        stores = [AsyncSqliteDatabase(path) for _ in range(workers)]
        try:
            name = "bench"
            queue: AsyncQueue[Any] = AsyncQueue(producer, name)
            await queue.stats()
            started = time.perf_counter()
            for i in range(jobs):
                await queue.enqueue({**PAYLOAD, "i": i})
            enqueued = time.perf_counter()

            async def work(store: AsyncSqliteDatabase) -> None:
                q: AsyncQueue[Any] = AsyncQueue(store, name)
                while (job := await q.claim()) is not None:
                    await q.ack(job)

            await asyncio.gather(*(work(s) for s in stores))
            drained = time.perf_counter()
            assert (await queue.stats()).done == jobs
            return enqueued - started, drained - enqueued
        finally:
            for store in [producer, *stores]:
                await store.aclose()

    return run


def kvstore_sqlite_sync(directory: Path) -> Contender:
    """The sync `Queue`: no hop to a worker thread per call, like huey (threads, as huey's workers)."""

    async def run(jobs: int, workers: int) -> tuple[float, float]:
        path = directory / f"kvs-{uuid.uuid4().hex[:6]}.db"
        producer = SqliteDatabase(path)
        queue: Queue[Any] = Queue(producer, "bench")
        queue.stats()

        def produce() -> None:
            for i in range(jobs):
                queue.enqueue({**PAYLOAD, "i": i})

        def work() -> None:
            with SqliteDatabase(path) as store:
                q: Queue[Any] = Queue(store, "bench")
                while (job := q.claim()) is not None:
                    q.ack(job)

        started = time.perf_counter()
        await asyncio.to_thread(produce)
        enqueued = time.perf_counter()
        threads = [threading.Thread(target=work) for _ in range(workers)]
        for thread in threads:
            thread.start()
        await asyncio.to_thread(lambda: [t.join() for t in threads])
        drained = time.perf_counter()
        assert queue.stats().done == jobs
        producer.close()
        return enqueued - started, drained - enqueued

    return run


def huey_sqlite(directory: Path) -> Contender:
    from huey.storage import SqliteStorage

    class Storage(SqliteStorage):  # type: ignore[misc]
        """huey's SQLite storage with kvstore's durability setting (WAL + synchronous=NORMAL)."""

        def _create_connection(self) -> Any:
            conn = super()._create_connection()
            conn.execute("pragma synchronous=1")
            return conn

    async def run(jobs: int, workers: int) -> tuple[float, float]:
        path = directory / f"huey-{uuid.uuid4().hex[:6]}.db"
        # huey is synchronous: the producer and each worker run in a thread of their own.
        producer = Storage(name="bench", filename=str(path))
        body = orjson.dumps(PAYLOAD)
        done: list[int] = []

        def produce() -> None:
            for i in range(jobs):
                producer.enqueue(body + str(i).encode())

        def work() -> None:
            storage = Storage(name="bench", filename=str(path))
            while storage.dequeue() is not None:
                done.append(1)

        started = time.perf_counter()
        await asyncio.to_thread(produce)
        enqueued = time.perf_counter()
        threads = [threading.Thread(target=work) for _ in range(workers)]
        for thread in threads:
            thread.start()
        await asyncio.to_thread(lambda: [t.join() for t in threads])
        drained = time.perf_counter()
        _all_done("huey", sum(done), jobs)
        return enqueued - started, drained - enqueued

    return run


def raw_sqlite(directory: Path) -> Contender:
    """The SQLite floor: raw apsw, one autocommit INSERT per job; a worker claims in ``BEGIN IMMEDIATE`` (the
    oldest row, then DELETE, COMMIT), WAL + ``synchronous=NORMAL`` like kvstore's and the huey storage's."""
    import apsw

    def connect(path: Path) -> Any:
        conn = apsw.Connection(str(path))
        conn.setbusytimeout(5000)
        for pragma in ("PRAGMA journal_mode=WAL", "PRAGMA synchronous=NORMAL"):  # one statement per call
            conn.execute(pragma).fetchall()
        return conn

    async def run(jobs: int, workers: int) -> tuple[float, float]:
        path = directory / f"raw-{uuid.uuid4().hex[:6]}.db"
        producer = connect(path)
        producer.execute("CREATE TABLE jobs (id INTEGER PRIMARY KEY, payload BLOB NOT NULL)")
        body = orjson.dumps(PAYLOAD)
        done: list[int] = []

        def produce() -> None:
            for i in range(jobs):
                producer.execute("INSERT INTO jobs (payload) VALUES (?)", (body + str(i).encode(),))

        def work() -> None:
            conn = connect(path)
            try:
                while True:
                    conn.execute("BEGIN IMMEDIATE")  # the write lock first, as a claim must
                    row = conn.execute("SELECT id, payload FROM jobs ORDER BY id LIMIT 1").fetchone()
                    if row is None:
                        conn.execute("COMMIT")
                        return
                    orjson.loads(row[1][: len(body)])
                    conn.execute("DELETE FROM jobs WHERE id = ?", (row[0],))
                    conn.execute("COMMIT")
                    done.append(1)
            finally:
                conn.close()

        started = time.perf_counter()
        await asyncio.to_thread(produce)
        enqueued = time.perf_counter()
        threads = [threading.Thread(target=work) for _ in range(workers)]
        for thread in threads:
            thread.start()
        await asyncio.to_thread(lambda: [t.join() for t in threads])
        drained = time.perf_counter()
        producer.close()
        _all_done("raw sqlite", sum(done), jobs)
        return enqueued - started, drained - enqueued

    return run


# --- running ---------------------------------------------------------------------------------

#: (backend, role, is_async, contender)
Entry = tuple[str, str, bool, Contender]
#: The full run's sizes and ``--quick``'s (a smoke run: checks that it runs).
FULL = {"jobs": 1000, "rounds": 5, "samples": 300}
QUICK = {"jobs": 150, "rounds": 3, "samples": 40}
PARTS = ("throughput", "latency")


async def _throughput(contenders: dict[str, Entry], jobs: int, rounds: int) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for workers in (1, 4):
        times: dict[str, list[tuple[float, float]]] = {name: [] for name in contenders}
        for _, _, _, contender in contenders.values():  # warm-up: schemas, connections, caches
            await contender(min(jobs, 50), workers)
        for r in range(rounds):
            names = list(contenders)
            shift = r % len(names)  # alternating, and each contender takes each place in turn
            for name in names[shift:] + names[:shift]:
                times[name].append(await contenders[name][3](jobs, workers))
        for name, (backend, role, is_async, _) in contenders.items():
            enq = statistics.median(t[0] for t in times[name])
            drain = statistics.median(t[1] for t in times[name])
            total = statistics.median(t[0] + t[1] for t in times[name])
            found.append(
                {
                    "section": "queue",
                    "workload": f"throughput_{workers}w",
                    "name": name,
                    "role": role,
                    "backend": backend,
                    "is_async": is_async,
                    "workers": workers,
                    "jobs": jobs,
                    "rounds": rounds,
                    "enqueue_per_s": jobs / enq,
                    "claim_ack_per_s": jobs / drain,
                    "cycle_per_s": jobs / total,
                }
            )
    return found


async def _latency(store_factory: Callable[[], Any], backend: str, samples: int) -> dict[str, Any]:
    worker_store, producer_store = store_factory(), store_factory()
    name = f"lat-{uuid.uuid4().hex[:6]}"
    worker: AsyncQueue[Any] = AsyncQueue(worker_store, name, fallback_poll=60.0)
    producer: AsyncQueue[Any] = AsyncQueue(producer_store, name)
    got: asyncio.Queue[float] = asyncio.Queue()

    async def work() -> None:
        async for job in worker.jobs():
            got.put_nowait(time.perf_counter())
            await worker.ack(job)

    await producer.stats()
    task = asyncio.create_task(work())
    lat = []
    try:
        await asyncio.sleep(0.2)
        for _ in range(samples // 10 + 1):  # warm-up: not recorded
            await producer.enqueue(PAYLOAD)
            await asyncio.wait_for(got.get(), 10)
        for _ in range(samples):
            await asyncio.sleep(0.005)  # the worker is idle again
            await producer.enqueue(PAYLOAD)
            sent = time.perf_counter()
            lat.append((await asyncio.wait_for(got.get(), 10)) - sent)
    finally:
        worker.stop()
        await asyncio.wait_for(task, 10)
        await worker_store.aclose()
        await producer_store.aclose()
    lat.sort()
    return {
        "section": "queue",
        "workload": "enqueue_to_claim_latency",
        "name": "kvstore AsyncQueue.jobs()",
        "role": "kvstore",
        "backend": backend,
        "wake": "LISTEN/NOTIFY"
        if backend == "postgres"
        else f"data_version polled every {worker.poll_interval * 1000:g} ms",
        "samples": samples,
        "p50_ms": 1000 * lat[len(lat) // 2],
        "p99_ms": 1000 * lat[min(len(lat) - 1, int(len(lat) * 0.99))],
        "max_ms": 1000 * lat[-1],
    }


def _table(found: list[dict[str, Any]]) -> str:
    lines = [
        "| workload | backend | contender | enqueue/s | claim+ack/s | cycle/s |",
        "|---|---|---|---:|---:|---:|",
    ]
    for row in found:
        if "cycle_per_s" in row:
            lines.append(
                f"| {row['workload']} | {row['backend']} | {row['name']} | {row['enqueue_per_s']:,.0f} | "
                f"{row['claim_ack_per_s']:,.0f} | {row['cycle_per_s']:,.0f} |"
            )
    lines += ["", "| latency (idle worker) | backend | p50 ms | p99 ms | max ms |", "|---|---|---:|---:|---:|"]
    for row in found:
        if "p99_ms" in row:
            lines.append(
                f"| {row['name']} | {row['backend']} | {row['p50_ms']:.2f} | {row['p99_ms']:.2f} | {row['max_ms']:.2f} |"
            )
    return "\n".join(lines)


def _contenders(db: str | None, tmp: Path, skipped: dict[str, str]) -> dict[str, Entry]:
    """Every contender that can run here; a peer that cannot be imported goes to ``skipped`` with the reason."""
    makers: list[tuple[str, str, str, bool, Callable[[], Contender]]] = []
    if db is not None:
        makers += [
            ("kvstore AsyncQueue (PostgreSQL)", "postgres", "kvstore", True, lambda: kvstore_postgres(db)),
            ("raw psycopg SKIP LOCKED claim + DELETE (floor)", "postgres", "floor", True, lambda: raw_postgres(db)),
            ("pgqueuer (Queries, psycopg)", "postgres", "peer", True, lambda: pgqueuer_postgres(db)),
            ("procrastinate (PsycopgConnector)", "postgres", "peer", True, lambda: procrastinate_postgres(db)),
        ]
    makers += [
        ("kvstore AsyncQueue (SQLite)", "sqlite", "kvstore", True, lambda: kvstore_sqlite(tmp)),
        ("kvstore Queue (SQLite, threads)", "sqlite", "kvstore", False, lambda: kvstore_sqlite_sync(tmp)),
        ("raw apsw BEGIN IMMEDIATE claim + DELETE (floor)", "sqlite", "floor", False, lambda: raw_sqlite(tmp)),
        ("huey SqliteStorage", "sqlite", "peer", False, lambda: huey_sqlite(tmp)),
    ]
    found: dict[str, Entry] = {}
    for name, backend, role, is_async, make in makers:
        try:
            found[name] = (backend, role, is_async, make())
        except ImportError as exc:
            skipped[name] = f"not installed (pip install --group bench): {exc}"
    return found


async def _rows(
    url: str | None, jobs: int, rounds: int, samples: int, parts: tuple[str, ...], skipped: dict[str, str]
) -> list[dict[str, Any]]:
    dbname = f"bench_queue_{os.getpid()}_{RUN}"
    admin = None if url is None else await psycopg.AsyncConnection.connect(url, autocommit=True)
    tmp = Path(tempfile.mkdtemp(prefix="bench_queue_"))
    try:
        db = None
        if admin is not None and url is not None:
            await admin.execute(f"CREATE DATABASE {dbname}")
            db = _db_url(url, dbname)
        found: list[dict[str, Any]] = []
        if "throughput" in parts:
            found += await _throughput(_contenders(db, tmp, skipped), jobs, rounds)
        if "latency" in parts:
            if db is not None:
                found.append(await _latency(lambda: AsyncPostgresDatabase(db, max_size=2), "postgres", samples))
            found.append(await _latency(lambda: AsyncSqliteDatabase(tmp / "lat.db"), "sqlite", samples))
        return found
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if admin is not None:
            await admin.execute(f"DROP DATABASE IF EXISTS {dbname} WITH (FORCE)")
            await admin.close()


def rows(
    url: str | None = DEFAULT_URL,
    *,
    jobs: int = FULL["jobs"],
    rounds: int = FULL["rounds"],
    samples: int = FULL["samples"],
    parts: tuple[str, ...] = PARTS,
    skipped: dict[str, str] | None = None,
) -> list[dict[str, Any]]:
    """Run the chosen ``parts`` ("throughput", "latency") and return their rows, also printed as Markdown tables.

    Every row has ``section`` ("queue"), ``workload`` (``throughput_1w``, ``throughput_4w``,
    ``enqueue_to_claim_latency``), ``name``, ``role`` ("kvstore", "floor" or "peer") and
    ``backend`` ("postgres", "sqlite"). Throughput rows add ``is_async``, ``workers``, ``jobs``, ``rounds``,
    ``enqueue_per_s``, ``claim_ack_per_s`` and ``cycle_per_s`` (enqueue + claim + ack);
    latency rows add ``wake``, ``samples``, ``p50_ms``, ``p99_ms`` and ``max_ms``. PostgreSQL at ``url`` (a role
    allowed to create databases: everything runs in a database created for the run and dropped at the end);
    ``url=None`` runs the SQLite contenders only. A peer that is not installed is left out and named in
    ``skipped`` (name -> reason).
    """
    found = asyncio.run(_rows(url, jobs, rounds, samples, parts, {} if skipped is None else skipped))
    print(_table(found))
    return found


def run(ctx: Any, only: list[str] | None = None) -> list[dict[str, Any]]:
    """The report's queue section (``python -m benchmarks --only queue``): rows recorded in ``ctx.report``.

    ``only``: part name prefixes (``throughput``, ``latency``); PostgreSQL's rows need ``ctx.postgres_url``.
    """
    sizes = QUICK if ctx.quick else FULL
    parts = tuple(p for p in PARTS if not only or any(p.startswith(w) for w in only))
    if not parts:
        return []
    skipped: dict[str, str] = {}
    url = ctx.postgres_url or None
    if url is None:
        ctx.report.note("queue", "PostgreSQL rows not run: no PostgreSQL server.")
    found = rows(
        url, jobs=sizes["jobs"], rounds=sizes["rounds"], samples=sizes["samples"], parts=parts, skipped=skipped
    )
    for name, why in skipped.items():
        ctx.report.peer("queue", name, why)
    ctx.report.add_queue(found, ", ".join(f"{k}={v:,}" for k, v in sizes.items()))
    return found


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", default=DEFAULT_URL)
    parser.add_argument("--jobs", type=int, default=FULL["jobs"])
    parser.add_argument("--rounds", type=int, default=FULL["rounds"])
    parser.add_argument("--samples", type=int, default=FULL["samples"])
    parser.add_argument("--quick", action="store_true", help="150 jobs, 3 rounds, 40 latency samples")
    args = parser.parse_args()
    if args.quick:
        args.jobs, args.rounds, args.samples = QUICK["jobs"], QUICK["rounds"], QUICK["samples"]
    rows(args.url, jobs=args.jobs, rounds=args.rounds, samples=args.samples)


if __name__ == "__main__":
    main()
