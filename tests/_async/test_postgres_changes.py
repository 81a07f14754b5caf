"""PostgreSQL replay-guard hooks: server_time and changed_since after every kind of write."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import psycopg
import pytest

from kvstore.errors import WrongTypeError
from kvstore.postgres import AsyncPostgresDatabase
from kvstore.postgres._sql import SCHEMA_VERSION

pytestmark = pytest.mark.postgres

KEYS = ["a", "b", "l", "never"]


@pytest.fixture
async def store(postgres_url: str) -> AsyncIterator[AsyncPostgresDatabase]:
    db = AsyncPostgresDatabase(postgres_url, key_prefix=f"chg-{uuid.uuid4().hex[:8]}:", max_size=2)
    await db.mset({"a": 1, "b": 2})
    await db.append("l", 1)
    yield db
    await db.clear()
    await db.aclose()


async def test_tracks_changes_and_server_time_is_the_server_clock(store: AsyncPostgresDatabase) -> None:
    """The store declares change tracking; server_time is Unix seconds and moves forward."""
    assert store.tracks_changes is True
    first = await store.server_time()
    second = await store.server_time()
    assert 1.7e9 < first < second


async def test_keys_untouched_since_are_not_changed(store: AsyncPostgresDatabase) -> None:
    """Keys written before ``since`` (and a key never written) are not reported; reads change nothing."""
    since = await store.server_time()
    await store.get("a")
    await store.mget(["a", "b"])
    await store.get_range("l", 0, -1)
    await store.exists("b")
    assert await store.changed_since(KEYS, since) == set()
    assert await store.changed_since([], since) == set()


async def test_set_and_mset_are_changes(store: AsyncPostgresDatabase) -> None:
    """set, set(only_if_absent) on a new key and mset mark exactly the keys they wrote."""
    since = await store.server_time()
    await store.set("a", 10)
    assert await store.changed_since(KEYS, since) == {"a"}
    await store.mset({"b": 20, "new": 1})
    assert await store.changed_since([*KEYS, "new"], since) == {"a", "b", "new"}
    later = await store.server_time()
    assert await store.set("fresh", 1, only_if_absent=True)
    assert not await store.set("a", 11, only_if_absent=True)  # not written: not a change
    assert await store.changed_since([*KEYS, "fresh"], later) == {"fresh"}


async def test_expire_and_persist_are_changes(store: AsyncPostgresDatabase) -> None:
    """expire (set or remove a TTL) marks the key; expire of a missing key marks nothing."""
    since = await store.server_time()
    assert await store.expire("a", 100)
    assert await store.changed_since(KEYS, since) == {"a"}
    later = await store.server_time()
    assert await store.expire("b", None)
    assert not await store.expire("never", 5)
    assert await store.changed_since(KEYS, later) == {"b"}


async def test_incr_get_touch_trim_and_delete_many_are_changes(store: AsyncPostgresDatabase) -> None:
    """incr, get(touch=), a trim that removes items and delete_many mark their keys; refused or no-op calls do not."""
    since = await store.server_time()
    await store.set("s", "text")
    later = await store.server_time()
    assert await store.incr("n") == 1
    with pytest.raises(WrongTypeError):
        await store.incr("s")  # refused: not a change
    assert await store.changed_since([*KEYS, "n", "s"], later) == {"n"}
    later = await store.server_time()
    assert await store.get("a", touch=100) == 1
    assert await store.get("never", touch=100) is None
    assert await store.changed_since(KEYS, later) == {"a"}
    later = await store.server_time()
    await store.extend("h", [1, 2, 3])
    after_extend = await store.server_time()
    assert await store.trim("h", 0, -1) == 0  # keeps everything: not a change
    assert await store.changed_since(["h"], after_extend) == set()
    assert await store.trim("h", 1, -1) == 1
    assert await store.changed_since(["h"], after_extend) == {"h"}
    after_trim = await store.server_time()
    assert await store.trim("h", 5, 9) == 2  # empties the list: deleted, tombstoned
    assert await store.changed_since(["h"], after_trim) == {"h"}
    later = await store.server_time()
    assert await store.delete_many(["b", "l", "never"]) == 2
    assert await store.changed_since(KEYS, later) == {"b", "l", "never"}  # like delete: tombstones
    assert await store.changed_since(["s"], since) == {"s"}


async def test_append_and_extend_are_changes(store: AsyncPostgresDatabase) -> None:
    """append and extend mark the list key, a new list included."""
    since = await store.server_time()
    await store.append("l", 2)
    assert await store.changed_since(KEYS, since) == {"l"}
    later = await store.server_time()
    await store.extend("l2", [1, 2])
    assert await store.changed_since([*KEYS, "l2"], later) == {"l2"}


async def test_delete_is_a_change_even_after_the_row_is_gone(store: AsyncPostgresDatabase) -> None:
    """delete of a value, a list, or a missing key leaves a tombstone (a delete is a change either way)."""
    since = await store.server_time()
    assert await store.delete("a")
    assert await store.delete("l")
    assert not await store.delete("never")
    assert await store.changed_since(KEYS, since) == {"a", "l", "never"}
    assert await store.changed_since(KEYS, await store.server_time()) == set()


async def test_clear_changes_every_key_of_the_namespace_only(store: AsyncPostgresDatabase, postgres_url: str) -> None:
    """clear marks every key of its prefix (present or not), and no key of another prefix."""
    other = AsyncPostgresDatabase(postgres_url, key_prefix=f"chg-other-{uuid.uuid4().hex[:8]}:", max_size=1)
    try:
        await other.set("a", 1)
        since = await store.server_time()
        await store.clear()
        assert await store.changed_since(KEYS, since) == set(KEYS)
        assert await other.changed_since(KEYS, since) == set()
        assert await store.changed_since(KEYS, await store.server_time()) == set()
    finally:
        await other.clear()
        await other.aclose()


async def test_a_since_older_than_the_window_reports_every_key(postgres_url: str) -> None:
    """Past the idempotency window tombstones may be swept: every key counts as changed (no silent overwrite)."""
    db = AsyncPostgresDatabase(postgres_url, key_prefix=f"chg-{uuid.uuid4().hex[:8]}:", idempotency_window=60)
    try:
        await db.set("a", 1)
        now = await db.server_time()
        assert await db.changed_since(["a", "never"], now - 61) == {"a", "never"}
        assert await db.changed_since(["a", "never"], 0.0) == {"a", "never"}
        assert await db.changed_since(["a", "never"], now) == set()
    finally:
        await db.clear()
        await db.aclose()


async def test_changed_since_is_one_round_trip(store: AsyncPostgresDatabase, monkeypatch: pytest.MonkeyPatch) -> None:
    """changed_since of 500 keys sends one statement."""
    since = await store.server_time()
    await store.set("k7", 1)
    calls: list[Any] = []
    original = psycopg.AsyncCursor.execute

    async def counting(self: Any, query: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append(query)
        return await original(self, query, *args, **kwargs)

    monkeypatch.setattr(psycopg.AsyncCursor, "execute", counting)
    assert await store.changed_since([f"k{i}" for i in range(500)], since) == {"k7"}
    assert len(calls) == 1


async def test_tombstones_and_clear_marks_are_purged_after_the_window(postgres_url: str) -> None:
    """purge_expired drops tombstones and clear marks older than the idempotency window."""
    schema = f"kv_tomb_{uuid.uuid4().hex[:8]}"
    db = AsyncPostgresDatabase(postgres_url, schema_name=schema, key_prefix="p:", idempotency_window=0.001)
    try:
        await db.set("k", 1)
        await db.delete("k")
        await db.clear()
        await asyncio.sleep(0.05)  # let the 1 ms window pass (a round trip alone may not)
        await db.purge_expired()
        async with await psycopg.AsyncConnection.connect(postgres_url, autocommit=True) as conn:
            for table in ("kvstore_tombstones", "kvstore_cleared"):
                cur = await conn.execute(
                    psycopg.sql.SQL("SELECT count(*) FROM {}").format(psycopg.sql.Identifier(schema, table))
                )
                assert await cur.fetchone() == (0,)
    finally:
        await db.aclose()
        async with await psycopg.AsyncConnection.connect(postgres_url, autocommit=True) as conn:
            await conn.execute(psycopg.sql.SQL("DROP SCHEMA {} CASCADE").format(psycopg.sql.Identifier(schema)))


async def test_version_2_tables_migrate_to_change_tracking(postgres_url: str) -> None:
    """Tables left by a version-2 kvstore gain modified_at, tombstones and clear marks on connect, data kept."""
    schema = f"kv_v2_{uuid.uuid4().hex[:8]}"
    ident = psycopg.sql.Identifier
    db = AsyncPostgresDatabase(postgres_url, schema_name=schema, key_prefix="p:")
    await db.set("k", {"v": 1})
    await db.append("h", 1)
    await db.aclose()
    async with await psycopg.AsyncConnection.connect(postgres_url, autocommit=True) as conn:
        sql = psycopg.sql.SQL
        await conn.execute(sql("ALTER TABLE {} DROP COLUMN modified_at").format(ident(schema, "kvstore_entries")))
        await conn.execute(sql("DROP TABLE {}").format(ident(schema, "kvstore_tombstones")))
        await conn.execute(sql("DROP TABLE {}").format(ident(schema, "kvstore_cleared")))
        await conn.execute(sql("UPDATE {} SET version = 2").format(ident(schema, "kvstore_meta")))
    db = AsyncPostgresDatabase(postgres_url, schema_name=schema, key_prefix="p:")
    try:
        assert await db.get("k") == {"v": 1}
        assert await db.get_range("h", 0, -1) == [1]
        since = await db.server_time()
        await db.delete("k")
        assert await db.changed_since(["k", "h"], since) == {"k"}
        async with await psycopg.AsyncConnection.connect(postgres_url, autocommit=True) as conn:
            cur = await conn.execute(psycopg.sql.SQL("SELECT version FROM {}").format(ident(schema, "kvstore_meta")))
            assert await cur.fetchall() == [(SCHEMA_VERSION,)]
    finally:
        await db.aclose()
        async with await psycopg.AsyncConnection.connect(postgres_url, autocommit=True) as conn:
            await conn.execute(psycopg.sql.SQL("DROP SCHEMA {} CASCADE").format(ident(schema)))


async def test_version_3_tables_move_their_items_so_an_older_writer_fails_loudly(postgres_url: str) -> None:
    """Version 4 renames the items table: a version-3 kvstore still running errors on lists instead of losing items."""
    schema = f"kv_v3_{uuid.uuid4().hex[:8]}"
    ident = psycopg.sql.Identifier
    sql = psycopg.sql.SQL
    db = AsyncPostgresDatabase(postgres_url, schema_name=schema)
    await db.extend("h", [1, 2, 3])
    await db.aclose()
    async with await psycopg.AsyncConnection.connect(postgres_url, autocommit=True) as conn:
        # What version 3 left: the items under their old name, no head column.
        await conn.execute(sql("ALTER TABLE {} RENAME TO kvstore_items").format(ident(schema, "kvstore_list_items")))
        await conn.execute(sql("ALTER TABLE {} DROP COLUMN head").format(ident(schema, "kvstore_entries")))
        await conn.execute(sql("UPDATE {} SET version = 3").format(ident(schema, "kvstore_meta")))
    db = AsyncPostgresDatabase(postgres_url, schema_name=schema)
    try:
        assert await db.get_range("h", 0, -1) == [1, 2, 3]  # migrated, items kept
        await db.trim("h", -2, -1)
        assert await db.append("h", 4) == 3
        assert await db.get_range("h", 0, -1) == [2, 3, 4]
        await db.delete("h")  # the trigger follows the table
        async with await psycopg.AsyncConnection.connect(postgres_url, autocommit=True) as conn:
            cur = await conn.execute(sql("SELECT count(*) FROM {}").format(ident(schema, "kvstore_list_items")))
            assert await cur.fetchall() == [(0,)]
            # A version-3 writer's insert finds no table: its whole append fails, nothing is misplaced.
            with pytest.raises(psycopg.errors.UndefinedTable):
                await conn.execute(
                    sql("INSERT INTO {} (ns, key, seq, value) VALUES ('', 'h', 1, '1')").format(
                        ident(schema, "kvstore_items")
                    )
                )
    finally:
        await db.aclose()
        async with await psycopg.AsyncConnection.connect(postgres_url, autocommit=True) as conn:
            await conn.execute(sql("DROP SCHEMA {} CASCADE").format(ident(schema)))
