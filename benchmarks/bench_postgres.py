"""PostgreSQL database tier: kvstore vs bare psycopg on the same schema, and LangGraph's PostgresStore.

Run: python -m benchmarks.bench_postgres [--quick] [--url postgresql://...]

Without --url (or KVSTORE_BENCH_POSTGRES_URL) a throwaway server is started on
127.0.0.1 with fsync off, so the figures show client overhead rather than disk
flushes (both sides run against the same server with the same settings). The bare
floor is one autocommit psycopg connection running the same statement shape on
kvstore's own tables, orjson on both ends, a ~130 B chat message, and every write
changes the stored bytes (BENCHMARKS.md).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
from collections.abc import Callable
from typing import Any

import orjson
import psycopg

from benchmarks._common import Case, print_table, run_cases
from kvstore.postgres import AsyncPostgresDatabase, PostgresDatabase

MESSAGE = {"role": "user", "content": "What is the weather in Lisbon tomorrow? Please answer briefly.", "turn": 1}
NS = "bench_"
KEYS = [f"session:{i}" for i in range(1000)]
T = "public.kvstore_entries"


def msg(i: int) -> dict[str, Any]:
    return {**MESSAGE, "turn": i}  # every write changes the stored bytes


def count_executes(fn: Callable[[], object]) -> int:
    """How many statements (round trips: no pipeline mode) ``fn`` sends through psycopg."""
    calls: list[object] = []
    original = psycopg.Cursor.execute

    def counting(self: Any, query: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append(query)
        return original(self, query, *args, **kwargs)

    psycopg.Cursor.execute = counting  # type: ignore[method-assign]
    try:
        fn()
    finally:
        psycopg.Cursor.execute = original  # type: ignore[method-assign]
    return len(calls)


def median_time(fn: Callable[[], object], repeat: int) -> float:
    fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="fewer ops, 100,000-item list (smoke run)")
    parser.add_argument("--url", default=os.environ.get("KVSTORE_BENCH_POSTGRES_URL"))
    args = parser.parse_args()
    n, rounds = (500, 3) if args.quick else (3_000, 7)
    big = 100_000 if args.quick else 1_000_000
    server = None
    url = args.url
    if url is None:
        from tests.fixtures_postgres import PgServer

        server = PgServer(fsync=False)
        url = server.url
        print(f"throwaway PostgreSQL on 127.0.0.1:{server.port} (fsync=off)")
    try:
        run(url, n, rounds, big)
    finally:
        if server is not None:
            server.stop()


def run(url: str, n: int, rounds: int, big: int) -> None:
    loop = asyncio.new_event_loop()
    db = PostgresDatabase(url, key_prefix=NS, min_size=1, max_size=1)
    adb = AsyncPostgresDatabase(url, key_prefix=NS + "a", min_size=1, max_size=1)
    db.open()
    loop.run_until_complete(adb.open())
    conn = psycopg.connect(url, autocommit=True)
    aconn = loop.run_until_complete(psycopg.AsyncConnection.connect(url, autocommit=True))
    loads, dumps = orjson.loads, orjson.dumps
    db.mset({k: MESSAGE for k in KEYS})
    loop.run_until_complete(adb.mset({k: MESSAGE for k in KEYS}))
    raw_ns = NS + "raw"
    conn.execute(
        f"INSERT INTO {T} (ns, key, value) SELECT %s, k, %s::json FROM unnest(%s::text[]) k",
        (raw_ns, dumps(MESSAGE).decode(), KEYS),
    )
    get_sql = f"SELECT value::text FROM {T} WHERE ns = %s AND key = %s"
    set_sql = (
        f"INSERT INTO {T} (ns, key, value) VALUES (%s, %s, %s::json) "
        "ON CONFLICT (ns, key) DO UPDATE SET value = excluded.value"
    )

    def raw_get(i: int) -> object:
        row = conn.execute(get_sql, (raw_ns, KEYS[i % 1000])).fetchone()
        return loads(row[0]) if row else None

    def raw_set(i: int) -> object:
        return conn.execute(set_sql, (raw_ns, KEYS[i % 1000], dumps(msg(i)).decode()))

    async def araw_get(i: int) -> object:
        cur = await aconn.execute(get_sql, (raw_ns, KEYS[i % 1000]))
        row = await cur.fetchone()
        return loads(row[0]) if row else None

    async def araw_set(i: int) -> object:
        return await aconn.execute(set_sql, (raw_ns, KEYS[i % 1000], dumps(msg(i)).decode()))

    peers: list[Case] = []
    peer_note = ""
    try:
        from langgraph.store.postgres import PostgresStore
        from psycopg.rows import dict_row

        lg_conn = psycopg.connect(url, autocommit=True, prepare_threshold=0, row_factory=dict_row)
        lg = PostgresStore(lg_conn)  # type: ignore[arg-type]
        lg.setup()
        for k in KEYS:
            lg.put(("bench",), k, MESSAGE)
        peers_get = Case("langgraph PostgresStore get", lambda i: lg.get(("bench",), KEYS[i % 1000]))
        peers_set = Case("langgraph PostgresStore put", lambda i: lg.put(("bench",), KEYS[i % 1000], msg(i)))
        peers = [peers_get, peers_set]
    except Exception as exc:  # the peer is optional
        peer_note = f"LangGraph PostgresStore not run: {type(exc).__name__}: {exc}"

    get_cases = [
        Case("psycopg sync get (floor)", raw_get),
        Case("kvstore sync get", lambda i: db.get(KEYS[i % 1000])),
        Case("psycopg async get", araw_get, is_async=True),
        Case("kvstore async get", lambda i: adb.get(KEYS[i % 1000]), is_async=True),
        *[c for c in peers if "get" in c.name],
    ]
    results = run_cases(get_cases, n=n, rounds=rounds, loop=loop)
    print_table("get (one key, ~130 B message)", results, "psycopg sync get (floor)", {"kvstore sync get": 0.85})
    print(
        f"  async: kvstore / psycopg async = "
        f"{results['kvstore async get'].ops_per_s / results['psycopg async get'].ops_per_s:.2f}"
    )

    set_cases = [
        Case("psycopg sync upsert (floor)", raw_set),
        Case("kvstore sync set", lambda i: db.set(KEYS[i % 1000], msg(i))),
        Case("psycopg async upsert", araw_set, is_async=True),
        Case("kvstore async set", lambda i: adb.set(KEYS[i % 1000], msg(i)), is_async=True),
        *[c for c in peers if "put" in c.name],
    ]
    results = run_cases(set_cases, n=n, rounds=rounds, loop=loop)
    print_table(
        "set (upsert, bytes change every write)", results, "psycopg sync upsert (floor)", {"kvstore sync set": 0.85}
    )
    print(
        f"  async: kvstore / psycopg async = "
        f"{results['kvstore async set'].ops_per_s / results['psycopg async upsert'].ops_per_s:.2f}"
    )
    if peer_note:
        print(peer_note)

    # --- mget / mset of 100 -----------------------------------------------------------
    hundred = KEYS[:100]
    mget_sql = f"SELECT key, value::text FROM {T} WHERE ns = %s AND key = ANY(%s::text[])"

    def raw_mget(i: int) -> object:
        rows = dict(conn.execute(mget_sql, (raw_ns, hundred)).fetchall())
        return [loads(rows[k]) if k in rows else None for k in hundred]

    mset_sql = (
        f"INSERT INTO {T} (ns, key, value) SELECT %s, k, v::json FROM unnest(%s::text[], %s::text[]) AS u(k, v) "
        "ON CONFLICT (ns, key) DO UPDATE SET value = excluded.value"
    )

    def raw_mset(i: int) -> object:
        return conn.execute(mset_sql, (raw_ns, hundred, [dumps(msg(i + j)).decode() for j in range(100)]))

    batch_cases = [
        Case("psycopg mget 100 (floor)", raw_mget),
        Case("kvstore sync mget 100", lambda i: db.mget(hundred)),
        Case("psycopg mset 100", raw_mset),
        Case("kvstore sync mset 100", lambda i: db.mset({k: msg(i + j) for j, k in enumerate(hundred)})),
    ]
    results = run_cases(batch_cases, n=max(50, n // 20), rounds=rounds, loop=loop)
    print_table("mget / mset of 100 keys", results, "psycopg mget 100 (floor)")
    print(
        f"  mset 100: kvstore / psycopg = "
        f"{results['kvstore sync mset 100'].ops_per_s / results['psycopg mset 100'].ops_per_s:.2f}"
    )
    mget_trips = count_executes(lambda: db.mget(hundred))
    mset_trips = count_executes(lambda: db.mset({k: msg(7) for k in hundred}))
    print(f"  round trips (statements sent): mget 100 = {mget_trips}, mset 100 = {mset_trips}  (target 1 each)")

    # --- get_range(-20, -1): 1,000,000 items vs 100 -----------------------------------
    db.extend("small", [msg(i) for i in range(100)])
    db.append("big", msg(0))
    start = time.perf_counter()
    # Bulk load straight into kvstore's tables (same rows append writes), then ANALYZE.
    conn.execute(
        "INSERT INTO public.kvstore_items (ns, key, seq, value) "
        "SELECT %s, 'big', g, json_build_object('role', 'user', 'content', 'message ' || g, 'turn', g) "
        "FROM generate_series(2, %s) g",
        (NS, big),
    )
    conn.execute(f"UPDATE {T} SET length = %s WHERE ns = %s AND key = 'big'", (big, NS))
    conn.execute("ANALYZE public.kvstore_items")
    conn.execute(f"ANALYZE {T}")
    print(f"\nloaded {big:,} items in {time.perf_counter() - start:.1f}s; ANALYZE done")
    assert db.get_length("big") == big
    assert db.get_range("big", -1, -1)[0]["turn"] == big
    range_cases = [
        Case("get_range(-20,-1) on 100 items (floor)", lambda i: db.get_range("small", -20, -1)),
        Case(f"get_range(-20,-1) on {big:,} items", lambda i: db.get_range("big", -20, -1)),
        Case(
            f"raw ORDER BY seq DESC LIMIT 20 on {big:,}",
            lambda i: [
                loads(row[0])
                for row in conn.execute(
                    "SELECT value::text FROM public.kvstore_items WHERE ns = %s AND key = 'big' ORDER BY seq DESC LIMIT 20",
                    (NS,),
                ).fetchall()
            ][::-1],
        ),
    ]
    range_params = {"ns": NS, "key": "big", "start": -20, "end": -1}
    range_cases.append(
        Case(
            f"raw kvstore range statement on {big:,}",
            lambda i: [loads(row[2]) for row in conn.execute(db._q.range, range_params).fetchall()[1:]],
        )
    )
    results = run_cases(range_cases, n=max(200, n // 5), rounds=rounds, loop=loop)
    print_table(
        "last 20 messages: 1,000,000-item list vs 100-item list",
        results,
        "get_range(-20,-1) on 100 items (floor)",
        {f"get_range(-20,-1) on {big:,} items": 1 / 1.5},
    )
    plan = conn.execute(
        "EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY OFF) " + db._q.range,
        {"ns": NS, "key": "big", "start": -20, "end": -1},
    ).fetchall()
    print("  plan: " + " | ".join(r[0].strip() for r in plan if "Scan" in r[0] or "Index Cond" in r[0]))

    # --- clean up: everything under the bench_ prefix ---------------------------------
    db.clear()
    loop.run_until_complete(adb.clear())
    conn.execute(f"DELETE FROM {T} WHERE ns = %s", (raw_ns,))
    db.close()
    loop.run_until_complete(adb.aclose())
    loop.run_until_complete(aconn.close())
    conn.close()
    loop.close()


if __name__ == "__main__":
    main()
