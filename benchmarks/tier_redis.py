"""Redis tier: kvstore vs redis-py / redis.asyncio (floor), aiocache, py-key-value, litestar.

Floors: one connection used sequentially, hiredis parser, orjson on both ends.
Every key is written under ``bench_<pid>_`` and removed at the end (SCAN + UNLINK).
"""

from __future__ import annotations

from typing import Any

import orjson
import redis
import redis.asyncio

from benchmarks._common import Case
from benchmarks.peers import attempt, reason
from benchmarks.runner import BATCH, KEYS, MESSAGE, SESSION_TTL, Context, msg
from kvstore import AsyncMemoryDatabase, AsyncSessionStore, MemoryDatabase, SessionStore
from kvstore.redis import AsyncRedisCache, RedisCache

S = "redis"


def cleanup(url: str, pattern: str) -> int:
    client = redis.Redis.from_url(url)
    removed = 0
    try:
        batch: list[bytes] = []
        for key in client.scan_iter(match=pattern, count=1000):
            batch.append(key)
            if len(batch) >= 1000:
                removed += client.unlink(*batch)
                batch = []
        if batch:
            removed += client.unlink(*batch)
    finally:
        client.close()
    return removed


def run(ctx: Context) -> None:
    try:
        _run(ctx)
    finally:
        print(f"  removed {cleanup(ctx.redis_url, ctx.tag + '*')} {ctx.tag}* keys")


def _run(ctx: Context) -> None:
    report, wait, url, tag = ctx.report, ctx.wait, ctx.redis_url, ctx.tag
    dumps = orjson.dumps
    raw = redis.Redis.from_url(url)
    araw = redis.asyncio.Redis.from_url(url)
    cache = RedisCache(url, key_prefix=tag + "kv:")
    acache = AsyncRedisCache(url, key_prefix=tag + "kv:")
    parsed = redis.connection.parse_url(url)
    host, port, dbn = parsed.get("host", "127.0.0.1"), parsed.get("port", 6379), parsed.get("db", 0)

    def build_aiocache() -> Any:
        from aiocache import RedisCache as AioRedisCache

        peer = AioRedisCache(endpoint=host, port=port, db=dbn, namespace=tag + "aio:")  # JsonSerializer, its default
        wait(peer.multi_set([(k, MESSAGE) for k in KEYS]))
        return peer

    def build_pkv() -> Any:
        from key_value.aio.stores.redis import RedisStore

        peer = RedisStore(url=url, default_collection=tag + "pkv")
        wait(peer.put_many(KEYS, [MESSAGE] * len(KEYS)))
        return peer

    aio = attempt(report, S, "aiocache RedisCache", "aiocache[redis]", build_aiocache)
    pkv = attempt(report, S, "py-key-value RedisStore", "py-key-value-aio[redis]", build_pkv)
    raw_keys = [tag + "raw:" + k for k in KEYS]
    raw_batch = raw_keys[:100]
    raw.mset({k: dumps(MESSAGE) for k in raw_keys})
    cache.mset({k: MESSAGE for k in KEYS})
    try:
        _workloads(ctx, raw, araw, cache, acache, aio, pkv, raw_keys, raw_batch)
        _sessions(ctx, raw, cache, acache, host, port, dbn)
        _chat(ctx)
    finally:
        raw.close()
        cache.close()
        wait(araw.aclose())
        wait(acache.aclose())
        for p in (aio, pkv):
            if p is not None:
                try:
                    wait(p.close())
                except Exception as exc:
                    print(f"  closing a peer: {reason(exc)}")


def _workloads(
    ctx: Context,
    raw: Any,
    araw: Any,
    cache: Any,
    acache: Any,
    aio: Any,
    pkv: Any,
    raw_keys: list[str],
    raw_batch: list[str],
) -> None:
    loads, dumps = orjson.loads, orjson.dumps

    def raw_mset(i: int) -> object:
        pipe = raw.pipeline(transaction=False)
        for j, k in enumerate(raw_batch):
            pipe.set(k, dumps(msg(i + j)))
        return pipe.execute()

    async def araw_get(i: int) -> object:
        return loads(await araw.get(raw_keys[i % 1000]))

    async def araw_set(i: int) -> object:
        return await araw.set(raw_keys[i % 1000], dumps(msg(i)))

    async def araw_mget(i: int) -> object:
        return [loads(v) for v in await araw.mget(raw_batch)]

    async def araw_mset(i: int) -> object:
        pipe = araw.pipeline(transaction=False)
        for j, k in enumerate(raw_batch):
            pipe.set(k, dumps(msg(i + j)))
        return await pipe.execute()

    async def aget(i: int) -> object:
        return await acache.get(KEYS[i % 1000])

    async def aset(i: int) -> object:
        return await acache.set(KEYS[i % 1000], msg(i))

    async def amget(i: int) -> object:
        return await acache.mget(BATCH)

    async def amset(i: int) -> object:
        return await acache.mset({k: msg(i + j) for j, k in enumerate(BATCH)})

    def peer_cases(kind: str) -> list[Case]:
        cases: list[Case] = []
        if aio is not None:

            async def aio_op(i: int) -> object:
                if kind == "get":
                    return await aio.get(KEYS[i % 1000])
                if kind == "set":
                    return await aio.set(KEYS[i % 1000], msg(i))
                if kind == "mget":
                    return await aio.multi_get(BATCH)
                return await aio.multi_set([(k, msg(i + j)) for j, k in enumerate(BATCH)])

            label = {"get": "get", "set": "set", "mget": "multi_get", "mset": "multi_set"}[kind]
            cases.append(Case(f"aiocache RedisCache.{label}", aio_op, is_async=True, role="peer"))
        if pkv is not None:

            async def pkv_op(i: int) -> object:
                if kind == "get":
                    return await pkv.get(KEYS[i % 1000])
                if kind == "set":
                    return await pkv.put(KEYS[i % 1000], msg(i))
                if kind == "mget":
                    return await pkv.get_many(BATCH)
                return await pkv.put_many(BATCH, [msg(i + j) for j in range(len(BATCH))])

            label = {"get": "get", "set": "put", "mget": "get_many", "mset": "put_many"}[kind]
            cases.append(Case(f"py-key-value RedisStore.{label}", pkv_op, is_async=True, role="peer"))
        return cases

    ctx.run(
        S,
        "get",
        [
            Case("redis-py GET + orjson.loads (floor)", lambda i: loads(raw.get(raw_keys[i % 1000])), role="floor"),
            Case("redis.asyncio GET + orjson.loads", araw_get, is_async=True, role="info"),
            Case("kvstore RedisCache.get", lambda i: cache.get(KEYS[i % 1000]), role="kvstore"),
            Case("kvstore AsyncRedisCache.get", aget, is_async=True, role="kvstore"),
            *peer_cases("get"),
        ],
    )
    ctx.run(
        S,
        "set",
        [
            Case(
                "redis-py SET + orjson.dumps (floor)",
                lambda i: raw.set(raw_keys[i % 1000], dumps(msg(i))),
                role="floor",
            ),
            Case("redis.asyncio SET + orjson.dumps", araw_set, is_async=True, role="info"),
            Case("kvstore RedisCache.set", lambda i: cache.set(KEYS[i % 1000], msg(i)), role="kvstore"),
            Case("kvstore AsyncRedisCache.set", aset, is_async=True, role="kvstore"),
            *peer_cases("set"),
        ],
    )
    ctx.run(
        S,
        "mget 100",
        [
            Case("redis-py MGET 100 + loads (floor)", lambda i: [loads(v) for v in raw.mget(raw_batch)], role="floor"),
            Case("redis.asyncio MGET 100 + loads", araw_mget, is_async=True, role="info"),
            Case("kvstore RedisCache.mget", lambda i: cache.mget(BATCH), role="kvstore"),
            Case("kvstore AsyncRedisCache.mget", amget, is_async=True, role="kvstore"),
            *peer_cases("mget"),
        ],
    )
    ctx.run(
        S,
        "mset 100",
        [
            Case(
                "redis-py MSET 100 + dumps (floor)",
                lambda i: raw.mset({k: dumps(msg(i + j)) for j, k in enumerate(raw_batch)}),
                role="floor",
            ),
            Case("redis-py pipelined 100 SET", raw_mset, role="info"),
            Case("redis.asyncio pipelined 100 SET", araw_mset, is_async=True, role="info"),
            Case(
                "kvstore RedisCache.mset",
                lambda i: cache.mset({k: msg(i + j) for j, k in enumerate(BATCH)}),
                role="kvstore",
            ),
            Case("kvstore AsyncRedisCache.mset", amset, is_async=True, role="kvstore"),
            *peer_cases("mset"),
        ],
    )


def _sessions(ctx: Context, raw: Any, cache: Any, acache: Any, host: str, port: int, dbn: int) -> None:
    report, wait, url, tag = ctx.report, ctx.wait, ctx.redis_url, ctx.tag
    loads, dumps = orjson.loads, orjson.dumps
    data = {"user": 7, "cart": ["tea"], "csrf": "x" * 32}
    sessions = SessionStore(cache, MemoryDatabase(), ttl=SESSION_TTL)
    asessions = AsyncSessionStore(acache, AsyncMemoryDatabase(), ttl=SESSION_TTL)
    sids = [sessions.create(data) for _ in range(100)]
    asids = [wait(asessions.create(data)) for _ in range(100)]
    skeys = [f"{tag}raw:sess:{i}" for i in range(100)]
    for k in skeys:
        raw.set(k, dumps(data), ex=SESSION_TTL)
    ms = SESSION_TTL * 1000

    def raw_touch(i: int) -> object:
        key = skeys[i % 100]
        value = raw.get(key)
        if value is None:
            return None
        raw.pexpire(key, ms)
        return loads(value)

    def raw_getex(i: int) -> object:
        value = raw.getex(skeys[i % 100], px=ms)
        return None if value is None else loads(value)

    async def atouch(i: int) -> object:
        return await asessions.get(asids[i % 100], touch=True)

    cases = [
        Case("redis-py GET + PEXPIRE (floor)", raw_touch, role="floor"),
        Case("redis-py GETEX PX (1 round trip)", raw_getex, role="info"),
        Case(
            "kvstore SessionStore(RedisCache).get(touch=True)",
            lambda i: sessions.get(sids[i % 100], touch=True),
            role="kvstore",
        ),
        Case("kvstore AsyncSessionStore(AsyncRedisCache).get(touch=True)", atouch, is_async=True, role="kvstore"),
    ]
    names = [f"sess:{i}" for i in range(100)]

    def build_aiocache() -> Any:
        from aiocache import RedisCache as AioRedisCache

        peer = AioRedisCache(endpoint=host, port=port, db=dbn, namespace=tag + "aios:")
        for k in names:
            wait(peer.set(k, data, ttl=SESSION_TTL))
        return peer

    def build_litestar() -> Any:
        from litestar.stores.redis import RedisStore

        peer = RedisStore(redis.asyncio.Redis.from_url(url), namespace=tag + "ls")
        for k in names:
            wait(peer.set(k, dumps(data), expires_in=SESSION_TTL))
        return peer

    aio = attempt(report, S, "aiocache RedisCache (sessions)", "aiocache[redis]", build_aiocache)
    ls = attempt(report, S, "litestar RedisStore", "litestar", build_litestar)
    report.peer(S, "py-key-value RedisStore (sessions)", "not compared: no sliding-expiry call (a touch is a full put)")
    if aio is not None:

        async def aio_touch(i: int) -> object:
            key = names[i % 100]
            value = await aio.get(key)
            await aio.expire(key, SESSION_TTL)
            return value

        cases.append(Case("aiocache RedisCache get + expire", aio_touch, is_async=True, role="peer"))
    if ls is not None:

        async def ls_touch(i: int) -> object:
            value = await ls.get(names[i % 100], renew_for=SESSION_TTL)
            return None if value is None else loads(value)

        cases.append(Case("litestar RedisStore.get(renew_for=)", ls_touch, is_async=True, role="peer"))
    try:
        ctx.run(
            S,
            f"session get + touch (TTL {SESSION_TTL} s)",
            cases,
            note="kvstore: a SessionStore over RedisCache (a memory database behind it is not touched on a cache hit "
            "within `touch_interval`): GET + PEXPIRE, two round trips like the floor.",
        )
    finally:
        for p in (aio, ls):
            if p is not None:
                try:
                    wait(p.close() if aio is p else p._redis.aclose())
                except Exception as exc:
                    print(f"  closing a peer: {reason(exc)}")


def _chat(ctx: Context) -> None:
    """kvstore keeps chat histories on the database tier; LangChain's Redis histories are reported, not raced."""
    report, url, tag = ctx.report, ctx.redis_url, ctx.tag

    def build_langchain_redis() -> Any:
        from langchain_redis import RedisChatMessageHistory

        history = RedisChatMessageHistory(f"{tag}probe", redis_url=url, key_prefix=f"{tag}lcr:")
        history.add_message(__import__("langchain_core.messages", fromlist=["HumanMessage"]).HumanMessage("hi"))
        return history

    try:
        build_langchain_redis()
    except ImportError as exc:
        report.peer(S, "langchain-redis RedisChatMessageHistory", f"not installed (langchain-redis): {reason(exc)}")
    except Exception as exc:
        report.peer(
            S,
            "langchain-redis RedisChatMessageHistory",
            f"not runnable on plain Redis (needs RediSearch): {reason(exc)}",
        )
    else:
        report.peer(S, "langchain-redis RedisChatMessageHistory", "runs here (this Redis has RediSearch); not raced")
    report.peer(
        S,
        "LangChain (community) RedisChatMessageHistory",
        "not compared: kvstore's Redis backend is the cache tier (no lists); its chat histories live on the "
        "database tier (SQLite/PostgreSQL sections)",
    )
