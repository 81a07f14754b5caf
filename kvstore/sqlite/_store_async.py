"""SQLite database backend on apsw: WAL, busy timeout, BEGIN IMMEDIATE writes, O(k) lists."""

from __future__ import annotations

import asyncio
import os
import time
import types
from collections.abc import AsyncIterator, Callable, Iterable
from time import perf_counter
from typing import Any, TypeVar

from kvstore.errors import BackendBusyError, MissingDependencyError

try:
    import apsw
except ImportError as exc:  # pragma: no cover - exercised by the missing-extra test
    raise MissingDependencyError("sqlite", "sqlite", "apsw") from exc

from kvstore._core.closed import Closed as _Closed
from kvstore._core.codec import DEFAULT_MAX_VALUE_BYTES
from kvstore._core.idempotency import DEFAULT_IDEMPOTENCY_WINDOW
from kvstore._core.keys import validate_prefix
from kvstore._core.watch import check_poll_interval
from kvstore.base_async import LIST_HOOKS, VALUE_HOOKS, AsyncDatabase
from kvstore.config import DEFAULT_SQLITE_PATH
from kvstore.sqlite._engine import MEMORY, LockBusy, SqliteEngine, WouldBlock
from kvstore.sqlite._worker import TURN_BUDGET, AsyncSqliteWorker, begin_turn, turn

__all__ = ["AsyncSqliteDatabase", "AsyncSqliteWatcher"]

#: `changed_since`'s answer (the class defines a ``set`` method, which hides the builtin there).
_KeySet = set[str]

#: Raw hooks that are the engine's method of the same name (the sync store binds them directly).
_DIRECT = VALUE_HOOKS + LIST_HOOKS

T = TypeVar("T")
#: What an ``async def`` returns: a hook that could not finish on the loop returns one to await.
_Coroutine = types.CoroutineType

#: Why a write serving a loop goes to the worker: it is busy, or commits sync the WAL (``synchronous="FULL"``).
_WORKER_WRITES = WouldBlock("a write on the worker")
#: Seconds between two tries of a call that found the write lock taken: doubling from the first to the last.
_POLL_FIRST = 0.0005
_POLL_MAX = 0.01


class AsyncSqliteDatabase(AsyncDatabase):
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
        self._worker = AsyncSqliteWorker("kvstore-sqlite")
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

    async def _opened(self) -> None:
        """`from_config`: open the file within ``connect_timeout``, then check it answers."""
        await self._off_loop(self._engine.open, self._connect_timeout)
        await self.ping()

    def __repr__(self) -> str:
        state = "closed" if isinstance(self._engine, _Closed) else "open"
        return f"<{type(self).__name__} path={self.path!r} prefix={self.key_prefix!r} {state}>"

    # --- where a call runs ------------------------------------------------------------------

    if True:  # ASYNC

        def _run_read(self, fn: Callable[..., T], *args: Any) -> Any:
            """``fn(*args)`` now, on the loop, if it cannot block; else a coroutine that waits for it elsewhere.

            A plain function, so the public methods await only when there is something to await.
            """
            worker = self._worker
            if self._engine.loop_reads and worker.claim():
                try:
                    started = turn.started
                    if not started:
                        begin_turn()
                    elif perf_counter() - started > TURN_BUDGET:
                        return self._next_turn(False, fn, args)
                    try:
                        return fn(*args)
                    except WouldBlock as exc:
                        return self._later(exc, False, fn, args)
                finally:
                    worker.release()
            return self._off_loop(fn, *args)

        def _run_write(self, fn: Callable[..., T], *args: Any) -> Any:
            """`_run_read` for a call that writes: it may also start a checkpoint of the WAL on the worker."""
            engine = self._engine
            worker = self._worker
            if engine.loop_writes and worker.claim():
                try:
                    started = turn.started
                    if not started:
                        begin_turn()
                    elif perf_counter() - started > TURN_BUDGET:
                        return self._next_turn(True, fn, args)
                    try:
                        result = fn(*args)
                    except WouldBlock as exc:
                        return self._later(exc, True, fn, args)
                finally:
                    worker.release()
                if engine.checkpoint_due:
                    self._checkpoint()
                return result
            if engine.loop_reads:  # the worker writes, but never waits there for a lock
                return self._later(_WORKER_WRITES, True, fn, args)
            return self._off_loop(fn, *args)

        async def _next_turn(self, writes: bool, fn: Callable[..., T], args: tuple[Any, ...]) -> T:
            """The call, after letting the loop run its other tasks (see `TURN_BUDGET`)."""
            await asyncio.sleep(0)
            ongoing = turn.started
            if ongoing and turn.loop is asyncio.get_running_loop():
                # Another caller's turn of this loop pass used up the budget (many tasks calling at
                # once): this call, which waited a pass already, runs now all the same, but the turn
                # keeps its start, so this caller's next call waits for the next pass. A fresh turn
                # for each resumed caller made one pass run tasks x TURN_BUDGET of store calls.
                turn.started = perf_counter()
                try:
                    result: Any = self._run_write(fn, *args) if writes else self._run_read(fn, *args)
                finally:
                    turn.started = ongoing
            else:
                # A new turn: the loop ran since the last one, or its reset never will (its loop
                # was closed, or this is a forked child).
                begin_turn()
                result = self._run_write(fn, *args) if writes else self._run_read(fn, *args)
            if result.__class__ is _Coroutine:
                result = await result
            return result  # type: ignore[no-any-return]  # the engine's answer

        def _checkpoint(self) -> None:
            engine = self._engine
            engine.checkpoint_due = False
            self._worker.start(engine.checkpoint)

        async def _later(self, why: WouldBlock, writes: bool, fn: Callable[..., T], args: tuple[Any, ...]) -> T:
            """Finish a call that would have blocked the loop: nothing of it was written.

            Nothing ever waits inside SQLite for another connection's lock, on the loop or
            on the worker (which would hold the connection meanwhile): while the lock is
            taken, the loop tries again after a pause (doubling up to 10 ms), holding
            nothing in between, so this store's reads and other calls go on. A short call
            is tried again itself on the loop; long work checks on the loop that the lock
            is free, then runs on the worker without waiting. After ``busy_timeout``: the
            busy error. A long read runs on the worker at once (WAL readers do not wait).
            """
            engine = self._engine
            long = not isinstance(why, LockBusy)
            if long and not writes:
                return await self._off_loop(fn, *args)
            deadline = time.monotonic() + engine.busy_timeout
            pause = _POLL_FIRST
            while True:
                if long:
                    try:  # on the worker, if the lock is free now
                        return await self._worker.run(engine.patiently, 0.0, fn, *args)
                    except BackendBusyError as exc:
                        why = LockBusy(exc)
                while True:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        assert isinstance(why, LockBusy)
                        raise why.error from why.error.__cause__
                    await asyncio.sleep(min(pause, left))
                    pause = min(pause * 2, _POLL_MAX)
                    if not engine.loop_reads:  # closed, or a forked child: the worker answers
                        return await self._worker.run(engine.patiently, max(left, 0.0), fn, *args)
                    if not self._worker.claim():
                        continue  # the worker (or another thread's loop) has the connection: look again later
                    try:
                        if long or (writes and not engine.loop_writes):
                            long = True
                            if engine.write_lock_free():
                                break
                            continue
                        try:
                            result = fn(*args)
                        except LockBusy as exc:
                            why = exc
                            continue
                        except WouldBlock:  # long after all (a sweep came due): the worker runs it
                            long = True
                            break
                    finally:
                        self._worker.release()
                    if writes and engine.checkpoint_due:
                        self._checkpoint()
                    return result

        async def _worker_write(self, fn: Callable[..., T], *args: Any) -> T:
            """A write that always runs on the worker (`clear`, the replay guard's), waiting for a lock as `_later`."""
            if self._engine.loop_reads:
                return await self._later(_WORKER_WRITES, True, fn, args)
            return await self._off_loop(fn, *args)

    else:

        def _run_read(self, fn: Callable[..., T], *args: Any) -> T:
            return fn(*args)

        def _run_write(self, fn: Callable[..., T], *args: Any) -> T:
            return fn(*args)

        def _worker_write(self, fn: Callable[..., T], *args: Any) -> T:
            return fn(*args)

    async def _off_loop(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` on the worker, waiting there up to ``busy_timeout`` for another connection's lock.

        For reads, opening, the expiry sweep, and every call of a store on a handed connection.
        """
        engine = self._engine
        result: T = await self._worker.run(engine.patiently, engine.busy_timeout, fn, *args)
        return result

    # --- raw hooks: the engine's methods, on the loop when they cannot block ----------------
    # The hot ones (`_get`, `_set`, `_mget`, `_mset`, `_extend`, `_get_range`) are plain
    # functions: see `_run_read`. The sync store binds the engine's methods instead.

    def _get(self, key: str) -> Any:
        return self._run_read(self._engine.get, key)

    async def _get_touch(self, key: str, ms: int) -> bytes | None:
        result: Any = self._run_write(self._engine.get_touch, key, ms)
        if result.__class__ is _Coroutine:
            result = await result
        return result  # type: ignore[no-any-return]  # the engine's answer

    def _set(self, key: str, data: bytes, ms: int | None, only_if_absent: bool) -> Any:
        return self._run_write(self._engine.set, key, data, ms, only_if_absent)

    async def _delete(self, key: str) -> bool:
        result: Any = self._run_write(self._engine.delete, key)
        if result.__class__ is _Coroutine:
            result = await result
        return result  # type: ignore[no-any-return]  # the engine's answer

    async def _delete_many(self, keys: list[str]) -> int:
        result: Any = self._run_write(self._engine.delete_many, keys)
        if result.__class__ is _Coroutine:
            result = await result
        return result  # type: ignore[no-any-return]  # the engine's answer

    async def _exists(self, key: str) -> bool:
        result: Any = self._run_read(self._engine.exists, key)
        if result.__class__ is _Coroutine:
            result = await result
        return result  # type: ignore[no-any-return]  # the engine's answer

    def _mget(self, keys: list[str]) -> Any:
        return self._run_read(self._engine.mget, keys)

    def _mset(self, rows: list[tuple[str, bytes, int | None]]) -> Any:
        return self._run_write(self._engine.mset, rows)

    if True:  # ASYNC

        async def _get_batch(self, keys: list[str]) -> list[Any]:
            # A batch of concurrent gets (kvstore._core.batching): one query, one worker hop.
            return await self._off_loop(self._engine.get_batch, keys)

    async def _iter_keys(self, pattern: str) -> AsyncIterator[str]:
        after: str | None = None
        while True:
            page: Any = self._run_read(self._engine.keys_page, pattern, after)
            if page.__class__ is _Coroutine:
                page = await page
            found, after = page
            for key in found:
                yield key
            if after is None:
                return

    async def _clear(self) -> None:
        await self._worker_write(self._engine.clear)

    async def _ttl(self, key: str) -> float | None:
        result: Any = self._run_read(self._engine.ttl, key)
        if result.__class__ is _Coroutine:
            result = await result
        return result  # type: ignore[no-any-return]  # the engine's answer

    async def _expire(self, key: str, ms: int | None) -> bool:
        result: Any = self._run_write(self._engine.expire, key, ms)
        if result.__class__ is _Coroutine:
            result = await result
        return result  # type: ignore[no-any-return]  # the engine's answer

    async def _incr(self, key: str, by: int) -> int:
        result: Any = self._run_write(self._engine.incr, key, by)
        if result.__class__ is _Coroutine:
            result = await result
        return result  # type: ignore[no-any-return]  # the engine's answer

    def _extend(self, key: str, items: list[bytes], idempotency_id: str | None) -> Any:
        return self._run_write(self._engine.extend, key, items, idempotency_id)

    def _get_range(self, key: str, start: int, end: int) -> Any:
        return self._run_read(self._engine.get_range, key, start, end)

    async def _get_length(self, key: str) -> int:
        result: Any = self._run_read(self._engine.get_length, key)
        if result.__class__ is _Coroutine:
            result = await result
        return result  # type: ignore[no-any-return]  # the engine's answer

    async def _trim(self, key: str, start: int, end: int) -> int:
        result: Any = self._run_write(self._engine.trim, key, start, end)
        if result.__class__ is _Coroutine:
            result = await result
        return result  # type: ignore[no-any-return]  # the engine's answer

    def _watcher(self, key: str, poll_interval: float | None) -> AsyncSqliteWatcher:
        return AsyncSqliteWatcher(self, key, check_poll_interval(poll_interval, 0.05))

    # --- replay guard (see `AsyncDatabase`) ---------------------------------------------

    async def server_time(self) -> float:
        """The store's clock (``clock``, ``time.time`` by default): every change is stamped with it."""
        return self._engine.server_time()

    async def changed_since(self, keys: Iterable[str], since: float) -> _KeySet:
        """Which of ``keys`` were written, expired by `expire`, deleted or cleared after ``since``.

        One query for all keys. Exact while ``since`` is within ``idempotency_window``
        of now; deletion records older than that are swept with the expired rows, so for
        an older ``since`` every key is reported as changed (never a silent overwrite).
        """
        return await self._off_loop(self._engine.changed_since, list(keys), since)

    async def mark_cleared(self, at: float) -> None:
        """Record a clear of this prefix at ``at`` (see `AsyncDatabase.mark_cleared`)."""
        await self._worker_write(self._engine.mark_cleared, at)

    async def restamp(self, keys: Iterable[str], at: float) -> None:
        """Date the last change of ``keys`` at ``at`` (see `AsyncDatabase.restamp`)."""
        await self._worker_write(self._engine.restamp, list(keys), at)

    # --- lifecycle ------------------------------------------------------------------------

    async def ping(self) -> None:
        if True:  # ASYNC
            done: Any = self._run_read(self._engine.ping)
            if done.__class__ is _Coroutine:
                await done
        else:
            self._engine.ping()

    async def purge_expired(self) -> int:
        """Delete every expired row now (normally a write does it every ``purge_interval``)."""
        return await self._off_loop(self._engine.purge_expired)

    async def aclose(self) -> None:
        engine = self._engine
        if isinstance(engine, _Closed):
            return
        self._engine = _Closed(type(self).__name__, "sqlite")  # type: ignore[assignment]  # duck-typed stand-in
        for name in _DIRECT:  # drop the sync store's direct bindings: calls now reach _Closed and raise
            self.__dict__.pop(f"_{name}", None)
        await self._worker.run(engine.patiently, engine.busy_timeout, engine.close)
        await self._worker.aclose()


class AsyncSqliteWatcher:
    """One `watch` of one list: polls ``PRAGMA data_version`` every ``interval`` seconds.

    The store's own connection answers, on its worker thread: ``data_version`` changes when
    another connection (any process) commits, the connection's change count when this one
    does. The signature is taken before each read, so a commit is never missed.
    """

    def __init__(self, store: AsyncSqliteDatabase, key: str, interval: float) -> None:
        self._store = store
        self._key = key
        self._interval = interval
        self._seen = (-1, -1)

    async def __aenter__(self) -> AsyncSqliteWatcher:
        self._seen = await self._store._off_loop(self._store._engine.watch_signature)
        return self

    async def __aexit__(self, *exc: object) -> None:
        pass

    async def read(self, position: int, limit: int) -> tuple[list[tuple[int, bytes]], int]:
        return await self._store._off_loop(self._store._engine.watch_read, self._key, position, limit)

    async def wait(self) -> bool:
        """One poll interval, then whether something committed since the last look (read again)."""
        await asyncio.sleep(self._interval)
        seen = await self._store._off_loop(self._store._engine.watch_signature)
        if seen == self._seen:
            return False
        self._seen = seen
        return True
