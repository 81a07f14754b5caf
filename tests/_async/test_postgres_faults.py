"""PostgreSQL backend beyond the contract: deadlines, error mapping, secrets, schema, round trips."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import psycopg
import pytest

from kvstore.config import PostgresDatabaseConfig
from kvstore.errors import BackendBusyError, BackendUnavailableError, KVStoreError
from kvstore.postgres import AsyncPostgresDatabase
from kvstore.postgres._sql import SCHEMA_VERSION
from tests.fixtures_postgres import CANARY_RIGHT_PASSWORD, CANARY_USER, PgServer

pytestmark = pytest.mark.postgres

CANARY = "canary-pw-7f3a9c"


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
async def store(postgres_url: str) -> AsyncIterator[AsyncPostgresDatabase]:
    db = AsyncPostgresDatabase(postgres_url, key_prefix=f"faults-{uuid.uuid4().hex[:8]}:", max_size=2)
    await db.open()
    yield db
    await db.clear()
    await db.aclose()


def _count_executes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    calls: list[str] = []
    original = psycopg.AsyncCursor.execute

    async def counting(self: Any, query: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append(str(query))
        return await original(self, query, *args, **kwargs)

    monkeypatch.setattr(psycopg.AsyncCursor, "execute", counting)
    return calls


async def test_mget_and_mset_of_100_keys_are_one_round_trip_each(
    store: AsyncPostgresDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    """mset and mget of 100 keys each send exactly one statement to the server."""
    await store.ping()
    calls = _count_executes(monkeypatch)
    await store.mset({f"k{i}": {"i": i} for i in range(100)})
    assert len(calls) == 1
    got = await store.mget([f"k{i}" for i in range(100)])
    assert len(calls) == 2
    assert got == [{"i": i} for i in range(100)]


async def test_unreachable_server_fails_within_connect_timeout() -> None:
    """from_config against a closed port raises BackendUnavailableError within the connect budget."""
    config = PostgresDatabaseConfig(url=f"postgresql://postgres@127.0.0.1:{_closed_port()}/x", connect_timeout=1.0)
    start = time.monotonic()
    with pytest.raises(BackendUnavailableError) as info:
        await AsyncPostgresDatabase.from_config(config)
    assert time.monotonic() - start < 3.0
    assert info.value.backend == "postgres"
    assert isinstance(info.value.__cause__, Exception)


async def test_statement_timeout_bounds_a_blocked_call(postgres_url: str) -> None:
    """A statement stuck behind another session's row lock gives up at lock_timeout (0.8 x statement_timeout)
    with BackendBusyError: a busy server, not an outage."""
    db = AsyncPostgresDatabase(postgres_url, key_prefix=f"st-{uuid.uuid4().hex[:8]}:", statement_timeout=0.3)
    await db.set("k", 1)
    async with await psycopg.AsyncConnection.connect(postgres_url) as other:
        await other.execute("SELECT 1 FROM public.kvstore_entries WHERE ns = %s FOR UPDATE", (db.key_prefix,))
        start = time.monotonic()
        with pytest.raises(BackendBusyError):
            await db.set("k", 2)
        assert time.monotonic() - start < 2.0
        await other.rollback()
    assert await db.get("k") == 1  # the pool handed back a usable connection
    await db.clear()
    await db.aclose()


async def test_exhausted_pool_fails_within_pool_timeout(postgres_url: str) -> None:
    """With every pooled connection taken, a call fails after pool_timeout, not psycopg's 30 s."""
    db = AsyncPostgresDatabase(postgres_url, min_size=1, max_size=1, pool_timeout=0.3)
    await db.open()
    held = await db._pool.getconn()
    try:
        start = time.monotonic()
        with pytest.raises(BackendUnavailableError, match="pool_timeout"):
            await db.get("k")
        assert time.monotonic() - start < 2.0
    finally:
        await db._pool.putconn(held)
    await db.aclose()


async def test_password_never_printed(
    postgres_url: str, postgres_server: PgServer | None, caplog: pytest.LogCaptureFixture
) -> None:
    """A canary password appears in no repr, error message, cause or log line."""
    caplog.set_level(logging.DEBUG)
    texts: list[str] = []
    unreachable = f"postgresql://postgres:{CANARY}@127.0.0.1:{_closed_port()}/x"
    for url in [unreachable, f"postgresql://{CANARY_USER}:{CANARY}@127.0.0.1:1/x"]:
        config = PostgresDatabaseConfig(url=url, connect_timeout=0.5)
        texts.append(repr(config))
        with pytest.raises(BackendUnavailableError) as info:
            await AsyncPostgresDatabase.from_config(config)
        texts += [str(info.value), repr(info.value), str(info.value.__cause__)]
    if postgres_server is not None:
        # A real authentication failure (scram) with the wrong (canary) password.
        wrong = f"postgresql://{CANARY_USER}:{CANARY}@127.0.0.1:{postgres_server.port}/postgres"
        with pytest.raises(BackendUnavailableError) as info:
            await AsyncPostgresDatabase.from_config(PostgresDatabaseConfig(url=wrong, connect_timeout=0.5))
        texts += [str(info.value), repr(info.value), str(info.value.__cause__)]
        right = f"postgresql://{CANARY_USER}@127.0.0.1:{postgres_server.port}/postgres"
        db = AsyncPostgresDatabase(right, password=CANARY_RIGHT_PASSWORD, schema_name=f"canary_{uuid.uuid4().hex[:6]}")
        with pytest.raises(KVStoreError) as refused:  # authenticated, but may not create a schema
            await db.open()
        assert not isinstance(refused.value, BackendUnavailableError)
        texts.append(repr(db))
        await db.aclose()
    db = AsyncPostgresDatabase(unreachable)
    texts.append(repr(db))
    await db.aclose()
    texts += [record.getMessage() for record in caplog.records]
    for text in texts:
        assert CANARY not in text
        assert CANARY_RIGHT_PASSWORD not in text


async def test_quoted_schema_and_table_prefix(postgres_url: str) -> None:
    """A schema name needing quotes is created and used; tables are named from table_prefix."""
    schema = f'we"ird {uuid.uuid4().hex[:6]}'
    db = AsyncPostgresDatabase(postgres_url, schema_name=schema, table_prefix="t_")
    await db.set("k", {"v": 1})
    await db.append("h", 1)
    assert await db.get("k") == {"v": 1}
    async with await psycopg.AsyncConnection.connect(postgres_url, autocommit=True) as conn:
        cur = await conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = %s ORDER BY 1", (schema,)
        )
        assert [r[0] for r in await cur.fetchall()] == [
            "t_cleared",
            "t_entries",
            "t_ids",
            "t_list_items",
            "t_meta",
            "t_tombstones",
            "t_watchers",
        ]
        await conn.execute(psycopg.sql.SQL("DROP SCHEMA {} CASCADE").format(psycopg.sql.Identifier(schema)))
    await db.aclose()


async def test_concurrent_first_connects_migrate_once(postgres_url: str) -> None:
    """Many stores opening a fresh schema at once all succeed (advisory lock) at one version."""
    schema = f"race_{uuid.uuid4().hex[:8]}"
    stores = [AsyncPostgresDatabase(postgres_url, schema_name=schema, min_size=0, max_size=1) for _ in range(6)]
    if True:  # ASYNC
        await asyncio.gather(*(s.open() for s in stores))
    else:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(6) as pool:
            list(pool.map(lambda s: s.open(), stores))
    await stores[0].set("k", 1)
    assert await stores[-1].get("k") == 1
    async with await psycopg.AsyncConnection.connect(postgres_url, autocommit=True) as conn:
        cur = await conn.execute(
            psycopg.sql.SQL("SELECT version FROM {}").format(psycopg.sql.Identifier(schema, "kvstore_meta"))
        )
        assert await cur.fetchall() == [(SCHEMA_VERSION,)]
        await conn.execute(psycopg.sql.SQL("DROP SCHEMA {} CASCADE").format(psycopg.sql.Identifier(schema)))
    for s in stores:
        await s.aclose()


async def test_version_1_schema_migrates_to_idempotency_ids(postgres_url: str) -> None:
    """Tables at schema version 1 (no ids table) are migrated forward on connect, keeping their data."""
    schema = f"v1_{uuid.uuid4().hex[:8]}"
    Ident = psycopg.sql.Identifier
    old = AsyncPostgresDatabase(postgres_url, schema_name=schema)
    await old.extend("h", [1, 2])
    await old.aclose()
    async with await psycopg.AsyncConnection.connect(postgres_url, autocommit=True) as conn:
        # Back to what a version-1 kvstore left behind.
        await conn.execute(psycopg.sql.SQL("DROP TABLE {}").format(Ident(schema, "kvstore_ids")))
        await conn.execute(psycopg.sql.SQL("UPDATE {} SET version = 1").format(Ident(schema, "kvstore_meta")))
    store = AsyncPostgresDatabase(postgres_url, schema_name=schema)
    batch = uuid.uuid4().hex
    assert await store.get_range("h", 0, -1) == [1, 2]
    assert await store.append("h", 3, idempotency_id=batch) == 3
    assert await store.append("h", 3, idempotency_id=batch) == 3
    await store.aclose()
    async with await psycopg.AsyncConnection.connect(postgres_url, autocommit=True) as conn:
        cur = await conn.execute(psycopg.sql.SQL("SELECT version FROM {}").format(Ident(schema, "kvstore_meta")))
        assert await cur.fetchall() == [(SCHEMA_VERSION,)]
        await conn.execute(psycopg.sql.SQL("DROP SCHEMA {} CASCADE").format(Ident(schema)))


async def test_purge_drops_ids_older_than_the_window(postgres_url: str) -> None:
    """purge_expired removes idempotency ids older than the window (server clock); newer ones stay."""
    schema = f"ids_{uuid.uuid4().hex[:8]}"
    store = AsyncPostgresDatabase(postgres_url, schema_name=schema, idempotency_window=0.3)
    await store.append("h", 1, idempotency_id="old")
    await asyncio.sleep(0.5)
    await store.append("h", 2, idempotency_id="new")
    await store.purge_expired()
    async with await psycopg.AsyncConnection.connect(postgres_url, autocommit=True) as conn:
        table = psycopg.sql.Identifier(schema, "kvstore_ids")
        cur = await conn.execute(psycopg.sql.SQL("SELECT id FROM {}").format(table))
        assert await cur.fetchall() == [("new",)]
        await conn.execute(psycopg.sql.SQL("DROP SCHEMA {} CASCADE").format(psycopg.sql.Identifier(schema)))
    await store.aclose()


async def test_ready_pool_is_used_not_owned(postgres_url: str) -> None:
    """A store given a ready pool uses it for every kind of call and leaves it open on close."""
    from psycopg_pool import AsyncConnectionPool

    pool: Any = AsyncConnectionPool(postgres_url, kwargs={"autocommit": True}, min_size=1, max_size=2, open=False)
    await pool.open()
    db = AsyncPostgresDatabase(pool, key_prefix=f"pool-{uuid.uuid4().hex[:6]}:")
    await db.set("k", [1])
    assert await db.get("k", touch=60) == [1]
    assert await db.incr("n", 2) == 2
    assert await db.extend("h", [1, 2, 3]) == 3
    assert await db.trim("h", 1, -1) == 1
    assert await db.delete_many(["k", "n", "h"]) == 3
    await db.clear()
    await db.aclose()
    assert not pool.closed
    async with pool.connection() as conn:  # still usable by its owner
        await conn.execute("SELECT 1")
    await pool.close()


async def test_a_store_built_from_config_owns_its_pool(postgres_url: str) -> None:
    """from_config keeps the config, opens its own pool and closes it in aclose."""
    config = PostgresDatabaseConfig(url=postgres_url, key_prefix=f"own-{uuid.uuid4().hex[:6]}:", max_size=2)
    db = await AsyncPostgresDatabase.from_config(config)
    assert db.config is config
    pool = db._pool
    assert not pool.closed
    await db.set("k", 1)
    await db.clear()
    await db.aclose()
    assert pool.closed


async def test_trim_deletes_by_index_range(store: AsyncPostgresDatabase, postgres_url: str) -> None:
    """trim's plan deletes items by (ns, key, seq) ranges from the ends: O(removed), never a scan of the list."""
    await store.extend("h", list(range(300)))
    async with await psycopg.AsyncConnection.connect(postgres_url, autocommit=True) as conn:
        params = {"ns": store.key_prefix, "key": "h", "start": 2, "end": -3}
        await conn.execute("BEGIN")
        cur = await conn.execute("EXPLAIN (ANALYZE, COSTS OFF) " + store._q.trim, params)
        plan = "\n".join(row[0] for row in await cur.fetchall())
        await conn.execute("ROLLBACK")
    assert plan.count("seq > $") == 2
    assert plan.count("seq <= $") == 2
    assert "rows=2 loops=1" in plan
    assert "rows=300" not in plan


async def test_expired_rows_are_purged(store: AsyncPostgresDatabase) -> None:
    """purge_expired deletes expired values and lists (items too) that were already invisible."""
    await store.set("v", 1, ttl=0.05)
    await store.extend("h", [1, 2, 3])
    await store.expire("h", 0.05)
    await asyncio.sleep(0.2)
    assert await store.purge_expired() >= 2
    assert await store.get_length("h") == 0
    assert await store.append("h", 9) == 1
    assert await store.get_range("h", 0, -1) == [9]


async def test_get_range_is_an_index_range_scan(store: AsyncPostgresDatabase, postgres_url: str) -> None:
    """get_range's plan scans (ns, key, seq) by range, so the last 20 of any list cost O(log n + 20)."""
    await store.extend("h", list(range(300)))
    assert await store.get_range("h", -3, -1) == [297, 298, 299]
    async with await psycopg.AsyncConnection.connect(postgres_url, autocommit=True) as conn:
        params = {"ns": store.key_prefix, "key": "h", "start": -20, "end": -1}
        cur = await conn.execute("EXPLAIN (ANALYZE, COSTS OFF) " + store._q.range, params)
        plan = "\n".join(row[0] for row in await cur.fetchall())
    assert "seq >= $" in plan
    assert "seq <= $" in plan
    assert "rows=20 loops=1" in plan


async def test_values_read_back_exactly_where_jsonb_would_not(store: AsyncPostgresDatabase) -> None:
    """Key order, float-vs-int, -0.0 and NUL characters survive (jsonb would reorder, coerce or reject them)."""
    value = {"b": 1, "a": [1e16, -0.0, 1.0], "nul": "x\x00y"}
    await store.set("k", value)
    got = await store.get("k")
    assert list(got) == ["b", "a", "nul"]
    assert got == value
    assert isinstance(got["a"][0], float)
    assert str(got["a"][1]) == "-0.0"
    await store.append("h", value)
    assert list((await store.get_range("h", 0, -1))[0]) == ["b", "a", "nul"]
