# Generated from tests/_async/test_postgres_faults.py by tools/unasync.py: do not edit; edit the async source.
"""PostgreSQL backend beyond the contract: deadlines, error mapping, secrets, schema, round trips."""

from __future__ import annotations

import logging
import socket
import time
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from kvstore.config import PostgresDatabaseConfig
from kvstore.errors import BackendBusyError, BackendUnavailableError, KVStoreError
from kvstore.postgres import PostgresDatabase
from kvstore.postgres._sql import SCHEMA_VERSION
from tests.fixtures_postgres import CANARY_RIGHT_PASSWORD, CANARY_USER, PgServer

pytestmark = pytest.mark.postgres

CANARY = "canary-pw-7f3a9c"


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def store(postgres_url: str) -> Iterator[PostgresDatabase]:
    db = PostgresDatabase(postgres_url, key_prefix=f"faults-{uuid.uuid4().hex[:8]}:", max_size=2)
    db.open()
    yield db
    db.clear()
    db.close()


def _count_executes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    calls: list[str] = []
    original = psycopg.Cursor.execute

    def counting(self: Any, query: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append(str(query))
        return original(self, query, *args, **kwargs)

    monkeypatch.setattr(psycopg.Cursor, "execute", counting)
    return calls


def test_mget_and_mset_of_100_keys_are_one_round_trip_each(
    store: PostgresDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    """mset and mget of 100 keys each send exactly one statement to the server."""
    store.ping()
    calls = _count_executes(monkeypatch)
    store.mset({f"k{i}": {"i": i} for i in range(100)})
    assert len(calls) == 1
    got = store.mget([f"k{i}" for i in range(100)])
    assert len(calls) == 2
    assert got == [{"i": i} for i in range(100)]


def test_unreachable_server_fails_within_connect_timeout() -> None:
    """from_config against a closed port raises BackendUnavailableError within the connect budget."""
    config = PostgresDatabaseConfig(url=f"postgresql://postgres@127.0.0.1:{_closed_port()}/x", connect_timeout=1.0)
    start = time.monotonic()
    with pytest.raises(BackendUnavailableError) as info:
        PostgresDatabase.from_config(config)
    assert time.monotonic() - start < 3.0
    assert info.value.backend == "postgres"
    assert isinstance(info.value.__cause__, Exception)


def test_statement_timeout_bounds_a_blocked_call(postgres_url: str) -> None:
    """A statement stuck behind another session's row lock gives up at lock_timeout (0.8 x statement_timeout)
    with BackendBusyError: a busy server, not an outage."""
    db = PostgresDatabase(postgres_url, key_prefix=f"st-{uuid.uuid4().hex[:8]}:", statement_timeout=0.3)
    db.set("k", 1)
    with psycopg.Connection.connect(postgres_url) as other:
        other.execute("SELECT 1 FROM public.kvstore_entries WHERE ns = %s FOR UPDATE", (db.key_prefix,))
        start = time.monotonic()
        with pytest.raises(BackendBusyError):
            db.set("k", 2)
        assert time.monotonic() - start < 2.0
        other.rollback()
    assert db.get("k") == 1  # the pool handed back a usable connection
    db.clear()
    db.close()


def test_exhausted_pool_fails_within_pool_timeout(postgres_url: str) -> None:
    """With every pooled connection taken, a call fails after pool_timeout, not psycopg's 30 s."""
    db = PostgresDatabase(postgres_url, min_size=1, max_size=1, pool_timeout=0.3)
    db.open()
    held = db._pool.getconn()
    try:
        start = time.monotonic()
        with pytest.raises(BackendUnavailableError, match="pool_timeout"):
            db.get("k")
        assert time.monotonic() - start < 2.0
    finally:
        db._pool.putconn(held)
    db.close()


def test_password_never_printed(
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
            PostgresDatabase.from_config(config)
        texts += [str(info.value), repr(info.value), str(info.value.__cause__)]
    if postgres_server is not None:
        # A real authentication failure (scram) with the wrong (canary) password.
        wrong = f"postgresql://{CANARY_USER}:{CANARY}@127.0.0.1:{postgres_server.port}/postgres"
        with pytest.raises(BackendUnavailableError) as info:
            PostgresDatabase.from_config(PostgresDatabaseConfig(url=wrong, connect_timeout=0.5))
        texts += [str(info.value), repr(info.value), str(info.value.__cause__)]
        right = f"postgresql://{CANARY_USER}@127.0.0.1:{postgres_server.port}/postgres"
        db = PostgresDatabase(right, password=CANARY_RIGHT_PASSWORD, schema_name=f"canary_{uuid.uuid4().hex[:6]}")
        with pytest.raises(KVStoreError) as refused:  # authenticated, but may not create a schema
            db.open()
        assert not isinstance(refused.value, BackendUnavailableError)
        texts.append(repr(db))
        db.close()
    db = PostgresDatabase(unreachable)
    texts.append(repr(db))
    db.close()
    texts += [record.getMessage() for record in caplog.records]
    for text in texts:
        assert CANARY not in text
        assert CANARY_RIGHT_PASSWORD not in text


def test_quoted_schema_and_table_prefix(postgres_url: str) -> None:
    """A schema name needing quotes is created and used; tables are named from table_prefix."""
    schema = f'we"ird {uuid.uuid4().hex[:6]}'
    db = PostgresDatabase(postgres_url, schema_name=schema, table_prefix="t_")
    db.set("k", {"v": 1})
    db.append("h", 1)
    assert db.get("k") == {"v": 1}
    with psycopg.Connection.connect(postgres_url, autocommit=True) as conn:
        cur = conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = %s ORDER BY 1", (schema,)
        )
        assert [r[0] for r in cur.fetchall()] == [
            "t_cleared",
            "t_entries",
            "t_ids",
            "t_list_items",
            "t_meta",
            "t_tombstones",
            "t_watchers",
        ]
        conn.execute(psycopg.sql.SQL("DROP SCHEMA {} CASCADE").format(psycopg.sql.Identifier(schema)))
    db.close()


def test_concurrent_first_connects_migrate_once(postgres_url: str) -> None:
    """Many stores opening a fresh schema at once all succeed (advisory lock) at one version."""
    schema = f"race_{uuid.uuid4().hex[:8]}"
    stores = [PostgresDatabase(postgres_url, schema_name=schema, min_size=0, max_size=1) for _ in range(6)]
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(6) as pool:
        list(pool.map(lambda s: s.open(), stores))
    stores[0].set("k", 1)
    assert stores[-1].get("k") == 1
    with psycopg.Connection.connect(postgres_url, autocommit=True) as conn:
        cur = conn.execute(
            psycopg.sql.SQL("SELECT version FROM {}").format(psycopg.sql.Identifier(schema, "kvstore_meta"))
        )
        assert cur.fetchall() == [(SCHEMA_VERSION,)]
        conn.execute(psycopg.sql.SQL("DROP SCHEMA {} CASCADE").format(psycopg.sql.Identifier(schema)))
    for s in stores:
        s.close()


def test_version_1_schema_migrates_to_idempotency_ids(postgres_url: str) -> None:
    """Tables at schema version 1 (no ids table) are migrated forward on connect, keeping their data."""
    schema = f"v1_{uuid.uuid4().hex[:8]}"
    Ident = psycopg.sql.Identifier
    old = PostgresDatabase(postgres_url, schema_name=schema)
    old.extend("h", [1, 2])
    old.close()
    with psycopg.Connection.connect(postgres_url, autocommit=True) as conn:
        # Back to what a version-1 kvstore left behind.
        conn.execute(psycopg.sql.SQL("DROP TABLE {}").format(Ident(schema, "kvstore_ids")))
        conn.execute(psycopg.sql.SQL("UPDATE {} SET version = 1").format(Ident(schema, "kvstore_meta")))
    store = PostgresDatabase(postgres_url, schema_name=schema)
    batch = uuid.uuid4().hex
    assert store.get_range("h", 0, -1) == [1, 2]
    assert store.append("h", 3, idempotency_id=batch) == 3
    assert store.append("h", 3, idempotency_id=batch) == 3
    store.close()
    with psycopg.Connection.connect(postgres_url, autocommit=True) as conn:
        cur = conn.execute(psycopg.sql.SQL("SELECT version FROM {}").format(Ident(schema, "kvstore_meta")))
        assert cur.fetchall() == [(SCHEMA_VERSION,)]
        conn.execute(psycopg.sql.SQL("DROP SCHEMA {} CASCADE").format(Ident(schema)))


def test_purge_drops_ids_older_than_the_window(postgres_url: str) -> None:
    """purge_expired removes idempotency ids older than the window (server clock); newer ones stay."""
    schema = f"ids_{uuid.uuid4().hex[:8]}"
    store = PostgresDatabase(postgres_url, schema_name=schema, idempotency_window=0.3)
    store.append("h", 1, idempotency_id="old")
    time.sleep(0.5)
    store.append("h", 2, idempotency_id="new")
    store.purge_expired()
    with psycopg.Connection.connect(postgres_url, autocommit=True) as conn:
        table = psycopg.sql.Identifier(schema, "kvstore_ids")
        cur = conn.execute(psycopg.sql.SQL("SELECT id FROM {}").format(table))
        assert cur.fetchall() == [("new",)]
        conn.execute(psycopg.sql.SQL("DROP SCHEMA {} CASCADE").format(psycopg.sql.Identifier(schema)))
    store.close()


def test_ready_pool_is_used_not_owned(postgres_url: str) -> None:
    """A store given a ready pool uses it for every kind of call and leaves it open on close."""
    from psycopg_pool import ConnectionPool

    pool: Any = ConnectionPool(postgres_url, kwargs={"autocommit": True}, min_size=1, max_size=2, open=False)
    pool.open()
    db = PostgresDatabase(pool, key_prefix=f"pool-{uuid.uuid4().hex[:6]}:")
    db.set("k", [1])
    assert db.get("k", touch=60) == [1]
    assert db.incr("n", 2) == 2
    assert db.extend("h", [1, 2, 3]) == 3
    assert db.trim("h", 1, -1) == 1
    assert db.delete_many(["k", "n", "h"]) == 3
    db.clear()
    db.close()
    assert not pool.closed
    with pool.connection() as conn:  # still usable by its owner
        conn.execute("SELECT 1")
    pool.close()


def test_a_store_built_from_config_owns_its_pool(postgres_url: str) -> None:
    """from_config keeps the config, opens its own pool and closes it in close."""
    config = PostgresDatabaseConfig(url=postgres_url, key_prefix=f"own-{uuid.uuid4().hex[:6]}:", max_size=2)
    db = PostgresDatabase.from_config(config)
    assert db.config is config
    pool = db._pool
    assert not pool.closed
    db.set("k", 1)
    db.clear()
    db.close()
    assert pool.closed


def test_trim_deletes_by_index_range(store: PostgresDatabase, postgres_url: str) -> None:
    """trim's plan deletes items by (ns, key, seq) ranges from the ends: O(removed), never a scan of the list."""
    store.extend("h", list(range(300)))
    with psycopg.Connection.connect(postgres_url, autocommit=True) as conn:
        params = {"ns": store.key_prefix, "key": "h", "start": 2, "end": -3}
        conn.execute("BEGIN")
        cur = conn.execute("EXPLAIN (ANALYZE, COSTS OFF) " + store._q.trim, params)
        plan = "\n".join(row[0] for row in cur.fetchall())
        conn.execute("ROLLBACK")
    assert plan.count("seq > $") == 2
    assert plan.count("seq <= $") == 2
    assert "rows=2 loops=1" in plan
    assert "rows=300" not in plan


def test_expired_rows_are_purged(store: PostgresDatabase) -> None:
    """purge_expired deletes expired values and lists (items too) that were already invisible."""
    store.set("v", 1, ttl=0.05)
    store.extend("h", [1, 2, 3])
    store.expire("h", 0.05)
    time.sleep(0.2)
    assert store.purge_expired() >= 2
    assert store.get_length("h") == 0
    assert store.append("h", 9) == 1
    assert store.get_range("h", 0, -1) == [9]


def test_get_range_is_an_index_range_scan(store: PostgresDatabase, postgres_url: str) -> None:
    """get_range's plan scans (ns, key, seq) by range, so the last 20 of any list cost O(log n + 20)."""
    store.extend("h", list(range(300)))
    assert store.get_range("h", -3, -1) == [297, 298, 299]
    with psycopg.Connection.connect(postgres_url, autocommit=True) as conn:
        params = {"ns": store.key_prefix, "key": "h", "start": -20, "end": -1}
        cur = conn.execute("EXPLAIN (ANALYZE, COSTS OFF) " + store._q.range, params)
        plan = "\n".join(row[0] for row in cur.fetchall())
    assert "seq >= $" in plan
    assert "seq <= $" in plan
    assert "rows=20 loops=1" in plan


def test_values_read_back_exactly_where_jsonb_would_not(store: PostgresDatabase) -> None:
    """Key order, float-vs-int, -0.0 and NUL characters survive (jsonb would reorder, coerce or reject them)."""
    value = {"b": 1, "a": [1e16, -0.0, 1.0], "nul": "x\x00y"}
    store.set("k", value)
    got = store.get("k")
    assert list(got) == ["b", "a", "nul"]
    assert got == value
    assert isinstance(got["a"][0], float)
    assert str(got["a"][1]) == "-0.0"
    store.append("h", value)
    assert list((store.get_range("h", 0, -1))[0]) == ["b", "a", "nul"]
