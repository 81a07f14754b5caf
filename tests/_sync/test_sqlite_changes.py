# Generated from tests/_async/test_sqlite_changes.py by tools/unasync.py: do not edit; edit the async source.
"""SQLite replay-guard hooks: changed_since reports exactly the keys written, expired, deleted or cleared since."""

from __future__ import annotations

from pathlib import Path

import apsw
import pytest

from kvstore.sqlite import SqliteDatabase
from kvstore.sqlite import _sql as sql
from tests.clock import FakeClock

KEYS = ["v", "w", "l", "m1", "m2", "gone", "t", "untouched"]


@pytest.fixture
def clock() -> FakeClock:
    """The store's clock: change stamps and `server_time` come from it."""
    return FakeClock()


def seeded(path: Path, clock: FakeClock, **options: float) -> SqliteDatabase:
    """A store holding one of each kind of key, all written before the clock moves on."""
    store = SqliteDatabase(path, clock=clock, **options)
    store.mset({"v": 1, "w": 2, "m1": 1, "m2": 2, "gone": 3, "untouched": 4})
    store.set("t", 5, ttl=3600)
    store.extend("l", [1, 2])
    clock.advance(1)
    return store


def test_tracks_changes_and_server_time_is_the_store_clock(tmp_path: Path, clock: FakeClock) -> None:
    """SQLite can guard a replay; its server time is the clock its changes are stamped with."""
    with SqliteDatabase(tmp_path / "kv.db", clock=clock) as store:
        assert store.tracks_changes is True
        assert store.server_time() == clock.now


def test_nothing_changed_since_now(tmp_path: Path, clock: FakeClock) -> None:
    """Right after the writes, no key changed since the server time."""
    store = seeded(tmp_path / "kv.db", clock)
    since = store.server_time()
    assert store.changed_since(KEYS, since) == set()
    assert store.changed_since([], since) == set()
    # Everything seeded was written after an earlier time (missing keys never are).
    assert store.changed_since([*KEYS, "never"], since - 2) == set(KEYS)
    store.close()


@pytest.mark.parametrize(
    ("operation", "changed"),
    [
        ("set", {"v"}),
        ("set_new", {"new"}),
        ("set_if_absent_written", {"new"}),
        ("mset", {"m1", "m2"}),
        ("mset_ttl", {"m1"}),
        ("expire", {"t"}),
        ("persist", {"t"}),
        ("append", {"l"}),
        ("extend", {"l"}),
        ("append_new", {"new"}),
        ("delete", {"gone"}),
        ("value_over_list", {"l"}),
        ("clear", {*KEYS, "new"}),
        ("incr", {"v"}),
        ("incr_new", {"new"}),
        ("delete_many", {"gone", "v", "new"}),
        ("get_touch", {"t"}),
        ("trim", {"l"}),
        ("trim_all", {"l"}),
    ],
)
def test_each_write_is_reported_and_nothing_else(
    tmp_path: Path, clock: FakeClock, operation: str, changed: set[str]
) -> None:
    """Each kind of write reports exactly the keys it touched after ``since``; untouched keys are not reported."""
    store = seeded(tmp_path / "kv.db", clock)
    since = store.server_time()
    clock.advance(0.001)
    if operation == "set":
        store.set("v", 10)
    elif operation == "set_new":
        store.set("new", 1)
    elif operation == "set_if_absent_written":
        assert store.set("new", 1, only_if_absent=True)
    elif operation == "mset":
        store.mset({"m1": 10, "m2": 20})
    elif operation == "mset_ttl":
        store.mset([("m1", 10, 60)])
    elif operation == "expire":
        assert store.expire("t", 10)
    elif operation == "persist":
        assert store.expire("t", None)
    elif operation == "append":
        store.append("l", 3)
    elif operation == "extend":
        store.extend("l", [3, 4])
    elif operation == "append_new":
        store.append("new", 1)
    elif operation == "delete":
        assert store.delete("gone")
    elif operation == "value_over_list":
        store.set("l", "now a value")
    elif operation == "clear":
        store.clear()
    elif operation == "incr":
        assert store.incr("v") == 2
    elif operation == "incr_new":
        assert store.incr("new") == 1
    elif operation == "delete_many":  # a missing key's deletion is a change too (as for delete)
        assert store.delete_many(["gone", "v", "new"]) == 2
    elif operation == "get_touch":
        assert store.get("t", touch=10) == 5
    elif operation == "trim":
        assert store.trim("l", 1, 1) == 1
    elif operation == "trim_all":  # an empty selection removes the list: a deletion
        assert store.trim("l", 5, 9) == 2
        assert store.exists("l") is False
    assert store.changed_since([*KEYS, "new"], since) == changed
    # Nothing is reported for a time after the change.
    assert store.changed_since([*KEYS, "new"], store.server_time()) == set()
    store.close()


def test_writes_that_change_nothing_are_not_reported(tmp_path: Path, clock: FakeClock) -> None:
    """A refused only_if_absent, a replayed idempotent append, expire or touch of a missing key, a trim keeping
    everything change nothing;
    a delete of a missing key is a change (a replay must not resurrect an older write over it)."""
    store = seeded(tmp_path / "kv.db", clock)
    store.append("l", 3, idempotency_id="once")
    clock.advance(1)
    since = store.server_time()
    clock.advance(1)
    assert not store.set("v", 99, only_if_absent=True)
    assert store.append("l", 3, idempotency_id="once") == 3  # a retry: nothing written
    assert not store.expire("never", 10)
    assert not store.delete("never")
    assert store.trim("l", 0, -1) == 0  # keeps everything: writes nothing
    assert store.get("missing", touch=10) is None
    store.get("v")
    store.mget(KEYS)
    store.get_range("l", 0, -1)
    assert store.changed_since([*KEYS, "never"], since) == {"never"}
    store.close()


def test_other_prefixes_are_not_reported(tmp_path: Path, clock: FakeClock) -> None:
    """A write or clear under another prefix of the same file is not a change of this store's keys."""
    path = tmp_path / "kv.db"
    store = seeded(path, clock)
    other = SqliteDatabase(path, key_prefix="other:", clock=clock)
    since = store.server_time()
    clock.advance(1)
    other.set("v", 1)
    other.delete("v")
    other.clear()
    assert store.changed_since(KEYS, since) == set()
    assert other.changed_since(["v", "x"], since) == {"v", "x"}  # its clear covers every key
    other.close()
    store.close()


def test_a_key_written_again_after_delete_or_clear_is_still_reported(tmp_path: Path, clock: FakeClock) -> None:
    """Delete then set, clear then set: the key changed, and so did the others that were cleared."""
    store = seeded(tmp_path / "kv.db", clock)
    since = store.server_time()
    clock.advance(1)
    store.delete("v")
    store.set("v", 2)
    assert store.changed_since(["v", "w"], since) == {"v"}
    later = store.server_time()
    clock.advance(1)
    store.clear()
    store.set("v", 3)
    assert store.changed_since(["v", "w"], later) == {"v", "w"}
    store.close()


def test_a_recent_write_survives_the_purge_of_its_expired_row(tmp_path: Path, clock: FakeClock) -> None:
    """A key written after ``since`` whose TTL ran out and was purged is still reported (a tombstone keeps it)."""
    store = seeded(tmp_path / "kv.db", clock, idempotency_window=7200)
    since = store.server_time()
    clock.advance(1)
    store.set("short", 1, ttl=1)
    clock.advance(5)
    store.purge_expired()
    assert not store.exists("short")
    assert store.changed_since(["short", "v"], since) == {"short"}
    assert store.changed_since(["short"], store.server_time()) == set()
    # A key whose last write is older than ``since`` is not reported when its row expires and goes.
    since = store.server_time()
    clock.advance(3600)
    store.purge_expired()
    assert not store.exists("t")
    assert store.changed_since(["t"], since) == set()
    store.close()


def test_tombstones_and_cleared_stamps_are_purged_after_the_window(tmp_path: Path, clock: FakeClock) -> None:
    """Deletion and clear records older than the idempotency window are swept with the expired rows."""
    path = tmp_path / "kv.db"
    store = seeded(path, clock, idempotency_window=60)
    store.delete("gone")
    other = SqliteDatabase(path, key_prefix="other:", clock=clock)
    other.clear()
    clock.advance(30)
    store.purge_expired()
    conn = apsw.Connection(str(path))
    assert conn.execute("SELECT count(*) FROM kvstore_tombstones").fetchall() == [(1,)]
    assert conn.execute("SELECT count(*) FROM kvstore_cleared").fetchall() == [(1,)]
    clock.advance(31)
    store.purge_expired()
    assert conn.execute("SELECT count(*) FROM kvstore_tombstones").fetchall() == [(0,)]
    assert conn.execute("SELECT count(*) FROM kvstore_cleared").fetchall() == [(0,)]
    conn.close()
    other.close()
    store.close()


def test_a_time_older_than_the_window_reports_every_key(tmp_path: Path, clock: FakeClock) -> None:
    """Past the idempotency window deletions may have been swept: every key counts as changed, none is missed."""
    store = seeded(tmp_path / "kv.db", clock, idempotency_window=60)
    since = store.server_time()
    clock.advance(59)
    assert store.changed_since(["v", "never"], since) == set()
    clock.advance(2)
    assert store.changed_since(["v", "never"], since) == {"v", "never"}
    store.close()


def test_many_keys_are_answered_by_one_statement(tmp_path: Path, clock: FakeClock) -> None:
    """changed_since on 1,000 keys runs one SQL statement, whatever the number of keys."""
    store = seeded(tmp_path / "kv.db", clock)
    since = store.server_time()
    clock.advance(1)
    store.mset({f"k{i}": i for i in range(0, 1000, 7)})
    statements: list[str] = []
    conn = store._engine._conn
    assert conn is not None

    def trace(cursor: object, statement: str, bindings: object) -> bool:
        statements.append(statement)
        return True

    conn.exec_trace = trace
    try:
        changed = store.changed_since([f"k{i}" for i in range(1000)], since)
    finally:
        conn.exec_trace = None
    assert changed == {f"k{i}" for i in range(0, 1000, 7)}
    assert statements == [sql.CHANGED_SINCE]
    store.close()


def test_version_2_file_migrates_and_old_rows_count_as_unchanged(tmp_path: Path, clock: FakeClock) -> None:
    """A schema v2 file gains change tracking on connect; its rows keep their data and are not reported."""
    path = tmp_path / "kv.db"
    conn = apsw.Connection(str(path))
    for version in (1, 2):
        for statement in sql.MIGRATIONS[version]:
            conn.execute(statement)
    conn.execute("INSERT INTO kvstore_keys (ns, key, kind, value) VALUES ('', 'old', 0, '1')")
    conn.execute("PRAGMA user_version=2")
    conn.close()
    with SqliteDatabase(path, clock=clock) as store:
        assert store.get("old") == 1
        assert store.changed_since(["old"], clock.now - 1) == set()
        store.set("old", 2)
        assert store.changed_since(["old"], clock.now - 1) == {"old"}
    conn = apsw.Connection(str(path))
    assert conn.execute("PRAGMA user_version").fetchall() == [(sql.SCHEMA_VERSION,)]
    conn.close()
