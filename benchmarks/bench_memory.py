"""Memory tier: kvstore ops/s as a ratio to a plain dict + orjson loop, same run.

Run: python -m benchmarks.bench_memory [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

import orjson

from benchmarks._common import Case, print_table, run_cases
from kvstore import AsyncMemoryCache, AsyncMemoryDatabase, MemoryCache, MemoryDatabase

MESSAGE = {"role": "user", "content": "What is the weather in Lisbon tomorrow? Please answer briefly.", "turn": 1}
KEYS = [f"session:{i}" for i in range(1000)]
BATCH = KEYS[:100]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="fewer rounds (smoke run)")
    args = parser.parse_args()
    n, rounds = (2_000, 3) if args.quick else (20_000, 7)
    loop = asyncio.new_event_loop()

    floor: dict[str, bytes] = {k: orjson.dumps(MESSAGE) for k in KEYS}
    floor_list: list[bytes] = [orjson.dumps(MESSAGE) for _ in range(1000)]
    cache, acache = MemoryCache(), AsyncMemoryCache()
    database, adatabase = MemoryDatabase(), AsyncMemoryDatabase()
    cache.mset({k: MESSAGE for k in KEYS})
    loop.run_until_complete(acache.mset({k: MESSAGE for k in KEYS}))
    database.extend("history", [MESSAGE] * 1000)
    loop.run_until_complete(adatabase.extend("history", [MESSAGE] * 1000))
    loads, dumps = orjson.loads, orjson.dumps

    def msg(i: int) -> dict[str, Any]:
        return {**MESSAGE, "turn": i}  # every write changes the stored bytes

    async def aget(i: int) -> object:
        return await acache.get(KEYS[i % 1000])

    async def aset(i: int) -> object:
        return await acache.set(KEYS[i % 1000], msg(i))

    async def amget(i: int) -> object:
        return await acache.mget(BATCH)

    async def aappend(i: int) -> object:
        return await adatabase.append("history", msg(i))

    async def arange(i: int) -> object:
        return await adatabase.get_range("history", -20, -1)

    workloads: dict[str, list[Case]] = {
        "get": [
            Case("dict+orjson get (floor)", lambda i: loads(floor[KEYS[i % 1000]])),
            Case("kvstore MemoryCache.get", lambda i: cache.get(KEYS[i % 1000])),
            Case("kvstore AsyncMemoryCache.get", aget, is_async=True),
        ],
        "set": [
            Case("dict+orjson set (floor)", lambda i: floor.__setitem__(KEYS[i % 1000], dumps(msg(i)))),
            Case("kvstore MemoryCache.set", lambda i: cache.set(KEYS[i % 1000], msg(i))),
            Case("kvstore AsyncMemoryCache.set", aset, is_async=True),
        ],
        "mget 100": [
            Case("dict+orjson mget (floor)", lambda i: [loads(floor[k]) for k in BATCH]),
            Case("kvstore MemoryCache.mget", lambda i: cache.mget(BATCH)),
            Case("kvstore AsyncMemoryCache.mget", amget, is_async=True),
        ],
        "append": [
            Case("list+orjson append (floor)", lambda i: floor_list.append(dumps(msg(i)))),
            Case("kvstore MemoryDatabase.append", lambda i: database.append("history", msg(i))),
            Case("kvstore AsyncMemoryDatabase.append", aappend, is_async=True),
        ],
        "get_range(-20,-1)": [
            Case("list+orjson last 20 (floor)", lambda i: [loads(b) for b in floor_list[-20:]]),
            Case("kvstore MemoryDatabase.get_range", lambda i: database.get_range("history", -20, -1)),
            Case("kvstore AsyncMemoryDatabase.get_range", arange, is_async=True),
        ],
    }
    targets = {"kvstore MemoryCache.get": 0.5, "kvstore AsyncMemoryCache.get": 0.3}
    print("# kvstore memory tier vs dict + orjson (the floor)")
    for title, cases in workloads.items():
        work_n = n // 20 if "mget" in title or "range" in title else n
        results = run_cases(cases, n=work_n, rounds=rounds, loop=loop)
        print_table(title, results, floor=cases[0].name, targets=targets)
    loop.close()


if __name__ == "__main__":
    main()
