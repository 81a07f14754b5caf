"""SQLite database backend on apsw: WAL, busy timeout, BEGIN IMMEDIATE writes, O(k) lists."""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from typing import Any, Self, TypeVar

from kvstore.errors import MissingDependencyError

try:
    import apsw
except ImportError as exc:  # pragma: no cover - exercised by the missing-extra test
    raise MissingDependencyError("sqlite", "sqlite", "apsw") from exc

from kvstore._core.closed import Closed as _Closed
from kvstore._core.codec import DEFAULT_MAX_VALUE_BYTES
from kvstore._core.idempotency import DEFAULT_IDEMPOTENCY_WINDOW
from kvstore._core.items import MsetItems
from kvstore._core.keys import validate_prefix
from kvstore._core.ttl import TTL
from kvstore.base_async import AsyncDatabase
from kvstore.config import DEFAULT_SQLITE_PATH, SqliteDatabaseConfig
from kvstore.sqlite._engine import SqliteEngine, after_fork_in_child

if True:  # ASYNC
    import asyncio
    import functools
    from concurrent.futures import ThreadPoolExecutor

__all__ = ["AsyncSqliteDatabase"]

T = TypeVar("T")
#: `changed_since`'s answer (the classes define a ``set`` method, which hides the builtin there).
_KeySet = set[str]


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

    The async class does every blocking call on a worker thread of its own, so
    the event loop never waits on the file or on another process's lock.

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
    ) -> None:
        self.key_prefix = validate_prefix(key_prefix)
        self._engine: SqliteEngine = SqliteEngine(
            path,
            key_prefix=key_prefix,
            synchronous=synchronous,
            busy_timeout=busy_timeout,
            max_value_bytes=max_value_bytes,
            clock=clock,
            purge_interval=purge_interval,
            idempotency_window=idempotency_window,
        )
        self.path = self._engine.path
        if self.path in ("", ":memory:") or self.path.startswith("file::memory:"):
            # Health must not call an in-memory database durable.
            self.durable = False  # type: ignore[misc]  # per-instance override of the class default
        if True:  # ASYNC
            # One worker thread per store: calls run in order, off the event loop.
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kvstore-sqlite")
            after_fork_in_child(self)  # the worker thread does not survive fork
        else:
            self._engine.open()

    if True:  # ASYNC

        def _after_fork_in_child(self) -> None:
            # The parent's worker thread does not exist here (its executor would queue calls
            # forever): a new executor starts a thread of the child's own on first use.
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kvstore-sqlite")

    @classmethod
    async def from_config(cls, config: SqliteDatabaseConfig) -> Self:
        """Build from a `SqliteDatabaseConfig`, open the file and check it within ``connect_timeout``."""
        store = cls(
            config.path,
            key_prefix=config.key_prefix,
            synchronous=config.synchronous,
            busy_timeout=config.busy_timeout,
            max_value_bytes=config.max_value_bytes,
            purge_interval=config.purge_interval,
        )
        try:
            await store._run(store._engine.open, config.connect_timeout)
            await store.ping()
        except BaseException:
            await store.aclose()
            raise
        return store

    def __repr__(self) -> str:
        state = "closed" if isinstance(self._engine, _Closed) else "open"
        return f"<{type(self).__name__} path={self.path!r} prefix={self.key_prefix!r} {state}>"

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        if True:  # ASYNC
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self._executor, functools.partial(fn, *args))
        else:
            return fn(*args)

    async def get(self, key: str) -> Any:
        if True:  # ASYNC
            return await self._run(self._engine.get, key)
        else:
            return self._engine.get(key)

    async def set(self, key: str, value: Any, ttl: TTL | None = None, *, only_if_absent: bool = False) -> bool:
        if True:  # ASYNC
            return await self._run(self._engine.set, key, value, ttl, only_if_absent)
        else:
            return self._engine.set(key, value, ttl, only_if_absent)

    async def delete(self, key: str) -> bool:
        if True:  # ASYNC
            return await self._run(self._engine.delete, key)
        else:
            return self._engine.delete(key)

    async def exists(self, key: str) -> bool:
        if True:  # ASYNC
            return await self._run(self._engine.exists, key)
        else:
            return self._engine.exists(key)

    async def mget(self, keys: Iterable[str]) -> list[Any]:
        if True:  # ASYNC
            return await self._run(self._engine.mget, list(keys))
        else:
            return self._engine.mget(list(keys))

    async def mset(self, items: MsetItems) -> None:
        if not isinstance(items, Mapping):
            items = list(items)  # consumed on the worker thread, so materialise it here
        if True:  # ASYNC
            await self._run(self._engine.mset, items)
        else:
            self._engine.mset(items)

    async def iter_keys(self, pattern: str = "*") -> AsyncIterator[str]:
        after: str | None = None
        while True:
            found, after = await self._run(self._engine.keys_page, pattern, after)
            for key in found:
                yield key
            if after is None:
                return

    async def keys(self, pattern: str = "*") -> list[str]:
        if True:  # ASYNC
            return await self._run(self._engine.keys, pattern)
        else:
            return self._engine.keys(pattern)

    async def clear(self) -> None:
        if True:  # ASYNC
            await self._run(self._engine.clear)
        else:
            self._engine.clear()

    async def ttl(self, key: str) -> float | None:
        if True:  # ASYNC
            return await self._run(self._engine.ttl, key)
        else:
            return self._engine.ttl(key)

    async def expire(self, key: str, ttl: TTL | None) -> bool:
        if True:  # ASYNC
            return await self._run(self._engine.expire, key, ttl)
        else:
            return self._engine.expire(key, ttl)

    async def server_time(self) -> float:
        """The store's clock (``clock``, ``time.time`` by default): every change is stamped with it."""
        return self._engine.server_time()

    async def changed_since(self, keys: Iterable[str], since: float) -> _KeySet:
        """Which of ``keys`` were written, expired by `expire`, deleted or cleared after ``since``.

        One query for all keys. Exact while ``since`` is within ``idempotency_window``
        of now; deletion records older than that are swept with the expired rows, so for
        an older ``since`` every key is reported as changed (never a silent overwrite).
        """
        if True:  # ASYNC
            return await self._run(self._engine.changed_since, list(keys), since)
        else:
            return self._engine.changed_since(list(keys), since)

    async def mark_cleared(self, at: float) -> None:
        """Record a clear of this prefix at ``at`` (see `AsyncDatabase.mark_cleared`)."""
        if True:  # ASYNC
            await self._run(self._engine.mark_cleared, at)
        else:
            self._engine.mark_cleared(at)

    async def restamp(self, keys: Iterable[str], at: float) -> None:
        """Date the last change of ``keys`` at ``at`` (see `AsyncDatabase.restamp`)."""
        if True:  # ASYNC
            await self._run(self._engine.restamp, list(keys), at)
        else:
            self._engine.restamp(list(keys), at)

    async def ping(self) -> None:
        if True:  # ASYNC
            await self._run(self._engine.ping)
        else:
            self._engine.ping()

    async def purge_expired(self) -> int:
        """Delete every expired row now (normally a write does it every ``purge_interval``)."""
        if True:  # ASYNC
            return await self._run(self._engine.purge_expired)
        else:
            return self._engine.purge_expired()

    async def append(self, key: str, value: Any, *, idempotency_id: str | None = None) -> int:
        if True:  # ASYNC
            return await self._run(self._engine.append, key, value, idempotency_id)
        else:
            return self._engine.append(key, value, idempotency_id)

    async def extend(self, key: str, values: Iterable[Any], *, idempotency_id: str | None = None) -> int:
        if True:  # ASYNC
            return await self._run(self._engine.extend, key, list(values), idempotency_id)
        else:
            return self._engine.extend(key, list(values), idempotency_id)

    async def get_range(self, key: str, start: int, end: int) -> list[Any]:
        if True:  # ASYNC
            return await self._run(self._engine.get_range, key, start, end)
        else:
            return self._engine.get_range(key, start, end)

    async def get_length(self, key: str) -> int:
        if True:  # ASYNC
            return await self._run(self._engine.get_length, key)
        else:
            return self._engine.get_length(key)

    async def aclose(self) -> None:
        engine = self._engine
        if isinstance(engine, _Closed):
            return
        self._engine = _Closed(type(self).__name__, "sqlite")  # type: ignore[assignment]  # duck-typed stand-in
        if True:  # ASYNC
            await self._run(engine.close)
        else:
            engine.close()
        if True:  # ASYNC
            self._executor.shutdown(wait=False)
