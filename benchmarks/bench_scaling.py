"""Cost vs size: ``last(20)`` vs history length, ``keys(pattern)`` vs total keys and matches, and ``kvstore copy``
SQLite -> PostgreSQL vs a raw ``COPY``.

Run alone: ``python -m benchmarks --only scaling [--quick] [--workloads last,keys,copy]``.

Big data is bulk-loaded straight into kvstore's own tables, in SQL on the server side (a recursive CTE in SQLite,
``generate_series`` in PostgreSQL), by copying a row that kvstore itself wrote (so every column kvstore sets is
right) and continuing its numbering; before anything is timed the load is checked through kvstore's API (the
length, the last message, the number of matches). PostgreSQL tables are ANALYZEd after each load. Everything
lives in ``bench_<pid>_...`` schemas, files and key prefixes and is removed at the end.

- ``last``: one conversation grown to each mark (10^2 ... 10^7 messages; --quick stops at 10^4); at each mark
  ``ChatHistory.last(20)``, ``AsyncChatHistory.last(20)`` and the floor (the same 20 rows of kvstore's items
  table read by index, + orjson) run in alternating calibrated rounds. SQLite and PostgreSQL.
- ``keys``: keys ``k:00000000`` ... grown to each total (10^3 ... 10^6 on SQLite and PostgreSQL, 10^5 on Redis,
  which answers with SCAN over the whole database); a prefix pattern and a leading-wildcard pattern that both
  match 100 keys, then prefix patterns matching 10 ... 10^5 keys at the largest total.
- ``copy``: 10^6 keys (--quick: 10^4) in a SQLite file copied into an empty PostgreSQL schema by kvstore's copy
  (``copy_namespace`` with a checkpoint file, as ``kvstore copy`` runs it, without its verify pass) against apsw
  reading the same rows straight into psycopg ``COPY ... FROM STDIN``.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from benchmarks._common import Case, run_cases
from benchmarks.runner import MESSAGE, Context

__all__ = ["PARTS", "Settings", "run"]

PARTS = ("last", "keys", "copy")
TEMPLATE = {"role": "user", "content": "What is the weather in Lisbon tomorrow? Please answer briefly. #@@@"}
loads, dumps = orjson.loads, orjson.dumps
#: The two patterns of the "vs total keys" curve (100 matches each once there are 200 keys) and the prefix patterns
#: of the "vs matches" curve with how many keys each matches (given enough keys).
BY_TOTAL = (("prefix", "k:000001*", 100), ("scan", "*:000001??", 100))
BY_MATCHES = (("k:0000001?", 10), ("k:000001*", 100), ("k:00001*", 1_000), ("k:0001*", 10_000), ("k:001*", 100_000))


@dataclass(frozen=True)
class Settings:
    last_marks: tuple[int, ...] = tuple(10**e for e in range(2, 8))
    key_totals: tuple[int, ...] = (1_000, 10_000, 100_000, 1_000_000)
    redis_key_totals: tuple[int, ...] = (1_000, 10_000, 100_000)
    copy_keys: int = 1_000_000
    rounds: int = 5
    seconds: float = 0.1

    @classmethod
    def for_run(cls, quick: bool) -> Settings:
        if quick:
            return cls((100, 1_000, 10_000), (1_000, 10_000), (1_000, 10_000), 10_000, 3, 0.03)
        return cls()


def _time(ctx: Context, cases: list[Case], settings: Settings) -> dict[str, float]:
    """µs per op of each case, alternating calibrated rounds (median)."""
    results = run_cases(cases, n=1, rounds=settings.rounds, loop=ctx.loop, seconds_per_round=settings.seconds)
    return {name: 1e6 / r.ops_per_s for name, r in results.items()}


def _columns_sqlite(conn: Any, table: str) -> list[str]:
    return [row[1] for row in conn.execute(f"PRAGMA table_info({table})").fetchall()]


def _columns_pg(conn: Any, schema: str, table: str) -> list[str]:
    rows = conn.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_schema = %s AND table_name = %s "
        "ORDER BY ordinal_position",
        (schema, table),
    ).fetchall()
    return [r[0] for r in rows]


#: The reference conversation's length: last(20) at every size is compared with last(20) on this many messages.
SMALL_HISTORY = 100
#: Rows per transaction of the SQLite bulk loads.
LOAD_CHUNK = 1_000_000


def _remove_later(stack: contextlib.ExitStack, path: Path) -> None:
    """Delete the SQLite file (and its WAL) when ``stack`` closes, after its connections (registered later) close:
    a 10^7-message file is gigabytes, not to be kept until the end of the whole run."""
    for suffix in ("", "-wal", "-shm"):
        stack.callback(Path(f"{path}{suffix}").unlink, missing_ok=True)


def _sqlite_conn(path: Path) -> Any:
    """The loader's (and the floor's) connection: WAL like kvstore's; no fsync at its commits (a benchmark file)."""
    import apsw

    conn = apsw.Connection(str(path))
    conn.execute("PRAGMA journal_mode=WAL").fetchall()  # one PRAGMA per call, read back (BENCHMARKS.md)
    conn.execute("PRAGMA synchronous=OFF").fetchall()
    conn.execute("PRAGMA cache_size=-65536").fetchall()
    return conn


# --- last(20) vs history length ---------------------------------------------------------------------------------


class SqliteHistory:
    """A conversation in kvstore's SQLite tables, grown by SQL from the one message kvstore wrote."""

    backend = "sqlite"

    def __init__(self, ctx: Context, stack: contextlib.ExitStack) -> None:
        from kvstore import AsyncChatHistory, ChatHistory
        from kvstore.sqlite import AsyncSqliteDatabase, SqliteDatabase

        path = ctx.tmp / "scale_last.db"
        _remove_later(stack, path)
        self.db = db = SqliteDatabase(path)
        stack.callback(db.close)
        self.adb = adb = AsyncSqliteDatabase(path)
        stack.callback(lambda: ctx.wait(adb.aclose()))
        self.history, self.ahistory = ChatHistory(db, "scale"), AsyncChatHistory(adb, "scale")
        self.history.add(TEMPLATE)
        self.conn = conn = _sqlite_conn(path)
        stack.callback(conn.close)
        rows = conn.execute("SELECT ns, key, idx, value FROM kvstore_items").fetchall()
        if len(rows) != 1:
            raise RuntimeError(f"expected the one item kvstore wrote in kvstore_items, found {len(rows)}")
        self.ns, self.key, self.first, self.value = rows[0]
        (tail,) = conn.execute(
            "SELECT tail FROM kvstore_keys WHERE ns = ? AND key = ?", (self.ns, self.key)
        ).fetchall()[0]
        if tail != self.first + 1:
            raise RuntimeError(f"unexpected list bounds: first item {self.first}, tail {tail}")
        self.count = 1

    def grow(self, n: int) -> None:
        """Items ``count`` .. ``n - 1``, a million per transaction (the WAL is checkpointed as it goes), then the
        list's tail: kvstore sees the new length only once every item is there."""
        for low in range(self.count, n, LOAD_CHUNK):
            high = min(n, low + LOAD_CHUNK)
            with self.conn:
                self.conn.execute(
                    "WITH RECURSIVE g(i) AS (SELECT ?1 UNION ALL SELECT i + 1 FROM g WHERE i < ?2) "
                    "INSERT INTO kvstore_items (ns, key, idx, value) "
                    "SELECT ?3, ?4, i, CAST(replace(CAST(?5 AS TEXT), '@@@', i) AS BLOB) FROM g",
                    (self.first + low, self.first + high - 1, self.ns, self.key, self.value),
                )
        with self.conn:
            self.conn.execute(
                "UPDATE kvstore_keys SET tail = ? WHERE ns = ? AND key = ?", (self.first + n, self.ns, self.key)
            )
        self.count = n
        self.conn.execute("ANALYZE").fetchall()

    def floor(self) -> Callable[[int], object]:
        cur, args = self.conn.cursor(), (self.ns, self.key)
        query = "SELECT value FROM kvstore_items WHERE ns = ? AND key = ? ORDER BY idx DESC LIMIT 20"
        return lambda i: [loads(r[0]) for r in cur.execute(query, args).fetchall()][::-1]


class PostgresHistory:
    """A conversation in kvstore's PostgreSQL tables (schema ``bench_<pid>_scale``), grown by ``generate_series``."""

    backend = "postgres"

    def __init__(self, ctx: Context, stack: contextlib.ExitStack) -> None:
        import psycopg

        from kvstore import AsyncChatHistory, ChatHistory
        from kvstore.postgres import AsyncPostgresDatabase, PostgresDatabase

        url, self.schema = ctx.postgres_url, schema = ctx.postgres_url, f"{ctx.tag}scale"
        self.conn = conn = psycopg.connect(url, autocommit=True)
        stack.callback(conn.close)
        stack.callback(conn.execute, f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        self.db = db = PostgresDatabase(url, schema_name=schema, min_size=1, max_size=1)
        db.open()
        stack.callback(db.close)
        self.adb = adb = AsyncPostgresDatabase(url, schema_name=schema, min_size=1, max_size=1)
        ctx.wait(adb.open())
        stack.callback(lambda: ctx.wait(adb.aclose()))
        self.history, self.ahistory = ChatHistory(db, "scale"), AsyncChatHistory(adb, "scale")
        self.history.add(TEMPLATE)
        self.items, self.entries = f"{schema}.kvstore_list_items", f"{schema}.kvstore_entries"
        rows = conn.execute(f"SELECT ns, key, seq, value::text FROM {self.items}").fetchall()
        if len(rows) != 1:
            raise RuntimeError(f"expected the one item kvstore wrote in {self.items}, found {len(rows)}")
        self.ns, self.key, self.first, self.value = rows[0]
        head, length = conn.execute(
            f"SELECT head, length FROM {self.entries} WHERE ns = %s AND key = %s", (self.ns, self.key)
        ).fetchone()  # type: ignore[misc]
        if head + length != self.first:
            raise RuntimeError(f"unexpected list counters: first item {self.first}, head {head}, length {length}")
        self.count = 1

    def grow(self, n: int) -> None:
        with self.conn.transaction():
            self.conn.execute(
                f"INSERT INTO {self.items} (ns, key, seq, value) SELECT %s, %s, g, replace(%s, '@@@', g::text)::json "
                "FROM generate_series(%s::bigint, %s::bigint) g",
                (self.ns, self.key, self.value, self.first + self.count, self.first + n - 1),
            )
            self.conn.execute(
                f"UPDATE {self.entries} SET length = length + %s WHERE ns = %s AND key = %s",
                (n - self.count, self.ns, self.key),
            )
        self.count = n
        self.conn.execute(f"ANALYZE {self.items}")
        self.conn.execute(f"ANALYZE {self.entries}")

    def floor(self) -> Callable[[int], object]:
        conn, args = self.conn, (self.ns, self.key)
        query = f"SELECT value::text FROM {self.items} WHERE ns = %s AND key = %s ORDER BY seq DESC LIMIT 20"
        return lambda i: [loads(r[0]) for r in conn.execute(query, args).fetchall()][::-1]


def _alast(history: Any) -> Callable[[int], Awaitable[object]]:
    async def op(i: int) -> object:
        return await history.last(20)

    return op


def last_curve(ctx: Context, settings: Settings, backends: tuple[str, ...]) -> list[dict[str, Any]]:
    rows = []
    for backend in backends:
        with contextlib.ExitStack() as stack:
            conv = (SqliteHistory if backend == "sqlite" else PostgresHistory)(ctx, stack)
            print(f"\n## scaling: {backend} last(20) vs history length")
            # The reference: last(20) of a SMALL_HISTORY conversation in the same tables, timed in the same rounds
            # at every size (flatness is a same-run ratio, not two numbers minutes apart on a noisy machine).
            small = type(conv.history)(conv.db, "small")
            small.extend([{**TEMPLATE, "content": f"small #{i}"} for i in range(SMALL_HISTORY)])
            for mark in settings.last_marks:
                started = time.perf_counter()
                conv.grow(mark)
                loaded = time.perf_counter() - started
                length = conv.db.get_length(conv.history.key)
                tail = conv.history.last(1)
                if length != mark or not tail or not tail[0].content.endswith(f"#{conv.first + mark - 1}"):
                    raise RuntimeError(f"{backend}: the bulk load does not read back through kvstore at {mark:,}")
                us = _time(
                    ctx,
                    [
                        Case("floor", conv.floor(), role="floor"),
                        Case("sync", lambda i, h=conv.history: h.last(20), role="kvstore"),
                        Case("async", _alast(conv.ahistory), is_async=True, role="kvstore"),
                        Case("small", lambda i, h=small: h.last(20), role="kvstore"),
                    ],
                    settings,
                )
                rows.append(
                    {
                        "backend": backend,
                        "size": mark,
                        "floor_us": us["floor"],
                        "ours_us": us["sync"],
                        "async_us": us["async"],
                        "small_us": us["small"],
                        "load_s": loaded,
                    }
                )
                print(
                    f"  {mark:>12,} messages (loaded in {loaded:5.1f} s): floor {us['floor']:8.1f} µs  "
                    f"ChatHistory.last(20) {us['sync']:8.1f} µs  AsyncChatHistory.last(20) {us['async']:8.1f} µs  "
                    f"÷ on {SMALL_HISTORY} messages {us['sync'] / us['small']:.2f}x"
                )
    return rows


# --- keys(pattern) ----------------------------------------------------------------------------------------------


class SqliteKeys:
    backend = "sqlite"

    def __init__(self, ctx: Context, stack: contextlib.ExitStack, path: Path | None = None) -> None:
        from kvstore.sqlite import SqliteDatabase

        path = path or ctx.tmp / "scale_keys.db"
        _remove_later(stack, path)
        self.store = db = SqliteDatabase(path)
        stack.callback(db.close)
        db.set("probe", MESSAGE)
        self.conn = conn = _sqlite_conn(path)
        stack.callback(conn.close)
        self.ns = conn.execute("SELECT ns FROM kvstore_keys WHERE key = 'probe'").fetchall()[0][0]
        self.columns = [c for c in _columns_sqlite(conn, "kvstore_keys") if c != "key"]
        self.count = 0

    def grow(self, n: int) -> None:
        cols = ", ".join(self.columns)
        for low in range(self.count, n, LOAD_CHUNK):
            with self.conn:
                self.conn.execute(
                    "WITH RECURSIVE g(i) AS (SELECT ?1 UNION ALL SELECT i + 1 FROM g WHERE i < ?2) "
                    f"INSERT INTO kvstore_keys (key, {cols}) SELECT printf('k:%08d', g.i), {cols} FROM g, "
                    "(SELECT * FROM kvstore_keys WHERE ns = ?3 AND key = 'probe')",
                    (low, min(n, low + LOAD_CHUNK) - 1, self.ns),
                )
        self.count = n
        self.conn.execute("ANALYZE").fetchall()

    def finish_load(self) -> None:
        """Drop the probe row the loads copy (it matches none of the patterns; a copy would count it)."""
        self.store.delete("probe")


class PostgresKeys:
    backend = "postgres"

    def __init__(self, ctx: Context, stack: contextlib.ExitStack, schema: str = "keys") -> None:
        import psycopg

        from kvstore.postgres import PostgresDatabase

        url, self.schema = ctx.postgres_url, f"{ctx.tag}{schema}"
        self.conn = conn = psycopg.connect(url, autocommit=True)
        stack.callback(conn.close)
        stack.callback(conn.execute, f"DROP SCHEMA IF EXISTS {self.schema} CASCADE")
        self.store = db = PostgresDatabase(url, schema_name=self.schema, min_size=1, max_size=1)
        db.open()
        stack.callback(db.close)
        db.set("probe", MESSAGE)
        self.entries = f"{self.schema}.kvstore_entries"
        self.columns = [c for c in _columns_pg(conn, self.schema, "kvstore_entries") if c != "key"]
        self.ns = conn.execute(f"SELECT ns FROM {self.entries} WHERE key = 'probe'").fetchone()[0]  # type: ignore[index]
        self.count = 0

    def grow(self, n: int) -> None:
        cols = ", ".join(self.columns)
        self.conn.execute(
            f"INSERT INTO {self.entries} (key, {cols}) SELECT 'k:' || lpad(g::text, 8, '0'), {cols} "
            f"FROM generate_series(%s::bigint, %s::bigint) g, (SELECT * FROM {self.entries} WHERE ns = %s AND key = 'probe') p",
            (self.count, n - 1, self.ns),
        )
        self.count = n
        self.conn.execute(f"ANALYZE {self.entries}")

    def finish_load(self) -> None:
        self.store.delete("probe")


class RedisKeys:
    """Loaded through kvstore's own ``mset`` (10^5 keys at most), under ``bench_<pid>_keys:``."""

    backend = "redis"

    def __init__(self, ctx: Context, stack: contextlib.ExitStack) -> None:
        from benchmarks.bench_concurrency import unlink_prefix
        from kvstore.redis import RedisCache

        self.store = cache = RedisCache(ctx.redis_url, key_prefix=f"{ctx.tag}keys:")
        stack.callback(unlink_prefix, ctx.redis_url, f"{ctx.tag}keys:")
        stack.callback(cache.close)
        self.count = 0

    def grow(self, n: int) -> None:
        for first in range(self.count, n, 1000):
            self.store.mset({f"k:{i:08d}": MESSAGE for i in range(first, min(n, first + 1000))})
        self.count = n

    def finish_load(self) -> None:
        pass


def _keys_rows(ctx: Context, settings: Settings, side: Any, totals: tuple[int, ...]) -> list[dict[str, Any]]:
    rows = []
    store = side.store

    def measure(kind: str, shape: str, pattern: str, expected: int) -> None:
        got = store.keys(pattern)
        if len(got) != expected:
            raise RuntimeError(f"{side.backend}: keys({pattern!r}) returned {len(got)} keys, expected {expected}")
        us = _time(ctx, [Case("keys", lambda i: store.keys(pattern), role="kvstore")], settings)["keys"]
        rows.append(
            {
                "backend": side.backend,
                "kind": kind,
                "shape": shape,
                "total": side.count,
                "pattern": pattern,
                "matches": expected,
                "ms": us / 1000,
            }
        )
        print(f"  {side.count:>10,} keys  {pattern:<12} {expected:>8,} matches  {us / 1000:9.2f} ms")

    for total in totals:
        side.grow(total)
        for shape, pattern, expected in BY_TOTAL:
            if total >= 200:
                measure("total", shape, pattern, expected)
    for pattern, expected in BY_MATCHES:
        if 2 * expected <= side.count:
            measure("matches", "prefix", pattern, expected)
    return rows


def keys_curve(ctx: Context, settings: Settings, backends: tuple[str, ...]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for backend in backends:
        print(f"\n## scaling: {backend} keys(pattern) vs total keys and matches")
        with contextlib.ExitStack() as stack:
            side = {"sqlite": SqliteKeys, "postgres": PostgresKeys, "redis": RedisKeys}[backend](ctx, stack)
            totals = settings.redis_key_totals if backend == "redis" else settings.key_totals
            rows += _keys_rows(ctx, settings, side, totals)
    return rows


# --- kvstore copy vs raw COPY ---------------------------------------------------------------------------------------


def copy_rows(ctx: Context, settings: Settings) -> list[dict[str, Any]]:
    from kvstore._copy.copy import copy_namespace  # what `kvstore copy` runs
    from kvstore._copy.plan import CopyCheckpoint

    n = settings.copy_keys
    print(f"\n## scaling: kvstore copy of {n:,} keys SQLite -> PostgreSQL vs raw COPY")
    with contextlib.ExitStack() as stack:
        source = SqliteKeys(ctx, stack, ctx.tmp / "scale_copy.db")
        started = time.perf_counter()
        source.grow(n)
        source.finish_load()
        print(f"  source loaded in {time.perf_counter() - started:.1f} s")
        target = PostgresKeys(ctx, stack, "copy")
        target.finish_load()
        raw = PostgresKeys(ctx, stack, "copyraw")
        raw.finish_load()
        checkpoint = CopyCheckpoint(ctx.tmp / "copy-checkpoint.json", "bench")
        started = time.perf_counter()
        stats = copy_namespace(
            source.store, target.store, checkpoint=checkpoint, batch=500, progress=lambda done, total: None
        )
        ours = time.perf_counter() - started
        checkpoint.remove()
        copied = target.conn.execute(f"SELECT count(*) FROM {target.entries}").fetchone()[0]  # type: ignore[index]
        if stats.keys != n or copied != n:
            raise RuntimeError(f"kvstore copy: {stats.keys} keys reported, {copied} in the target, expected {n}")
        cols = ["ns", "key", "value"]
        started = time.perf_counter()
        cur = source.conn.cursor()
        with raw.conn.cursor() as pg, pg.copy(f"COPY {raw.entries} ({', '.join(cols)}) FROM STDIN") as out:
            for key, value in cur.execute(
                "SELECT key, value FROM kvstore_keys WHERE ns = ? ORDER BY key", (source.ns,)
            ):
                out.write_row((raw.ns, key, value.decode()))
        bare = time.perf_counter() - started
        loaded = raw.conn.execute(f"SELECT count(*) FROM {raw.entries}").fetchone()[0]  # type: ignore[index]
        if loaded != n:
            raise RuntimeError(f"raw COPY: {loaded} rows in the target, expected {n}")
        print(
            f"  kvstore copy {ours:6.2f} s ({n / ours:,.0f} keys/s)  raw COPY {bare:6.2f} s ({n / bare:,.0f} keys/s)  ratio {bare / ours:.3f}"
        )
        return [{"keys": n, "ours_s": ours, "raw_s": bare}]


def run(
    ctx: Context, settings: Settings | None = None, only: list[str] | None = None
) -> dict[str, list[dict[str, Any]]]:
    """The parts selected by ``only`` (prefixes of "last", "keys", "copy"; default all) on the servers known."""
    settings = settings or Settings.for_run(ctx.quick)
    parts = [p for p in PARTS if not only or any(p.startswith(w) for w in only)]
    databases = tuple(b for b, url in (("sqlite", "x"), ("postgres", ctx.postgres_url)) if url)
    out: dict[str, list[dict[str, Any]]] = {}
    run_text = (
        f"last(20) at {', '.join(f'{m:,}' for m in settings.last_marks)} messages; keys at "
        f"{', '.join(f'{t:,}' for t in settings.key_totals)} keys (Redis {', '.join(f'{t:,}' for t in settings.redis_key_totals)}); "
        f"copy of {settings.copy_keys:,} keys; {settings.rounds} rounds"
    )
    if not ctx.postgres_url:
        ctx.report.note("scaling", "PostgreSQL: not run (no server); the copy needs it too")
    if "last" in parts:
        out["last"] = last_curve(ctx, settings, databases)
        ctx.report.add_scaling("last", out["last"], run_text)
    if "keys" in parts:
        backends = databases + (("redis",) if ctx.redis_url else ())
        out["keys"] = keys_curve(ctx, settings, backends)
        ctx.report.add_scaling("keys", out["keys"], run_text)
    if "copy" in parts and ctx.postgres_url:
        out["copy"] = copy_rows(ctx, settings)
        ctx.report.add_scaling("copy", out["copy"], run_text)
    return out
