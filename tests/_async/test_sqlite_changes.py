"""SQLite replay-guard hooks: changed_since reports exactly the keys written, expired, deleted or cleared since."""

from __future__ import annotations

from pathlib import Path

import apsw
import pytest

from kvstore.sqlite import AsyncSqliteDatabase
from kvstore.sqlite import _sql as sql
from tests.clock import FakeClock

KEYS = ["v", "w", "l", "m1", "m2", "gone", "t", "untouched"]


@pytest.fixture
def clock() -> FakeClock:
    """The store's clock: change stamps and `server_time` come from it."""
    return FakeClock()


async def seeded(path: Path, clock: FakeClock, **options: float) -> AsyncSqliteDatabase:
    """A store holding one of each kind of key, all written before the clock moves on."""
    store = AsyncSqliteDatabase(path, clock=clock, **options)
    await store.mset({"v": 1, "w": 2, "m1": 1, "m2": 2, "gone": 3, "untouched": 4})
    await store.set("t", 5, ttl=3600)
    await store.extend("l", [1, 2])
    clock.advance(1)
    return store


async def test_tracks_changes_and_server_time_is_the_store_clock(tmp_path: Path, clock: FakeClock) -> None:
    """SQLite can guard a replay; its server time is the clock its changes are stamped with."""
    async with AsyncSqliteDatabase(tmp_path / "kv.db", clock=clock) as store:
        assert store.tracks_changes is True
        assert await store.server_time() == clock.now


async def test_nothing_changed_since_now(tmp_path: Path, clock: FakeClock) -> None:
    """Right after the writes, no key changed since the server time."""
    store = await seeded(tmp_path / "kv.db", clock)
    since = await store.server_time()
    assert await store.changed_since(KEYS, since) == set()
    assert await store.changed_since([], since) == set()
    # Everything seeded was written after an earlier time (missing keys never are).
    assert await store.changed_since([*KEYS, "never"], since - 2) == set(KEYS)
    await store.aclose()


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
async def test_each_write_is_reported_and_nothing_else(
    tmp_path: Path, clock: FakeClock, operation: str, changed: set[str]
) -> None:
    """Each kind of write reports exactly the keys it touched after ``since``; untouched keys are not reported."""
    store = await seeded(tmp_path / "kv.db", clock)
    since = await store.server_time()
    clock.advance(0.001)
    if operation == "set":
        await store.set("v", 10)
    elif operation == "set_new":
        await store.set("new", 1)
    elif operation == "set_if_absent_written":
        assert await store.set("new", 1, only_if_absent=True)
    elif operation == "mset":
        await store.mset({"m1": 10, "m2": 20})
    elif operation == "mset_ttl":
        await store.mset([("m1", 10, 60)])
    elif operation == "expire":
        assert await store.expire("t", 10)
    elif operation == "persist":
        assert await store.expire("t", None)
    elif operation == "append":
        await store.append("l", 3)
    elif operation == "extend":
        await store.extend("l", [3, 4])
    elif operation == "append_new":
        await store.append("new", 1)
    elif operation == "delete":
        assert await store.delete("gone")
    elif operation == "value_over_list":
        await store.set("l", "now a value")
    elif operation == "clear":
        await store.clear()
    elif operation == "incr":
        assert await store.incr("v") == 2
    elif operation == "incr_new":
        assert await store.incr("new") == 1
    elif operation == "delete_many":  # a missing key's deletion is a change too (as for delete)
        assert await store.delete_many(["gone", "v", "new"]) == 2
    elif operation == "get_touch":
        assert await store.get("t", touch=10) == 5
    elif operation == "trim":
        assert await store.trim("l", 1, 1) == 1
    elif operation == "trim_all":  # an empty selection removes the list: a deletion
        assert await store.trim("l", 5, 9) == 2
        assert await store.exists("l") is False
    assert await store.changed_since([*KEYS, "new"], since) == changed
    # Nothing is reported for a time after the change.
    assert await store.changed_since([*KEYS, "new"], await store.server_time()) == set()
    await store.aclose()


async def test_writes_that_change_nothing_are_not_reported(tmp_path: Path, clock: FakeClock) -> None:
    """A refused only_if_absent, a replayed idempotent append, expire or touch of a missing key, a trim keeping
    everything change nothing;
    a delete of a missing key is a change (a replay must not resurrect an older write over it)."""
    store = await seeded(tmp_path / "kv.db", clock)
    await store.append("l", 3, idempotency_id="once")
    clock.advance(1)
    since = await store.server_time()
    clock.advance(1)
    assert not await store.set("v", 99, only_if_absent=True)
    assert await store.append("l", 3, idempotency_id="once") == 3  # a retry: nothing written
    assert not await store.expire("never", 10)
    assert not await store.delete("never")
    assert await store.trim("l", 0, -1) == 0  # keeps everything: writes nothing
    assert await store.get("missing", touch=10) is None
    await store.get("v")
    await store.mget(KEYS)
    await store.get_range("l", 0, -1)
    assert await store.changed_since([*KEYS, "never"], since) == {"never"}
    await store.aclose()


async def test_other_prefixes_are_not_reported(tmp_path: Path, clock: FakeClock) -> None:
    """A write or clear under another prefix of the same file is not a change of this store's keys."""
    path = tmp_path / "kv.db"
    store = await seeded(path, clock)
    other = AsyncSqliteDatabase(path, key_prefix="other:", clock=clock)
    since = await store.server_time()
    clock.advance(1)
    await other.set("v", 1)
    await other.delete("v")
    await other.clear()
    assert await store.changed_since(KEYS, since) == set()
    assert await other.changed_since(["v", "x"], since) == {"v", "x"}  # its clear covers every key
    await other.aclose()
    await store.aclose()


async def test_a_key_written_again_after_delete_or_clear_is_still_reported(tmp_path: Path, clock: FakeClock) -> None:
    """Delete then set, clear then set: the key changed, and so did the others that were cleared."""
    store = await seeded(tmp_path / "kv.db", clock)
    since = await store.server_time()
    clock.advance(1)
    await store.delete("v")
    await store.set("v", 2)
    assert await store.changed_since(["v", "w"], since) == {"v"}
    later = await store.server_time()
    clock.advance(1)
    await store.clear()
    await store.set("v", 3)
    assert await store.changed_since(["v", "w"], later) == {"v", "w"}
    await store.aclose()


async def test_a_recent_write_survives_the_purge_of_its_expired_row(tmp_path: Path, clock: FakeClock) -> None:
    """A key written after ``since`` whose TTL ran out and was purged is still reported (a tombstone keeps it)."""
    store = await seeded(tmp_path / "kv.db", clock, idempotency_window=7200)
    since = await store.server_time()
    clock.advance(1)
    await store.set("short", 1, ttl=1)
    clock.advance(5)
    await store.purge_expired()
    assert not await store.exists("short")
    assert await store.changed_since(["short", "v"], since) == {"short"}
    assert await store.changed_since(["short"], await store.server_time()) == set()
    # A key whose last write is older than ``since`` is not reported when its row expires and goes.
    since = await store.server_time()
    clock.advance(3600)
    await store.purge_expired()
    assert not await store.exists("t")
    assert await store.changed_since(["t"], since) == set()
    await store.aclose()


async def test_tombstones_and_cleared_stamps_are_purged_after_the_window(tmp_path: Path, clock: FakeClock) -> None:
    """Deletion and clear records older than the idempotency window are swept with the expired rows."""
    path = tmp_path / "kv.db"
    store = await seeded(path, clock, idempotency_window=60)
    await store.delete("gone")
    other = AsyncSqliteDatabase(path, key_prefix="other:", clock=clock)
    await other.clear()
    clock.advance(30)
    await store.purge_expired()
    conn = apsw.Connection(str(path))
    assert conn.execute("SELECT count(*) FROM kvstore_tombstones").fetchall() == [(1,)]
    assert conn.execute("SELECT count(*) FROM kvstore_cleared").fetchall() == [(1,)]
    clock.advance(31)
    await store.purge_expired()
    assert conn.execute("SELECT count(*) FROM kvstore_tombstones").fetchall() == [(0,)]
    assert conn.execute("SELECT count(*) FROM kvstore_cleared").fetchall() == [(0,)]
    conn.close()
    await other.aclose()
    await store.aclose()


async def test_a_time_older_than_the_window_reports_every_key(tmp_path: Path, clock: FakeClock) -> None:
    """Past the idempotency window deletions may have been swept: every key counts as changed, none is missed."""
    store = await seeded(tmp_path / "kv.db", clock, idempotency_window=60)
    since = await store.server_time()
    clock.advance(59)
    assert await store.changed_since(["v", "never"], since) == set()
    clock.advance(2)
    assert await store.changed_since(["v", "never"], since) == {"v", "never"}
    await store.aclose()


async def test_many_keys_are_answered_by_one_statement(tmp_path: Path, clock: FakeClock) -> None:
    """changed_since on 1,000 keys runs one SQL statement, whatever the number of keys."""
    store = await seeded(tmp_path / "kv.db", clock)
    since = await store.server_time()
    clock.advance(1)
    await store.mset({f"k{i}": i for i in range(0, 1000, 7)})
    statements: list[str] = []
    conn = store._engine._conn
    assert conn is not None

    def trace(cursor: object, statement: str, bindings: object) -> bool:
        statements.append(statement)
        return True

    conn.exec_trace = trace
    try:
        changed = await store.changed_since([f"k{i}" for i in range(1000)], since)
    finally:
        conn.exec_trace = None
    assert changed == {f"k{i}" for i in range(0, 1000, 7)}
    assert statements == [sql.CHANGED_SINCE]
    await store.aclose()


async def test_version_2_file_migrates_and_old_rows_count_as_unchanged(tmp_path: Path, clock: FakeClock) -> None:
    """A schema v2 file gains change tracking on connect; its rows keep their data and are not reported."""
    path = tmp_path / "kv.db"
    conn = apsw.Connection(str(path))
    for version in (1, 2):
        for statement in sql.MIGRATIONS[version]:
            conn.execute(statement)
    conn.execute("INSERT INTO kvstore_keys (ns, key, kind, value) VALUES ('', 'old', 0, '1')")
    conn.execute("PRAGMA user_version=2")
    conn.close()
    async with AsyncSqliteDatabase(path, clock=clock) as store:
        assert await store.get("old") == 1
        assert await store.changed_since(["old"], clock.now - 1) == set()
        await store.set("old", 2)
        assert await store.changed_since(["old"], clock.now - 1) == {"old"}
    conn = apsw.Connection(str(path))
    assert conn.execute("PRAGMA user_version").fetchall() == [(sql.SCHEMA_VERSION,)]
    conn.close()
