"""SQLite database tier: kvstore vs raw apsw on the same schema and vs diskcache, same run.

Run: python -m benchmarks.bench_sqlite [--quick]

Both sides use WAL + synchronous=NORMAL, orjson values of a chat message (~130 B),
and every write changes the stored bytes (BENCHMARKS.md).
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import apsw
import orjson

from benchmarks._common import Case, print_table, run_cases
from kvstore import _sqlite_sql as sql
from kvstore.sqlite import AsyncSqliteDatabase, SqliteDatabase

MESSAGE = {"role": "user", "content": "What is the weather in Lisbon tomorrow? Please answer briefly.", "turn": 1}
KEYS = [f"bench_session:{i}" for i in range(1000)]


def msg(i: int) -> dict[str, Any]:
    return {**MESSAGE, "turn": i}  # every write changes the stored bytes


def raw_connection(path: Path) -> apsw.Connection:
    """A raw apsw connection with the same settings kvstore uses (schema made by kvstore)."""
    SqliteDatabase(path).close()  # creates the same schema
    conn = apsw.Connection(str(path))
    conn.execute("PRAGMA journal_mode=WAL").fetchall()
    conn.execute("PRAGMA synchronous=NORMAL").fetchall()
    assert conn.execute("PRAGMA journal_mode").fetchall()[0][0] == "wal"
    assert conn.execute("PRAGMA synchronous").fetchall()[0][0] == 1
    return conn


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="fewer rounds, 100,000-item list (smoke run)")
    args = parser.parse_args()
    # Many short alternating rounds: on a shared, noisy machine both sides see the same load.
    n, rounds = (2_000, 5) if args.quick else (3_000, 15)
    big = 100_000 if args.quick else 1_000_000
    tmp = Path(tempfile.mkdtemp(prefix="bench_sqlite_"))
    loop = asyncio.new_event_loop()
    try:
        run(tmp, n, rounds, big, loop)
    finally:
        loop.close()
        shutil.rmtree(tmp, ignore_errors=True)


def run(tmp: Path, n: int, rounds: int, big: int, loop: asyncio.AbstractEventLoop) -> None:
    import diskcache

    db = SqliteDatabase(tmp / "kv.db")
    adb = AsyncSqliteDatabase(tmp / "akv.db")
    conn = raw_connection(tmp / "raw.db")
    cur = conn.cursor()
    peer = diskcache.Cache(str(tmp / "diskcache"))  # its defaults: WAL, synchronous=NORMAL, pickle
    loads, dumps = orjson.loads, orjson.dumps

    db.mset({k: MESSAGE for k in KEYS})
    loop.run_until_complete(adb.mset({k: MESSAGE for k in KEYS}))
    with conn:
        cur.executemany(sql.SET, [("", k, dumps(MESSAGE), None) for k in KEYS])
    for k in KEYS:
        peer.set(k, MESSAGE)

    def raw_get(i: int) -> object:
        rows = cur.execute("SELECT value FROM kvstore_keys WHERE ns = ? AND key = ?", ("", KEYS[i % 1000])).fetchall()
        return loads(rows[0][0]) if rows else None

    def raw_set(i: int) -> object:
        return cur.execute(sql.SET, ("", KEYS[i % 1000], dumps(msg(i)), None))

    async def aget(i: int) -> object:
        return await adb.get(KEYS[i % 1000])

    async def aset(i: int) -> object:
        return await adb.set(KEYS[i % 1000], msg(i))

    workloads: dict[str, list[Case]] = {
        "get": [
            Case("raw apsw SELECT + orjson (floor)", raw_get),
            Case("kvstore SqliteDatabase.get", lambda i: db.get(KEYS[i % 1000])),
            Case("diskcache Cache.get", lambda i: peer.get(KEYS[i % 1000])),
            Case("kvstore AsyncSqliteDatabase.get", aget, is_async=True),
        ],
        "set": [
            Case("raw apsw autocommit upsert (floor)", raw_set),
            Case("kvstore SqliteDatabase.set", lambda i: db.set(KEYS[i % 1000], msg(i))),
            Case("diskcache Cache.set", lambda i: peer.set(KEYS[i % 1000], msg(i))),
            Case("kvstore AsyncSqliteDatabase.set", aset, is_async=True),
        ],
    }
    targets = {
        "kvstore SqliteDatabase.get": 0.6,
        "kvstore SqliteDatabase.set": 0.8,
    }
    print("# kvstore SQLite tier vs raw apsw (the floor) and diskcache, WAL + synchronous=NORMAL")
    summary: list[str] = []
    for title, cases in workloads.items():
        results = run_cases(cases, n=n, rounds=rounds, loop=loop)
        print_table(title, results, floor=cases[0].name, targets=targets)
        ours = results[f"kvstore SqliteDatabase.{title}"].ops_per_s
        theirs = results[f"diskcache Cache.{title}"].ops_per_s
        verdict = "OK" if ours > theirs else "MISS"
        summary.append(f"kvstore {title} / diskcache {title}: {ours / theirs:.2f} (target > 1.00) {verdict}")

    # --- get_range(-20, -1) on a long and a short history --------------------------------
    started = time.perf_counter()
    chunk = [msg(i) for i in range(10_000)]
    for _ in range(big // len(chunk)):
        db.extend("bench_history_big", chunk)
    db.extend("bench_history_small", chunk[:100])
    built = time.perf_counter() - started
    assert db.get_length("bench_history_big") == big
    conn.execute("ANALYZE")
    range_cases = [
        Case("get_range(-20,-1) on 100 items (floor)", lambda i: db.get_range("bench_history_small", -20, -1)),
        Case(f"get_range(-20,-1) on {big:,} items", lambda i: db.get_range("bench_history_big", -20, -1)),
    ]
    results = run_cases(range_cases, n=n // 4, rounds=rounds, loop=loop)
    print_table(
        f"get_range(-20,-1): {big:,} vs 100 items ({big:,} built in {built:.1f} s)",
        results,
        floor=range_cases[0].name,
        targets={range_cases[1].name: 1 / 1.5},
    )
    ratio = results[range_cases[0].name].ops_per_s / results[range_cases[1].name].ops_per_s
    summary.append(
        f"time of get_range on {big:,} / on 100 items: {ratio:.2f}x (target <= 1.50) {'OK' if ratio <= 1.5 else 'MISS'}"
    )

    # --- mset of 1,000 in one transaction --------------------------------------------------
    batch_keys = [f"bench_batch:{i}" for i in range(1000)]
    offset = [0]

    def raw_batch(i: int) -> object:
        with conn:
            cur.executemany(sql.SET, [("", k, dumps(msg(i + j)), None) for j, k in enumerate(batch_keys)])
        return None

    def one_by_one(i: int) -> object:
        offset[0] += 1
        for j, k in enumerate(batch_keys):
            db.set(k, msg(i + j))
        return None

    mset_cases = [
        Case("raw apsw executemany, 1 transaction (floor)", raw_batch),
        Case(
            "kvstore SqliteDatabase.mset(1,000)", lambda i: db.mset({k: msg(i + j) for j, k in enumerate(batch_keys)})
        ),
        Case("kvstore 1,000 x SqliteDatabase.set", one_by_one),
    ]
    results = run_cases(mset_cases, n=max(3, n // 1000), rounds=rounds, loop=loop, warmup=1)
    print_table("batch of 1,000 writes (ops = batches)", results, floor=mset_cases[0].name)
    per_item = 1e6 / (results[mset_cases[1].name].ops_per_s * 1000)
    summary.append(f"mset(1,000) in one transaction: {per_item:.2f} µs/item")

    print("\n## summary")
    for line in summary:
        print(line)

    db.clear()
    loop.run_until_complete(adb.clear())
    db.close()
    loop.run_until_complete(adb.aclose())
    peer.close()
    conn.close()


if __name__ == "__main__":
    main()
