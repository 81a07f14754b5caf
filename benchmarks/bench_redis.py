"""Redis cache tier: kvstore ops/s as a ratio to bare redis-py on the same server, same run.

Run: python -m benchmarks.bench_redis [--url redis://127.0.0.1:6379/0] [--quick]

Floors: bare ``redis.Redis`` / ``redis.asyncio.Redis`` (hiredis parser, one
connection used sequentially, orjson on both ends): ``GET``+loads,
``SET``+dumps, ``MGET`` of 100, a pipeline of 100 ``SET``. Peers on the same
server: aiocache ``RedisCache`` and py-key-value's ``RedisStore`` (async only;
both are async libraries). Every write changes the stored bytes. Everything is
written under ``bench_`` prefixes and removed at the end (SCAN + UNLINK).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from typing import Any

import orjson
import redis
import redis.asyncio

from benchmarks._common import Case, Result, print_table, run_cases
from kvstore.redis import AsyncRedisCache, RedisCache

MESSAGE = {"role": "user", "content": "What is the weather in Lisbon tomorrow? Please answer briefly.", "turn": 1}
N_KEYS = 1000
KEYS = [f"session:{i}" for i in range(N_KEYS)]
BATCH = KEYS[:100]
FLOOR = "bench_raw:"
OURS = "bench_kv:"


def msg(i: int) -> dict[str, Any]:
    return {**MESSAGE, "turn": i}  # every write changes the stored bytes


def _peers(url: str) -> dict[str, Any]:
    """The peer stores that install and run here; a reason string for those that do not."""
    peers: dict[str, Any] = {}
    parsed = redis.connection.parse_url(url)
    host, port, db = parsed.get("host", "127.0.0.1"), parsed.get("port", 6379), parsed.get("db", 0)
    try:
        from aiocache import RedisCache as AioRedisCache

        peers["aiocache"] = AioRedisCache(endpoint=host, port=port, db=db, namespace="bench_aio:")
    except Exception as exc:  # report, do not fail the run
        peers["aiocache"] = f"not runnable: {type(exc).__name__}: {exc}"
    try:
        from key_value.aio.stores.redis import RedisStore

        peers["py-key-value"] = RedisStore(url=url, default_collection="bench_pkv")
    except Exception as exc:
        peers["py-key-value"] = f"not runnable: {type(exc).__name__}: {exc}"
    return peers


def _vs_peers(results: dict[str, Result], ours: str, peers: list[str]) -> None:
    for peer in peers:
        if peer in results:
            ratio = results[ours].ops_per_s / results[peer].ops_per_s
            mark = "OK" if ratio > 1.0 else "MISS"
            print(f"  {ours} ÷ {peer}: {ratio:.2f}  target > 1.00 {mark}")


def _cleanup(url: str) -> int:
    client = redis.Redis.from_url(url)
    removed = 0
    try:
        batch: list[bytes] = []
        for key in client.scan_iter(match="bench_*", count=1000):
            batch.append(key)
            if len(batch) >= 1000:
                removed += client.unlink(*batch)
                batch = []
        if batch:
            removed += client.unlink(*batch)
    finally:
        client.close()
    return removed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", default="redis://127.0.0.1:6379/0", help="a Redis you may write bench_* keys to")
    parser.add_argument("--quick", action="store_true", help="fewer rounds (smoke run)")
    args = parser.parse_args()
    # Many short alternating rounds: on a shared, noisy machine the median of 25 short
    # rounds wanders far less than the median of 7 long ones.
    n, rounds = (500, 3) if args.quick else (1_000, 25)
    n_batch = max(50, n // 5)
    loop = asyncio.new_event_loop()
    loads, dumps = orjson.loads, orjson.dumps

    raw = redis.Redis.from_url(args.url)
    araw = redis.asyncio.Redis.from_url(args.url)
    cache = RedisCache(args.url, key_prefix=OURS)
    acache = AsyncRedisCache(args.url, key_prefix=OURS)
    peers = _peers(args.url)
    live_peers = {name: p for name, p in peers.items() if not isinstance(p, str)}
    for name, p in peers.items():
        if isinstance(p, str):
            print(f"peer {name}: {p}")

    raw.mset({FLOOR + k: dumps(MESSAGE) for k in KEYS})
    cache.mset({k: MESSAGE for k in KEYS})
    if "aiocache" in live_peers:
        loop.run_until_complete(live_peers["aiocache"].multi_set([(k, MESSAGE) for k in KEYS]))
    if "py-key-value" in live_peers:
        loop.run_until_complete(live_peers["py-key-value"].put_many(KEYS, [MESSAGE] * N_KEYS))

    raw_keys = [FLOOR + k for k in KEYS]
    raw_batch = [FLOOR + k for k in BATCH]

    def raw_mset(i: int) -> object:
        pipe = raw.pipeline(transaction=False)
        for j, k in enumerate(raw_batch):
            pipe.set(k, dumps(msg(i + j)))
        return pipe.execute()

    def raw_mset_ttl(i: int) -> object:
        pipe = raw.pipeline(transaction=False)
        for j, k in enumerate(raw_batch):
            pipe.set(k, dumps(msg(i + j)), px=60_000)
        return pipe.execute()

    async def araw_get(i: int) -> object:
        return loads(await araw.get(raw_keys[i % N_KEYS]))

    async def araw_set(i: int) -> object:
        return await araw.set(raw_keys[i % N_KEYS], dumps(msg(i)))

    async def araw_mget(i: int) -> object:
        return [loads(v) for v in await araw.mget(raw_batch)]

    async def araw_mset(i: int) -> object:
        pipe = araw.pipeline(transaction=False)
        for j, k in enumerate(raw_batch):
            pipe.set(k, dumps(msg(i + j)))
        return await pipe.execute()

    async def aget(i: int) -> object:
        return await acache.get(KEYS[i % N_KEYS])

    async def aset(i: int) -> object:
        return await acache.set(KEYS[i % N_KEYS], msg(i))

    async def amget(i: int) -> object:
        return await acache.mget(BATCH)

    async def amset(i: int) -> object:
        return await acache.mset({k: msg(i + j) for j, k in enumerate(BATCH)})

    def peer_cases(kind: str) -> list[Case]:
        cases: list[Case] = []
        aio = live_peers.get("aiocache")
        pkv = live_peers.get("py-key-value")
        if aio is not None:

            async def aio_op(i: int) -> object:
                if kind == "get":
                    return await aio.get(KEYS[i % N_KEYS])
                if kind == "set":
                    return await aio.set(KEYS[i % N_KEYS], msg(i))
                if kind == "mget":
                    return await aio.multi_get(BATCH)
                return await aio.multi_set([(k, msg(i + j)) for j, k in enumerate(BATCH)])

            cases.append(Case(f"aiocache RedisCache.{kind}", aio_op, is_async=True))
        if pkv is not None:

            async def pkv_op(i: int) -> object:
                if kind == "get":
                    return await pkv.get(KEYS[i % N_KEYS])
                if kind == "set":
                    return await pkv.put(KEYS[i % N_KEYS], msg(i))
                if kind == "mget":
                    return await pkv.get_many(BATCH)
                return await pkv.put_many(BATCH, [msg(i + j) for j in range(len(BATCH))])

            cases.append(Case(f"py-key-value RedisStore.{kind}", pkv_op, is_async=True))
        return cases

    peer_names = lambda kind: [c.name for c in peer_cases(kind)]  # noqa: E731

    sync_tables: list[tuple[str, list[Case], int, str]] = [
        (
            "sync get",
            [
                Case("redis-py GET+loads (floor)", lambda i: loads(raw.get(raw_keys[i % N_KEYS]))),  # type: ignore[arg-type]
                Case("kvstore RedisCache.get", lambda i: cache.get(KEYS[i % N_KEYS])),
            ],
            n,
            "kvstore RedisCache.get",
        ),
        (
            "sync set",
            [
                Case("redis-py SET+dumps (floor)", lambda i: raw.set(raw_keys[i % N_KEYS], dumps(msg(i)))),
                Case("kvstore RedisCache.set", lambda i: cache.set(KEYS[i % N_KEYS], msg(i))),
            ],
            n,
            "kvstore RedisCache.set",
        ),
        (
            "sync mget 100",
            [
                Case("redis-py MGET 100+loads (floor)", lambda i: [loads(v) for v in raw.mget(raw_batch)]),  # type: ignore[union-attr]
                Case("kvstore RedisCache.mget 100", lambda i: cache.mget(BATCH)),
            ],
            n_batch,
            "kvstore RedisCache.mget 100",
        ),
        (
            "sync mset 100",
            [
                Case("redis-py pipelined 100 SET (floor)", raw_mset),
                Case("kvstore RedisCache.mset 100", lambda i: cache.mset({k: msg(i + j) for j, k in enumerate(BATCH)})),
            ],
            n_batch,
            "kvstore RedisCache.mset 100",
        ),
        (
            "sync mset 100 with per-item TTL (kvstore: atomic MULTI/EXEC)",
            [
                Case("redis-py pipelined 100 SET PX (floor)", raw_mset_ttl),
                Case(
                    "kvstore RedisCache.mset 100 ttl",
                    lambda i: cache.mset([(k, msg(i + j), 60) for j, k in enumerate(BATCH)]),
                ),
            ],
            n_batch,
            "kvstore RedisCache.mset 100 ttl",
        ),
    ]
    async_tables: list[tuple[str, list[Case], int, str, str]] = [
        (
            "async get",
            [
                Case("redis.asyncio GET+loads (floor)", araw_get, is_async=True),
                Case("kvstore AsyncRedisCache.get", aget, is_async=True),
                *peer_cases("get"),
            ],
            n,
            "kvstore AsyncRedisCache.get",
            "get",
        ),
        (
            "async set",
            [
                Case("redis.asyncio SET+dumps (floor)", araw_set, is_async=True),
                Case("kvstore AsyncRedisCache.set", aset, is_async=True),
                *peer_cases("set"),
            ],
            n,
            "kvstore AsyncRedisCache.set",
            "set",
        ),
        (
            "async mget 100",
            [
                Case("redis.asyncio MGET 100+loads (floor)", araw_mget, is_async=True),
                Case("kvstore AsyncRedisCache.mget 100", amget, is_async=True),
                *peer_cases("mget"),
            ],
            n_batch,
            "kvstore AsyncRedisCache.mget 100",
            "mget",
        ),
        (
            "async mset 100",
            [
                Case("redis.asyncio pipelined 100 SET (floor)", araw_mset, is_async=True),
                Case("kvstore AsyncRedisCache.mset 100", amset, is_async=True),
                *peer_cases("mset"),
            ],
            n_batch,
            "kvstore AsyncRedisCache.mset 100",
            "mset",
        ),
    ]
    try:
        for title, cases, count, ours in sync_tables:
            results = run_cases(cases, n=count, rounds=rounds, loop=loop)
            print_table(title, results, cases[0].name, {ours: 0.9})
        for title, cases, count, ours, kind in async_tables:
            results = run_cases(cases, n=count, rounds=rounds, loop=loop)
            print_table(title, results, cases[0].name, {ours: 0.9})
            _vs_peers(results, ours, peer_names(kind))
    finally:
        raw.close()
        cache.close()
        loop.run_until_complete(araw.aclose())
        loop.run_until_complete(acache.aclose())
        for p in live_peers.values():
            with contextlib.suppress(Exception):
                loop.run_until_complete(p.close())
        loop.close()
        print(f"\nremoved {_cleanup(args.url)} bench_* keys")


if __name__ == "__main__":
    main()
