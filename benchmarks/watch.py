"""Live updates: append-to-watcher latency per backend, and what notifying a watched list costs appends.

Usage: python -m benchmarks.watch [--quick] [--postgres URL] [--skip-cost]
In the report: ``python -m benchmarks --only watch`` (``--workloads latency`` / ``notify``).

* latency: a writer process appends ``{"t": time.time()}`` every 5 ms; an async watcher in
  this process (``AsyncStore.watch(key, start=0)``) records ``time.time() - t`` when each item
  arrives. p50/p99 per backend (memory: a task of the same loop, woken in process; SQLite: the
  default 50 ms ``PRAGMA data_version`` poll; PostgreSQL: LISTEN/NOTIFY). The first items
  (connection set-up) are a warm-up, not recorded.
* notify cost: N appends (kvstore's sync ``append``, one list per process) to a list that a
  watcher's row in ``<prefix>watchers`` marks as watched (the append function probes that table
  and sends one NOTIFY) and to one nobody watches (the probe only), in alternating rounds (which
  goes first alternates), 1 and 4 writer processes, a LISTEN connection open meanwhile. Median
  appends/s of each and the ratio, and the server CPU per append when the server's processes
  are readable here.

PostgreSQL runs in a schema ``bench_<pid>_watch`` made for the run and dropped at the end.
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
from pathlib import Path
from typing import Any

PG_URL = os.environ.get("KVSTORE_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
PREFIX = "bench_watch_"
#: Items of each latency run, notify-cost rounds and appends per writer per round: the full run's and --quick's.
FULL = {"items": 500, "rounds": 3, "appends": 500}
QUICK = {"items": 60, "rounds": 1, "appends": 100}
PARTS = ("latency", "notify")
#: Items appended before the timed ones (connections, first poll): not recorded.
WARMUP = 10
PAUSE = 0.005
#: How each backend's watcher learns of an append (the defaults of ``watch``).
WAKE = {
    "memory": "in process (same event loop)",
    "sqlite": "PRAGMA data_version polled every 50 ms (default)",
    "postgres": "LISTEN/NOTIFY",
}


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# --- latency ----------------------------------------------------------------------------


def _writer(kind: str, target: str, key: str, count: int, pause: float, schema: str) -> None:
    store: Any
    if kind == "sqlite":
        from kvstore.sqlite import SqliteDatabase

        store = SqliteDatabase(target)
    else:
        from kvstore.postgres import PostgresDatabase

        store = PostgresDatabase(target, schema_name=schema, table_prefix=PREFIX, max_size=1)
    time.sleep(0.5)  # the watcher subscribes meanwhile
    for _ in range(count):
        store.append(key, {"t": time.time()})
        time.sleep(pause)
    store.close()


async def _latency(kind: str, target: str, count: int, schema: str = "public") -> list[float]:
    """Delays (s) of ``count`` appends after ``WARMUP`` unrecorded ones, seen by one async watcher."""
    from kvstore import AsyncMemoryDatabase

    store: Any
    if kind == "memory":
        store = AsyncMemoryDatabase()
    elif kind == "sqlite":
        from kvstore.sqlite import AsyncSqliteDatabase

        store = AsyncSqliteDatabase(target)
    else:
        from kvstore.postgres import AsyncPostgresDatabase

        store = AsyncPostgresDatabase(target, schema_name=schema, table_prefix=PREFIX, max_size=2)
    key = f"lat-{uuid.uuid4().hex}"
    total = count + WARMUP
    delays: list[float] = []
    proc = None
    task = None
    if kind == "memory":

        async def write() -> None:
            await asyncio.sleep(0.2)
            for _ in range(total):
                await store.append(key, {"t": time.time()})
                await asyncio.sleep(PAUSE)

        task = asyncio.create_task(write())
    else:
        proc = mp.get_context("spawn").Process(target=_writer, args=(kind, target, key, total, PAUSE, schema))
        proc.start()
    items = store.watch(key, start=0)
    try:
        async for item in items:
            delays.append(time.time() - item.value["t"])
            if len(delays) == total:
                break
    finally:
        await items.aclose()
        if proc is not None:
            await asyncio.to_thread(proc.join, 60)
            if proc.is_alive():
                proc.kill()
        elif task is not None:
            await task
        await store.delete(key)
        await store.aclose()
    return delays[WARMUP:]


# --- notify cost ------------------------------------------------------------------------


def _backend_cpu(pid: int) -> float | None:
    """CPU seconds a local server process has used (``None`` when it is not readable here)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _appender(url: str, key: str, count: int, ready: Any, go: Any, out: Any, schema: str, watched: bool) -> None:
    from kvstore.postgres import PostgresDatabase

    store = PostgresDatabase(url, schema_name=schema, table_prefix=PREFIX, max_size=1, min_size=1)
    store.append(key, 0)
    with store._pool.connection() as conn:  # the pool's one connection: its server process
        pid = conn.execute("SELECT pg_backend_pid()").fetchone()[0]  # type: ignore[index]
        if watched:  # a live watcher's row, as `watch` registers it (for longer than any round)
            conn.execute(
                f'INSERT INTO "{schema}"."{PREFIX}watchers" (ns, key, id, expires_at) '
                "VALUES (%s, %s, 'bench', now() + interval '1 hour')",
                (store.key_prefix, key),
            )
    ready.put(1)
    go.wait()
    cpu, started = _backend_cpu(pid), time.perf_counter()
    for i in range(count):
        store.append(key, {"i": i, "text": "x" * 100})
    after = _backend_cpu(pid)
    out.put((time.perf_counter() - started, None if cpu is None or after is None else (after - cpu) / count))
    store.delete(key)
    store.close()


def _round(url: str, writers: int, count: int, schema: str, watched: bool) -> tuple[float, float | None]:
    ctx = mp.get_context("spawn")
    ready, out, go = ctx.Queue(), ctx.Queue(), ctx.Event()
    run = uuid.uuid4().hex[:8]
    procs = [
        ctx.Process(target=_appender, args=(url, f"cost-{run}-{i}", count, ready, go, out, schema, watched))
        for i in range(writers)
    ]
    for proc in procs:
        proc.start()
    try:
        for _ in procs:
            ready.get(timeout=60)
        started = time.perf_counter()
        go.set()
        cpus = [out.get(timeout=600)[1] for _ in procs]
        elapsed = time.perf_counter() - started
    finally:
        for proc in procs:
            proc.join(60)
            if proc.is_alive():
                proc.kill()
    known = [c for c in cpus if c is not None]
    return writers * count / elapsed, (statistics.mean(known) if known else None)


def notify_cost(url: str, rounds: int, count: int, schema: str = "public") -> list[dict[str, Any]]:
    """Appends/s to a watched and to an unwatched list, 1 and 4 writer processes; one row per writer count.

    Every append probes ``<prefix>watchers`` (the append function, schema version 8); only an append to a
    watched list sends a NOTIFY (whose commit takes a database-wide lock). The rows keep their historic
    names: ``with_*`` watched, ``without_*`` unwatched.
    """
    import psycopg

    from kvstore.postgres import PostgresDatabase
    from kvstore.postgres._sql import watch_channel

    PostgresDatabase(url, schema_name=schema, table_prefix=PREFIX).close()  # migrate: the tables exist
    found: list[dict[str, Any]] = []
    with psycopg.connect(url, autocommit=True) as listener:
        listener.execute(f'LISTEN "{watch_channel(schema, PREFIX)}"')
        for writers in (1, 4):
            rates: dict[bool, list[float]] = {True: [], False: []}
            cpu: dict[bool, list[float]] = {True: [], False: []}
            notified = {True: 0, False: 0}  # what the listener got: proof that only watched appends notify
            _round(url, writers, max(count // 5, 10), schema, True)  # warm up
            _drain(listener)
            for r in range(rounds):
                for watched in (r % 2 == 0, r % 2 != 0):  # alternate which goes first
                    rate, per_append = _round(url, writers, count, schema, watched)
                    rates[watched].append(rate)
                    if per_append is not None:
                        cpu[watched].append(per_append)
                    notified[watched] += _drain(listener)
            with_t, without = statistics.median(rates[True]), statistics.median(rates[False])
            row: dict[str, Any] = {
                "section": "watch",
                "workload": "notify_cost",
                "backend": "postgres",
                "writers": writers,
                "appends": count,
                "rounds": rounds,
                "with_per_s": with_t,
                "without_per_s": without,
                "ratio": with_t / without,
                "cpu_us_with": None,
                "cpu_us_without": None,
                "notifies_with": notified[True],
                "notifies_without": notified[False],
            }
            print(
                f"notify cost, {writers} writer(s) x {count} appends, median of {rounds}: "
                f"{without:,.0f}/s unwatched, {with_t:,.0f}/s watched "
                f"(x{with_t / without:.2f}, {100 * (1 - with_t / without):+.1f} % cost)"
            )
            if cpu[True] and cpu[False]:
                # Server CPU per append: steadier than wall-clock rates on a busy machine.
                on_us, off_us = statistics.median(cpu[True]) * 1e6, statistics.median(cpu[False]) * 1e6
                row["cpu_us_with"], row["cpu_us_without"] = on_us, off_us
                times = f", x{on_us / off_us:.2f}" if off_us else ""  # /proc counts 10 ms ticks: a short run reads 0
                print(
                    f"  server CPU per append: {off_us:.0f} us unwatched, {on_us:.0f} us watched "
                    f"({on_us - off_us:+.0f} us{times})"
                )
            found.append(row)
    return found


def _drain(listener: Any) -> int:
    """How many notifications ``listener`` got (waits a moment: the last commits' may still be on the way)."""
    return sum(1 for _ in listener.notifies(timeout=0.2))


# --- the report's section ----------------------------------------------------------------


def rows(
    postgres_url: str | None,
    tmp: Path,
    *,
    items: int = FULL["items"],
    rounds: int = FULL["rounds"],
    appends: int = FULL["appends"],
    parts: tuple[str, ...] = PARTS,
    schema: str | None = None,
) -> list[dict[str, Any]]:
    """The latency rows (memory, SQLite, and PostgreSQL when ``postgres_url``) and the notify-cost rows.

    Latency rows: ``section`` "watch", ``workload`` "append_to_watcher_latency", ``backend``, ``wake``,
    ``items``, ``p50_ms``, ``p99_ms``, ``max_ms``. Notify-cost rows: see `notify_cost`. PostgreSQL's tables live
    in ``schema`` (default ``bench_<pid>_watch``), dropped at the end; SQLite's file in ``tmp``.
    """
    schema = schema or f"bench_{os.getpid()}_watch"
    found: list[dict[str, Any]] = []
    try:
        if "latency" in parts:
            backends = [("memory", ""), ("sqlite", str(tmp / "bench_watch.db"))]
            if postgres_url:
                backends.append(("postgres", postgres_url))
            for kind, target in backends:
                delays = asyncio.run(_latency(kind, target, items, schema))
                row = {
                    "section": "watch",
                    "workload": "append_to_watcher_latency",
                    "backend": kind,
                    "wake": WAKE[kind],
                    "items": items,
                    "p50_ms": _pct(delays, 0.5) * 1000,
                    "p99_ms": _pct(delays, 0.99) * 1000,
                    "max_ms": max(delays) * 1000,
                }
                found.append(row)
                print(
                    f"latency {kind:8s} {items} appends: p50 {row['p50_ms']:6.2f} ms  "
                    f"p99 {row['p99_ms']:6.2f} ms  max {row['max_ms']:6.2f} ms"
                )
        if "notify" in parts and postgres_url:
            found += notify_cost(postgres_url, rounds, appends, schema)
    finally:
        if postgres_url:
            import psycopg

            with psycopg.connect(postgres_url, autocommit=True, connect_timeout=10) as admin:
                admin.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    return found


def run(ctx: Any, only: list[str] | None = None) -> list[dict[str, Any]]:
    """The report's watch section (``python -m benchmarks --only watch``): rows recorded in ``ctx.report``.

    ``only``: part name prefixes (``latency``, ``notify``); PostgreSQL's rows need ``ctx.postgres_url``.
    """
    sizes = QUICK if ctx.quick else FULL
    parts = tuple(p for p in PARTS if not only or any(p.startswith(w) for w in only))
    if not parts:
        return []
    if not ctx.postgres_url:
        ctx.report.note("watch", "PostgreSQL rows not run: no PostgreSQL server.")
    tmp = Path(ctx.tmp) / "watch"
    tmp.mkdir(parents=True, exist_ok=True)
    found = rows(ctx.postgres_url or None, tmp, **sizes, parts=parts, schema=f"{ctx.tag}watch")
    ctx.report.add_watch(found, ", ".join(f"{k}={v:,}" for k, v in sizes.items()))
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a few dozen items: checks that it runs")
    parser.add_argument("--postgres", default=PG_URL)
    parser.add_argument("--skip-cost", action="store_true")
    args = parser.parse_args()
    sizes = QUICK if args.quick else FULL
    parts = ("latency",) if args.skip_cost else PARTS
    with tempfile.TemporaryDirectory() as tmp:
        rows(args.postgres, Path(tmp), **sizes, parts=parts)


if __name__ == "__main__":
    main()
