"""PostgreSQL tier: kvstore vs raw psycopg (floor), LangGraph PostgresStore, langchain-postgres chat history.

kvstore's tables live in schema ``bench_<pid>_kv`` and the peers' in
``bench_<pid>_peers``; both schemas are dropped at the end. The raw floor is one
autocommit psycopg connection running the same statement shapes on kvstore's
own tables (or on a plain messages table for the chat rows), orjson on both ends.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import orjson
import psycopg

from benchmarks._common import Case
from benchmarks.peers import attempt
from benchmarks.runner import BATCH, HISTORY, KEYS, MESSAGE, SESSION_TTL, Context, msg
from benchmarks.tier_memory import chat
from kvstore import AsyncChatHistory, AsyncSessionStore, ChatHistory, SessionStore
from kvstore.postgres import AsyncPostgresDatabase, PostgresDatabase

S = "postgres"


def run(ctx: Context) -> None:
    kv_schema, peer_schema = f"{ctx.tag}kv", f"{ctx.tag}peers"
    admin = psycopg.connect(ctx.postgres_url, autocommit=True)
    try:
        admin.execute(f"CREATE SCHEMA IF NOT EXISTS {peer_schema}")
        _run(ctx, kv_schema, peer_schema)
    finally:
        for schema in (kv_schema, peer_schema):
            admin.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        admin.close()


def _run(ctx: Context, kv_schema: str, peer_schema: str) -> None:
    wait, url = ctx.wait, ctx.postgres_url
    db = PostgresDatabase(url, key_prefix="s:", schema=kv_schema, min_size=1, max_size=1)
    adb = AsyncPostgresDatabase(url, key_prefix="a:", schema=kv_schema, min_size=1, max_size=1)
    db.open()
    wait(adb.open())
    conn = psycopg.connect(url, autocommit=True)
    try:
        _workloads(ctx, db, adb, conn, kv_schema, peer_schema)
    finally:
        db.close()
        wait(adb.aclose())
        conn.close()


def _workloads(
    ctx: Context,
    db: PostgresDatabase,
    adb: AsyncPostgresDatabase,
    conn: psycopg.Connection[Any],
    kv_schema: str,
    peer_schema: str,
) -> None:
    report, wait, url = ctx.report, ctx.wait, ctx.postgres_url
    loads, dumps = orjson.loads, orjson.dumps
    t = f"{kv_schema}.kvstore_entries"
    db.mset({k: MESSAGE for k in KEYS})
    wait(adb.mset({k: MESSAGE for k in KEYS}))
    conn.execute(
        f"INSERT INTO {t} (ns, key, value) SELECT 'raw', k, %s::json FROM unnest(%s::text[]) k",
        (dumps(MESSAGE).decode(), KEYS),
    )
    conn.execute(f"ANALYZE {t}")
    get_sql = f"SELECT value::text FROM {t} WHERE ns = 'raw' AND key = %s"
    set_sql = (
        f"INSERT INTO {t} (ns, key, value) VALUES ('raw', %s, %s::json) "
        "ON CONFLICT (ns, key) DO UPDATE SET value = excluded.value"
    )
    mget_sql = f"SELECT key, value::text FROM {t} WHERE ns = 'raw' AND key = ANY(%s::text[])"
    mset_sql = (
        f"INSERT INTO {t} (ns, key, value) SELECT 'raw', k, v::json FROM unnest(%s::text[], %s::text[]) AS u(k, v) "
        "ON CONFLICT (ns, key) DO UPDATE SET value = excluded.value"
    )
    peer_conninfo = {"autocommit": True, "prepare_threshold": 0, "options": f"-c search_path={peer_schema}"}

    def build_langgraph() -> Any:
        from langgraph.store.postgres import PostgresStore
        from psycopg.rows import dict_row

        lg_conn = psycopg.connect(url, row_factory=dict_row, **peer_conninfo)  # type: ignore[arg-type]
        store = PostgresStore(lg_conn)  # type: ignore[arg-type]
        store.setup()
        for k in KEYS:
            store.put(("bench",), k, MESSAGE)
        sessions = PostgresStore(lg_conn, ttl={"default_ttl": SESSION_TTL / 60, "refresh_on_read": True})  # type: ignore[arg-type]
        return store, sessions

    lg = attempt(report, S, "LangGraph PostgresStore", "langgraph-checkpoint-postgres", build_langgraph)

    def raw_get(i: int) -> object:
        row = conn.execute(get_sql, (KEYS[i % 1000],)).fetchone()
        return loads(row[0]) if row else None

    def raw_set(i: int) -> object:
        return conn.execute(set_sql, (KEYS[i % 1000], dumps(msg(i)).decode()))

    def raw_mget(i: int) -> object:
        rows = dict(conn.execute(mget_sql, (BATCH,)).fetchall())
        return [loads(rows[k]) if k in rows else None for k in BATCH]

    def raw_mset(i: int) -> object:
        return conn.execute(mset_sql, (BATCH, [dumps(msg(i + j)).decode() for j in range(len(BATCH))]))

    def peer_cases(kind: str) -> list[Case]:
        if lg is None:
            return []
        from langgraph.store.base import GetOp, PutOp

        store, ns = lg[0], ("bench",)
        get_ops = [GetOp(ns, k) for k in BATCH]

        def lg_op(i: int) -> object:
            if kind == "get":
                return store.get(ns, KEYS[i % 1000])
            if kind == "set":
                return store.put(ns, KEYS[i % 1000], msg(i))
            if kind == "mget":
                return store.batch(get_ops)
            return store.batch([PutOp(ns, k, msg(i + j)) for j, k in enumerate(BATCH)])

        label = {"get": "get", "set": "put", "mget": "batch(100 GetOp)", "mset": "batch(100 PutOp)"}[kind]
        return [Case(f"LangGraph PostgresStore.{label}", lg_op, role="peer")]

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
            Case("raw psycopg SELECT + orjson.loads (floor)", raw_get, role="floor"),
            Case("kvstore PostgresDatabase.get", lambda i: db.get(KEYS[i % 1000]), role="kvstore"),
            Case("kvstore AsyncPostgresDatabase.get", aget, is_async=True, role="kvstore"),
            *peer_cases("get"),
        ],
    )
    ctx.run(
        S,
        "set",
        [
            Case("raw psycopg upsert (floor)", raw_set, role="floor"),
            Case("kvstore PostgresDatabase.set", lambda i: db.set(KEYS[i % 1000], msg(i)), role="kvstore"),
            Case("kvstore AsyncPostgresDatabase.set", aset, is_async=True, role="kvstore"),
            *peer_cases("set"),
        ],
    )
    ctx.run(
        S,
        "mget 100",
        [
            Case("raw psycopg key = ANY(...) (floor)", raw_mget, role="floor"),
            Case("kvstore PostgresDatabase.mget", lambda i: db.mget(BATCH), role="kvstore"),
            Case("kvstore AsyncPostgresDatabase.mget", amget, is_async=True, role="kvstore"),
            *peer_cases("mget"),
        ],
    )
    ctx.run(
        S,
        "mset 100",
        [
            Case("raw psycopg unnest upsert (floor)", raw_mset, role="floor"),
            Case(
                "kvstore PostgresDatabase.mset",
                lambda i: db.mset({k: msg(i + j) for j, k in enumerate(BATCH)}),
                role="kvstore",
            ),
            Case("kvstore AsyncPostgresDatabase.mset", amset, is_async=True, role="kvstore"),
            *peer_cases("mset"),
        ],
    )

    # --- chat ------------------------------------------------------------------------------
    m = f"{kv_schema}.bench_messages"
    conn.execute(
        f"CREATE TABLE {m} (conv text NOT NULL, seq bigint NOT NULL, value json NOT NULL, PRIMARY KEY (conv, seq))"
    )
    history, ahistory = ChatHistory(db, "append"), AsyncChatHistory(adb, "append")
    seq = [0]

    def raw_append(i: int) -> object:
        seq[0] += 1
        return conn.execute(f"INSERT INTO {m} VALUES ('append', %s, %s::json)", (seq[0], dumps(chat(i)).decode()))

    async def aadd(i: int) -> object:
        return await ahistory.add(chat(i))

    def build_langchain() -> Any:
        from langchain_core.messages import HumanMessage
        from langchain_postgres import PostgresChatMessageHistory

        lc_conn = psycopg.connect(url, **peer_conninfo)  # type: ignore[arg-type]
        PostgresChatMessageHistory.create_tables(lc_conn, "bench_chat")
        append = PostgresChatMessageHistory("bench_chat", str(uuid.uuid4()), sync_connection=lc_conn)
        big_id = str(uuid.uuid4())
        big = PostgresChatMessageHistory("bench_chat", big_id, sync_connection=lc_conn)
        return lc_conn, append, big, big_id, HumanMessage

    lc = attempt(report, S, "langchain-postgres PostgresChatMessageHistory", "langchain-postgres", build_langchain)
    append_cases = [
        Case("raw psycopg INSERT (floor)", raw_append, role="floor"),
        Case("kvstore ChatHistory.add", lambda i: history.add(chat(i)), role="kvstore"),
        Case("kvstore AsyncChatHistory.add", aadd, is_async=True, role="kvstore"),
    ]
    if lc is not None:
        lc_conn, lc_append, lc_big, big_id, human = lc
        append_cases.append(
            Case(
                "langchain-postgres PostgresChatMessageHistory.add_messages([m])",
                lambda i: lc_append.add_messages([human(content=chat(i)["content"])]),
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
    conn.execute(
        f"INSERT INTO {m} SELECT 'big', g, json_build_object('role', 'user', 'content', 'message #' || g) "
        "FROM generate_series(0, %s) g",
        (HISTORY - 1,),
    )
    if lc is not None:
        import json

        from langchain_core.messages import message_to_dict

        template = json.dumps(message_to_dict(human(content="What is the weather in Lisbon tomorrow? #N")))
        lc_conn.execute(  # the rows add_messages writes, bulk-loaded
            "INSERT INTO bench_chat (session_id, message) "
            "SELECT %s::uuid, replace(%s, '#N', '#' || g)::jsonb FROM generate_series(1, %s) g",
            (big_id, template, HISTORY),
        )
        lc_conn.execute("ANALYZE bench_chat")
        assert len(lc_big.get_messages()) == HISTORY
    conn.execute(f"ANALYZE {m}")
    conn.execute(f"ANALYZE {kv_schema}.kvstore_items")
    conn.execute(f"ANALYZE {t}")
    last_cases = [
        Case(
            "raw psycopg ORDER BY seq DESC LIMIT 20 (floor)",
            lambda i: [
                loads(r[0])
                for r in conn.execute(
                    f"SELECT value::text FROM {m} WHERE conv = 'big' ORDER BY seq DESC LIMIT 20"
                ).fetchall()
            ][::-1],
            role="floor",
        ),
        Case("kvstore ChatHistory.last(20)", lambda i: big.last(20), role="kvstore"),
        Case("kvstore AsyncChatHistory.last(20)", lambda i: abig.last(20), is_async=True, role="kvstore"),
    ]
    if lc is not None:
        last_cases.append(
            Case(
                "langchain-postgres PostgresChatMessageHistory.get_messages()[-20:]",
                lambda i: lc_big.get_messages()[-20:],
                role="peer",
            )
        )
    note = f"histories filled in {time.perf_counter() - started:.1f} s, then ANALYZE."
    if lc is not None:
        note += (
            " langchain-postgres reads and parses the whole conversation (no limit); kvstore reads 20 rows by index."
        )
    ctx.run(S, f"last 20 of {HISTORY:,} messages", last_cases, note=note)

    # --- sessions --------------------------------------------------------------------------
    data = {"user": 7, "cart": ["tea"], "csrf": "x" * 32}
    alone = SessionStore(None, db, ttl=SESSION_TTL)
    aalone = AsyncSessionStore(None, adb, ttl=SESSION_TTL)
    sids = [alone.create(data) for _ in range(100)]
    asids = [wait(aalone.create(data)) for _ in range(100)]
    skeys = [f"sess:{i}" for i in range(100)]
    conn.execute(
        f"INSERT INTO {t} (ns, key, value, expires_at) SELECT 'raw', k, %s::json, now() + make_interval(secs => %s) "
        "FROM unnest(%s::text[]) k",
        (dumps(data).decode(), SESSION_TTL, skeys),
    )

    def raw_touch(i: int) -> object:
        key = skeys[i % 100]
        row = conn.execute(
            f"SELECT value::text FROM {t} WHERE ns = 'raw' AND key = %s AND (expires_at IS NULL OR expires_at > now())",
            (key,),
        ).fetchone()
        if row is None:
            return None
        conn.execute(
            f"UPDATE {t} SET expires_at = now() + make_interval(secs => %s) WHERE ns = 'raw' AND key = %s",
            (SESSION_TTL, key),
        )
        return loads(row[0])

    def raw_touch_one(i: int) -> object:
        row = conn.execute(
            f"UPDATE {t} SET expires_at = now() + make_interval(secs => %s) WHERE ns = 'raw' AND key = %s "
            "AND (expires_at IS NULL OR expires_at > now()) RETURNING value::text",
            (SESSION_TTL, skeys[i % 100]),
        ).fetchone()
        return loads(row[0]) if row else None

    async def atouch(i: int) -> object:
        return await aalone.get(asids[i % 100], touch=True)

    session_cases = [
        Case("raw psycopg SELECT + UPDATE expires_at (floor)", raw_touch, role="floor"),
        Case("raw psycopg UPDATE ... RETURNING (1 round trip)", raw_touch_one, role="info"),
        Case(
            "kvstore SessionStore(db alone).get(touch=True)",
            lambda i: alone.get(sids[i % 100], touch=True),
            role="kvstore",
        ),
        Case("kvstore AsyncSessionStore(db alone).get(touch=True)", atouch, is_async=True, role="kvstore"),
    ]
    if lg is not None:
        lg_sessions = lg[1]
        for k in skeys:
            lg_sessions.put(("sessions",), k, data)
        session_cases.append(
            Case(
                "LangGraph PostgresStore(ttl refresh_on_read).get",
                lambda i: lg_sessions.get(("sessions",), skeys[i % 100], refresh_ttl=True),
                role="peer",
            )
        )
    ctx.run(S, f"session get + touch (TTL {SESSION_TTL} s)", session_cases)

    if lc is not None:
        lc_conn.close()
    if lg is not None:
        lg[0].conn.close()
