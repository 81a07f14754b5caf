"""SQLite database backend on apsw: WAL, busy timeout, BEGIN IMMEDIATE writes, O(k) lists."""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any

from kvstore.errors import MissingDependencyError

try:
    import apsw
except ImportError as exc:  # pragma: no cover - exercised by the missing-extra test
    raise MissingDependencyError("sqlite", "sqlite", "apsw") from exc

from kvstore._core.acompat import AsyncWorker
from kvstore._core.closed import Closed as _Closed
from kvstore._core.codec import DEFAULT_MAX_VALUE_BYTES
from kvstore._core.idempotency import DEFAULT_IDEMPOTENCY_WINDOW
from kvstore._core.keys import validate_prefix
from kvstore.base_async import LIST_HOOKS, VALUE_HOOKS, AsyncDatabase
from kvstore.config import DEFAULT_SQLITE_PATH
from kvstore.sqlite._engine import MEMORY, SqliteEngine

__all__ = ["AsyncSqliteDatabase"]

#: `changed_since`'s answer (the class defines a ``set`` method, which hides the builtin there).
_KeySet = set[str]

#: Raw hooks that are the engine's method of the same name (the sync store binds them directly).
_DIRECT = VALUE_HOOKS + LIST_HOOKS


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
    first call (or in `from_config`) and does every blocking call on a worker thread of
    its own, so the event loop never waits on the file or on another process's lock.

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
        self._engine: SqliteEngine = SqliteEngine(
            path,
            key_prefix=key_prefix,
            synchronous=synchronous,
            busy_timeout=busy_timeout,
            clock=clock,
            purge_interval=purge_interval,
            idempotency_window=idempotency_window,
        )
        self.path = self._engine.path
        if self.path in ("", MEMORY) or self.path.startswith("file::memory:"):
            # Health must not call an in-memory database durable.
            self.durable = False  # type: ignore[misc]  # per-instance override of the class default
        self._connect_timeout = connect_timeout
        # Calls run in order on the worker's thread, off the event loop (sync: in the caller's).
        self._worker = AsyncWorker("kvstore-sqlite")
        self._worker.at_init(self._engine.open, connect_timeout)
        self._worker.direct(self, self._engine, _DIRECT)

    async def _opened(self) -> None:
        """`from_config`: open the file within ``connect_timeout``, then check it answers."""
        await self._worker.run(self._engine.open, self._connect_timeout)
        await self.ping()

    def __repr__(self) -> str:
        state = "closed" if isinstance(self._engine, _Closed) else "open"
        return f"<{type(self).__name__} path={self.path!r} prefix={self.key_prefix!r} {state}>"

    # --- raw hooks: the engine's methods, on the worker ---------------------------------

    async def _get(self, key: str) -> bytes | None:
        return await self._worker.run(self._engine.get, key)

    async def _get_touch(self, key: str, ms: int) -> bytes | None:
        return await self._worker.run(self._engine.get_touch, key, ms)

    async def _set(self, key: str, data: bytes, ms: int | None, only_if_absent: bool) -> bool:
        return await self._worker.run(self._engine.set, key, data, ms, only_if_absent)

    async def _delete(self, key: str) -> bool:
        return await self._worker.run(self._engine.delete, key)

    async def _delete_many(self, keys: list[str]) -> int:
        return await self._worker.run(self._engine.delete_many, keys)

    async def _exists(self, key: str) -> bool:
        return await self._worker.run(self._engine.exists, key)

    async def _mget(self, keys: list[str]) -> list[bytes | None]:
        return await self._worker.run(self._engine.mget, keys)

    async def _mset(self, rows: list[tuple[str, bytes, int | None]]) -> None:
        await self._worker.run(self._engine.mset, rows)

    if True:  # ASYNC

        async def _get_batch(self, keys: list[str]) -> list[Any]:
            # A batch of concurrent gets (kvstore._core.batching): one query, one worker hop.
            return await self._worker.run(self._engine.get_batch, keys)

    async def _iter_keys(self, pattern: str) -> AsyncIterator[str]:
        after: str | None = None
        while True:
            found, after = await self._worker.run(self._engine.keys_page, pattern, after)
            for key in found:
                yield key
            if after is None:
                return

    async def _clear(self) -> None:
        await self._worker.run(self._engine.clear)

    async def _ttl(self, key: str) -> float | None:
        return await self._worker.run(self._engine.ttl, key)

    async def _expire(self, key: str, ms: int | None) -> bool:
        return await self._worker.run(self._engine.expire, key, ms)

    async def _incr(self, key: str, by: int) -> int:
        return await self._worker.run(self._engine.incr, key, by)

    async def _extend(self, key: str, items: list[bytes], idempotency_id: str | None) -> int:
        return await self._worker.run(self._engine.extend, key, items, idempotency_id)

    async def _get_range(self, key: str, start: int, end: int) -> list[bytes]:
        return await self._worker.run(self._engine.get_range, key, start, end)

    async def _get_length(self, key: str) -> int:
        return await self._worker.run(self._engine.get_length, key)

    async def _trim(self, key: str, start: int, end: int) -> int:
        return await self._worker.run(self._engine.trim, key, start, end)

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
        return await self._worker.run(self._engine.changed_since, list(keys), since)

    async def mark_cleared(self, at: float) -> None:
        """Record a clear of this prefix at ``at`` (see `AsyncDatabase.mark_cleared`)."""
        await self._worker.run(self._engine.mark_cleared, at)

    async def restamp(self, keys: Iterable[str], at: float) -> None:
        """Date the last change of ``keys`` at ``at`` (see `AsyncDatabase.restamp`)."""
        await self._worker.run(self._engine.restamp, list(keys), at)

    # --- lifecycle ------------------------------------------------------------------------

    async def ping(self) -> None:
        await self._worker.run(self._engine.ping)

    async def purge_expired(self) -> int:
        """Delete every expired row now (normally a write does it every ``purge_interval``)."""
        return await self._worker.run(self._engine.purge_expired)

    async def aclose(self) -> None:
        engine = self._engine
        if isinstance(engine, _Closed):
            return
        self._engine = _Closed(type(self).__name__, "sqlite")  # type: ignore[assignment]  # duck-typed stand-in
        for name in _DIRECT:  # drop the sync store's direct bindings: calls now reach _Closed and raise
            self.__dict__.pop(f"_{name}", None)
        await self._worker.run(engine.close)
        await self._worker.aclose()
