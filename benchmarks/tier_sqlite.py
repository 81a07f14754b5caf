"""SQLite tier: kvstore vs raw apsw (floor), diskcache, LangGraph SqliteStore, LangChain SQLChatMessageHistory.

Both kvstore and the raw floor run WAL + synchronous=NORMAL on their own files;
the peers get the same two settings (diskcache has them by default; LangGraph's
and LangChain's connections are set to them here, which only makes them faster).
"""

from __future__ import annotations

import json
import sqlite3
import time
from typing import Any

import orjson

from benchmarks._common import Case
from benchmarks.bench_sqlite import raw_connection
from benchmarks.peers import attempt
from benchmarks.runner import BATCH, HISTORY, KEYS, MESSAGE, SESSION_TTL, Context, msg
from benchmarks.tier_memory import chat
from kvstore import AsyncChatHistory, AsyncSessionStore, ChatHistory, MemoryCache, SessionStore
from kvstore import _sqlite_sql as sql
from kvstore.sqlite import AsyncSqliteDatabase, SqliteDatabase

S = "sqlite"


def _wal(conn: Any) -> None:
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")


def run(ctx: Context) -> None:
    report, wait, tmp = ctx.report, ctx.wait, ctx.tmp
    loads, dumps = orjson.loads, orjson.dumps
    db = SqliteDatabase(tmp / "kv.db")
    adb = AsyncSqliteDatabase(tmp / "akv.db")
    conn = raw_connection(tmp / "raw.db")
    cur = conn.cursor()
    db.mset({k: MESSAGE for k in KEYS})
    wait(adb.mset({k: MESSAGE for k in KEYS}))
    with conn:
        cur.executemany(sql.SET, [("", k, dumps(MESSAGE), None) for k in KEYS])

    def build_diskcache() -> Any:
        import diskcache

        peer = diskcache.Cache(str(tmp / "diskcache"))  # defaults: WAL, synchronous=NORMAL, pickle
        for k in KEYS:
            peer.set(k, MESSAGE)
        return peer

    def build_langgraph() -> Any:
        from langgraph.store.sqlite import SqliteStore

        lg_conn = sqlite3.connect(str(tmp / "langgraph.db"), check_same_thread=False, isolation_level=None)
        _wal(lg_conn)
        store = SqliteStore(lg_conn)
        store.setup()
        for k in KEYS:
            store.put(("bench",), k, MESSAGE)
        return store

    dc = attempt(report, S, "diskcache Cache", "diskcache", build_diskcache)
    lg = attempt(report, S, "LangGraph SqliteStore", "langgraph-checkpoint-sqlite", build_langgraph)
    if dc is not None:
        report.note(S, "diskcache pickles values (its default); kvstore and the floor store orjson.")

    def raw_get(i: int) -> object:
        rows = cur.execute("SELECT value FROM kvstore_keys WHERE ns = ? AND key = ?", ("", KEYS[i % 1000])).fetchall()
        return loads(rows[0][0]) if rows else None

    def raw_set(i: int) -> object:
        return cur.execute(sql.SET, ("", KEYS[i % 1000], dumps(msg(i)), None))

    batch_json = dumps(BATCH).decode()

    def raw_mget(i: int) -> object:
        found = {
            k: v
            for k, v in cur.execute(
                "SELECT key, value FROM kvstore_keys WHERE ns = ? AND key IN (SELECT value FROM json_each(?))",
                ("", batch_json),
            )
        }
        return [loads(found[k]) if k in found else None for k in BATCH]

    def raw_mset(i: int) -> object:
        with conn:
            cur.executemany(sql.SET, [("", k, dumps(msg(i + j)), None) for j, k in enumerate(BATCH)])
        return None

    def peer_cases(kind: str) -> list[Case]:
        cases: list[Case] = []
        if dc is not None:

            def dc_op(i: int) -> object:
                if kind == "get":
                    return dc.get(KEYS[i % 1000])
                if kind == "set":
                    return dc.set(KEYS[i % 1000], msg(i))
                if kind == "mget":
                    return [dc.get(k) for k in BATCH]
                with dc.transact():
                    for j, k in enumerate(BATCH):
                        dc.set(k, msg(i + j))
                return None

            label = {"get": "get", "set": "set", "mget": "get x100", "mset": "set x100 in transact()"}[kind]
            cases.append(Case(f"diskcache Cache.{label}", dc_op, role="peer"))
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
            cases.append(Case(f"LangGraph SqliteStore.{label}", lg_op, role="peer"))
        return cases

    async def aget(i: int) -> object:
        return await adb.get(KEYS[i % 1000])

    async def aset(i: int) -> object:
        return await adb.set(KEYS[i % 1000], msg(i))

    async def amget(i: int) -> object:
        return await adb.mget(BATCH)

    async def amset(i: int) -> object:
        return await adb.mset({k: msg(i + j) for j, k in enumerate(BATCH)})

    ctx.run(
        S,
        "get",
        [
            Case("raw apsw SELECT + orjson.loads (floor)", raw_get, role="floor"),
            Case("kvstore SqliteDatabase.get", lambda i: db.get(KEYS[i % 1000]), role="kvstore"),
            Case("kvstore AsyncSqliteDatabase.get", aget, is_async=True, role="kvstore"),
            *peer_cases("get"),
        ],
    )
    ctx.run(
        S,
        "set",
        [
            Case("raw apsw autocommit upsert (floor)", raw_set, role="floor"),
            Case("kvstore SqliteDatabase.set", lambda i: db.set(KEYS[i % 1000], msg(i)), role="kvstore"),
            Case("kvstore AsyncSqliteDatabase.set", aset, is_async=True, role="kvstore"),
            *peer_cases("set"),
        ],
    )
    ctx.run(
        S,
        "mget 100",
        [
            Case("raw apsw SELECT ... IN json_each (floor)", raw_mget, role="floor"),
            Case("kvstore SqliteDatabase.mget", lambda i: db.mget(BATCH), role="kvstore"),
            Case("kvstore AsyncSqliteDatabase.mget", amget, is_async=True, role="kvstore"),
            *peer_cases("mget"),
        ],
    )
    ctx.run(
        S,
        "mset 100",
        [
            Case("raw apsw executemany, 1 transaction (floor)", raw_mset, role="floor"),
            Case(
                "kvstore SqliteDatabase.mset",
                lambda i: db.mset({k: msg(i + j) for j, k in enumerate(BATCH)}),
                role="kvstore",
            ),
            Case("kvstore AsyncSqliteDatabase.mset", amset, is_async=True, role="kvstore"),
            *peer_cases("mset"),
        ],
    )

    # --- chat ------------------------------------------------------------------------------
    conn.execute(
        "CREATE TABLE bench_messages (conv TEXT NOT NULL, seq INTEGER NOT NULL, value BLOB NOT NULL,"
        " PRIMARY KEY (conv, seq)) WITHOUT ROWID"
    )
    history, ahistory = ChatHistory(db, "append"), AsyncChatHistory(adb, "append")
    seq = [0]

    def raw_append(i: int) -> object:
        seq[0] += 1
        return cur.execute("INSERT INTO bench_messages VALUES ('append', ?, ?)", (seq[0], dumps(chat(i))))

    async def aadd(i: int) -> object:
        return await ahistory.add(chat(i))

    def build_langchain() -> Any:
        import warnings

        from langchain_core.messages import HumanMessage
        from sqlalchemy import create_engine, event

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from langchain_community.chat_message_histories import SQLChatMessageHistory

        engine = create_engine(f"sqlite:///{tmp / 'langchain.db'}")
        event.listen(engine, "connect", lambda dbapi_conn, _record: _wal(dbapi_conn))
        append = SQLChatMessageHistory(session_id="append", connection=engine, table_name="bench_message_store")
        big = SQLChatMessageHistory(session_id="big", connection=engine, table_name="bench_message_store")
        return engine, append, big, HumanMessage

    lc = attempt(report, S, "LangChain SQLChatMessageHistory", "langchain-community + SQLAlchemy", build_langchain)
    append_cases = [
        Case("raw apsw INSERT, autocommit (floor)", raw_append, role="floor"),
        Case("kvstore ChatHistory.add", lambda i: history.add(chat(i)), role="kvstore"),
        Case("kvstore AsyncChatHistory.add", aadd, is_async=True, role="kvstore"),
    ]
    if lc is not None:
        _engine, lc_append, lc_big, human = lc
        append_cases.append(
            Case(
                "LangChain SQLChatMessageHistory.add_message",
                lambda i: lc_append.add_message(human(content=chat(i)["content"])),
                role="peer",
            )
        )
    ctx.run(S, "chat append", append_cases)

    started = time.perf_counter()
    big, abig = ChatHistory(db, "big"), AsyncChatHistory(adb, "big")
    for first in range(0, HISTORY, 10_000):
        chunk = [chat(i) for i in range(first, first + 10_000)]
        big.extend(chunk)
        wait(abig.extend(chunk))
        with conn:
            cur.executemany(
                "INSERT INTO bench_messages VALUES ('big', ?, ?)", [(first + j, dumps(m)) for j, m in enumerate(chunk)]
            )
    conn.execute("ANALYZE")
    last_cases = [
        Case(
            "raw apsw ORDER BY seq DESC LIMIT 20 (floor)",
            lambda i: [
                loads(r[0])
                for r in cur.execute(
                    "SELECT value FROM bench_messages WHERE conv = 'big' ORDER BY seq DESC LIMIT 20"
                ).fetchall()
            ][::-1],
            role="floor",
        ),
        Case("kvstore ChatHistory.last(20)", lambda i: big.last(20), role="kvstore"),
        Case("kvstore AsyncChatHistory.last(20)", lambda i: abig.last(20), is_async=True, role="kvstore"),
    ]
    if lc is not None:
        from langchain_core.messages import message_to_dict

        template = json.dumps(message_to_dict(human(content="What is the weather in Lisbon tomorrow? #N")))
        raw_lc = sqlite3.connect(str(tmp / "langchain.db"), isolation_level=None)
        raw_lc.execute("BEGIN")
        raw_lc.executemany(  # the rows LangChain's own add_messages writes, bulk-loaded
            "INSERT INTO bench_message_store (session_id, message) VALUES ('big', ?)",
            ((template.replace("#N", f"#{i}"),) for i in range(HISTORY)),
        )
        raw_lc.execute("COMMIT")
        raw_lc.close()
        assert len(lc_big.messages) == HISTORY
        last_cases.append(
            Case("LangChain SQLChatMessageHistory.messages[-20:]", lambda i: lc_big.messages[-20:], role="peer")
        )
    note = f"histories filled in {time.perf_counter() - started:.1f} s."
    if lc is not None:
        note += (
            " LangChain's `messages` reads and parses the whole conversation (it has no limit), so its cost grows"
            " with the history; kvstore reads 20 rows by index."
        )
    table = ctx.run(S, f"last 20 of {HISTORY:,} messages", last_cases, note=note)
    if lc is not None:
        v = next(v for v in table.verdicts() if not v.ours.is_async)
        target = "OK" if v.ratio >= 50 else "MISS"
        report.note(
            S,
            f"last 20 of {HISTORY:,}: kvstore is {v.ratio:,.0f}x LangChain's SQL chat history (target >= 50x: {target}).",
        )
        print(f"  target: kvstore last(20) >= 50x LangChain SQLChatMessageHistory: {v.ratio:,.0f}x {target}")

    # --- sessions --------------------------------------------------------------------------
    data = {"user": 7, "cart": ["tea"], "csrf": "x" * 32}
    alone = SessionStore(None, db, ttl=SESSION_TTL)
    aalone = AsyncSessionStore(None, adb, ttl=SESSION_TTL)
    cached = SessionStore(MemoryCache(), db, ttl=SESSION_TTL)
    sids = [alone.create(data) for _ in range(100)]
    asids = [wait(aalone.create(data)) for _ in range(100)]
    csids = [cached.create(data) for _ in range(100)]
    skeys = [f"session:{i}" for i in range(100)]
    expires = int(time.time() * 1000) + SESSION_TTL * 1000
    with conn:
        cur.executemany(sql.SET, [("", k, dumps(data), expires) for k in skeys])

    def raw_touch(i: int) -> object:
        key = skeys[i % 100]
        now = int(time.time() * 1000)
        rows = cur.execute("SELECT value, expires_at FROM kvstore_keys WHERE ns = '' AND key = ?", (key,)).fetchall()
        if not rows or (rows[0][1] is not None and rows[0][1] <= now):
            return None
        cur.execute("UPDATE kvstore_keys SET expires_at = ? WHERE ns = '' AND key = ?", (now + SESSION_TTL * 1000, key))
        return loads(rows[0][0])

    async def atouch(i: int) -> object:
        return await aalone.get(asids[i % 100], touch=True)

    session_cases = [
        Case("raw apsw SELECT + UPDATE expires_at (floor)", raw_touch, role="floor"),
        Case(
            "kvstore SessionStore(db alone).get(touch=True)",
            lambda i: alone.get(sids[i % 100], touch=True),
            role="kvstore",
        ),
        Case("kvstore AsyncSessionStore(db alone).get(touch=True)", atouch, is_async=True, role="kvstore"),
        Case(
            "kvstore SessionStore(MemoryCache over SQLite).get(touch=True)",
            lambda i: cached.get(csids[i % 100], touch=True),
            role="variant",
        ),
    ]
    if dc is not None:
        for k in skeys:
            dc.set(k, data, expire=SESSION_TTL)

        def dc_touch(i: int) -> object:
            key = skeys[i % 100]
            value = dc.get(key)
            dc.touch(key, expire=SESSION_TTL)
            return value

        session_cases.append(Case("diskcache Cache.get + touch", dc_touch, role="peer"))
    ctx.run(
        S,
        f"session get + touch (TTL {SESSION_TTL} s)",
        session_cases,
        note="kvstore's main rows use the database alone (every touch writes the row); the variant puts a memory "
        "cache in front, where a touch within `touch_interval` slides only the cached copy.",
    )

    db.clear()
    wait(adb.clear())
    db.close()
    wait(adb.aclose())
    conn.close()
    if dc is not None:
        dc.close()
    if lc is not None:
        lc[0].dispose()
