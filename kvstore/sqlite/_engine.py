"""SQLite backend, blocking part: one apsw connection and the raw operations on it.

apsw is a blocking driver, so this is written once, synchronously: `SqliteDatabase`
binds these methods as its raw hooks. `AsyncSqliteDatabase` opens its engine with
``serves_loop``: then a call made on the event loop never waits. It raises `WouldBlock`
instead of waiting for another connection's lock (`LockBusy`) or doing long work (a big
batch, a due sweep), and the store retries it without blocking or hands it to its
worker thread, where `patiently` lets it wait. Keys arrive validated (without the
prefix, which is the ``ns`` column), values encoded, TTLs in whole milliseconds: the
rules live in `kvstore.base`.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any, NoReturn, TypeVar

import apsw
import orjson

from kvstore._core.idempotency import DEFAULT_IDEMPOTENCY_WINDOW, validate_window
from kvstore._core.keys import compile_glob, glob_literal_prefix, is_match_all, prefix_upper_bound, validate_keys
from kvstore._core.lists import lrange_bounds
from kvstore.base_async import BEYOND_64_BITS, MAX_INT, holds_list, holds_value, not_an_integer
from kvstore.errors import BackendBusyError, ClosedError, ConfigError, KVStoreError
from kvstore.sqlite import _sql as sql
from kvstore.sqlite._errors import BACKEND, map_error
from kvstore.sqlite._sql import KIND_LIST, KIND_VALUE, SqliteFileError

__all__ = ["MEMORY", "LockBusy", "SqliteEngine", "WouldBlock", "after_fork_in_child"]

T = TypeVar("T")
#: `changed_since`'s answer (the engine defines a ``set`` method, which hides the builtin there).
_KeySet = set[str]
MEMORY = ":memory:"

#: Most keys, items or rows one call may read or write on the event loop; more go to the worker.
LOOP_ITEMS = 128
#: Most bytes of values one call may write or read on the event loop; more go to the worker
#: (a read learns the sizes from SQLite before copying a value: see `sql.GET_LOOP`).
LOOP_BYTES = 256 * 1024
_GET_LOOP = sql.GET_LOOP.format(cap=LOOP_BYTES)
_MGET_LOOP = sql.MGET_LOOP.format(cap=LOOP_BYTES)
_RANGE_LOOP = sql.RANGE_LOOP.format(items=LOOP_ITEMS)
_RANGE_LOOP_SIZED = sql.RANGE_LOOP_SIZED.format(cap=LOOP_BYTES, items=LOOP_ITEMS)
_GET_TOUCH_LOOP = sql.GET_TOUCH_LOOP.format(cap=LOOP_BYTES)
_EXPIRE_LOOP = sql.EXPIRE_LOOP.format(cap=LOOP_BYTES)
#: WAL pages after which a store serving a loop checkpoints on its worker (SQLite's own auto-checkpoint size).
CHECKPOINT_PAGES = 1000
#: SQLite calls the progress handler every `PROGRESS_STEPS` VM steps of a statement; a call on
#: the event loop is interrupted, rolled back and run again on the worker at the `LOOP_PROGRESS`-th
#: (a millisecond or two of work): a catch-all for work no size check foresees, such as deleting
#: a long list (its items go by trigger in the same statement).
PROGRESS_STEPS = 1000
LOOP_PROGRESS = 10
#: List indexes beyond any list's length: `get_range` binds its start and end clamped to this.
_INDEX_CAP = 1 << 62
#: The progress count outside an engine call, and during a rollback: never interrupted.
_UNCOUNTED = -(1 << 62)


class WouldBlock(Exception):  # a signal between the engine and the async store, never raised to users
    """A call made without waiting (see `SqliteEngine.patiently`) would wait or take long: nothing was written."""


class LockBusy(WouldBlock):
    """Another connection holds the lock the call needs; ``error``: the `BackendBusyError` to raise at the deadline."""

    def __init__(self, error: KVStoreError) -> None:
        super().__init__(str(error))
        self.error = error


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
        clock: Callable[[], float],
        purge_interval: float,
        idempotency_window: float = DEFAULT_IDEMPOTENCY_WINDOW,
        serves_loop: bool = False,
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
        self._clock = clock
        self._purge_interval_ms = purge_interval * 1000
        self._window_ms = validate_window(idempotency_window) * 1000
        self._next_purge_ms = 0.0  # the first write after opening sweeps
        self._lock = threading.Lock() if self._conn is None else _lock_for(self._conn)
        self._cur: Any = _Unopened(self)
        self.closed = False
        # Serving an event loop (a connection of its own only: a handed one may be in use
        # elsewhere, so every call of its store goes to the worker): calls are made
        # without waiting unless `patiently` runs them; auto-checkpoints are left to the
        # worker. `loop_reads` / `loop_writes` say what the loop may run once opened.
        self._serves_loop = serves_loop and self._owns
        self._patient = not self._serves_loop
        self.loop_reads = False
        self.loop_writes = False
        self.checkpoint_due = False
        self._progress = _UNCOUNTED
        # Serving a loop: keys known to hold a value of more than LOOP_BYTES (written by this
        # store, or found so by a read on the loop). Their reads go to the worker at once: with
        # a WITHOUT ROWID table, SQLite's search for a row whose record overflows loads the
        # whole record to compare the key, milliseconds for megabytes, even when the value is
        # not copied. A stale entry costs a worker hop, never a wrong answer.
        self._large: _KeySet = set()
        after_fork_in_child(self)

    def _after_fork_in_child(self) -> None:
        """In a forked child: drop the parent's connection (closing the child's copy of it), reopen lazily."""
        # Every call on the connection holds the engine lock: held at fork time means another
        # thread of the parent was inside SQLite, with SQLite's own mutex of the connection
        # taken. That mutex stays taken in the child, so closing would fail (or hang): leave it.
        busy_at_fork = self._lock.locked()
        self._lock = threading.Lock()
        # Until the child's own connection is open (on its worker), nothing runs on its loop.
        self.loop_reads = self.loop_writes = self.checkpoint_due = False
        self._patient = not self._serves_loop
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
        # a connection of its own to the same file. (It still serves no loop: the store's
        # hooks chose the worker for it.)
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
                # The query planner's stability guarantee: a plan never depends on the values
                # bound to a statement. Without it SQLite (3.4x+) reads the bound ``ns = ?`` /
                # ``key = ?`` while planning a statement with an ORDER BY (the range reads, the
                # keys page, the queue's claim) and so prepares it again at every execution
                # (~35k instructions, as long as the read itself). Every statement here is a
                # primary-key or index search whose plan is the same either way.
                conn.config(apsw.SQLITE_DBCONFIG_ENABLE_QPSG, 1)
            try:
                self._prepare_within(conn, wait)
            except BaseException:
                if self._owns:
                    conn.close()
                raise
            if self._owns:
                # Serving a loop, the connection never waits on its own: `patiently` sets the wait.
                conn.set_busy_timeout(int(self.busy_timeout * 1000) if self._patient else 0)
            if self._serves_loop and self._owns:
                # A commit on the loop must not run a checkpoint (it writes and syncs the
                # database file): the WAL hook only flags one, which the store runs on its worker.
                conn.wal_autocheckpoint(0)
                conn.set_wal_hook(self._wal_written)
                conn.set_progress_handler(self._too_long, PROGRESS_STEPS)
        except apsw.Error as exc:
            raise self._error(exc, "open") from exc
        self._conn = conn
        self._cur = conn.cursor()
        if self._serves_loop and self._owns:
            self.loop_reads = True
            # synchronous=FULL syncs the WAL at every commit: its writes stay on the worker.
            self.loop_writes = self.synchronous == "NORMAL"
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
            self.loop_reads = self.loop_writes = False
            conn, self._conn = self._conn, None
            self._cur = _ClosedCursor(self.path)
            if conn is not None and self._owns:
                conn.close()

    # --- the driver boundary: every apsw call runs in one of these, errors through `map_error` ---

    def _error(self, exc: apsw.Error, operation: str, key: str | None = None) -> KVStoreError | WouldBlock:
        if not self._patient and isinstance(exc, apsw.InterruptError):
            return WouldBlock("too long for the event loop")  # interrupted by `_too_long`: rolled back
        error = map_error(exc, path=self.path, busy_timeout=self.busy_timeout, operation=operation, key=key)
        if not self._patient and isinstance(error, BackendBusyError):
            # Made without waiting: the store waits (off the loop) and raises ``error`` at its deadline.
            error.__cause__ = exc
            return LockBusy(error)
        return error

    # --- waiting: only on the worker of a store serving a loop ------------------------------

    def patiently(self, seconds: float, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` allowed to wait ``seconds`` for another connection's lock and to take long.

        For a store serving an event loop, on its worker thread only (the loop is not
        using the connection then); a checkpoint that came due runs after it. Without
        a loop every call is patient already.
        """
        if self._patient:
            return fn(*args)
        self._patient = True
        try:
            self._wait(seconds)
            result = fn(*args)
            if self.checkpoint_due:
                self.checkpoint()
            return result
        finally:
            self._patient = False
            self._wait(0)

    def _wait(self, seconds: float) -> None:
        conn = self._conn
        if conn is not None and not self.closed:
            # Not opened yet: opening sets the wait from `_patient`.
            conn.set_busy_timeout(int(seconds * 1000))

    def _too_long(self) -> bool:
        """SQLite's progress handler: interrupt a call on the loop at its `LOOP_PROGRESS`-th call.

        SQLite counts steps per prepared statement across executions (apsw caches
        statements), so a short statement calls it now and then too: the count is per
        call of the engine (reset at each driver boundary), not per statement.
        """
        self._progress += 1
        return self._progress >= LOOP_PROGRESS and not self._patient

    def write_lock_free(self) -> bool:
        """Whether the write lock could be taken now (tried without waiting; nothing written, released at once)."""
        with self._lock:
            try:
                self._cur.execute(sql.BEGIN_IMMEDIATE)
            except apsw.BusyError:
                return False
            except apsw.Error:
                return True  # not a lock: the call itself meets the error
            self._rollback()
            return True

    def _wal_written(self, _conn: apsw.Connection, _name: str, pages: int) -> int:
        """SQLite's WAL hook (after each commit): flag a checkpoint when the WAL is long enough."""
        if pages >= CHECKPOINT_PAGES:
            self.checkpoint_due = True
        return 0  # SQLITE_OK

    def checkpoint(self) -> bool:
        """Copy what it can of the WAL into the database file without waiting (PASSIVE); whether it ran.

        A failed checkpoint loses nothing (the WAL keeps every commit); the next one catches up.
        """
        with self._lock:
            self.checkpoint_due = False
            conn = self._conn
            if conn is None or self.closed:
                return False
            try:
                conn.wal_checkpoint(mode=apsw.SQLITE_CHECKPOINT_PASSIVE)
            except apsw.Error:
                return False
            return True

    def _query(self, operation: str, key: str | None, statement: str, params: tuple[Any, ...]) -> list[Any]:
        """The rows of one statement (its own implicit transaction)."""
        with self._lock:
            self._progress = 0
            try:
                return self._cur.execute(statement, params).fetchall()  # type: ignore[no-any-return]  # apsw is untyped
            except apsw.Error as exc:
                raise self._error(exc, operation, key) from exc
            finally:
                self._progress = _UNCOUNTED

    def _query_bounded(
        self, operation: str, statement: str, params: tuple[Any, ...], key: str | None = None
    ) -> list[Any]:
        """`_query` on the loop of a statement whose rows end with their value's size: see `_bounded`."""
        with self._lock:
            self._progress = 0
            try:
                return self._bounded(self._cur.execute(statement, params))
            except apsw.Error as exc:
                raise self._error(exc, operation, key) from exc
            finally:
                self._progress = _UNCOUNTED

    def _bounded(self, rows: Any) -> list[Any]:
        """The rows of a read on the loop without their last column, the value's size (``None``: no value).

        Raises `WouldBlock` as soon as the values read reach past `LOOP_BYTES`: no row copies a
        value larger than that (the statement withholds it), so at most twice that is copied
        before the worker reads again, patiently, with the statement that withholds nothing.
        """
        out: list[Any] = []
        total = 0
        for row in rows:
            size = row[-1]
            if size is not None:
                total += size
                if total > LOOP_BYTES:
                    self._stop_statement()
                    raise WouldBlock("a large read")
            out.append(row[:-1])
        return out

    def _stop_statement(self) -> None:
        """Discard the statement read part way: it still holds a read snapshot."""
        self._cur.close(True)
        self._cur = self._conn.cursor() if self._conn is not None else self._cur

    def _query_page(self, key: str, params: tuple[Any, ...]) -> list[Any]:
        """The rows of `_RANGE_LOOP` up to the first without its item (withheld, or none read).

        Read row by row: a row whose item is longer than its share is the last one touched,
        as `_bounded` stops at the row that crosses LOOP_BYTES (SQLite loads a long row's
        whole record to compare its key with the range's end, even when it copies nothing).
        """
        with self._lock:
            self._progress = 0
            try:
                rows: list[Any] = []
                for row in self._cur.execute(_RANGE_LOOP, params):
                    rows.append(row)
                    if row[3] is None:
                        self._stop_statement()
                        break
                return rows
            except apsw.Error as exc:
                raise self._error(exc, "get_range", key) from exc
            finally:
                self._progress = _UNCOUNTED

    def _snapshot(self, operation: str, key: str | None, body: Callable[..., T], *args: Any) -> T:
        """``body(cursor, now_ms, *args)`` in one read transaction: every statement sees one snapshot."""
        with self._lock:
            cur = self._cur
            try:
                cur.execute(sql.BEGIN_READ)  # uncounted, as in `_write`
                self._progress = 0
                try:
                    return body(cur, self._clock() * 1000, *args)
                finally:
                    self._rollback()  # ends the count too
            except apsw.Error as exc:
                raise self._error(exc, operation, key) from exc

    def _write(self, operation: str, key: str | None, body: Callable[..., T], *args: Any) -> T:
        """``body(cursor, now_ms, *args)`` in a ``BEGIN IMMEDIATE`` transaction, committed; rolled back on error."""
        with self._lock:
            cur = self._cur
            try:
                # BEGIN and COMMIT run uncounted (`_progress` is `_UNCOUNTED` outside the body): SQLite
                # also calls the progress handler as a statement ends, after its work, so an interrupted
                # BEGIN would leave its transaction open, and an interrupted COMMIT would have committed
                # already (the store would write it again on the worker: an append stored twice).
                cur.execute(sql.BEGIN_IMMEDIATE)
                self._progress = 0
                try:
                    now = self._clock() * 1000
                    if now >= self._next_purge_ms:
                        if not self._patient:
                            raise WouldBlock("the expiry sweep is due")
                        self._purge(cur, now)
                    result = body(cur, now, *args)
                    self._progress = _UNCOUNTED
                    cur.execute(sql.COMMIT)
                except BaseException:
                    self._rollback()
                    raise
                finally:
                    self._progress = _UNCOUNTED
            except apsw.Error as exc:
                raise self._error(exc, operation, key) from exc
            return result

    def _rollback(self) -> None:
        conn = self._conn
        self._progress = _UNCOUNTED  # the progress handler never interrupts a rollback
        if conn is not None and conn.in_transaction:
            # The original error matters more; SQLite may have rolled back already.
            with contextlib.suppress(apsw.Error):
                conn.execute(sql.ROLLBACK)

    def _changes(self) -> int:
        return int(self._conn.changes()) if self._conn is not None else 0

    # --- expiry sweep ---------------------------------------------------------------------

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
        ids = self._changes()
        cur.execute(sql.PURGE_TOMBSTONES, (oldest, sql.PURGE_BATCH))
        tombstones = self._changes()
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

    # --- values (the raw hooks of `kvstore.base.Store`, without the underscore) -----------

    def get(self, key: str) -> bytes | None:
        if self._patient:
            rows = self._query("get", key, sql.GET, (self.ns, key))
        else:  # on the loop: a value of more than LOOP_BYTES is withheld, its length in its place
            if key in self._large:
                raise WouldBlock("a large value")
            rows = self._query("get", key, _GET_LOOP, (self.ns, key))
        if not rows:
            return None
        kind, data, expires = rows[0]
        if expires is not None and expires <= self._clock() * 1000:
            return None
        if kind:
            raise holds_list(key, "get", BACKEND)
        if data.__class__ is int:
            self._remember_large([key])
            raise WouldBlock("a large value")
        return data  # type: ignore[no-any-return]  # a BLOB

    def get_touch(self, key: str, ms: int) -> bytes | None:
        if not self._patient and key in self._large:
            raise WouldBlock("a large value")
        return self._write("get", key, self._get_touch_in, key, ms)

    def _get_touch_in(self, cur: Any, now: float, key: str, ms: int) -> bytes | None:
        # One statement: restart the TTL of a live key and read it. A touch dates a change as
        # `expire` does; on a list it raises, and the transaction's rollback undoes the update.
        params = (int(now) + ms, now / 1000, self.ns, key, now)
        rows = cur.execute(sql.GET_TOUCH if self._patient else _GET_TOUCH_LOOP, params).fetchall()
        if not rows:
            if not self._patient:
                self._check_size(cur, key)
            return None
        if rows[0][0]:
            raise holds_list(key, "get", BACKEND)
        return rows[0][1]  # type: ignore[no-any-return]  # a BLOB

    def set(self, key: str, data: bytes, ms: int | None, only_if_absent: bool) -> bool:
        if not self._patient:
            # Replacing a large value frees its pages (milliseconds too): on the worker.
            if len(data) > LOOP_BYTES or key in self._large:
                raise WouldBlock("a large value")
        elif self._serves_loop:  # on the worker: what the loop should know of the key now
            if len(data) > LOOP_BYTES:
                self._remember_large([key])
            else:
                self._large.discard(key)
        return self._write("set", key, self._set_in, key, data, ms, only_if_absent)

    def check_loop_bytes(self, size: int) -> None:
        """On the loop: `WouldBlock` for a value of ``size`` bytes, too large to copy there (the worker reads it)."""
        if not self._patient and size > LOOP_BYTES:
            raise WouldBlock("a large value")

    def _check_size(self, cur: Any, key: str) -> None:
        """On the loop, after a statement that leaves a large value alone matched nothing: is that why?"""
        rows = cur.execute(sql.SIZE, (self.ns, key)).fetchall()
        if rows and rows[0][0] is not None and rows[0][0] > LOOP_BYTES:
            self._remember_large([key])
            raise WouldBlock("a large value")

    def _remember_large(self, keys: list[str]) -> None:
        large = self._large
        if len(large) >= 4096:
            large.clear()  # a bound on memory: forgotten keys are found large again by their next read
        large.update(keys)

    def _set_in(self, cur: Any, now: float, key: str, data: bytes, ms: int | None, only_if_absent: bool) -> bool:
        expires = None if ms is None else int(now) + ms
        if only_if_absent:
            cur.execute(sql.SET_IF_ABSENT, (self.ns, key, data, expires, now / 1000, now))
            return self._changes() > 0
        cur.execute(sql.UPSERT, (self.ns, key, data, expires, now / 1000))
        return True

    def delete(self, key: str) -> bool:
        if key in self._large:  # deleting a large value frees its pages: on the worker
            if not self._patient:
                raise WouldBlock("a large value")
            self._large.discard(key)
        return self._write("delete", key, self._delete_in, [key]) > 0

    def delete_many(self, keys: list[str]) -> int:
        if not self._patient and (len(keys) > LOOP_ITEMS or not self._large.isdisjoint(keys)):
            raise WouldBlock("many keys or a large value")
        if self._large:
            self._large.difference_update(keys)
        return self._write("delete_many", None, self._delete_in, keys)

    def _delete_in(self, cur: Any, now: float, keys: list[str]) -> int:
        """Delete distinct ``keys`` in one statement, leave their tombstones; how many were live."""
        ns = self.ns
        rows = cur.execute(sql.DELETE_MANY, (ns, orjson.dumps(keys))).fetchall()
        # A delete is a change even when nothing was there: a replaying instance must not
        # resurrect a write it journaled before this delete.
        stamps: dict[str, float | None] = dict.fromkeys(keys, now / 1000)
        oldest = (now - self._window_ms) / 1000
        removed = 0
        for key, expires, modified in rows:
            if expires is None or expires > now:
                removed += 1  # deleting a live key is a change now
            else:  # an expired row only carries its last write, if recent
                stamps[key] = modified if modified is not None and modified > oldest else None
        cur.executemany(sql.TOMBSTONE, [(ns, key, stamp) for key, stamp in stamps.items() if stamp is not None])
        return removed

    def exists(self, key: str) -> bool:
        if not self._patient and key in self._large:
            raise WouldBlock("a large value")  # SQLite's search of its row loads it whole
        rows = self._query("exists", key, sql.EXPIRY, (self.ns, key))
        return bool(rows) and (rows[0][0] is None or rows[0][0] > self._clock() * 1000)

    def mget(self, keys: list[str]) -> list[bytes | None]:
        if not self._patient and (len(keys) > LOOP_ITEMS or not self._large.isdisjoint(keys)):
            raise WouldBlock("many keys or a large value")
        if self._patient:
            rows = self._query("mget", None, sql.MGET, (self.ns, orjson.dumps(keys)))
        else:
            rows = self._query_bounded("mget", _MGET_LOOP, (self.ns, orjson.dumps(keys)))
        now = self._clock() * 1000
        found = {
            key: data for key, kind, data, expires in rows if kind == KIND_VALUE and (expires is None or expires > now)
        }
        return [found.get(key) for key in keys]

    def get_batch(self, keys: list[str]) -> list[Any]:
        """`get` of distinct keys in one query: bytes, ``None``, or the `holds_list` error per key."""
        rows = self._query("get", None, sql.MGET, (self.ns, orjson.dumps(keys)))
        now = self._clock() * 1000
        found = {key: (kind, data) for key, kind, data, expires in rows if expires is None or expires > now}
        out: list[Any] = []
        for key in keys:
            hit = found.get(key)
            out.append(None if hit is None else hit[1] if hit[0] == KIND_VALUE else holds_list(key, "get", "sqlite"))
        return out

    def mset(self, rows: list[tuple[str, bytes, int | None]]) -> None:
        if not self._patient and (len(rows) > LOOP_ITEMS or sum(len(row[1]) for row in rows) > LOOP_BYTES):
            raise WouldBlock("a large batch")
        if self._serves_loop:
            large = self._large
            if not self._patient:
                if large and not large.isdisjoint(row[0] for row in rows):
                    raise WouldBlock("a large value")  # replaced on the worker, as by `set`
            else:
                large.difference_update(key for key, data, _ in rows if len(data) <= LOOP_BYTES)
                found = [key for key, data, _ in rows if len(data) > LOOP_BYTES]
                if found:
                    self._remember_large(found)
        self._write("mset", None, self._mset_in, rows)

    def _mset_in(self, cur: Any, now: float, rows: list[tuple[str, bytes, int | None]]) -> None:
        ns, base, stamp = self.ns, int(now), now / 1000
        cur.executemany(
            sql.UPSERT, [(ns, key, data, None if ms is None else base + ms, stamp) for key, data, ms in rows]
        )

    def keys_page(self, pattern: str, after: str | None) -> tuple[list[str], str | None]:
        """One page of matching keys after ``after``; the second item is where to continue, or None."""
        match = compile_glob(pattern)
        literal = glob_literal_prefix(pattern) if not is_match_all(pattern) else ""
        upper = prefix_upper_bound(literal)
        lower = literal if after is None else after
        statement = sql.keys_page_sql(first=after is None, bounded=upper is not None)
        bounds: tuple[Any, ...] = (self.ns, lower) + ((upper,) if upper is not None else ())
        rows = self._query("keys", None, statement, (*bounds, self._clock() * 1000, sql.KEYS_PAGE))
        found = [row[0] for row in rows if match(row[0])]
        return found, (rows[-1][0] if len(rows) == sql.KEYS_PAGE else None)

    def clear(self) -> None:
        self._write("clear", None, self._clear_in)

    def _clear_in(self, cur: Any, now: float) -> None:
        cur.execute(sql.CLEAR_ITEMS, (self.ns,))
        cur.execute(sql.CLEAR_KEYS, (self.ns,))
        cur.execute(sql.CLEARED, (self.ns, now / 1000))

    def ttl(self, key: str) -> float | None:
        if not self._patient and key in self._large:
            raise WouldBlock("a large value")  # SQLite's search of its row loads it whole
        rows = self._query("ttl", key, sql.EXPIRY, (self.ns, key))
        if not rows or rows[0][0] is None:
            return None
        left: float = (rows[0][0] - self._clock() * 1000) / 1000
        return left if left > 0 else None

    def expire(self, key: str, ms: int | None) -> bool:
        if not self._patient and key in self._large:
            raise WouldBlock("a large value")  # rewriting its row copies megabytes: on the worker
        return self._write("expire", key, self._expire_in, key, ms)

    def _expire_in(self, cur: Any, now: float, key: str, ms: int | None) -> bool:
        params = (None if ms is None else int(now) + ms, now / 1000, self.ns, key, now)
        if self._patient:
            cur.execute(sql.EXPIRE, params)
            return self._changes() > 0
        cur.execute(_EXPIRE_LOOP, params)
        if self._changes() > 0:
            return True
        self._check_size(cur, key)
        return False

    def incr(self, key: str, by: int) -> int:
        return self._write("incr", key, self._incr_in, key, by)

    def _incr_in(self, cur: Any, now: float, key: str, by: int) -> int:
        # Read, check and write in one BEGIN IMMEDIATE transaction: no other writer in between.
        rows = cur.execute(sql.GET, (self.ns, key)).fetchall()
        live = bool(rows) and (rows[0][2] is None or rows[0][2] > now)
        if live:
            kind, data, _ = rows[0]
            if kind:
                raise holds_list(key, "incr", BACKEND)
            try:
                current = orjson.loads(data)
            except orjson.JSONDecodeError:
                current = None
            if current.__class__ is not int:
                raise not_an_integer(key, BACKEND)
            if not -MAX_INT - 1 <= current <= MAX_INT:
                raise not_an_integer(key, BACKEND, BEYOND_64_BITS)
            value = current + by
        else:
            value = by
        if not -MAX_INT - 1 <= value <= MAX_INT:
            raise not_an_integer(key, BACKEND, "would leave the signed 64-bit range")
        data = b"%d" % value  # what orjson writes for an int
        if live:  # the TTL stays
            cur.execute(sql.SET_VALUE, (data, now / 1000, self.ns, key))
        else:  # a missing or expired key starts without one
            cur.execute(sql.UPSERT, (self.ns, key, data, None, now / 1000))
        return value

    def ping(self) -> None:
        self._query("ping", None, "SELECT 1", ())

    # --- replay guard ---------------------------------------------------------------------

    def server_time(self) -> float:
        """The clock every change stamp is taken from, in unix seconds."""
        return self._clock()

    def changed_since(self, keys: list[str], since: float) -> _KeySet:
        """Which of ``keys`` were written, expired by `expire`, deleted or cleared after ``since``.

        One statement for all keys. Exact for ``since`` within the idempotency window; for
        an older ``since`` the deletion records that would answer may have been swept, so
        every key is reported (a replay then records conflicts instead of overwriting).
        Rows from before schema version 3 count as unchanged.
        """
        names = list(dict.fromkeys(validate_keys(keys)))
        if not names:
            return set()
        if since * 1000 < self._clock() * 1000 - self._window_ms:
            return set(names)
        ns = self.ns
        params = (orjson.dumps(names), ns, since, ns, since, ns, since)
        return {row[0] for row in self._query("changed_since", None, sql.CHANGED_SINCE, params)}

    def mark_cleared(self, at: float) -> None:
        """Record a clear of this prefix at ``at`` (never moved back)."""
        self._write("clear", None, self._mark_cleared_in, at)

    def _mark_cleared_in(self, cur: Any, now: float, at: float) -> None:
        cur.execute(sql.CLEARED, (self.ns, at))

    def restamp(self, keys: list[str], at: float) -> None:
        """Date the last change of ``keys`` (row or tombstone) at ``at``, in one transaction."""
        self._write("restamp", None, self._restamp_in, orjson.dumps(list(dict.fromkeys(validate_keys(keys)))), at)

    def _restamp_in(self, cur: Any, now: float, names: bytes, at: float) -> None:
        cur.execute(sql.RESTAMP_KEYS, (at, self.ns, names))
        cur.execute(sql.RESTAMP_TOMBSTONES, (at, self.ns, names))

    # --- lists ----------------------------------------------------------------------------

    def _live_meta(self, rows: list[Any], now: float) -> tuple[int, int, int] | None:
        """(kind, head, tail) from the rows of `sql.META`, or None when absent or expired."""
        if not rows:
            return None
        kind, head, tail, expires = rows[0]
        if expires is not None and expires <= now:
            return None
        return kind, head, tail

    def extend(self, key: str, items: list[bytes], idempotency_id: str | None) -> int:
        operation = "append" if len(items) == 1 else "extend"  # for errors: the hook serves both
        if not items:  # writes nothing: its id is neither looked up nor recorded
            return self._length(key, operation)
        if not self._patient and (len(items) > LOOP_ITEMS or sum(map(len, items)) > LOOP_BYTES):
            raise WouldBlock("a large batch")
        return self._write(operation, key, self._push_in, key, items, idempotency_id, operation)

    def _push_in(
        self, cur: Any, now: float, key: str, items: list[bytes], idempotency_id: str | None, operation: str
    ) -> int:
        ns = self.ns
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
            cur.execute(sql.NEW_LIST, (ns, key, len(items), now / 1000))
        else:
            kind, head, tail, _ = row
            if kind != KIND_LIST:
                raise holds_value(key, operation, BACKEND)
            cur.execute(sql.SET_TAIL, (tail + len(items), now / 1000, ns, key))
        if len(items) == 1:
            cur.execute(sql.PUSH, (ns, key, tail, items[0]))
        else:
            cur.executemany(sql.PUSH, [(ns, key, tail + i, data) for i, data in enumerate(items)])
        length = int(tail + len(items) - head)
        if idempotency_id is not None:
            cur.execute(sql.ID_RECORD, (ns, key, idempotency_id, length, int(now)))
        return length

    def get_range(self, key: str, start: int, end: int) -> list[bytes]:
        # One statement (one snapshot): the key's counters and its items (see `sql.RANGE`).
        if not -_INDEX_CAP <= start <= _INDEX_CAP:  # beyond any list: the same answer, bindable
            start = _INDEX_CAP if start > 0 else -_INDEX_CAP
        if not -_INDEX_CAP <= end <= _INDEX_CAP:
            end = _INDEX_CAP if end > 0 else -_INDEX_CAP
        now = self._clock() * 1000
        if not self._patient:
            return self._range_on_loop(key, start, end, now)
        rows = self._query("get_range", key, sql.RANGE, (self.ns, key, start, end, now))
        if not rows:
            return []
        kind, expires, first = rows[0]
        if expires is not None and expires <= now:
            return []
        if kind != KIND_LIST:
            raise holds_value(key, "get_range", BACKEND)
        return [] if first is None else [row[2] for row in rows]

    def _range_on_loop(self, key: str, start: int, end: int, now: float) -> list[bytes]:
        """`get_range` on the event loop: `WouldBlock` for more than LOOP_ITEMS items or LOOP_BYTES of them.

        Each item may take its share of LOOP_BYTES (among as many items as the range can
        hold), so the first read copies at most LOOP_BYTES, with no sizes to sum. A page
        holding a longer item is read again, its sizes summed row by row (`_bounded`):
        LOOP_BYTES in all stay on the loop.
        """
        most = end - start + 1 if (start < 0) == (end < 0) else LOOP_ITEMS
        share = LOOP_BYTES // min(max(most, 1), LOOP_ITEMS)
        rows = self._query_page(key, (self.ns, key, start, end, now, share))
        items = self._loop_items(rows, key, start, end, now)
        if items is None:
            rows = self._query_bounded("get_range", _RANGE_LOOP_SIZED, (self.ns, key, start, end, now), key)
            items = self._loop_items(rows, key, start, end, now)
            if items is None:  # withheld: one item is longer than LOOP_BYTES (`_bounded` stops sooner)
                raise WouldBlock("a large read")
        return items

    def _loop_items(self, rows: list[Any], key: str, start: int, end: int, now: float) -> list[bytes] | None:
        """The items of `sql.RANGE_LOOP` rows; ``None`` when one was withheld.

        Only the last row read can lack its item: `_query_page` stops after it, and `_bounded`
        raises before answering an item that RANGE_LOOP_SIZED withheld (longer than LOOP_BYTES).
        """
        if not rows:
            return []
        kind, expires, length, first = rows[0]
        if expires is not None and expires <= now:
            return []
        if kind != KIND_LIST:
            raise holds_value(key, "get_range", BACKEND)
        if rows[-1][3] is not None:
            return [row[3] for row in rows]
        if first is None and len(rows) == 1:  # no item read: an empty or a long range, or one withheld item
            lo, hi = lrange_bounds(length, start, end)
            if hi <= lo:
                return []
            if hi - lo > LOOP_ITEMS:
                raise WouldBlock("a long range")
        return None

    def get_length(self, key: str) -> int:
        return self._length(key, "get_length")

    def _length(self, key: str, operation: str) -> int:
        meta = self._live_meta(self._query(operation, key, sql.META, (self.ns, key)), self._clock() * 1000)
        if meta is None:
            return 0
        kind, head, tail = meta
        if kind != KIND_LIST:
            raise holds_value(key, operation, BACKEND)
        return tail - head

    def trim(self, key: str, start: int, end: int) -> int:
        return self._write("trim", key, self._trim_in, key, start, end)

    def _trim_in(self, cur: Any, now: float, key: str, start: int, end: int) -> int:
        # O(removed): item rows go from the ends by primary-key range; the kept items keep
        # their positions (relative to the head), so nothing is renumbered. Idempotency ids stay.
        ns = self.ns
        meta = self._live_meta(cur.execute(sql.META, (ns, key)).fetchall(), now)
        if meta is None:
            return 0
        kind, head, tail = meta
        if kind != KIND_LIST:
            raise holds_value(key, "trim", BACKEND)
        length = tail - head
        lo, hi = lrange_bounds(length, start, end)
        if length - max(hi - lo, 0) > LOOP_ITEMS and not self._patient:
            raise WouldBlock("a long trim")
        if hi <= lo:  # nothing kept: the list goes, dated as a delete
            self._delete_in(cur, now, [key])
            return length
        if hi - lo == length:
            return 0
        if lo:
            cur.execute(sql.DROP_ITEMS, (ns, key, head, head + lo))
        if hi < length:
            cur.execute(sql.DROP_ITEMS, (ns, key, head + hi, tail))
        cur.execute(sql.SET_BOUNDS, (head + lo, head + hi, now / 1000, ns, key))
        return length - (hi - lo)

    # --- live updates (`watch`) -------------------------------------------------------------

    def watch_signature(self) -> tuple[int, int]:
        """What changes when anything commits to the file: ``PRAGMA data_version`` (commits of
        other connections, other processes included) and this connection's own change count."""
        with self._lock:
            try:
                version = self._cur.execute("PRAGMA data_version").fetchall()[0][0]
                return int(version), int(self._conn.total_changes()) if self._conn is not None else 0
            except apsw.Error as exc:
                raise self._error(exc, "watch") from exc

    def watch_read(self, key: str, position: int, limit: int) -> tuple[list[tuple[int, bytes]], int]:
        """Up to ``limit`` ``(position, item)`` from ``position`` on, and the list's next position.

        A position is the item's ``idx`` (never renumbered by a front trim); one snapshot.
        """
        return self._snapshot("watch", key, self._watch_in, key, position, limit)

    def _watch_in(self, cur: Any, now: float, key: str, position: int, limit: int) -> tuple[list[Any], int]:
        meta = self._live_meta(cur.execute(sql.META, (self.ns, key)).fetchall(), now)
        if meta is None:
            return [], 0
        kind, head, tail = meta
        if kind != KIND_LIST:
            raise holds_value(key, "watch", BACKEND)
        if limit <= 0 or position >= tail:
            return [], tail
        rows = cur.execute(sql.RANGE_FROM, (self.ns, key, max(position, head), tail, limit)).fetchall()
        return [(int(idx), value) for idx, value in rows], tail
