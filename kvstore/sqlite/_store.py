# Generated from kvstore/sqlite/_store_async.py by tools/unasync.py: do not edit; edit the async source.
"""SQLite database backend on apsw: WAL, busy timeout, BEGIN IMMEDIATE writes, O(k) lists."""

from __future__ import annotations

import os
import time
import types
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

from kvstore.errors import MissingDependencyError

try:
    import apsw
except ImportError as exc:  # pragma: no cover - exercised by the missing-extra test
    raise MissingDependencyError("sqlite", "sqlite", "apsw") from exc

from kvstore._core.closed import Closed as _Closed
from kvstore._core.codec import DEFAULT_MAX_VALUE_BYTES
from kvstore._core.idempotency import DEFAULT_IDEMPOTENCY_WINDOW
from kvstore._core.keys import validate_prefix
from kvstore._core.watch import check_poll_interval
from kvstore.base import LIST_HOOKS, VALUE_HOOKS, Database
from kvstore.config import DEFAULT_SQLITE_PATH
from kvstore.sqlite._engine import MEMORY, SqliteEngine, WouldBlock
from kvstore.sqlite._worker import SqliteWorker

__all__ = ["SqliteDatabase", "SqliteWatcher"]

#: `changed_since`'s answer (the class defines a ``set`` method, which hides the builtin there).
_KeySet = set[str]

#: Raw hooks that are the engine's method of the same name (the sync store binds them directly).
_DIRECT = VALUE_HOOKS + LIST_HOOKS

T = TypeVar("T")
#: What an ``def`` returns: a hook that could not finish on the loop returns one to await.
_Coroutine = types.CoroutineType

#: Why a write serving a loop goes to the worker: it is busy, or commits sync the WAL (``synchronous="FULL"``).
_WORKER_WRITES = WouldBlock("a write on the worker")
#: Seconds between two tries of a call that found the write lock taken: doubling from the first to the last.
_POLL_FIRST = 0.0005
_POLL_MAX = 0.01


class SqliteDatabase(Database):
    """Database tier in a SQLite file (WAL): durable, shared safely by threads and processes.

    Args:
        path: The database file (parent directories are created), ``":memory:"``, or
            a ready ``apsw.Connection``, which the store uses but does not close
            (stores sharing one connection share its data, ``":memory:"`` included).
        key_prefix: Namespace of this store; stores with other prefixes never see its keys.
        synchronous: ``"NORMAL"`` (survives a crash of the process) or ``"FULL"``
            (also survives power loss, slower commits).
        busy_timeout: Seconds a writer waits for another connection's lock before
            `BackendBusyError` (busy is not an outage: nothing falls back).
        max_value_bytes: Largest encoded value accepted.
        clock: Wall-clock seconds (``time.time``); expiry times are stored in the file.
        purge_interval: Seconds between sweeps of expired rows (run by a write).
        idempotency_window: Seconds an append's idempotency id is remembered (default
            one day); the sweep removes older ids of every prefix in the file.
        connect_timeout: Seconds opening the file may wait for another connection's lock
            (creating or migrating it); ``None``: ``busy_timeout``.

    The sync class opens the file in its constructor; the async class opens it on its
    first call (or in `from_config`), on a worker thread of its own. After that, a call
    that cannot block runs on the event loop, as fast as the sync store: WAL readers
    never wait, and a write takes the write lock only if it is free at once. A write
    that finds the lock taken by another connection retries without blocking the loop
    (nothing is held meanwhile, so reads go on) until ``busy_timeout``, then raises
    `BackendBusyError`; long work (a batch of more than 128 keys or items or 256 KiB,
    a read of more than 256 KiB of values, a due expiry sweep, `clear`, a checkpoint of the WAL, any call running past a
    millisecond or two of SQLite work) runs on the worker, which never waits there for
    a lock either. The loop and the worker never use the connection at once, and calls
    made one after the other keep their order, even when one was cancelled. With
    ``synchronous="FULL"`` (a sync of the WAL at every commit) writes run on the
    worker. Every call on a handed ``apsw.Connection`` (it may be in use elsewhere)
    runs on the worker and waits there for locks, as the sync store does.

    Fork-safe: in a process forked from the one that opened it (gunicorn ``--preload``,
    multiprocessing), the store opens a connection of its own on first use and never
    uses the parent's (DESIGN.md §8).
    """

    backend = "sqlite"
    durable = True
    tracks_changes = True

    def __init__(
        self,
        path: str | os.PathLike[str] | apsw.Connection = DEFAULT_SQLITE_PATH,
        *,
        key_prefix: str = "",
        synchronous: str = "NORMAL",
        busy_timeout: float = 5.0,
        max_value_bytes: int = DEFAULT_MAX_VALUE_BYTES,
        clock: Callable[[], float] = time.time,
        purge_interval: float = 60.0,
        idempotency_window: float = DEFAULT_IDEMPOTENCY_WINDOW,
        connect_timeout: float | None = None,
    ) -> None:
        self.key_prefix = validate_prefix(key_prefix)
        self.max_value_bytes = max_value_bytes
        # Calls run in order on the worker's thread, off the event loop (sync: in the caller's).
        self._worker = SqliteWorker("kvstore-sqlite")
        self._engine: SqliteEngine = SqliteEngine(
            path,
            key_prefix=key_prefix,
            synchronous=synchronous,
            busy_timeout=busy_timeout,
            clock=clock,
            purge_interval=purge_interval,
            idempotency_window=idempotency_window,
            serves_loop=self._worker.serves_loop,
        )
        self.path = self._engine.path
        if self.path in ("", MEMORY) or self.path.startswith("file::memory:"):
            # Health must not call an in-memory database durable.
            self.durable = False  # type: ignore[misc]  # per-instance override of the class default
        self._connect_timeout = connect_timeout
        self._worker.at_init(self._engine.open, connect_timeout)
        self._worker.direct(self, self._engine, _DIRECT)

    def _opened(self) -> None:
        """`from_config`: open the file within ``connect_timeout``, then check it answers."""
        self._off_loop(self._engine.open, self._connect_timeout)
        self.ping()

    def __repr__(self) -> str:
        state = "closed" if isinstance(self._engine, _Closed) else "open"
        return f"<{type(self).__name__} path={self.path!r} prefix={self.key_prefix!r} {state}>"

    # --- where a call runs ------------------------------------------------------------------

    def _run_read(self, fn: Callable[..., T], *args: Any) -> T:
        return fn(*args)

    def _run_write(self, fn: Callable[..., T], *args: Any) -> T:
        return fn(*args)

    def _worker_write(self, fn: Callable[..., T], *args: Any) -> T:
        return fn(*args)

    def _off_loop(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` on the worker, waiting there up to ``busy_timeout`` for another connection's lock.

        For reads, opening, the expiry sweep, and every call of a store on a handed connection.
        """
        engine = self._engine
        result: T = self._worker.run(engine.patiently, engine.busy_timeout, fn, *args)
        return result

    # --- raw hooks: the engine's methods, on the loop when they cannot block ----------------
    # The hot ones (`_get`, `_set`, `_mget`, `_mset`, `_extend`, `_get_range`) are plain
    # functions: see `_run_read`. The sync store binds the engine's methods instead.

    def _get(self, key: str) -> Any:
        return self._run_read(self._engine.get, key)

    def _get_touch(self, key: str, ms: int) -> bytes | None:
        result: Any = self._run_write(self._engine.get_touch, key, ms)
        return result  # type: ignore[no-any-return]  # the engine's answer

    def _set(self, key: str, data: bytes, ms: int | None, only_if_absent: bool) -> Any:
        return self._run_write(self._engine.set, key, data, ms, only_if_absent)

    def _delete(self, key: str) -> bool:
        result: Any = self._run_write(self._engine.delete, key)
        return result  # type: ignore[no-any-return]  # the engine's answer

    def _delete_many(self, keys: list[str]) -> int:
        result: Any = self._run_write(self._engine.delete_many, keys)
        return result  # type: ignore[no-any-return]  # the engine's answer

    def _exists(self, key: str) -> bool:
        result: Any = self._run_read(self._engine.exists, key)
        return result  # type: ignore[no-any-return]  # the engine's answer

    def _mget(self, keys: list[str]) -> Any:
        return self._run_read(self._engine.mget, keys)

    def _mset(self, rows: list[tuple[str, bytes, int | None]]) -> Any:
        return self._run_write(self._engine.mset, rows)

    def _iter_keys(self, pattern: str) -> Iterator[str]:
        after: str | None = None
        while True:
            page: Any = self._run_read(self._engine.keys_page, pattern, after)
            found, after = page
            yield from found
            if after is None:
                return

    def _clear(self) -> None:
        self._worker_write(self._engine.clear)

    def _ttl(self, key: str) -> float | None:
        result: Any = self._run_read(self._engine.ttl, key)
        return result  # type: ignore[no-any-return]  # the engine's answer

    def _expire(self, key: str, ms: int | None) -> bool:
        result: Any = self._run_write(self._engine.expire, key, ms)
        return result  # type: ignore[no-any-return]  # the engine's answer

    def _incr(self, key: str, by: int) -> int:
        result: Any = self._run_write(self._engine.incr, key, by)
        return result  # type: ignore[no-any-return]  # the engine's answer

    def _extend(self, key: str, items: list[bytes], idempotency_id: str | None) -> Any:
        return self._run_write(self._engine.extend, key, items, idempotency_id)

    def _get_range(self, key: str, start: int, end: int) -> Any:
        return self._run_read(self._engine.get_range, key, start, end)

    def _get_length(self, key: str) -> int:
        result: Any = self._run_read(self._engine.get_length, key)
        return result  # type: ignore[no-any-return]  # the engine's answer

    def _trim(self, key: str, start: int, end: int) -> int:
        result: Any = self._run_write(self._engine.trim, key, start, end)
        return result  # type: ignore[no-any-return]  # the engine's answer

    def _watcher(self, key: str, poll_interval: float | None) -> SqliteWatcher:
        return SqliteWatcher(self, key, check_poll_interval(poll_interval, 0.05))

    # --- replay guard (see `Database`) ---------------------------------------------

    def server_time(self) -> float:
        """The store's clock (``clock``, ``time.time`` by default): every change is stamped with it."""
        return self._engine.server_time()

    def changed_since(self, keys: Iterable[str], since: float) -> _KeySet:
        """Which of ``keys`` were written, expired by `expire`, deleted or cleared after ``since``.

        One query for all keys. Exact while ``since`` is within ``idempotency_window``
        of now; deletion records older than that are swept with the expired rows, so for
        an older ``since`` every key is reported as changed (never a silent overwrite).
        """
        return self._off_loop(self._engine.changed_since, list(keys), since)

    def mark_cleared(self, at: float) -> None:
        """Record a clear of this prefix at ``at`` (see `Database.mark_cleared`)."""
        self._worker_write(self._engine.mark_cleared, at)

    def restamp(self, keys: Iterable[str], at: float) -> None:
        """Date the last change of ``keys`` at ``at`` (see `Database.restamp`)."""
        self._worker_write(self._engine.restamp, list(keys), at)

    # --- lifecycle ------------------------------------------------------------------------

    def ping(self) -> None:
        self._engine.ping()

    def purge_expired(self) -> int:
        """Delete every expired row now (normally a write does it every ``purge_interval``)."""
        return self._off_loop(self._engine.purge_expired)

    def close(self) -> None:
        engine = self._engine
        if isinstance(engine, _Closed):
            return
        self._engine = _Closed(type(self).__name__, "sqlite")  # type: ignore[assignment]  # duck-typed stand-in
        for name in _DIRECT:  # drop the sync store's direct bindings: calls now reach _Closed and raise
            self.__dict__.pop(f"_{name}", None)
        self._worker.run(engine.patiently, engine.busy_timeout, engine.close)
        self._worker.close()


class SqliteWatcher:
    """One `watch` of one list: polls ``PRAGMA data_version`` every ``interval`` seconds.

    The store's own connection answers, on its worker thread: ``data_version`` changes when
    another connection (any process) commits, the connection's change count when this one
    does. The signature is taken before each read, so a commit is never missed.
    """

    def __init__(self, store: SqliteDatabase, key: str, interval: float) -> None:
        self._store = store
        self._key = key
        self._interval = interval
        self._seen = (-1, -1)

    def __enter__(self) -> SqliteWatcher:
        self._seen = self._store._off_loop(self._store._engine.watch_signature)
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def read(self, position: int, limit: int) -> tuple[list[tuple[int, bytes]], int]:
        return self._store._off_loop(self._store._engine.watch_read, self._key, position, limit)

    def wait(self) -> bool:
        """One poll interval, then whether something committed since the last look (read again)."""
        time.sleep(self._interval)
        seen = self._store._off_loop(self._store._engine.watch_signature)
        if seen == self._seen:
            return False
        self._seen = seen
        return True
