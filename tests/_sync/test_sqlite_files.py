# Generated from tests/_async/test_sqlite_files.py by tools/unasync.py: do not edit; edit the async source.
"""SQLite backend beyond the contract: the file, its schema, its errors, its settings."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import apsw
import pytest
from hypothesis import given
from hypothesis import strategies as st

from kvstore._core.keys import compile_glob
from kvstore.config import SqliteDatabaseConfig
from kvstore.errors import BackendBusyError, BackendUnavailableError, ClosedError, ConfigError, KVStoreError
from kvstore.sqlite import (
    SqliteCorruptError,
    SqliteDatabase,
    SqliteDiskFullError,
    SqliteFileError,
    SqliteIOError,
    SqliteReadOnlyError,
)
from kvstore.sqlite import _sql as sql
from kvstore.sqlite._errors import ERRORS, map_error
from tests.clock import FakeClock


def raw(path: Path) -> apsw.Connection:
    return apsw.Connection(str(path))


def pragma(path: Path, name: str) -> Any:
    conn = raw(path)
    try:
        return conn.execute(f"PRAGMA {name}").fetchall()[0][0]
    finally:
        conn.close()


def open_and_write(path: Path) -> None:
    """Open a store on ``path`` (the sync class opens in its constructor) and write one value."""
    with SqliteDatabase(path) as store:
        store.set("k", 1)


# --- file, settings, schema ------------------------------------------------------------------


def test_creates_parent_directories_wal_and_schema_version(tmp_path: Path) -> None:
    """Opening a new path creates its directories, a WAL file at the current schema version."""
    path = tmp_path / "a" / "b" / "kv.db"
    with SqliteDatabase(path) as store:
        store.set("k", 1)
        assert store.get("k") == 1
        assert pragma(path, "journal_mode") == "wal"
        assert pragma(path, "user_version") == sql.SCHEMA_VERSION


@pytest.mark.parametrize(("option", "level"), [("NORMAL", 1), ("FULL", 2)])
def test_synchronous_setting_is_applied(tmp_path: Path, option: str, level: int) -> None:
    """synchronous=NORMAL is the default; FULL is applied when chosen."""
    with SqliteDatabase(tmp_path / "kv.db", synchronous=option) as store:
        store.ping()
        conn = store._engine._conn
        assert conn is not None
        assert conn.execute("PRAGMA synchronous").fetchall()[0][0] == level


def test_data_persists_across_reopen(tmp_path: Path) -> None:
    """Values, lists and TTLs written by one store are read by the next one on the same file."""
    path = tmp_path / "kv.db"
    with SqliteDatabase(path) as store:
        store.set("v", {"x": 1})
        store.extend("h", [1, 2, 3])
        store.set("t", 1, ttl=3600)
    with SqliteDatabase(path) as store:
        assert store.get("v") == {"x": 1}
        assert store.get_range("h", -2, -1) == [2, 3]
        left = store.ttl("t")
        assert left is not None
        assert 3590 < left <= 3600


def test_from_config_opens_and_checks(tmp_path: Path) -> None:
    """from_config builds the store from SqliteDatabaseConfig (url form too) and opens the file."""
    path = tmp_path / "cfg" / "kv.db"
    config = SqliteDatabaseConfig(url=f"sqlite:///{path}", key_prefix="app:", busy_timeout=1.5)
    store = SqliteDatabase.from_config(config)
    try:
        assert path.exists()
        assert store.key_prefix == "app:"
        assert store._engine.busy_timeout == 1.5
        assert "kv.db" in repr(store)
        assert "app:" in repr(store)
    finally:
        store.close()
    assert "closed" in repr(store)
    assert store.durable is True
    memory = SqliteDatabase.from_config(SqliteDatabaseConfig(path=":memory:"))
    assert memory.durable is False  # health must not call it durable
    memory.set("k", 1)
    assert memory.get("k") == 1
    memory.close()


def test_migrates_an_unversioned_file_and_keeps_other_tables(tmp_path: Path) -> None:
    """A version-0 SQLite file is migrated forward on connect; its own tables are left alone."""
    path = tmp_path / "kv.db"
    conn = raw(path)
    conn.execute("CREATE TABLE app_data (x)")
    conn.execute("INSERT INTO app_data VALUES (42)")
    conn.close()
    with SqliteDatabase(path) as store:
        store.append("h", 1)
    assert pragma(path, "user_version") == sql.SCHEMA_VERSION
    conn = raw(path)
    assert conn.execute("SELECT x FROM app_data").fetchall() == [(42,)]
    conn.close()


def test_forward_migrations_run_on_connect(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A file at an older schema version is migrated step by step on connect, keeping its data."""
    path = tmp_path / "kv.db"
    with SqliteDatabase(path) as store:
        store.set("v", 1)
        store.extend("h", [1, 2])
    monkeypatch.setattr(sql, "SCHEMA_VERSION", sql.SCHEMA_VERSION + 1)
    monkeypatch.setitem(
        sql.MIGRATIONS, sql.SCHEMA_VERSION, ("CREATE TABLE kvstore_next (x)", "INSERT INTO kvstore_next VALUES (1)")
    )
    with SqliteDatabase(path) as store:
        assert store.get("v") == 1
        assert store.get_range("h", 0, -1) == [1, 2]
    assert pragma(path, "user_version") == sql.SCHEMA_VERSION
    with SqliteDatabase(path) as store:  # migrations run once
        store.ping()
    conn = raw(path)
    assert conn.execute("SELECT x FROM kvstore_next").fetchall() == [(1,)]
    conn.close()


def test_version_1_file_migrates_to_idempotency_ids(tmp_path: Path) -> None:
    """A file at schema version 1 (no ids table) gets it on connect and keeps its lists."""
    path = tmp_path / "kv.db"
    conn = raw(path)
    for statement in sql.MIGRATIONS[1]:
        conn.execute(statement)
    conn.execute("INSERT INTO kvstore_keys (ns, key, kind, head, tail) VALUES ('', 'h', 1, 0, 1)")
    conn.execute("INSERT INTO kvstore_items (ns, key, idx, value) VALUES ('', 'h', 0, '1')")
    conn.execute("PRAGMA user_version=1")
    conn.close()
    with SqliteDatabase(path) as store:
        assert store.append("h", 2, idempotency_id="x") == 2
        assert store.append("h", 2, idempotency_id="x") == 2
        assert store.get_range("h", 0, -1) == [1, 2]
    assert pragma(path, "user_version") == sql.SCHEMA_VERSION


def test_purge_drops_ids_older_than_the_window(tmp_path: Path) -> None:
    """purge_expired removes idempotency ids older than the window; newer ones stay."""
    clock = FakeClock()
    path = tmp_path / "kv.db"
    with SqliteDatabase(path, clock=clock, idempotency_window=60) as store:
        store.append("h", 1, idempotency_id="old")
        clock.advance(61)
        store.append("h", 2, idempotency_id="new")
        store.purge_expired()
    conn = raw(path)
    assert conn.execute("SELECT id FROM kvstore_ids").fetchall() == [("new",)]
    conn.close()


def test_newer_schema_raises_config_error_and_leaves_file_untouched(tmp_path: Path) -> None:
    """A file written by a newer kvstore raises a clear ConfigError and is not modified."""
    path = tmp_path / "kv.db"
    conn = raw(path)
    conn.execute("CREATE TABLE future (x)")
    conn.execute(f"PRAGMA user_version={sql.SCHEMA_VERSION + 1}")
    conn.close()
    before = path.read_bytes()
    with pytest.raises(ConfigError, match="newer kvstore") as info:
        open_and_write(path)
    assert str(path) in str(info.value)
    assert not isinstance(info.value, BackendUnavailableError)
    assert path.read_bytes() == before
    assert pragma(path, "journal_mode") == "delete"  # not even switched to WAL
    with pytest.raises(ConfigError):
        SqliteDatabase.from_config(SqliteDatabaseConfig(path=str(path)))


def test_corrupt_file_raises_typed_error_with_path_and_is_untouched(tmp_path: Path) -> None:
    """A file that is not a database raises SqliteCorruptError naming the path; the bytes stay as they were."""
    path = tmp_path / "kv.db"
    path.write_bytes(b"this is not a database" * 500)
    before = path.read_bytes()
    with pytest.raises(SqliteCorruptError) as info:
        open_and_write(path)
    assert info.value.path == str(path)
    assert str(path) in str(info.value)
    assert isinstance(info.value, BackendUnavailableError)
    assert path.read_bytes() == before


def test_read_only_connection_raises_read_only_error(tmp_path: Path) -> None:
    """Writing through a read-only file raises SqliteReadOnlyError with the path; reads still work."""
    path = tmp_path / "kv.db"
    with SqliteDatabase(path) as store:
        store.set("k", 1)
    conn = apsw.Connection(str(path), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        store = SqliteDatabase(conn)
        assert store.get("k") == 1
        with pytest.raises(SqliteReadOnlyError) as info:
            store.set("k", 2)
        assert info.value.path == str(path)
        assert store.get("k") == 1
        store.close()
    finally:
        conn.close()


class _FaultFile(apsw.VFSFile):
    def __init__(self, owner: _FaultVFS, name: Any, flags: list[int]) -> None:
        super().__init__("", name, flags)
        self.owner = owner

    def xWrite(self, data: bytes, offset: int) -> None:
        if self.owner.fault is not None:
            raise self.owner.fault()
        super().xWrite(data, offset)

    def xSync(self, flags: int) -> None:
        if self.owner.fault is not None:
            raise self.owner.fault()
        super().xSync(flags)


class _FaultVFS(apsw.VFS):
    """A VFS that fails writes with a chosen SQLite error, like a full or failing disk."""

    def __init__(self, name: str) -> None:
        super().__init__(name, "")
        self.name = name
        self.fault: type[apsw.Error] | None = None

    def xOpen(self, name: Any, flags: list[int]) -> _FaultFile:
        return _FaultFile(self, name, flags)


@pytest.mark.parametrize(
    ("fault", "error"), [(apsw.FullError, SqliteDiskFullError), (apsw.IOError, SqliteIOError)], ids=["full", "ioerr"]
)
def test_disk_full_and_io_errors_are_typed_and_lose_nothing(
    tmp_path: Path, fault: type[apsw.Error], error: type[SqliteFileError]
) -> None:
    """A full disk or an I/O error raises its typed error with the path; committed data is intact after."""
    vfs = _FaultVFS(f"kvstore-fault-{fault.__name__}-{id(tmp_path)}")
    path = tmp_path / "kv.db"
    conn = apsw.Connection(str(path), vfs=vfs.name)
    try:
        store = SqliteDatabase(conn)
        store.extend("h", [1, 2])
        vfs.fault = fault
        with pytest.raises(error) as info:
            store.extend("h", list(range(3, 2000)))
        assert info.value.path == str(path)
        assert info.value.operation == "extend"
        vfs.fault = None
        assert store.get_range("h", 0, -1) == [1, 2]
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        store.close()
    finally:
        conn.close()
        vfs.unregister()


def test_busy_lock_becomes_backend_busy_after_the_timeout(tmp_path: Path) -> None:
    """A writer blocked by another connection waits busy_timeout, then raises BackendBusyError (not an outage)."""
    path = tmp_path / "kv.db"
    store = SqliteDatabase(path, busy_timeout=0.3)
    store.set("k", 1)
    blocker = raw(path)
    blocker.execute("BEGIN IMMEDIATE")
    try:
        started = time.monotonic()
        with pytest.raises(BackendBusyError, match="locked") as info:
            store.set("k", 2)
        assert 0.25 < time.monotonic() - started < 3
        assert info.value.operation == "set"
        assert info.value.key == "k"
        assert str(path) in str(info.value)
        assert store.get("k") == 1  # WAL readers are not blocked by the writer
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    store.set("k", 3)
    assert store.get("k") == 3
    store.close()


def test_a_waiting_writer_succeeds_once_the_lock_is_released(tmp_path: Path) -> None:
    """BEGIN IMMEDIATE waits on the busy timeout instead of failing at once."""
    path = tmp_path / "kv.db"
    store = SqliteDatabase(path, busy_timeout=5)
    store.append("h", 0)
    blocker = raw(path)
    blocker.execute("BEGIN IMMEDIATE")
    release = threading.Timer(0.3, lambda: blocker.execute("COMMIT"))
    release.start()
    try:
        assert store.append("h", 1) == 2
    finally:
        release.join()
        blocker.close()
    store.close()


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (apsw.BusyError, BackendBusyError),
        (apsw.LockedError, BackendBusyError),
        (apsw.FullError, SqliteDiskFullError),
        (apsw.ReadOnlyError, SqliteReadOnlyError),
        (apsw.CorruptError, SqliteCorruptError),
        (apsw.NotADBError, SqliteCorruptError),
        (apsw.IOError, SqliteIOError),
        (apsw.CantOpenError, SqliteFileError),
        (apsw.PermissionsError, SqliteFileError),
        (apsw.ConnectionClosedError, ClosedError),
        (apsw.CursorClosedError, ClosedError),
        (apsw.SQLError, KVStoreError),
    ],
)
def test_every_driver_exception_is_mapped(exc: type[apsw.Error], expected: type[KVStoreError]) -> None:
    """Each apsw exception we care about becomes its kvstore error, with backend, key, operation and path."""
    error = map_error(exc("boom"), path="/data/kv.db", busy_timeout=5, operation="set", key="k")
    assert type(error) is expected
    assert (error.backend, error.key, error.operation) == ("sqlite", "k", "set")
    assert "/data/kv.db" in str(error)
    if isinstance(error, SqliteFileError):
        assert error.path == "/data/kv.db"


def _subclasses(cls: type) -> list[type]:
    return [cls, *(sub for direct in cls.__subclasses__() for sub in _subclasses(direct))]


def test_the_error_map_covers_every_apsw_error_and_no_row_is_shadowed() -> None:
    """Every apsw.Error subclass maps to a KVStoreError of the sqlite backend, and each ERRORS row is reached."""
    for exc_type in _subclasses(apsw.Error):
        error = map_error(exc_type("boom"), path="/data/kv.db", busy_timeout=5, operation="get")
        assert isinstance(error, KVStoreError)
        assert error.backend == "sqlite"
    for apsw_type, error_type, _ in ERRORS:
        assert type(map_error(apsw_type("boom"), path="p", busy_timeout=1, operation=None)) is error_type


def test_closed_store_raises_and_close_is_idempotent(tmp_path: Path) -> None:
    """After close every call raises ClosedError, close again is a no-op, and the file is released."""
    path = tmp_path / "kv.db"
    store = SqliteDatabase(path)
    store.append("h", 1)
    store.close()
    store.close()
    calls = [lambda: store.get("h"), lambda: store.append("h", 2), lambda: store.keys(), lambda: store.ping()]
    for call in calls:
        with pytest.raises(ClosedError):
            call()
    with pytest.raises(ClosedError):
        [key for key in store.iter_keys()]


# --- TTL sweep ------------------------------------------------------------------------------


def count_rows(path: Path, table: str) -> int:
    conn = raw(path)
    try:
        return int(conn.execute(f"SELECT count(*) FROM {table}").fetchall()[0][0])
    finally:
        conn.close()


def test_expired_rows_are_purged_by_a_later_write(tmp_path: Path) -> None:
    """Expired values and lists (with their items) leave the file once purge_interval has passed."""
    path = tmp_path / "kv.db"
    clock = FakeClock()
    store = SqliteDatabase(path, clock=clock, purge_interval=10)
    store.set("first", 0)  # the first write sweeps; the next sweep is due in 10 s
    store.set("v", 1, ttl=1)
    store.extend("h", [1, 2, 3])
    store.expire("h", 1)
    store.set("keep", 2)
    clock.advance(2)
    store.set("other", 3)  # not yet due: rows stay, but are invisible
    assert sorted(store.keys()) == ["first", "keep", "other"]
    assert count_rows(path, "kvstore_items") == 3
    clock.advance(10)
    store.set("other", 4)
    assert count_rows(path, "kvstore_items") == 0
    assert count_rows(path, "kvstore_keys") == 3
    store.set("x", 1, ttl=1)
    clock.advance(2)
    assert store.purge_expired() == 1
    assert count_rows(path, "kvstore_keys") == 3
    store.close()


# --- lists --------------------------------------------------------------------------------


def test_get_range_reads_only_the_requested_index_range(tmp_path: Path) -> None:
    """get_range is an index range scan on (ns, key, idx): the query plan is a SEARCH, never a SCAN or a sort."""
    with SqliteDatabase(tmp_path / "kv.db") as store:
        store.extend("h", list(range(1000)))
        assert store.get_range("h", -3, -1) == [997, 998, 999]
        conn = store._engine._conn
        assert conn is not None
        params = ("", "h", -3, -1, 0)
        for statement, extra in (
            (sql.RANGE, ()),
            (sql.RANGE_LOOP.format(items=128), (2048,)),
            (sql.RANGE_LOOP_SIZED.format(cap=1 << 18, items=128), ()),
        ):
            plan = " ".join(str(row) for row in conn.execute("EXPLAIN QUERY PLAN " + statement, params + extra))
            assert "SEARCH i USING PRIMARY KEY (ns=? AND key=? AND idx>? AND idx<?)" in plan
            assert "SCAN" not in plan
            assert "TEMP B-TREE" not in plan
        meta = " ".join(str(row) for row in conn.execute("EXPLAIN QUERY PLAN " + sql.META, ("", "h")))
        assert "SEARCH" in meta


def test_get_range_takes_indexes_beyond_64_bits(tmp_path: Path) -> None:
    """Indexes past any list (and past SQLite's integers) clamp as Redis LRANGE does, after a front trim too."""
    with SqliteDatabase(tmp_path / "kv.db") as store:
        store.extend("l", list(range(10)))
        store.trim("l", 3, -1)
        huge = 10**20
        assert store.get_range("l", -huge, huge) == list(range(3, 10))
        assert store.get_range("l", 0, 2**63) == list(range(3, 10))
        assert store.get_range("l", -(2**63), -6) == [3, 4]
        assert store.get_range("l", huge, -1) == []
        assert store.get_range("l", 0, -huge) == []


def test_the_store_s_own_connection_keeps_plans_independent_of_bound_values(tmp_path: Path) -> None:
    """SQLite's query planner stability guarantee is on for the store's own connection (so a statement
    with an ORDER BY is not prepared again at each execution), and left alone on a handed one."""
    with SqliteDatabase(tmp_path / "kv.db") as store:
        store.ping()
        conn = store._engine._conn
        assert conn is not None
        assert conn.config(apsw.SQLITE_DBCONFIG_ENABLE_QPSG, -1) == 1
    handed = apsw.Connection(str(tmp_path / "handed.db"))
    try:
        with SqliteDatabase(handed) as store:
            store.ping()
            assert handed.config(apsw.SQLITE_DBCONFIG_ENABLE_QPSG, -1) == 0
    finally:
        handed.close()


def test_keys_with_a_literal_prefix_read_an_index_range(tmp_path: Path) -> None:
    """keys('user:*') is a primary-key range search, not a scan of every key."""
    with SqliteDatabase(tmp_path / "kv.db") as store:
        store.mset({"user:1": 1, "users": 2, "admin": 3})
        assert store.keys("user:*") == ["user:1"]
        conn = store._engine._conn
        assert conn is not None
        statement = "EXPLAIN QUERY PLAN " + sql.keys_page_sql(first=True, bounded=True)
        plan = " ".join(str(row) for row in conn.execute(statement, ("", "user:", "user;", 0, 10)))
        assert "SEARCH" in plan
        assert "key>? AND key<?" in plan


def test_replacing_or_deleting_a_list_removes_its_items(tmp_path: Path) -> None:
    """set over a list, delete, clear and an expired list leave no orphan items in the file."""
    path = tmp_path / "kv.db"
    clock = FakeClock()
    with SqliteDatabase(path, clock=clock) as store:
        store.extend("a", [1, 2])
        store.set("a", "value")
        store.extend("b", [1, 2])
        store.delete("b")
        store.extend("c", [1, 2])
        store.expire("c", 1)
        clock.advance(2)
        assert store.append("c", 3) == 1
        assert count_rows(path, "kvstore_items") == 1
        store.clear()
        assert count_rows(path, "kvstore_items") == 0


def test_trim_touches_only_the_removed_rows_and_renumbers_nothing(tmp_path: Path) -> None:
    """trim deletes item rows from the ends (rows changed = removed + the counters' row); kept items keep their idx."""
    clock = FakeClock()
    with SqliteDatabase(tmp_path / "kv.db", clock=clock) as store:
        store.extend("h", list(range(1000)))
        conn = store._engine._conn
        assert conn is not None
        before = conn.total_changes()
        assert store.trim("h", 3, -5) == 7
        assert conn.total_changes() - before == 7 + 1
        rows = conn.execute("SELECT min(idx), max(idx), count(*) FROM kvstore_items").fetchall()
        assert rows == [(3, 995, 993)]
        assert conn.execute("SELECT head, tail FROM kvstore_keys").fetchall() == [(3, 996)]
        assert store.get_range("h", 0, 1) == [3, 4]
        plan = " ".join(str(row) for row in conn.execute("EXPLAIN QUERY PLAN " + sql.DROP_ITEMS, ("", "h", 0, 3)))
        assert "SEARCH" in plan
        assert "SCAN" not in plan


# --- keys() against the reference matcher ------------------------------------------------------

_ALPHABET = "ab%_*?[]\\^-жé"


@given(
    keys=st.sets(st.text(_ALPHABET, min_size=1, max_size=4), max_size=12),
    pattern=st.text(_ALPHABET, min_size=0, max_size=5),
    prefix=st.sampled_from(["", "%", "_", "a*", "[", "a"]),
)
def test_keys_equal_the_reference_matcher(keys: set[str], pattern: str, prefix: str) -> None:
    """keys(pattern) returns exactly what the reference matcher selects, metacharacters in keys and prefix included."""
    conn = apsw.Connection(":memory:")
    store = SqliteDatabase(conn, key_prefix=prefix)
    neighbour = SqliteDatabase(conn, key_prefix=prefix + "a")
    try:
        store.mset({k: 1 for k in keys})
        neighbour.mset({k: 2 for k in keys})
        match = compile_glob(pattern)
        assert sorted(store.keys(pattern)) == sorted(k for k in keys if match(k))
        store.clear()
        assert sorted(neighbour.keys()) == sorted(keys)
    finally:
        store.close()
        neighbour.close()
        conn.close()


def test_iter_keys_pages_through_many_keys(tmp_path: Path) -> None:
    """iter_keys streams in pages and still returns every match exactly once."""
    with SqliteDatabase(tmp_path / "kv.db") as store:
        store.mset({f"k{i:05d}": i for i in range(sql.KEYS_PAGE * 2 + 7)})
        store.mset({f"z{i}": i for i in range(10)})
        streamed = [key for key in store.iter_keys("k*")]
        assert len(streamed) == sql.KEYS_PAGE * 2 + 7
        assert len(set(streamed)) == len(streamed)
        assert len(store.keys("*")) == sql.KEYS_PAGE * 2 + 17
