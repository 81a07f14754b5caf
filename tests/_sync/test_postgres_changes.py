# Generated from tests/_async/test_postgres_changes.py by tools/unasync.py: do not edit; edit the async source.
"""PostgreSQL replay-guard hooks: server_time and changed_since after every kind of write."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from kvstore.errors import WrongTypeError
from kvstore.postgres import PostgresDatabase
from kvstore.postgres._sql import SCHEMA_VERSION

pytestmark = pytest.mark.postgres

KEYS = ["a", "b", "l", "never"]


@pytest.fixture
def store(postgres_url: str) -> Iterator[PostgresDatabase]:
    db = PostgresDatabase(postgres_url, key_prefix=f"chg-{uuid.uuid4().hex[:8]}:", max_size=2)
    db.mset({"a": 1, "b": 2})
    db.append("l", 1)
    yield db
    db.clear()
    db.close()


def test_tracks_changes_and_server_time_is_the_server_clock(store: PostgresDatabase) -> None:
    """The store declares change tracking; server_time is Unix seconds and moves forward."""
    assert store.tracks_changes is True
    first = store.server_time()
    second = store.server_time()
    assert 1.7e9 < first < second


def test_keys_untouched_since_are_not_changed(store: PostgresDatabase) -> None:
    """Keys written before ``since`` (and a key never written) are not reported; reads change nothing."""
    since = store.server_time()
    store.get("a")
    store.mget(["a", "b"])
    store.get_range("l", 0, -1)
    store.exists("b")
    assert store.changed_since(KEYS, since) == set()
    assert store.changed_since([], since) == set()


def test_set_and_mset_are_changes(store: PostgresDatabase) -> None:
    """set, set(only_if_absent) on a new key and mset mark exactly the keys they wrote."""
    since = store.server_time()
    store.set("a", 10)
    assert store.changed_since(KEYS, since) == {"a"}
    store.mset({"b": 20, "new": 1})
    assert store.changed_since([*KEYS, "new"], since) == {"a", "b", "new"}
    later = store.server_time()
    assert store.set("fresh", 1, only_if_absent=True)
    assert not store.set("a", 11, only_if_absent=True)  # not written: not a change
    assert store.changed_since([*KEYS, "fresh"], later) == {"fresh"}


def test_expire_and_persist_are_changes(store: PostgresDatabase) -> None:
    """expire (set or remove a TTL) marks the key; expire of a missing key marks nothing."""
    since = store.server_time()
    assert store.expire("a", 100)
    assert store.changed_since(KEYS, since) == {"a"}
    later = store.server_time()
    assert store.expire("b", None)
    assert not store.expire("never", 5)
    assert store.changed_since(KEYS, later) == {"b"}


def test_incr_get_touch_trim_and_delete_many_are_changes(store: PostgresDatabase) -> None:
    """incr, get(touch=), a trim that removes items and delete_many mark their keys; refused or no-op calls do not."""
    since = store.server_time()
    store.set("s", "text")
    later = store.server_time()
    assert store.incr("n") == 1
    with pytest.raises(WrongTypeError):
        store.incr("s")  # refused: not a change
    assert store.changed_since([*KEYS, "n", "s"], later) == {"n"}
    later = store.server_time()
    assert store.get("a", touch=100) == 1
    assert store.get("never", touch=100) is None
    assert store.changed_since(KEYS, later) == {"a"}
    later = store.server_time()
    store.extend("h", [1, 2, 3])
    after_extend = store.server_time()
    assert store.trim("h", 0, -1) == 0  # keeps everything: not a change
    assert store.changed_since(["h"], after_extend) == set()
    assert store.trim("h", 1, -1) == 1
    assert store.changed_since(["h"], after_extend) == {"h"}
    after_trim = store.server_time()
    assert store.trim("h", 5, 9) == 2  # empties the list: deleted, tombstoned
    assert store.changed_since(["h"], after_trim) == {"h"}
    later = store.server_time()
    assert store.delete_many(["b", "l", "never"]) == 2
    assert store.changed_since(KEYS, later) == {"b", "l", "never"}  # like delete: tombstones
    assert store.changed_since(["s"], since) == {"s"}


def test_append_and_extend_are_changes(store: PostgresDatabase) -> None:
    """append and extend mark the list key, a new list included."""
    since = store.server_time()
    store.append("l", 2)
    assert store.changed_since(KEYS, since) == {"l"}
    later = store.server_time()
    store.extend("l2", [1, 2])
    assert store.changed_since([*KEYS, "l2"], later) == {"l2"}


def test_delete_is_a_change_even_after_the_row_is_gone(store: PostgresDatabase) -> None:
    """delete of a value, a list, or a missing key leaves a tombstone (a delete is a change either way)."""
    since = store.server_time()
    assert store.delete("a")
    assert store.delete("l")
    assert not store.delete("never")
    assert store.changed_since(KEYS, since) == {"a", "l", "never"}
    assert store.changed_since(KEYS, store.server_time()) == set()


def test_clear_changes_every_key_of_the_namespace_only(store: PostgresDatabase, postgres_url: str) -> None:
    """clear marks every key of its prefix (present or not), and no key of another prefix."""
    other = PostgresDatabase(postgres_url, key_prefix=f"chg-other-{uuid.uuid4().hex[:8]}:", max_size=1)
    try:
        other.set("a", 1)
        since = store.server_time()
        store.clear()
        assert store.changed_since(KEYS, since) == set(KEYS)
        assert other.changed_since(KEYS, since) == set()
        assert store.changed_since(KEYS, store.server_time()) == set()
    finally:
        other.clear()
        other.close()


def test_a_since_older_than_the_window_reports_every_key(postgres_url: str) -> None:
    """Past the idempotency window tombstones may be swept: every key counts as changed (no silent overwrite)."""
    db = PostgresDatabase(postgres_url, key_prefix=f"chg-{uuid.uuid4().hex[:8]}:", idempotency_window=60)
    try:
        db.set("a", 1)
        now = db.server_time()
        assert db.changed_since(["a", "never"], now - 61) == {"a", "never"}
        assert db.changed_since(["a", "never"], 0.0) == {"a", "never"}
        assert db.changed_since(["a", "never"], now) == set()
    finally:
        db.clear()
        db.close()


def test_changed_since_is_one_round_trip(store: PostgresDatabase, monkeypatch: pytest.MonkeyPatch) -> None:
    """changed_since of 500 keys sends one statement."""
    since = store.server_time()
    store.set("k7", 1)
    calls: list[Any] = []
    original = psycopg.Cursor.execute

    def counting(self: Any, query: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append(query)
        return original(self, query, *args, **kwargs)

    monkeypatch.setattr(psycopg.Cursor, "execute", counting)
    assert store.changed_since([f"k{i}" for i in range(500)], since) == {"k7"}
    assert len(calls) == 1


def test_tombstones_and_clear_marks_are_purged_after_the_window(postgres_url: str) -> None:
    """purge_expired drops tombstones and clear marks older than the idempotency window."""
    schema = f"kv_tomb_{uuid.uuid4().hex[:8]}"
    db = PostgresDatabase(postgres_url, schema_name=schema, key_prefix="p:", idempotency_window=0.001)
    try:
        db.set("k", 1)
        db.delete("k")
        db.clear()
        time.sleep(0.05)  # let the 1 ms window pass (a round trip alone may not)
        db.purge_expired()
        with psycopg.Connection.connect(postgres_url, autocommit=True) as conn:
            for table in ("kvstore_tombstones", "kvstore_cleared"):
                cur = conn.execute(
                    psycopg.sql.SQL("SELECT count(*) FROM {}").format(psycopg.sql.Identifier(schema, table))
                )
                assert cur.fetchone() == (0,)
    finally:
        db.close()
        with psycopg.Connection.connect(postgres_url, autocommit=True) as conn:
            conn.execute(psycopg.sql.SQL("DROP SCHEMA {} CASCADE").format(psycopg.sql.Identifier(schema)))


def test_version_2_tables_migrate_to_change_tracking(postgres_url: str) -> None:
    """Tables left by a version-2 kvstore gain modified_at, tombstones and clear marks on connect, data kept."""
    schema = f"kv_v2_{uuid.uuid4().hex[:8]}"
    ident = psycopg.sql.Identifier
    db = PostgresDatabase(postgres_url, schema_name=schema, key_prefix="p:")
    db.set("k", {"v": 1})
    db.append("h", 1)
    db.close()
    with psycopg.Connection.connect(postgres_url, autocommit=True) as conn:
        sql = psycopg.sql.SQL
        conn.execute(sql("ALTER TABLE {} DROP COLUMN modified_at").format(ident(schema, "kvstore_entries")))
        conn.execute(sql("DROP TABLE {}").format(ident(schema, "kvstore_tombstones")))
        conn.execute(sql("DROP TABLE {}").format(ident(schema, "kvstore_cleared")))
        conn.execute(sql("UPDATE {} SET version = 2").format(ident(schema, "kvstore_meta")))
    db = PostgresDatabase(postgres_url, schema_name=schema, key_prefix="p:")
    try:
        assert db.get("k") == {"v": 1}
        assert db.get_range("h", 0, -1) == [1]
        since = db.server_time()
        db.delete("k")
        assert db.changed_since(["k", "h"], since) == {"k"}
        with psycopg.Connection.connect(postgres_url, autocommit=True) as conn:
            cur = conn.execute(psycopg.sql.SQL("SELECT version FROM {}").format(ident(schema, "kvstore_meta")))
            assert cur.fetchall() == [(SCHEMA_VERSION,)]
    finally:
        db.close()
        with psycopg.Connection.connect(postgres_url, autocommit=True) as conn:
            conn.execute(psycopg.sql.SQL("DROP SCHEMA {} CASCADE").format(ident(schema)))


def test_version_3_tables_move_their_items_so_an_older_writer_fails_loudly(postgres_url: str) -> None:
    """Version 4 renames the items table: a version-3 kvstore still running errors on lists instead of losing items."""
    schema = f"kv_v3_{uuid.uuid4().hex[:8]}"
    ident = psycopg.sql.Identifier
    sql = psycopg.sql.SQL
    db = PostgresDatabase(postgres_url, schema_name=schema)
    db.extend("h", [1, 2, 3])
    db.close()
    with psycopg.Connection.connect(postgres_url, autocommit=True) as conn:
        # What version 3 left: the items under their old name, no head column.
        conn.execute(sql("ALTER TABLE {} RENAME TO kvstore_items").format(ident(schema, "kvstore_list_items")))
        conn.execute(sql("ALTER TABLE {} DROP COLUMN head").format(ident(schema, "kvstore_entries")))
        conn.execute(sql("UPDATE {} SET version = 3").format(ident(schema, "kvstore_meta")))
    db = PostgresDatabase(postgres_url, schema_name=schema)
    try:
        assert db.get_range("h", 0, -1) == [1, 2, 3]  # migrated, items kept
        db.trim("h", -2, -1)
        assert db.append("h", 4) == 3
        assert db.get_range("h", 0, -1) == [2, 3, 4]
        db.delete("h")  # the trigger follows the table
        with psycopg.Connection.connect(postgres_url, autocommit=True) as conn:
            cur = conn.execute(sql("SELECT count(*) FROM {}").format(ident(schema, "kvstore_list_items")))
            assert cur.fetchall() == [(0,)]
            # A version-3 writer's insert finds no table: its whole append fails, nothing is misplaced.
            with pytest.raises(psycopg.errors.UndefinedTable):
                conn.execute(
                    sql("INSERT INTO {} (ns, key, seq, value) VALUES ('', 'h', 1, '1')").format(
                        ident(schema, "kvstore_items")
                    )
                )
    finally:
        db.close()
        with psycopg.Connection.connect(postgres_url, autocommit=True) as conn:
            conn.execute(sql("DROP SCHEMA {} CASCADE").format(ident(schema)))
