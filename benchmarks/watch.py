"""Live updates: append-to-watcher latency per backend, and what the notify trigger costs appends.

Usage: python -m benchmarks.watch [--quick] [--postgres URL]

* latency: a writer process appends ``{"t": time.time()}`` every few milliseconds; an async
  watcher in this process records ``time.time() - t`` when each item arrives. p50/p99 per
  backend (memory: a task of the same loop; SQLite: the default 50 ms ``data_version`` poll;
  PostgreSQL: LISTEN/NOTIFY).
* notify cost: N appends (kvstore's sync ``append``, one list per process) with the schema-v5
  notify trigger and with it dropped, in alternating rounds, 1 and 4 writer processes, a
  LISTEN connection open meanwhile. Reported as appends/s and the ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import statistics
import tempfile
import time
import uuid
from typing import Any

PG_URL = os.environ.get("KVSTORE_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
PREFIX = "bench_watch_"


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# --- latency ----------------------------------------------------------------------------


def _writer(kind: str, target: str, key: str, count: int, pause: float) -> None:
    store: Any
    if kind == "sqlite":
        from kvstore.sqlite import SqliteDatabase

        store = SqliteDatabase(target)
    else:
        from kvstore.postgres import PostgresDatabase

        store = PostgresDatabase(target, table_prefix=PREFIX, max_size=1)
    time.sleep(0.5)  # the watcher subscribes meanwhile
    for _ in range(count):
        store.append(key, {"t": time.time()})
        time.sleep(pause)
    store.close()


async def _latency(kind: str, target: str, count: int) -> list[float]:
    from kvstore import AsyncMemoryDatabase

    store: Any
    if kind == "memory":
        store = AsyncMemoryDatabase()
    elif kind == "sqlite":
        from kvstore.sqlite import AsyncSqliteDatabase

        store = AsyncSqliteDatabase(target)
    else:
        from kvstore.postgres import AsyncPostgresDatabase

        store = AsyncPostgresDatabase(target, table_prefix=PREFIX, max_size=2)
    key = f"lat-{uuid.uuid4().hex}"
    delays: list[float] = []
    pause = 0.005
    proc = None
    if kind == "memory":

        async def write() -> None:
            await asyncio.sleep(0.2)
            for _ in range(count):
                await store.append(key, {"t": time.time()})
                await asyncio.sleep(pause)

        task = asyncio.create_task(write())
    else:
        proc = mp.get_context("spawn").Process(target=_writer, args=(kind, target, key, count, pause))
        proc.start()
    items = store.watch(key, start=0)
    try:
        async for item in items:
            delays.append(time.time() - item.value["t"])
            if len(delays) == count:
                break
    finally:
        await items.aclose()
    if proc is not None:
        proc.join()
    else:
        await task
    await store.delete(key)
    await store.aclose()
    return delays


# --- notify cost ------------------------------------------------------------------------


def _backend_cpu(pid: int) -> float | None:
    """CPU seconds a local server process has used (``None`` when it is not readable here)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _appender(url: str, key: str, count: int, ready: Any, go: Any, out: Any) -> None:
    from kvstore.postgres import PostgresDatabase

    store = PostgresDatabase(url, table_prefix=PREFIX, max_size=1, min_size=1)
    store.append(key, 0)
    with store._pool.connection() as conn:  # the pool's one connection: its server process
        pid = conn.execute("SELECT pg_backend_pid()").fetchone()[0]  # type: ignore[index]
    ready.put(1)
    go.wait()
    cpu, started = _backend_cpu(pid), time.perf_counter()
    for i in range(count):
        store.append(key, {"i": i, "text": "x" * 100})
    after = _backend_cpu(pid)
    out.put((time.perf_counter() - started, None if cpu is None or after is None else (after - cpu) / count))
    store.delete(key)
    store.close()


def _round(url: str, writers: int, count: int) -> tuple[float, float | None]:
    ctx = mp.get_context("spawn")
    ready, out, go = ctx.Queue(), ctx.Queue(), ctx.Event()
    run = uuid.uuid4().hex[:8]
    procs = [
        ctx.Process(target=_appender, args=(url, f"cost-{run}-{i}", count, ready, go, out)) for i in range(writers)
    ]
    for proc in procs:
        proc.start()
    for _ in procs:
        ready.get(timeout=60)
    started = time.perf_counter()
    go.set()
    cpus = [out.get(timeout=600)[1] for _ in procs]
    elapsed = time.perf_counter() - started
    for proc in procs:
        proc.join()
    known = [c for c in cpus if c is not None]
    return writers * count / elapsed, (statistics.mean(known) if known else None)


def notify_cost(url: str, rounds: int, count: int) -> None:
    import psycopg

    from kvstore.postgres import PostgresDatabase
    from kvstore.postgres._sql import watch_channel

    PostgresDatabase(url, table_prefix=PREFIX).close()  # migrate: the trigger exists
    trigger = f'"{PREFIX}list_items_notify"'
    table = f'"public"."{PREFIX}list_items"'
    function = f'"public"."{PREFIX}notify_list_items"'
    with psycopg.connect(url, autocommit=True) as admin, psycopg.connect(url, autocommit=True) as listener:
        listener.execute(f'LISTEN "{watch_channel("public", PREFIX)}"')

        def set_trigger(on: bool) -> None:
            admin.execute(f"DROP TRIGGER IF EXISTS {trigger} ON {table}")
            if on:
                admin.execute(
                    f"CREATE TRIGGER {trigger} AFTER INSERT ON {table} REFERENCING NEW TABLE AS added "
                    f"FOR EACH STATEMENT EXECUTE FUNCTION {function}()"
                )

        try:
            for writers in (1, 4):
                rates: dict[bool, list[float]] = {True: [], False: []}
                cpu: dict[bool, list[float]] = {True: [], False: []}
                _round(url, writers, count // 5)  # warm up
                for r in range(rounds):
                    for on in (r % 2 == 0, r % 2 != 0):  # alternate which goes first
                        set_trigger(on)
                        rate, per_append = _round(url, writers, count)
                        rates[on].append(rate)
                        if per_append is not None:
                            cpu[on].append(per_append)
                        for _ in listener.notifies(timeout=0):  # drain what the listener got
                            pass
                with_t, without = statistics.median(rates[True]), statistics.median(rates[False])
                print(
                    f"notify cost, {writers} writer(s) x {count} appends, median of {rounds}: "
                    f"{without:,.0f}/s without the trigger, {with_t:,.0f}/s with it "
                    f"(x{with_t / without:.2f}, {100 * (1 - with_t / without):+.1f} % cost)"
                )
                if cpu[True] and cpu[False]:
                    # Server CPU per append: steadier than wall-clock rates on a busy machine.
                    on_us, off_us = statistics.median(cpu[True]) * 1e6, statistics.median(cpu[False]) * 1e6
                    print(
                        f"  server CPU per append: {off_us:.0f} us without, {on_us:.0f} us with "
                        f"({on_us - off_us:+.0f} us, x{on_us / off_us:.2f})"
                    )
        finally:
            set_trigger(True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a few hundred items: checks that it runs")
    parser.add_argument("--postgres", default=PG_URL)
    parser.add_argument("--skip-cost", action="store_true")
    args = parser.parse_args()
    count = 100 if args.quick else 1000
    with tempfile.TemporaryDirectory() as tmp:
        for kind, target in (("memory", ""), ("sqlite", f"{tmp}/watch.db"), ("postgres", args.postgres)):
            delays = asyncio.run(_latency(kind, target, count))
            print(
                f"latency {kind:8s} {count} appends: p50 {_pct(delays, 0.5) * 1000:6.2f} ms  "
                f"p99 {_pct(delays, 0.99) * 1000:6.2f} ms  max {max(delays) * 1000:6.2f} ms"
            )
    if not args.skip_cost:
        notify_cost(args.postgres, 3 if args.quick else 5, 300 if args.quick else 2000)


if __name__ == "__main__":
    main()
