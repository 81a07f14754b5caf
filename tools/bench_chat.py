"""Chat paths of issue 14, measured against their floors (not part of ``python -m benchmarks``).

* ``append``: ``ChatHistory.add`` on PostgreSQL vs a raw psycopg INSERT of the same row, and vs
  langchain-postgres ``PostgresChatMessageHistory.add_messages([m])`` (when installed).
* ``last``: ``ChatHistory.last(20)`` (ChatMessage, and ``model=dict``) vs the backend's raw range +
  ``orjson.loads`` per item: raw apsw SELECT (SQLite), raw psycopg SELECT (PostgreSQL), the memory
  store's raw range hook and a plain Python list slice (memory). Both sides read the same bytes.
* ``scale``: ``last(20)`` on conversations of 10^2 ... 10^N messages (bulk-loaded in SQL), with the
  query plans of the range reads.

The cases of a workload alternate op by op; the figure is each case's median time per op, the ratio
is floor time / kvstore time (1.0 = as fast as the floor). Run it on a quiet
machine; on a busy one, compare ratios of one run only::

    PYTHONPATH=. python tools/bench_chat.py --url postgresql://postgres@127.0.0.1:5432/test
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from typing import Any

import apsw
import orjson
import psycopg

from kvstore import ChatHistory, MemoryDatabase, SqliteDatabase
from kvstore.postgres import PostgresDatabase

Op = Callable[[int], object]
loads, dumps = orjson.loads, orjson.dumps


def chat(i: int) -> dict[str, Any]:
    """The message of the repository's benchmarks (its bytes differ for every ``i``)."""
    return {"role": "user", "content": f"What is the weather in Lisbon tomorrow? Please answer briefly. #{i}"}


def measure(cases: dict[str, Op], rounds: int, ops: int) -> dict[str, float]:
    """Median microseconds per op of each case, the cases alternating op by op (``rounds * ops`` each),
    so the drift of a busy machine hits every case alike and a spike moves no median."""
    times: dict[str, list[float]] = {name: [] for name in cases}
    counter = 0
    for op in cases.values():  # warm-up (and psycopg's statement preparation)
        for _ in range(max(10, ops // 10)):
            op(counter)
            counter += 1
    clock = time.perf_counter
    for _ in range(rounds * ops):
        for name, op in cases.items():
            started = clock()
            op(counter)
            times[name].append(clock() - started)
        counter += 1
    return {name: statistics.median(values) * 1e6 for name, values in times.items()}


def report(title: str, result: dict[str, float], floor: str) -> None:
    print(f"\n{title}")
    for name, us in result.items():
        ratio = result[floor] / us
        print(f"  {us:9.1f} us/op  {ratio:5.2f}x  {name}")


# --- PostgreSQL ---------------------------------------------------------------------------------


class Pg:
    def __init__(self, url: str) -> None:
        self.url = url
        self.schema = f"bench14_{os.getpid()}"
        self.admin = psycopg.connect(url, autocommit=True)
        self.admin.execute(f"CREATE SCHEMA {self.schema}")
        self.db = PostgresDatabase(url, schema_name=self.schema, key_prefix="b:", min_size=1, max_size=1)
        self.db.open()
        self.conn = psycopg.connect(url, autocommit=True)
        self.m = f"{self.schema}.bench_messages"
        self.conn.execute(
            f"CREATE TABLE {self.m} (conv text NOT NULL, seq bigint NOT NULL, value json NOT NULL, "
            "PRIMARY KEY (conv, seq))"
        )

    def close(self) -> None:
        self.db.close()
        self.conn.close()
        self.admin.execute(f"DROP SCHEMA {self.schema} CASCADE")
        self.admin.close()


def pg_append(pg: Pg, rounds: int, ops: int) -> None:
    history = ChatHistory(pg.db, "append")
    seq = [0]
    query = f"INSERT INTO {pg.m} VALUES ('append', %s, %s::json)"

    def raw(i: int) -> object:
        seq[0] += 1
        return pg.conn.execute(query, (seq[0], dumps(chat(i)).decode()))

    cases: dict[str, Op] = {
        "raw psycopg INSERT + orjson.dumps (floor)": raw,
        "kvstore ChatHistory.add": lambda i: history.add(chat(i)),
        "kvstore ChatHistory.add(id=...) (idempotent)": lambda i: history.add(chat(i), id=f"m-{i}"),
    }
    try:
        from langchain_core.messages import HumanMessage
        from langchain_postgres import PostgresChatMessageHistory

        lc_conn = psycopg.connect(pg.url, autocommit=True, prepare_threshold=0, options=f"-c search_path={pg.schema}")
        PostgresChatMessageHistory.create_tables(lc_conn, "lc_chat")
        lc = PostgresChatMessageHistory("lc_chat", "0b2c1d8e-8f0a-4a8e-9d1e-1b2c3d4e5f60", sync_connection=lc_conn)
        cases["langchain-postgres add_messages([m])"] = lambda i: lc.add_messages(
            [HumanMessage(content=chat(i)["content"])]
        )
    except ImportError as exc:
        print(f"  (langchain-postgres not measured: {exc})")
    report("PostgreSQL chat append", measure(cases, rounds, ops), "raw psycopg INSERT + orjson.dumps (floor)")


def fill_pg(pg: Pg, history: ChatHistory[Any], n: int) -> None:
    for first in range(0, n, 10_000):
        history.extend([chat(i) for i in range(first, min(n, first + 10_000))])
    # The floor's table gets the very bytes kvstore stored.
    pg.conn.execute(
        f"INSERT INTO {pg.m} SELECT 'big', seq, value FROM {pg.schema}.kvstore_list_items "
        "WHERE ns = 'b:' AND key = 'chat:big'"
    )
    pg.conn.execute(f"ANALYZE {pg.m}")
    pg.conn.execute(f"ANALYZE {pg.schema}.kvstore_list_items")
    pg.conn.execute(f"ANALYZE {pg.schema}.kvstore_entries")


def pg_last(pg: Pg, n: int, rounds: int, ops: int) -> None:
    history = ChatHistory(pg.db, "big")
    fill_pg(pg, history, n)
    plain = ChatHistory(pg.db, "big", model=dict)
    query = f"SELECT value::text FROM {pg.m} WHERE conv = 'big' ORDER BY seq DESC LIMIT 20"
    cases: dict[str, Op] = {
        "raw psycopg SELECT ... LIMIT 20 + orjson.loads x20 (floor)": lambda i: [
            loads(r[0]) for r in pg.conn.execute(query).fetchall()
        ][::-1],
        "kvstore ChatHistory.last(20)": lambda i: history.last(20),
        "kvstore ChatHistory(model=dict).last(20)": lambda i: plain.last(20),
    }
    assert [m.content for m in history.last(20)] == [chat(i)["content"] for i in range(n - 20, n)]
    report(f"PostgreSQL last(20) of {n} messages", measure(cases, rounds, ops), next(iter(cases)))


# --- SQLite and memory ----------------------------------------------------------------------------


def sqlite_last(n: int, rounds: int, ops: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        db = SqliteDatabase(os.path.join(tmp, "kv.db"))
        history = ChatHistory(db, "big")
        for first in range(0, n, 10_000):
            history.extend([chat(i) for i in range(first, min(n, first + 10_000))])
        raw = apsw.Connection(os.path.join(tmp, "raw.db"))
        raw.execute("PRAGMA journal_mode=WAL")
        raw.execute(
            "CREATE TABLE bench_messages (conv TEXT NOT NULL, seq INTEGER NOT NULL, value BLOB NOT NULL, "
            "PRIMARY KEY (conv, seq)) WITHOUT ROWID"
        )
        raw.execute(f"ATTACH '{os.path.join(tmp, 'kv.db')}' AS kv")
        with raw:
            raw.execute("INSERT INTO bench_messages SELECT 'big', idx, value FROM kv.kvstore_items")
        raw.execute("DETACH kv")
        cur = raw.cursor()
        query = "SELECT value FROM bench_messages WHERE conv = 'big' ORDER BY seq DESC LIMIT 20"
        plain = ChatHistory(db, "big", model=dict)
        cases: dict[str, Op] = {
            "raw apsw SELECT ... LIMIT 20 + orjson.loads x20 (floor)": lambda i: [
                loads(r[0]) for r in cur.execute(query).fetchall()
            ][::-1],
            "kvstore ChatHistory.last(20)": lambda i: history.last(20),
            "kvstore ChatHistory(model=dict).last(20)": lambda i: plain.last(20),
        }
        report(f"SQLite last(20) of {n} messages", measure(cases, rounds, ops), next(iter(cases)))
        raw.close()
        db.close()


def memory_last(n: int, rounds: int, ops: int) -> None:
    db = MemoryDatabase()
    history = ChatHistory(db, "big")
    for first in range(0, n, 10_000):
        history.extend([chat(i) for i in range(first, min(n, first + 10_000))])
    stored: list[bytes] = db._get_range("chat:big", 0, -1)  # the store's own bytes
    plain = ChatHistory(db, "big", model=dict)
    cases: dict[str, Op] = {
        "memory store raw range + orjson.loads x20 (floor)": lambda i: [
            loads(b) for b in db._get_range("chat:big", -20, -1)
        ],
        "Python list[-20:] + orjson.loads x20": lambda i: [loads(b) for b in stored[-20:]],
        "kvstore ChatHistory.last(20)": lambda i: history.last(20),
        "kvstore ChatHistory(model=dict).last(20)": lambda i: plain.last(20),
    }
    report(f"memory last(20) of {n} messages", measure(cases, rounds, ops), next(iter(cases)))


# --- scaling --------------------------------------------------------------------------------------


def _message_sql(seq: str) -> str:
    return f'\'{{"role":"user","content":"message #\' || {seq} || \'","created_at":"2026-01-01T00:00:00Z"}}\''


def scale(pg: Pg | None, exponents: list[int], rounds: int, ops: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "scale.db")
        sdb = SqliteDatabase(path, key_prefix="scale:")
        sdb.ping()
        conn = apsw.Connection(path)
        for e in exponents:
            n = 10**e
            started = time.perf_counter()
            with conn:
                conn.execute(
                    "INSERT INTO kvstore_keys (ns, key, kind, head, tail) VALUES ('scale:', ?, 1, 0, ?)",
                    (f"chat:s{e}", n),
                )
                conn.execute(
                    "WITH RECURSIVE g(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM g WHERE i < ?) "
                    f"INSERT INTO kvstore_items SELECT 'scale:', ?, i, CAST({_message_sql('i')} AS BLOB) FROM g",
                    (n - 1, f"chat:s{e}"),
                )
            print(f"  sqlite: 10^{e} loaded in {time.perf_counter() - started:.1f} s")
            if pg is not None:
                started = time.perf_counter()
                pg.conn.execute(
                    f"INSERT INTO {pg.schema}.kvstore_entries (ns, key, kind, length) VALUES ('scale:', %s, 'l', %s)",
                    (f"chat:s{e}", n),
                )
                pg.conn.execute(
                    f"INSERT INTO {pg.schema}.kvstore_list_items SELECT 'scale:', %s, g, ({_message_sql('g')})::json "
                    "FROM generate_series(1, %s) g",
                    (f"chat:s{e}", n),
                )
                print(f"  postgres: 10^{e} loaded in {time.perf_counter() - started:.1f} s")
        conn.execute("ANALYZE")
        cases: dict[str, Op] = {}
        for e in exponents:
            cases[f"SQLite last(20) of 10^{e}"] = (lambda h: lambda i: h.last(20))(ChatHistory(sdb, f"s{e}"))
        pgdb = None
        if pg is not None:
            pg.conn.execute(f"ANALYZE {pg.schema}.kvstore_list_items")
            pg.conn.execute(f"ANALYZE {pg.schema}.kvstore_entries")
            pgdb = PostgresDatabase(pg.url, schema_name=pg.schema, key_prefix="scale:", min_size=1, max_size=1)
            for e in exponents:
                cases[f"PostgreSQL last(20) of 10^{e}"] = (lambda h: lambda i: h.last(20))(ChatHistory(pgdb, f"s{e}"))
        for name, op in cases.items():
            assert len(op(0)) == 20, name  # type: ignore[arg-type]
        result = measure(cases, rounds, ops)
        print("\nlast(20) vs conversation length (ratio: the smallest conversation's time / this one's)")
        for backend in ("SQLite", "PostgreSQL"):
            rows = {k: v for k, v in result.items() if k.startswith(backend)}
            if rows:
                base = next(iter(rows.values()))
                for name, us in rows.items():
                    print(f"  {us:9.1f} us/op  {base / us:5.2f}x  {name}")
        big = f"chat:s{exponents[-1]}"
        print(f"\nSQLite plan of the range read ({big}):")
        for row in conn.execute(
            "EXPLAIN QUERY PLAN SELECT value FROM kvstore_items WHERE ns = ? AND key = ? AND idx >= ? AND idx < ? "
            "ORDER BY idx",
            ("scale:", big, 10 ** exponents[-1] - 20, 10 ** exponents[-1]),
        ):
            print("  ", row)
        if pg is not None and pgdb is not None:
            q = pgdb._q.range
            params = {"ns": "scale:", "key": big, "start": -20, "end": -1}
            with pg.conn.cursor() as cur:
                cur.execute(f"SET search_path = {pg.schema}")
                plan = cur.execute(f"EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY OFF) {q}", params).fetchall()
            print(f"\nPostgreSQL plan of the range read ({big}):")
            for (line,) in plan:
                print("  ", line)
            pgdb.close()
        conn.close()
        sdb.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=os.environ.get("KVSTORE_BENCH_POSTGRES_URL"))
    parser.add_argument("--only", choices=["append", "last", "scale"], action="append")
    parser.add_argument("--history", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--ops", type=int, default=300)
    parser.add_argument("--max-exponent", type=int, default=6)
    args = parser.parse_args()
    only = set(args.only or ["append", "last", "scale"])
    pg = Pg(args.url) if args.url else None
    try:
        if "append" in only and pg is not None:
            pg_append(pg, args.rounds, args.ops)
        if "last" in only:
            memory_last(args.history, args.rounds, args.ops * 10)
            sqlite_last(args.history, args.rounds, args.ops * 3)
            if pg is not None:
                pg_last(pg, args.history, args.rounds, args.ops)
        if "scale" in only:
            scale(pg, list(range(2, args.max_exponent + 1)), args.rounds, args.ops)
    finally:
        if pg is not None:
            pg.close()


if __name__ == "__main__":
    main()
