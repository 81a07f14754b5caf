"""Memory tier: kvstore vs dict + orjson (floor), aiocache, py-key-value, LangGraph, LangChain, litestar."""

from __future__ import annotations

import time
from typing import Any

import orjson

from benchmarks._common import Case
from benchmarks.peers import attempt
from benchmarks.runner import BATCH, HISTORY, KEYS, MESSAGE, SESSION_TTL, Context, msg
from kvstore import (
    AsyncChatHistory,
    AsyncMemoryCache,
    AsyncMemoryDatabase,
    AsyncSessionStore,
    ChatHistory,
    MemoryCache,
    MemoryDatabase,
    SessionStore,
)

S = "memory"


def chat(i: int) -> dict[str, Any]:
    return {"role": "user", "content": f"What is the weather in Lisbon tomorrow? Please answer briefly. #{i}"}


def run(ctx: Context) -> None:
    report, wait = ctx.report, ctx.wait
    loads, dumps = orjson.loads, orjson.dumps
    cache, acache = MemoryCache(), AsyncMemoryCache()
    cache.mset({k: MESSAGE for k in KEYS})
    wait(acache.mset({k: MESSAGE for k in KEYS}))
    floor: dict[str, bytes] = {k: dumps(MESSAGE) for k in KEYS}

    def build_aiocache() -> Any:
        from aiocache import SimpleMemoryCache

        peer = SimpleMemoryCache()  # its default: NullSerializer, stores the object itself
        wait(peer.multi_set([(k, MESSAGE) for k in KEYS]))
        return peer

    def build_pkv() -> Any:
        from key_value.aio.stores.memory import MemoryStore

        peer = MemoryStore()
        wait(peer.put_many(KEYS, [MESSAGE] * len(KEYS)))
        return peer

    def build_langgraph() -> Any:
        from langgraph.store.memory import InMemoryStore

        peer = InMemoryStore()
        for k in KEYS:
            peer.put(("bench",), k, MESSAGE)
        return peer

    aio = attempt(report, S, "aiocache SimpleMemoryCache", "aiocache", build_aiocache)
    pkv = attempt(report, S, "py-key-value MemoryStore", "py-key-value-aio[memory]", build_pkv)
    lg = attempt(report, S, "LangGraph InMemoryStore", "langgraph-checkpoint", build_langgraph)
    if aio is not None:
        report.note(
            S,
            "aiocache's SimpleMemoryCache keeps the caller's object (NullSerializer, its default); kvstore stores encoded bytes, so a read returns a copy.",
        )

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

            cases.append(Case(f"aiocache SimpleMemoryCache.{kind}", aio_op, is_async=True, role="peer"))
        if pkv is not None:

            async def pkv_op(i: int) -> object:
                if kind == "get":
                    return await pkv.get(KEYS[i % 1000])
                if kind == "set":
                    return await pkv.put(KEYS[i % 1000], msg(i))
                if kind == "mget":
                    return await pkv.get_many(BATCH)
                return await pkv.put_many(BATCH, [msg(i + j) for j in range(len(BATCH))])

            cases.append(Case(f"py-key-value MemoryStore.{kind}", pkv_op, is_async=True, role="peer"))
        if lg is not None:
            from langgraph.store.base import GetOp, PutOp

            ns = ("bench",)
            get_ops = [GetOp(ns, k) for k in BATCH]

            def lg_op(i: int) -> object:
                if kind == "get":
                    return lg.get(ns, KEYS[i % 1000])
                if kind == "set":
                    return lg.put(ns, KEYS[i % 1000], msg(i))
                if kind == "mget":
                    return lg.batch(get_ops)
                return lg.batch([PutOp(ns, k, msg(i + j)) for j, k in enumerate(BATCH)])

            label = {"get": "get", "set": "put", "mget": "batch(100 GetOp)", "mset": "batch(100 PutOp)"}[kind]
            cases.append(Case(f"LangGraph InMemoryStore.{label}", lg_op, role="peer"))
        return cases

    ctx.run(
        S,
        "get",
        [
            Case("dict + orjson.loads (floor)", lambda i: loads(floor[KEYS[i % 1000]]), role="floor"),
            Case("kvstore MemoryCache.get", lambda i: cache.get(KEYS[i % 1000]), role="kvstore"),
            Case("kvstore AsyncMemoryCache.get", aget, is_async=True, role="kvstore"),
            *peer_cases("get"),
        ],
    )
    ctx.run(
        S,
        "set",
        [
            Case(
                "dict + orjson.dumps (floor)", lambda i: floor.__setitem__(KEYS[i % 1000], dumps(msg(i))), role="floor"
            ),
            Case("kvstore MemoryCache.set", lambda i: cache.set(KEYS[i % 1000], msg(i)), role="kvstore"),
            Case("kvstore AsyncMemoryCache.set", aset, is_async=True, role="kvstore"),
            *peer_cases("set"),
        ],
    )
    ctx.run(
        S,
        "mget 100",
        [
            Case("dict + orjson.loads x100 (floor)", lambda i: [loads(floor[k]) for k in BATCH], role="floor"),
            Case("kvstore MemoryCache.mget", lambda i: cache.mget(BATCH), role="kvstore"),
            Case("kvstore AsyncMemoryCache.mget", amget, is_async=True, role="kvstore"),
            *peer_cases("mget"),
        ],
    )

    def floor_mset(i: int) -> object:
        floor.update({k: dumps(msg(i + j)) for j, k in enumerate(BATCH)})
        return None

    ctx.run(
        S,
        "mset 100",
        [
            Case("dict.update + orjson.dumps x100 (floor)", floor_mset, role="floor"),
            Case(
                "kvstore MemoryCache.mset",
                lambda i: cache.mset({k: msg(i + j) for j, k in enumerate(BATCH)}),
                role="kvstore",
            ),
            Case("kvstore AsyncMemoryCache.mset", amset, is_async=True, role="kvstore"),
            *peer_cases("mset"),
        ],
    )

    # --- chat ------------------------------------------------------------------------------
    database, adatabase = MemoryDatabase(max_entries=None), AsyncMemoryDatabase(max_entries=None)
    history, ahistory = ChatHistory(database, "append"), AsyncChatHistory(adatabase, "append")
    floor_list: list[bytes] = []

    def build_lc() -> Any:
        from langchain_core.chat_history import InMemoryChatMessageHistory
        from langchain_core.messages import HumanMessage

        return InMemoryChatMessageHistory(), HumanMessage

    lc = attempt(report, S, "LangChain InMemoryChatMessageHistory", "langchain-core", build_lc)

    async def aadd(i: int) -> object:
        return await ahistory.add(chat(i))

    append_cases = [
        Case("list.append + orjson.dumps (floor)", lambda i: floor_list.append(dumps(chat(i))), role="floor"),
        Case("kvstore ChatHistory.add", lambda i: history.add(chat(i)), role="kvstore"),
        Case("kvstore AsyncChatHistory.add", aadd, is_async=True, role="kvstore"),
    ]
    if lc is not None:
        lc_history, human = lc
        append_cases.append(
            Case(
                "LangChain InMemoryChatMessageHistory.add_message",
                lambda i: lc_history.add_message(human(content=chat(i)["content"])),
                role="peer",
            )
        )
    ctx.run(S, "chat append", append_cases)

    started = time.perf_counter()
    big, abig = ChatHistory(database, "big", model=None), AsyncChatHistory(adatabase, "big")
    floor_big: list[bytes] = []
    for first in range(0, HISTORY, 10_000):
        chunk = [chat(i) for i in range(first, first + 10_000)]
        big.extend(chunk)
        wait(abig.extend(chunk))
        floor_big.extend(dumps(m) for m in chunk)
    last_cases = [
        Case("list[-20:] + orjson.loads (floor)", lambda i: [loads(b) for b in floor_big[-20:]], role="floor"),
        Case("kvstore ChatHistory.last(20)", lambda i: big.last(20), role="kvstore"),
        Case("kvstore AsyncChatHistory.last(20)", lambda i: abig.last(20), is_async=True, role="kvstore"),
    ]
    if lc is not None:
        lc_big = lc[0].__class__()
        lc_big.add_messages([human(content=chat(i)["content"]) for i in range(HISTORY)])
        last_cases.append(
            Case("LangChain InMemoryChatMessageHistory.messages[-20:]", lambda i: lc_big.messages[-20:], role="peer")
        )
        report.note(
            S,
            "LangChain's InMemoryChatMessageHistory is a Python list of live message objects: "
            "`messages[-20:]` copies 20 references and parses nothing, while kvstore's memory tier stores "
            "encoded bytes (the same bytes as SQLite/Postgres/Redis, so a read never aliases a writer's object) "
            "and validates 20 `ChatMessage` models per `last(20)`.",
        )
    ctx.run(
        S,
        f"last 20 of {HISTORY:,} messages",
        last_cases,
        note=f"histories filled in {time.perf_counter() - started:.1f} s",
    )

    # --- sessions --------------------------------------------------------------------------
    sessions = SessionStore(MemoryCache(), MemoryDatabase(), ttl=SESSION_TTL)
    asessions = AsyncSessionStore(AsyncMemoryCache(), AsyncMemoryDatabase(), ttl=SESSION_TTL)
    data = {"user": 7, "cart": ["tea"], "csrf": "x" * 32}
    sids = [sessions.create(data) for _ in range(100)]
    asids = [wait(asessions.create(data)) for _ in range(100)]
    now = time.monotonic
    floor_sessions = {f"session:{i}": dumps(data) for i in range(100)}
    floor_expiry = dict.fromkeys(floor_sessions, now() + SESSION_TTL)
    floor_keys = list(floor_sessions)

    def floor_touch(i: int) -> object:
        key = floor_keys[i % 100]
        t = now()
        if floor_expiry[key] <= t:
            return None
        floor_expiry[key] = t + SESSION_TTL
        return loads(floor_sessions[key])

    async def aget_touch(i: int) -> object:
        return await asessions.get(asids[i % 100], touch=True)

    session_cases = [
        Case("dict get + expiry check + slide (floor)", floor_touch, role="floor"),
        Case("kvstore SessionStore.get(touch=True)", lambda i: sessions.get(sids[i % 100], touch=True), role="kvstore"),
        Case("kvstore AsyncSessionStore.get(touch=True)", aget_touch, is_async=True, role="kvstore"),
    ]

    def build_aio_sessions() -> Any:
        from aiocache import SimpleMemoryCache

        peer = SimpleMemoryCache()
        for k in floor_keys:
            wait(peer.set(k, data, ttl=SESSION_TTL))
        return peer

    def build_litestar() -> Any:
        from litestar.stores.memory import MemoryStore

        peer = MemoryStore()
        for k in floor_keys:
            wait(peer.set(k, dumps(data), expires_in=SESSION_TTL))
        return peer

    aio_s = attempt(report, S, "aiocache SimpleMemoryCache (sessions)", "aiocache", build_aio_sessions)
    ls = attempt(report, S, "litestar MemoryStore", "litestar", build_litestar)
    if aio_s is not None:

        async def aio_touch(i: int) -> object:
            key = floor_keys[i % 100]
            value = await aio_s.get(key)
            await aio_s.expire(key, SESSION_TTL)
            return value

        session_cases.append(Case("aiocache SimpleMemoryCache get + expire", aio_touch, is_async=True, role="peer"))
    if ls is not None:

        async def ls_touch(i: int) -> object:
            raw = await ls.get(floor_keys[i % 100], renew_for=SESSION_TTL)
            return loads(raw) if raw is not None else None

        session_cases.append(Case("litestar MemoryStore.get(renew_for=)", ls_touch, is_async=True, role="peer"))
    report.peer(
        S, "py-key-value MemoryStore (sessions)", "not compared: no sliding-expiry call (a touch is a full put)"
    )
    ctx.run(S, f"session get + touch (TTL {SESSION_TTL} s)", session_cases)

    for p in (aio, pkv, aio_s):
        if p is not None and hasattr(p, "close"):
            wait(p.close())
