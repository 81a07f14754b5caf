"""SQLite backend, blocking part: one apsw connection and every operation on it.

apsw is a blocking driver, so this is written once, synchronously: `SqliteDatabase`
calls it directly, and `AsyncSqliteDatabase` runs the same calls on its own worker
thread so the event loop never waits on a file or a lock.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator
from typing import Any, NoReturn, TypeVar

import apsw
import orjson

from kvstore._core.codec import decode, encode
from kvstore._core.idempotency import DEFAULT_IDEMPOTENCY_WINDOW, validate_idempotency_id, validate_window
from kvstore._core.items import MsetItems, normalize_items
from kvstore._core.keys import compile_glob, glob_literal_prefix, is_match_all, prefix_upper_bound, validate_key
from kvstore._core.lists import lrange_bounds
from kvstore._core.ttl import TTL, ttl_ms
from kvstore.errors import BackendBusyError, ClosedError, ConfigError, KVStoreError, WrongTypeError
from kvstore.sqlite import _sql as sql
from kvstore.sqlite._sql import (
    SqliteCorruptError,
    SqliteDiskFullError,
    SqliteFileError,
    SqliteIOError,
    SqliteReadOnlyError,
)

__all__ = ["MEMORY", "SqliteEngine", "after_fork_in_child", "map_error"]

T = TypeVar("T")
#: `changed_since`'s answer (the classes define a ``set`` method, which hides the builtin there).
_KeySet = set[str]
MEMORY = ":memory:"
BACKEND = "sqlite"

# One lock per connection, shared by every engine using it (a ":memory:" database
# is reachable only through its one connection, so sibling stores share it).
_locks: weakref.WeakKeyDictionary[apsw.Connection, threading.Lock] = weakref.WeakKeyDictionary()
_locks_guard = threading.Lock()


def _lock_for(conn: apsw.Connection) -> threading.Lock:
    with _locks_guard:
        lock = _locks.get(conn)
        if lock is None:
            lock = _locks[conn] = threading.Lock()
        return lock


# --- fork safety (DESIGN.md §8) -------------------------------------------------------------
#
# SQLite forbids using a connection in a process forked from the one that opened it. In
# the child, `os.register_at_fork` resets every live engine (and the async store's worker
# thread, which does not survive fork): the inherited connection is closed *in the child*
# and a connection of the child's own is opened on first use. The hot path pays nothing.
#
# Closing the inherited connection is what keeps the file safe, and it cannot harm the
# parent: it only releases the child's copies of descriptors, maps and POSIX locks, and
# the checkpoint-and-delete-WAL of a last close needs an EXCLUSIVE lock that the parent's
# open connection (WAL keeps a SHARED lock) denies. Keeping it open instead would be
# wrong: SQLite finds the inherited lock bookkeeping of the file in the child's memory,
# so the child's new connection would take no real locks, and a parent closing its
# store later would delete the WAL under the child and lose the child's writes.
#
# One case SQLite cannot recover from: a fork taken while another thread of the parent
# is inside SQLite on this store (the engine lock is held). That connection cannot be
# closed in the child (its mutex is taken), so it is left untouched; the child's own
# connection reads, but its writes may raise BackendBusyError. It never hangs. Fork
# while the store is idle (gunicorn --preload, a pool started before work) to avoid it.

_forkables: weakref.WeakSet[Any] = weakref.WeakSet()


def after_fork_in_child(obj: Any) -> None:
    """Call ``obj._after_fork_in_child()`` in every process forked while ``obj`` is alive."""
    _forkables.add(obj)


def _abandon(obj: object) -> None:
    """Keep ``obj`` alive and untouched in this process for good (freeing an apsw object would use it)."""
    ctypes.pythonapi.Py_IncRef(ctypes.py_object(obj))


def _reset_in_child() -> None:
    global _locks_guard
    _locks_guard = threading.Lock()
    _locks.clear()  # handed connections are the caller's; the child's engines stop using them
    for obj in list(_forkables):
        # One store failing to reset must not leave the others on the parent's connections.
        with contextlib.suppress(Exception):
            obj._after_fork_in_child()


os.register_at_fork(after_in_child=_reset_in_child)


# --- error mapping: one boundary, most specific first ------------------------------------

_FILE_ERRORS: tuple[tuple[type[apsw.Error], type[SqliteFileError], str], ...] = (
    (apsw.FullError, SqliteDiskFullError, "the disk holding {path} is full; free some space"),
    (apsw.ReadOnlyError, SqliteReadOnlyError, "{path} cannot be written (read-only file, directory or file system)"),
    (
        apsw.CorruptError,
        SqliteCorruptError,
        "{path} is corrupt; it was left untouched: restore it from a backup or move it away",
    ),
    (
        apsw.NotADBError,
        SqliteCorruptError,
        "{path} is not a SQLite database; it was left untouched: point kvstore at another path",
    ),
    (apsw.IOError, SqliteIOError, "I/O error on {path}; check the disk and the file system"),
    (apsw.CantOpenError, SqliteFileError, "cannot open {path}; check that the directory exists and is writable"),
    (apsw.PermissionsError, SqliteFileError, "permission denied on {path}"),
)


def map_error(
    exc: apsw.Error, *, path: str, busy_timeout: float, operation: str | None, key: str | None = None
) -> KVStoreError:
    """The kvstore error for an apsw exception (raise it ``from exc``)."""
    if isinstance(exc, apsw.BusyError | apsw.LockedError):
        # Busy, not down: another connection holds the lock (DESIGN.md §8). The failover
        # neither counts it against the breaker nor moves the call to the fallback.
        return BackendBusyError(
            f"SQLite database {path} is locked by another connection; gave up after the "
            f"{busy_timeout:g} s busy timeout (retry later, raise busy_timeout or shorten the other "
            "writer's transactions)",
            backend=BACKEND,
            key=key,
            operation=operation,
        )
    for apsw_type, error_type, message in _FILE_ERRORS:
        if isinstance(exc, apsw_type):
            return error_type(
                f"{message.format(path=path)} ({exc})", path=path, key=key, operation=operation, backend=BACKEND
            )
    if isinstance(exc, apsw.ConnectionClosedError | apsw.CursorClosedError):
        return ClosedError(f"the SQLite connection to {path} is closed", backend=BACKEND, key=key, operation=operation)
    return KVStoreError(f"SQLite error on {path}: {exc}", backend=BACKEND, key=key, operation=operation)


class _Unopened:
    """Stands in for the cursor until the connection is opened on first use."""

    def __init__(self, engine: SqliteEngine) -> None:
        self._engine = engine

    def __getattr__(self, name: str) -> Any:
        # Only ever reached with the engine's lock held.
        return getattr(self._engine._open_locked(None), name)


class _InheritedMemory:
    """Stands in for the cursor of a ``:memory:`` database in a forked child: it cannot be shared."""

    def __init__(self, path: str) -> None:
        self._path = path

    def __getattr__(self, name: str) -> NoReturn:
        raise ClosedError(
            f"the SQLite database {self._path} lives in the memory of the process that opened it and cannot "
            "be used in a forked child; use a file, or open the store in the child",
            backend=BACKEND,
            operation=name,
        )


class _ClosedCursor:
    def __init__(self, path: str) -> None:
        self._path = path

    def __getattr__(self, name: str) -> NoReturn:
        raise ClosedError(f"the SQLite store on {self._path} is closed", backend=BACKEND, operation=name)


class SqliteEngine:
    """Every store operation on one apsw connection, thread-safe, blocking."""

    def __init__(
        self,
        path: str | os.PathLike[str] | apsw.Connection,
        *,
        key_prefix: str,
        synchronous: str,
        busy_timeout: float,
        max_value_bytes: int,
        clock: Callable[[], float],
        purge_interval: float,
        idempotency_window: float = DEFAULT_IDEMPOTENCY_WINDOW,
    ) -> None:
        if synchronous.upper() not in ("NORMAL", "FULL"):
            raise ConfigError(f"synchronous must be 'NORMAL' or 'FULL', not {synchronous!r}")
        if busy_timeout < 0 or purge_interval <= 0:
            raise ConfigError("busy_timeout must be >= 0 and purge_interval > 0")
        if isinstance(path, apsw.Connection):
            self._conn: apsw.Connection | None = path
            self._owns = False
            self.path = path.filename or MEMORY
        else:
            self._conn = None
            self._owns = True
            self.path = os.fspath(path)
        self.ns = key_prefix
        self.synchronous = synchronous.upper()
        self.busy_timeout = busy_timeout
        self.max_value_bytes = max_value_bytes
        self._clock = clock
        self._purge_interval_ms = purge_interval * 1000
        self._window_ms = validate_window(idempotency_window) * 1000
        self._next_purge_ms = 0.0  # the first write after opening sweeps
        self._lock = threading.Lock() if self._conn is None else _lock_for(self._conn)
        self._cur: Any = _Unopened(self)
        self.closed = False
        after_fork_in_child(self)

    def _after_fork_in_child(self) -> None:
        """In a forked child: drop the parent's connection (closing the child's copy of it), reopen lazily."""
        # Every call on the connection holds the engine lock: held at fork time means another
        # thread of the parent was inside SQLite, with SQLite's own mutex of the connection
        # taken. That mutex stays taken in the child, so closing would fail (or hang): leave it.
        busy_at_fork = self._lock.locked()
        self._lock = threading.Lock()
        if self.closed:
            return
        conn, cur, self._conn = self._conn, self._cur, None
        self._next_purge_ms = 0.0
        if conn is None:
            return  # never opened: the child opens its own on first use
        if busy_at_fork:
            _abandon(conn)
            _abandon(cur)
        elif self._owns:
            # See "fork safety" above: the child's copy is closed here, the parent's stays open.
            with contextlib.suppress(apsw.Error):
                conn.close(True)
        if self.path == MEMORY or self.path.startswith("file::memory:") or not self.path:
            self._cur = _InheritedMemory(self.path or MEMORY)
            return
        # A handed connection stays the caller's; in the child the engine opens (and owns)
        # a connection of its own to the same file.
        self._owns = True
        self._cur = _Unopened(self)

    # --- lifecycle ------------------------------------------------------------------------

    def open(self, busy_timeout: float | None = None) -> apsw.Cursor:
        """Open the connection (if not yet), apply settings and migrations; return the cursor.

        ``busy_timeout`` bounds the wait for locks while opening (e.g. a connect deadline).
        """
        with self._lock:
            return self._open_locked(busy_timeout)

    def _open_locked(self, busy_timeout: float | None) -> apsw.Cursor:
        if not isinstance(self._cur, _Unopened):
            if self.closed:
                self._cur.execute  # noqa: B018  # raises ClosedError
            return self._cur  # type: ignore[no-any-return]  # an apsw.Cursor once opened
        try:
            conn = self._conn
            if conn is None:
                if self.path != MEMORY:
                    directory = os.path.dirname(os.path.abspath(self.path))
                    try:
                        os.makedirs(directory, exist_ok=True)
                    except OSError as exc:
                        raise SqliteFileError(
                            f"cannot create the directory of {self.path}: {exc.strerror}",
                            path=self.path,
                            operation="open",
                        ) from exc
                conn = apsw.Connection(self.path)
            wait = self.busy_timeout if busy_timeout is None else min(busy_timeout, self.busy_timeout)
            if self._owns:
                conn.set_busy_timeout(int(wait * 1000))
            try:
                self._prepare_within(conn, wait)
            except BaseException:
                if self._owns:
                    conn.close()
                raise
            if self._owns:
                conn.set_busy_timeout(int(self.busy_timeout * 1000))
        except apsw.Error as exc:
            raise map_error(exc, path=self.path, busy_timeout=self.busy_timeout, operation="open") from exc
        self._conn = conn
        self._cur = conn.cursor()
        return self._cur  # type: ignore[no-any-return]  # apsw is untyped

    def _prepare_within(self, conn: apsw.Connection, wait: float) -> None:
        """`_prepare`, tried again while another process is creating or migrating the file.

        SQLite answers some lock conflicts of opening (switching a new file to WAL while
        another connection reads it) with SQLITE_BUSY at once, without its busy handler, to
        avoid a deadlock. `_prepare` is idempotent, so it is retried until ``wait`` is spent.
        """
        deadline = time.monotonic() + wait
        while True:
            try:
                self._prepare(conn)
                return
            except apsw.BusyError:
                if time.monotonic() >= deadline:
                    raise
            time.sleep(0.005)

    def _prepare(self, conn: apsw.Connection) -> None:
        """Check the schema version, then settings, then forward migrations."""
        # Read the version before anything writes: a newer file must stay untouched.
        version = self._user_version(conn)
        self._check_version(version)
        if self._owns:
            # Each PRAGMA in its own call, read back (apsw runs later statements lazily).
            conn.execute("PRAGMA journal_mode=WAL").fetchall()
            conn.execute(f"PRAGMA synchronous={self.synchronous}").fetchall()
        if version < sql.SCHEMA_VERSION:
            conn.execute(sql.BEGIN_IMMEDIATE)
            try:
                version = self._user_version(conn)  # another process may have migrated meanwhile
                self._check_version(version)
                for target in range(version + 1, sql.SCHEMA_VERSION + 1):
                    for statement in sql.MIGRATIONS[target]:
                        conn.execute(statement)
                conn.execute(f"PRAGMA user_version={sql.SCHEMA_VERSION}")
                conn.execute(sql.COMMIT)
            except BaseException:
                if conn.in_transaction:
                    conn.execute(sql.ROLLBACK)
                raise

    @staticmethod
    def _user_version(conn: apsw.Connection) -> int:
        rows = conn.execute("PRAGMA user_version").fetchall()
        value = rows[0][0] if rows else 0
        return value if isinstance(value, int) else 0

    def _check_version(self, version: int) -> None:
        if version > sql.SCHEMA_VERSION:
            raise ConfigError(
                f"{self.path} was written by a newer kvstore (schema version {version}; this kvstore "
                f"understands up to {sql.SCHEMA_VERSION}); upgrade kvstore to use it. The file was not modified.",
                backend=BACKEND,
                operation="open",
            )

    def close(self) -> None:
        """Close the connection if this engine opened it. Idempotent."""
        with self._lock:
            if self.closed:
                return
            self.closed = True
            conn, self._conn = self._conn, None
            self._cur = _ClosedCursor(self.path)
            if conn is not None and self._owns:
                conn.close()

    # --- helpers --------------------------------------------------------------------------

    def _error(self, exc: apsw.Error, operation: str, key: str | None = None) -> KVStoreError:
        return map_error(exc, path=self.path, busy_timeout=self.busy_timeout, operation=operation, key=key)

    def _wrong_type(self, key: str, operation: str, want: str) -> WrongTypeError:
        have = "a list" if want == "value" else "a value"
        return WrongTypeError(
            f"key {key!r} holds {have}; {operation} needs a {want}", backend=BACKEND, key=key, operation=operation
        )

    def _write(self, operation: str, key: str | None, body: Callable[[Any, float], T]) -> T:
        """Run ``body(cursor, now_ms)`` in a ``BEGIN IMMEDIATE`` transaction and commit it."""
        with self._lock:
            cur = self._cur
            try:
                cur.execute(sql.BEGIN_IMMEDIATE)
                try:
                    now = self._clock() * 1000
                    if now >= self._next_purge_ms:
                        self._purge(cur, now)
                    result = body(cur, now)
                    cur.execute(sql.COMMIT)
                except BaseException:
                    self._rollback()
                    raise
            except apsw.Error as exc:
                raise self._error(exc, operation, key) from exc
            return result

    def _rollback(self) -> None:
        conn = self._conn
        if conn is not None and conn.in_transaction:
            # The original error matters more; SQLite may have rolled back already.
            with contextlib.suppress(apsw.Error):
                conn.execute(sql.ROLLBACK)

    def _purge(self, cur: Any, now: float) -> None:
        """Delete one bounded batch of expired rows (their list items go with them by trigger)
        and one of idempotency ids older than the window."""
        keys, ids = self._purge_batch(cur, now)
        full = max(keys, ids) >= sql.PURGE_BATCH
        # A full batch means more may be waiting: sweep again on the next write.
        self._next_purge_ms = now if full else now + self._purge_interval_ms

    def _purge_batch(self, cur: Any, now: float) -> tuple[int, int]:
        """One batch of each purge: (keys removed, most ids/tombstones removed)."""
        oldest_ms = now - self._window_ms
        oldest = oldest_ms / 1000
        purged = cur.execute(sql.PURGE, (now, sql.PURGE_BATCH)).fetchall()
        # An expired row written within the window leaves its last write behind as a
        # tombstone, so changed_since still reports it after the row is gone.
        recent = [(ns, key, modified) for ns, key, modified in purged if modified is not None and modified > oldest]
        if recent:
            cur.executemany(sql.TOMBSTONE, recent)
        cur.execute(sql.PURGE_IDS, (oldest_ms, sql.PURGE_BATCH))
        ids = int(self._conn.changes()) if self._conn is not None else 0
        cur.execute(sql.PURGE_TOMBSTONES, (oldest, sql.PURGE_BATCH))
        tombstones = int(self._conn.changes()) if self._conn is not None else 0
        cur.execute(sql.PURGE_CLEARED, (oldest,))
        return len(purged), max(ids, tombstones)

    def purge_expired(self) -> int:
        """Delete every expired row (and idempotency id older than the window) now; return how many keys went."""
        removed = 0
        while True:
            self._next_purge_ms = float("inf")  # the explicit sweep below replaces the periodic one
            try:
                keys, ids = self._write("purge_expired", None, self._purge_batch)
            finally:
                self._next_purge_ms = self._clock() * 1000 + self._purge_interval_ms
            removed += keys
            if max(keys, ids) < sql.PURGE_BATCH:
                return removed

    # --- values ---------------------------------------------------------------------------

    def get(self, key: str) -> Any:
        key = validate_key(key)
        with self._lock:
            try:
                rows = self._cur.execute(sql.GET, (self.ns, key)).fetchall()
            except apsw.Error as exc:
                raise self._error(exc, "get", key) from exc
        if not rows:
            return None
        kind, data, expires = rows[0]
        if expires is not None and expires <= self._clock() * 1000:
            return None
        if kind:
            raise self._wrong_type(key, "get", "value")
        return decode(data, key)

    def set(self, key: str, value: Any, ttl: TTL | None, only_if_absent: bool) -> bool:
        key = validate_key(key)
        ms = None if ttl is None else ttl_ms(ttl)
        data = encode(key, value, self.max_value_bytes)
        # The hot path: `_write` inlined (same BEGIN IMMEDIATE ... COMMIT), no closure.
        with self._lock:
            cur = self._cur
            try:
                cur.execute(sql.BEGIN_IMMEDIATE)
                try:
                    now = self._clock() * 1000
                    if now >= self._next_purge_ms:
                        self._purge(cur, now)
                    expires = None if ms is None else int(now) + ms
                    if only_if_absent:
                        cur.execute(sql.SET_IF_ABSENT, (self.ns, key, data, expires, now / 1000, now))
                        written = bool(self._conn is not None and self._conn.changes())
                    else:
                        cur.execute(sql.UPSERT, (self.ns, key, data, expires, now / 1000))
                        written = True
                    cur.execute(sql.COMMIT)
                except BaseException:
                    self._rollback()
                    raise
            except apsw.Error as exc:
                raise self._error(exc, "set", key) from exc
        return written

    def delete(self, key: str) -> bool:
        key = validate_key(key)
        ns = self.ns

        def body(cur: Any, now: float) -> bool:
            rows = cur.execute(sql.DELETE, (ns, key)).fetchall()
            if not rows:
                # A delete is a change even when nothing was there: a replaying instance must not
                # resurrect a write it journaled before this delete.
                cur.execute(sql.TOMBSTONE, (ns, key, now / 1000))
                return False
            expires, modified = rows[0]
            live = expires is None or expires > now
            # Deleting a live key is a change now; an expired row only carries its last write.
            stamp = now / 1000 if live else modified
            if stamp is not None and stamp > (now - self._window_ms) / 1000:
                cur.execute(sql.TOMBSTONE, (ns, key, stamp))
            return live

        return self._write("delete", key, body)

    def exists(self, key: str) -> bool:
        key = validate_key(key)
        with self._lock:
            try:
                rows = self._cur.execute(sql.EXPIRY, (self.ns, key)).fetchall()
            except apsw.Error as exc:
                raise self._error(exc, "exists", key) from exc
        return bool(rows) and (rows[0][0] is None or rows[0][0] > self._clock() * 1000)

    def mget(self, keys: Iterable[str]) -> list[Any]:
        keys = [validate_key(k) for k in keys]
        if not keys:
            return []
        with self._lock:
            try:
                rows = self._cur.execute(sql.MGET, (self.ns, orjson.dumps(keys))).fetchall()
            except apsw.Error as exc:
                raise self._error(exc, "mget") from exc
        now = self._clock() * 1000
        found = {
            key: data
            for key, kind, data, expires in rows
            if kind == sql.KIND_VALUE and (expires is None or expires > now)
        }
        return [decode(found[k], k) if k in found else None for k in keys]

    def mset(self, items: MsetItems) -> None:
        normalized = normalize_items(items)
        if not normalized:
            return
        encoded = [(key, encode(key, value, self.max_value_bytes), ms) for key, value, ms in normalized]
        ns = self.ns

        def body(cur: Any, now: float) -> None:
            base, stamp = int(now), now / 1000
            cur.executemany(
                sql.UPSERT, [(ns, key, data, None if ms is None else base + ms, stamp) for key, data, ms in encoded]
            )

        self._write("mset", None, body)

    def keys_page(self, pattern: str, after: str | None) -> tuple[list[str], str | None]:
        """One page of matching keys after ``after``; the second item is where to continue, or None."""
        match = compile_glob(pattern)
        literal = glob_literal_prefix(pattern) if not is_match_all(pattern) else ""
        upper = prefix_upper_bound(literal)
        lower = literal if after is None else after
        statement = sql.keys_page_sql(first=after is None, bounded=upper is not None)
        args: tuple[Any, ...] = (self.ns, lower) + ((upper,) if upper is not None else ())
        with self._lock:
            try:
                rows = self._cur.execute(statement, (*args, self._clock() * 1000, sql.KEYS_PAGE)).fetchall()
            except apsw.Error as exc:
                raise self._error(exc, "keys") from exc
        found = [row[0] for row in rows if match(row[0])]
        return found, (rows[-1][0] if len(rows) == sql.KEYS_PAGE else None)

    def iter_keys(self, pattern: str) -> Iterator[str]:
        after: str | None = None
        while True:
            found, after = self.keys_page(pattern, after)
            yield from found
            if after is None:
                return

    def keys(self, pattern: str) -> list[str]:
        return list(self.iter_keys(pattern))

    def clear(self) -> None:
        ns = self.ns

        def body(cur: Any, now: float) -> None:
            cur.execute(sql.CLEAR_ITEMS, (ns,))
            cur.execute(sql.CLEAR_KEYS, (ns,))
            cur.execute(sql.CLEARED, (ns, now / 1000))

        self._write("clear", None, body)

    def ttl(self, key: str) -> float | None:
        key = validate_key(key)
        with self._lock:
            try:
                rows = self._cur.execute(sql.EXPIRY, (self.ns, key)).fetchall()
            except apsw.Error as exc:
                raise self._error(exc, "ttl", key) from exc
        if not rows or rows[0][0] is None:
            return None
        left = (rows[0][0] - self._clock() * 1000) / 1000
        return left if left > 0 else None

    def expire(self, key: str, ttl: TTL | None) -> bool:
        key = validate_key(key)
        ms = ttl_ms(ttl)
        ns = self.ns

        def body(cur: Any, now: float) -> bool:
            cur.execute(sql.EXPIRE, (None if ms is None else int(now) + ms, now / 1000, ns, key, now))
            return bool(self._conn is not None and self._conn.changes())

        return self._write("expire", key, body)

    # --- replay guard ---------------------------------------------------------------------

    def server_time(self) -> float:
        """The clock every change stamp is taken from, in unix seconds."""
        return self._clock()

    def changed_since(self, keys: Iterable[str], since: float) -> _KeySet:
        """Which of ``keys`` were written, expired by `expire`, deleted or cleared after ``since``.

        One statement for all keys. Exact for ``since`` within the idempotency window; for
        an older ``since`` the deletion records that would answer may have been swept, so
        every key is reported (a replay then records conflicts instead of overwriting).
        Rows from before schema version 3 count as unchanged.
        """
        names = list(dict.fromkeys(validate_key(k) for k in keys))
        if not names:
            return set()
        if since * 1000 < self._clock() * 1000 - self._window_ms:
            return set(names)
        ns = self.ns
        with self._lock:
            try:
                rows = self._cur.execute(
                    sql.CHANGED_SINCE, (orjson.dumps(names), ns, since, ns, since, ns, since)
                ).fetchall()
            except apsw.Error as exc:
                raise self._error(exc, "changed_since") from exc
        return {row[0] for row in rows}

    def mark_cleared(self, at: float) -> None:
        """Record a clear of this prefix at ``at`` (never moved back)."""
        ns = self.ns

        def body(cur: Any, now_ms: float) -> None:
            cur.execute(sql.CLEARED, (ns, at))

        self._write("clear", None, body)

    def restamp(self, keys: Iterable[str], at: float) -> None:
        """Date the last change of ``keys`` (row or tombstone) at ``at``, in one transaction."""
        names = orjson.dumps(list(dict.fromkeys(validate_key(k) for k in keys)))

        def body(cur: Any, now_ms: float) -> None:
            cur.execute(sql.RESTAMP_KEYS, (at, self.ns, names))
            cur.execute(sql.RESTAMP_TOMBSTONES, (at, self.ns, names))

        self._write("restamp", None, body)

    def ping(self) -> None:
        with self._lock:
            try:
                self._cur.execute("SELECT 1").fetchall()
            except apsw.Error as exc:
                raise self._error(exc, "ping") from exc

    # --- lists ----------------------------------------------------------------------------

    def _live_meta(self, cur: Any, key: str, now: float) -> tuple[int, int, int] | None:
        """(kind, head, tail) of a live key, or None when absent or expired."""
        rows = cur.execute(sql.META, (self.ns, key)).fetchall()
        if not rows:
            return None
        kind, head, tail, expires = rows[0]
        if expires is not None and expires <= now:
            return None
        return kind, head, tail

    def append(self, key: str, value: Any, idempotency_id: str | None = None) -> int:
        key = validate_key(key)
        if idempotency_id is not None:
            idempotency_id = validate_idempotency_id(idempotency_id)
        return self._push(key, [encode(key, value, self.max_value_bytes)], "append", idempotency_id)

    def extend(self, key: str, values: Iterable[Any], idempotency_id: str | None = None) -> int:
        key = validate_key(key)
        if idempotency_id is not None:
            idempotency_id = validate_idempotency_id(idempotency_id)
        encoded = [encode(key, v, self.max_value_bytes) for v in values]
        if not encoded:
            return self.get_length(key)
        return self._push(key, encoded, "extend", idempotency_id)

    def _push(self, key: str, encoded: list[bytes], operation: str, idempotency_id: str | None) -> int:
        ns = self.ns

        def body(cur: Any, now: float) -> int:
            if idempotency_id is not None:
                seen = cur.execute(sql.ID_SEEN, (ns, key, idempotency_id, now - self._window_ms)).fetchall()
                if seen:
                    return int(seen[0][0])  # applied before: write nothing, answer as the first time
            rows = cur.execute(sql.META, (ns, key)).fetchall()
            row = rows[0] if rows else None
            if row is not None and row[3] is not None and row[3] <= now:
                cur.execute(sql.DELETE, (ns, key)).fetchall()  # expired: its items go by trigger
                row = None
            if row is None:
                head, tail = 0, 0
                cur.execute(sql.NEW_LIST, (ns, key, len(encoded), now / 1000))
            else:
                kind, head, tail, _ = row
                if kind != sql.KIND_LIST:
                    raise self._wrong_type(key, operation, "list")
                cur.execute(sql.SET_TAIL, (tail + len(encoded), now / 1000, ns, key))
            if len(encoded) == 1:
                cur.execute(sql.PUSH, (ns, key, tail, encoded[0]))
            else:
                cur.executemany(sql.PUSH, [(ns, key, tail + i, data) for i, data in enumerate(encoded)])
            length = int(tail + len(encoded) - head)
            if idempotency_id is not None:
                cur.execute(sql.ID_RECORD, (ns, key, idempotency_id, length, int(now)))
            return length

        return self._write(operation, key, body)

    def get_range(self, key: str, start: int, end: int) -> list[Any]:
        key = validate_key(key)
        lrange_bounds(0, start, end)  # type-check the bounds before any I/O
        ns = self.ns
        with self._lock:
            cur = self._cur
            try:
                # One read transaction: the counters and the items come from one snapshot.
                cur.execute(sql.BEGIN_READ)
                try:
                    meta = self._live_meta(cur, key, self._clock() * 1000)
                    rows: list[tuple[bytes]] = []
                    if meta is not None:
                        kind, head, tail = meta
                        if kind != sql.KIND_LIST:
                            raise self._wrong_type(key, "get_range", "list")
                        lo, hi = lrange_bounds(tail - head, start, end)
                        if hi > lo:
                            rows = cur.execute(sql.RANGE, (ns, key, head + lo, head + hi)).fetchall()
                finally:
                    self._rollback()
            except apsw.Error as exc:
                raise self._error(exc, "get_range", key) from exc
        return [decode(row[0], key) for row in rows]

    def get_length(self, key: str) -> int:
        key = validate_key(key)
        with self._lock:
            try:
                meta = self._live_meta(self._cur, key, self._clock() * 1000)
            except apsw.Error as exc:
                raise self._error(exc, "get_length", key) from exc
        if meta is None:
            return 0
        kind, head, tail = meta
        if kind != sql.KIND_LIST:
            raise self._wrong_type(key, "get_length", "list")
        return tail - head
