"""Many clients at once: kvstore against a bare driver pool of the same size, at 1, 8, 64 and 256 async tasks
and 8 threads (sync).

Run alone: ``python -m benchmarks --only concurrency [--quick] [--workloads get,chat]``.

Each level runs every side for the same wall time per round: the tasks (or threads) loop until the round's
deadline, each op timed on its own (latency), the round's throughput being the ops completed ÷ its elapsed time.
Rounds alternate kvstore and the bare pool (kvstore, bare, kvstore, ...) after a warm-up of each; the table shows
the median throughput of the rounds, the ratio kvstore ÷ bare, and p50/p99 of every op of every round.

Workloads:

- ``get/set 90/10``: 9 gets for every set over 1,000 keys of a ~130 B chat message (every set writes new bytes),
  on PostgreSQL and Redis.
- ``chat append``: each task (thread) appends to its own conversation, kvstore ``AsyncChatHistory.add`` /
  ``ChatHistory.add`` against a bare ``INSERT`` of the message into a ``(conv, seq)`` table (the same floor as the
  single-caller chat append row). PostgreSQL only: kvstore's Redis backend is a cache tier (no lists; chat
  histories live on a database).

The pool is ``POOL`` connections on both sides: kvstore ``AsyncPostgresDatabase(min_size=POOL, max_size=POOL)``
vs ``psycopg_pool.AsyncConnectionPool`` (sync: ``PostgresDatabase`` vs ``ConnectionPool``), and
``AsyncRedisCache(max_connections=POOL)`` vs ``redis.asyncio`` with a ``BlockingConnectionPool`` of POOL (sync:
``RedisCache`` vs ``redis.Redis``). Everything is created under ``bench_<pid>_`` and removed at the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import math
import statistics
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import orjson

from benchmarks.peers import reason
from benchmarks.runner import KEYS, MESSAGE, Context, chat, msg

__all__ = ["LEVELS", "POOL", "THREADS", "WORKLOADS", "Settings", "run"]

LEVELS = (1, 8, 64, 256)
THREADS = 8
#: Connections in the pool, the same on both sides.
POOL = 8
MIX, APPEND = "get/set 90/10", "chat append"
WORKLOADS = (MIX, APPEND)
loads, dumps = orjson.loads, orjson.dumps

AsyncOp = Callable[[int, int], Awaitable[object]]  # (task, i)
SyncOp = Callable[[int, int], object]


@dataclass(frozen=True)
class Settings:
    """How long each side runs per round, how many rounds, and the levels (tasks; threads for the sync level)."""

    seconds: float = 0.5
    rounds: int = 5
    levels: tuple[int, ...] = LEVELS
    threads: int = THREADS
    pool: int = POOL

    @classmethod
    def for_run(cls, quick: bool) -> Settings:
        return cls(seconds=0.1, rounds=2) if quick else cls()


@dataclass
class Side:
    """One side of a level: its per-round throughputs and every op's latency (seconds)."""

    name: str
    rates: list[float] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    first_error: str = ""

    def summary(self) -> dict[str, Any]:
        lat = sorted(self.latencies)
        return {
            "name": self.name,
            "ops_per_s": statistics.median(self.rates) if self.rates else 0.0,
            "p50_ms": percentile(lat, 0.50) * 1000,
            "p99_ms": percentile(lat, 0.99) * 1000,
            "ops": len(lat),
            "errors": self.errors,
            "first_error": self.first_error,
        }


def percentile(ordered: list[float], q: float) -> float:
    """The ``q`` quantile of sorted values (nearest rank); 0 for none."""
    if not ordered:
        return 0.0
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


async def drive_async(
    op: AsyncOp, tasks: int, seconds: float, counter: itertools.count[int], side: Side | None
) -> None:
    """``tasks`` tasks calling ``op`` until the deadline; one round's throughput and latencies into ``side``."""
    clock = time.perf_counter
    deadline = clock() + seconds
    latencies: list[float] = []
    errors: list[BaseException] = []

    async def worker(task: int) -> None:
        while clock() < deadline:
            i = next(counter)
            start = clock()
            try:
                await op(task, i)
            except Exception as exc:  # counted and reported, never hidden in the throughput
                errors.append(exc)
                continue
            latencies.append(clock() - start)

    started = clock()
    await asyncio.gather(*(worker(t) for t in range(tasks)))
    elapsed = clock() - started
    if side is not None:
        _record(side, latencies, elapsed, errors)


def drive_threads(
    op: SyncOp, threads: int, seconds: float, counter: itertools.count[int], side: Side | None, pool: ThreadPoolExecutor
) -> None:
    """``threads`` threads calling ``op`` until the deadline (the sync API, one store shared by the threads)."""
    clock = time.perf_counter
    deadline = clock() + seconds

    def worker(task: int) -> tuple[list[float], list[BaseException]]:
        latencies: list[float] = []
        errors: list[BaseException] = []
        while clock() < deadline:
            i = next(counter)
            start = clock()
            try:
                op(task, i)
            except Exception as exc:
                errors.append(exc)
                continue
            latencies.append(clock() - start)
        return latencies, errors

    started = clock()
    results = [f.result() for f in [pool.submit(worker, t) for t in range(threads)]]
    elapsed = clock() - started
    if side is not None:
        _record(side, [x for r in results for x in r[0]], elapsed, [e for r in results for e in r[1]])


def _record(side: Side, latencies: list[float], elapsed: float, errors: list[BaseException]) -> None:
    side.rates.append(len(latencies) / elapsed if elapsed > 0 else 0.0)
    side.latencies += latencies
    side.errors += len(errors)
    if errors and not side.first_error:
        side.first_error = reason(errors[0])


# --- the two sides of each backend ------------------------------------------------------------------------------


@dataclass
class Pair:
    """kvstore's op and the bare pool's op for one workload, async and sync (None: not on this backend)."""

    ours: str
    bare: str
    async_ours: AsyncOp
    async_bare: AsyncOp
    sync_ours: SyncOp
    sync_bare: SyncOp


def _key(task: int, i: int) -> str:
    return KEYS[(i * 7919 + task) % 1000]


class PostgresSides:
    """kvstore's tables in schema ``bench_<pid>_conc`` (kvstore under prefixes a:/s:, the bare pool under ns 'raw')."""

    def __init__(self, ctx: Context, settings: Settings, stack: contextlib.ExitStack) -> None:
        import psycopg
        import psycopg_pool

        from kvstore.postgres import AsyncPostgresDatabase, PostgresDatabase

        url, size, wait = ctx.postgres_url, settings.pool, ctx.wait
        self.schema = schema = f"{ctx.tag}conc"
        admin = psycopg.connect(url, autocommit=True)
        stack.callback(admin.close)
        stack.callback(admin.execute, f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        self.db = PostgresDatabase(url, key_prefix="s:", schema_name=schema, min_size=size, max_size=size)
        self.db.open()
        stack.callback(self.db.close)
        self.adb = AsyncPostgresDatabase(url, key_prefix="a:", schema_name=schema, min_size=size, max_size=size)
        wait(self.adb.open())
        stack.callback(lambda: wait(self.adb.aclose()))
        self.pool = psycopg_pool.ConnectionPool(
            url, min_size=size, max_size=size, kwargs={"autocommit": True}, open=False
        )
        self.pool.open(wait=True)
        stack.callback(self.pool.close)
        self.apool = psycopg_pool.AsyncConnectionPool(
            url, min_size=size, max_size=size, kwargs={"autocommit": True}, open=False
        )
        wait(self.apool.open(wait=True))
        stack.callback(lambda: wait(self.apool.close()))
        self.t, self.m = t, m = f"{schema}.kvstore_entries", f"{schema}.bench_messages"
        self.db.mset({k: MESSAGE for k in KEYS})
        wait(self.adb.mset({k: MESSAGE for k in KEYS}))
        admin.execute(
            f"INSERT INTO {t} (ns, key, value) SELECT 'raw', k, %s::json FROM unnest(%s::text[]) k",
            (dumps(MESSAGE).decode(), KEYS),
        )
        admin.execute(
            f"CREATE TABLE {m} (conv text NOT NULL, seq bigint NOT NULL, value json NOT NULL, PRIMARY KEY (conv, seq))"
        )
        admin.execute(f"ANALYZE {t}")

    def pairs(self) -> dict[str, Pair]:
        from kvstore import AsyncChatHistory, ChatHistory

        db, adb, pool, apool = self.db, self.adb, self.pool, self.apool
        get = f"SELECT value::text FROM {self.t} WHERE ns = 'raw' AND key = %s"
        put = (
            f"INSERT INTO {self.t} (ns, key, value) VALUES ('raw', %s, %s::json) "
            "ON CONFLICT (ns, key) DO UPDATE SET value = excluded.value"
        )
        insert = f"INSERT INTO {self.m} VALUES (%s, %s, %s::json)"

        async def ours_mix(task: int, i: int) -> object:
            if i % 10 == 0:
                return await adb.set(_key(task, i), msg(i))
            return await adb.get(_key(task, i))

        async def bare_mix(task: int, i: int) -> object:
            async with apool.connection() as conn:
                if i % 10 == 0:
                    return await conn.execute(put, (_key(task, i), dumps(msg(i)).decode()))
                cur = await conn.execute(get, (_key(task, i),))
                row = await cur.fetchone()
            return loads(row[0]) if row else None

        def sync_ours_mix(task: int, i: int) -> object:
            return db.set(_key(task, i), msg(i)) if i % 10 == 0 else db.get(_key(task, i))

        def sync_bare_mix(task: int, i: int) -> object:
            with pool.connection() as conn:
                if i % 10 == 0:
                    return conn.execute(put, (_key(task, i), dumps(msg(i)).decode()))
                row = conn.execute(get, (_key(task, i),)).fetchone()
            return loads(row[0]) if row else None

        histories: dict[int, Any] = {}
        ahistories: dict[int, Any] = {}

        async def ours_append(task: int, i: int) -> object:
            history = ahistories.get(task) or ahistories.setdefault(task, AsyncChatHistory(adb, f"conc{task}"))
            return await history.add(chat(i))

        async def bare_append(task: int, i: int) -> object:
            async with apool.connection() as conn:
                return await conn.execute(insert, (f"conc{task}", i, dumps(chat(i)).decode()))

        def sync_ours_append(task: int, i: int) -> object:
            history = histories.get(task) or histories.setdefault(task, ChatHistory(db, f"conc{task}"))
            return history.add(chat(i))

        def sync_bare_append(task: int, i: int) -> object:
            with pool.connection() as conn:
                return conn.execute(insert, (f"conc{task}", i, dumps(chat(i)).decode()))

        return {
            MIX: Pair(
                "kvstore AsyncPostgresDatabase get/set (sync: PostgresDatabase)",
                "psycopg_pool AsyncConnectionPool (sync: ConnectionPool)",
                ours_mix,
                bare_mix,
                sync_ours_mix,
                sync_bare_mix,
            ),
            APPEND: Pair(
                "kvstore AsyncChatHistory.add (sync: ChatHistory.add)",
                "psycopg_pool INSERT (conv, seq, value)",
                ours_append,
                bare_append,
                sync_ours_append,
                sync_bare_append,
            ),
        }


def unlink_prefix(url: str, prefix: str) -> int:
    """SCAN + UNLINK every key starting with ``prefix`` (never KEYS, never FLUSHDB)."""
    import redis

    client, removed, batch = redis.Redis.from_url(url), 0, []
    try:
        for key in client.scan_iter(match=prefix + "*", count=1000):
            batch.append(key)
            if len(batch) >= 1000:
                removed += client.unlink(*batch)
                batch = []
        if batch:
            removed += client.unlink(*batch)
    finally:
        client.close()
    return removed


class RedisSides:
    """kvstore under ``bench_<pid>_conc:`` (sync) / ``..._aconc:`` (async), the bare pool under ``..._concraw:``."""

    def __init__(self, ctx: Context, settings: Settings, stack: contextlib.ExitStack) -> None:
        import redis
        import redis.asyncio

        from kvstore.redis import AsyncRedisCache, RedisCache

        url, size, wait, tag = ctx.redis_url, settings.pool, ctx.wait, ctx.tag
        stack.callback(unlink_prefix, url, f"{tag}")
        self.cache = RedisCache(url, key_prefix=f"{tag}conc:", max_connections=size)
        stack.callback(self.cache.close)
        self.acache = AsyncRedisCache(url, key_prefix=f"{tag}aconc:", max_connections=size)
        stack.callback(lambda: wait(self.acache.aclose()))
        pool = redis.BlockingConnectionPool.from_url(url, max_connections=size, timeout=5)
        self.raw = redis.Redis(connection_pool=pool)
        stack.callback(pool.disconnect)
        stack.callback(self.raw.close)
        apool = redis.asyncio.BlockingConnectionPool.from_url(url, max_connections=size, timeout=5)
        self.araw = redis.asyncio.Redis.from_pool(apool)  # owns the pool: aclose() disconnects it
        stack.callback(lambda: wait(self.araw.aclose()))
        self.keys = [f"{tag}concraw:{k}" for k in KEYS]
        self.raw.mset({k: dumps(MESSAGE) for k in self.keys})
        self.cache.mset({k: MESSAGE for k in KEYS})
        wait(self.acache.mset({k: MESSAGE for k in KEYS}))

    def pairs(self) -> dict[str, Pair]:
        cache, acache, raw, araw, keys = self.cache, self.acache, self.raw, self.araw, self.keys

        async def ours_mix(task: int, i: int) -> object:
            if i % 10 == 0:
                return await acache.set(_key(task, i), msg(i))
            return await acache.get(_key(task, i))

        async def bare_mix(task: int, i: int) -> object:
            key = keys[(i * 7919 + task) % 1000]
            if i % 10 == 0:
                return await araw.set(key, dumps(msg(i)))
            value = await araw.get(key)
            return None if value is None else loads(value)

        def sync_ours_mix(task: int, i: int) -> object:
            return cache.set(_key(task, i), msg(i)) if i % 10 == 0 else cache.get(_key(task, i))

        def sync_bare_mix(task: int, i: int) -> object:
            key = keys[(i * 7919 + task) % 1000]
            if i % 10 == 0:
                return raw.set(key, dumps(msg(i)))
            value = raw.get(key)
            return None if value is None else loads(value)

        return {
            MIX: Pair(
                "kvstore AsyncRedisCache get/set (sync: RedisCache)",
                "redis.asyncio BlockingConnectionPool (sync: redis.Redis)",
                ours_mix,
                bare_mix,
                sync_ours_mix,
                sync_bare_mix,
            )
        }


BACKENDS: dict[str, Callable[[Context, Settings, contextlib.ExitStack], Any]] = {
    "postgres": PostgresSides,
    "redis": RedisSides,
}


def measure(ctx: Context, pair: Pair, settings: Settings, executor: ThreadPoolExecutor) -> list[dict[str, Any]]:
    """Every level of one workload on one backend: rows of kvstore vs bare (throughput ratio, p50, p99)."""
    counter = itertools.count()
    rows = []
    levels: list[tuple[str, int]] = [(f"{n} async task{'s' if n > 1 else ''}", n) for n in settings.levels]
    levels.append((f"{settings.threads} threads (sync)", -settings.threads))
    for label, n in levels:
        ours, bare = Side(pair.ours), Side(pair.bare)

        def one(side: Side | None, mine: bool, seconds: float, n: int = n) -> None:
            if n > 0:
                op = pair.async_ours if mine else pair.async_bare
                ctx.wait(drive_async(op, n, seconds, counter, side))
            else:
                op_sync = pair.sync_ours if mine else pair.sync_bare
                drive_threads(op_sync, -n, seconds, counter, side, executor)

        one(None, True, settings.seconds / 2)  # warm-up: connections, prepared statements, caches
        one(None, False, settings.seconds / 2)
        for _ in range(settings.rounds):
            one(ours, True, settings.seconds)
            one(bare, False, settings.seconds)
        a, b = ours.summary(), bare.summary()
        ratio = a["ops_per_s"] / b["ops_per_s"] if b["ops_per_s"] else 0.0
        rows.append(
            {
                "level": label,
                "tasks": abs(n),
                "mode": "async" if n > 0 else "threads",
                "ours": a,
                "bare": b,
                "ratio": ratio,
            }
        )
        print(
            f"  {label:<20} kvstore {a['ops_per_s']:>9,.0f} ops/s p50 {a['p50_ms']:6.2f} p99 {a['p99_ms']:7.2f} ms | "
            f"bare {b['ops_per_s']:>9,.0f} ops/s p50 {b['p50_ms']:6.2f} p99 {b['p99_ms']:7.2f} ms | "
            f"ratio {ratio:.2f} {'OK' if ratio >= 0.9 else 'MISS'} (>= 0.9)"
            + (f" | errors kvstore {a['errors']} bare {b['errors']}" if a["errors"] or b["errors"] else "")
        )
    return rows


def run(
    ctx: Context,
    settings: Settings | None = None,
    backends: tuple[str, ...] = ("postgres", "redis"),
    only: list[str] | None = None,
) -> list[dict[str, Any]]:
    """Measure every (backend, workload) whose server is known; record the rows in ``ctx.report`` and return them.

    ``only``: workload name prefixes ("get", "chat"); a backend without its server URL is recorded as skipped.
    """
    settings = settings or Settings.for_run(ctx.quick)
    results: list[dict[str, Any]] = []
    urls = {"postgres": ctx.postgres_url, "redis": ctx.redis_url}
    with ThreadPoolExecutor(settings.threads, thread_name_prefix="bench-conc") as executor:
        for backend in backends:
            if not urls[backend]:
                ctx.report.note("concurrency", f"{backend}: not run (no server)")
                continue
            with contextlib.ExitStack() as stack:
                sides = BACKENDS[backend](ctx, settings, stack)
                pairs = sides.pairs()
                for workload in WORKLOADS:
                    if only and not any(workload.startswith(w) for w in only):
                        continue
                    if workload not in pairs:
                        continue
                    print(f"\n## concurrency: {backend}, {workload} (pool {settings.pool} on both sides)")
                    for row in measure(ctx, pairs[workload], settings, executor):
                        results.append({"backend": backend, "workload": workload, **row})
    ctx.report.add_concurrency(
        results,
        f"pool {settings.pool} on both sides, {settings.rounds} rounds of {settings.seconds:g} s per side and level",
    )
    return results
