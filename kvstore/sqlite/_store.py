# Generated from kvstore/sqlite/_store_async.py by tools/unasync.py: do not edit; edit the async source.
"""SQLite database backend on apsw: WAL, busy timeout, BEGIN IMMEDIATE writes, O(k) lists."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
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
from kvstore.base import Database
from kvstore.config import DEFAULT_SQLITE_PATH, SqliteDatabaseConfig
from kvstore.sqlite._engine import SqliteEngine

__all__ = ["SqliteDatabase"]

T = TypeVar("T")
#: `changed_since`'s answer (the classes define a ``set`` method, which hides the builtin there).
_KeySet = set[str]


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
        self._engine.open()

    @classmethod
    def from_config(cls, config: SqliteDatabaseConfig) -> Self:
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
            store._run(store._engine.open, config.connect_timeout)
            store.ping()
        except BaseException:
            store.close()
            raise
        return store

    def __repr__(self) -> str:
        state = "closed" if isinstance(self._engine, _Closed) else "open"
        return f"<{type(self).__name__} path={self.path!r} prefix={self.key_prefix!r} {state}>"

    def _run(self, fn: Callable[..., T], *args: Any) -> T:
        return fn(*args)

    def get(self, key: str) -> Any:
        return self._engine.get(key)

    def set(self, key: str, value: Any, ttl: TTL | None = None, *, only_if_absent: bool = False) -> bool:
        return self._engine.set(key, value, ttl, only_if_absent)

    def delete(self, key: str) -> bool:
        return self._engine.delete(key)

    def exists(self, key: str) -> bool:
        return self._engine.exists(key)

    def mget(self, keys: Iterable[str]) -> list[Any]:
        return self._engine.mget(list(keys))

    def mset(self, items: MsetItems) -> None:
        if not isinstance(items, Mapping):
            items = list(items)  # consumed on the worker thread, so materialise it here
        self._engine.mset(items)

    def iter_keys(self, pattern: str = "*") -> Iterator[str]:
        after: str | None = None
        while True:
            found, after = self._run(self._engine.keys_page, pattern, after)
            yield from found
            if after is None:
                return

    def keys(self, pattern: str = "*") -> list[str]:
        return self._engine.keys(pattern)

    def clear(self) -> None:
        self._engine.clear()

    def ttl(self, key: str) -> float | None:
        return self._engine.ttl(key)

    def expire(self, key: str, ttl: TTL | None) -> bool:
        return self._engine.expire(key, ttl)

    def server_time(self) -> float:
        """The store's clock (``clock``, ``time.time`` by default): every change is stamped with it."""
        return self._engine.server_time()

    def changed_since(self, keys: Iterable[str], since: float) -> _KeySet:
        """Which of ``keys`` were written, expired by `expire`, deleted or cleared after ``since``.

        One query for all keys. Exact while ``since`` is within ``idempotency_window``
        of now; deletion records older than that are swept with the expired rows, so for
        an older ``since`` every key is reported as changed (never a silent overwrite).
        """
        return self._engine.changed_since(list(keys), since)

    def mark_cleared(self, at: float) -> None:
        """Record a clear of this prefix at ``at`` (see `Database.mark_cleared`)."""
        self._engine.mark_cleared(at)

    def restamp(self, keys: Iterable[str], at: float) -> None:
        """Date the last change of ``keys`` at ``at`` (see `Database.restamp`)."""
        self._engine.restamp(list(keys), at)

    def ping(self) -> None:
        self._engine.ping()

    def purge_expired(self) -> int:
        """Delete every expired row now (normally a write does it every ``purge_interval``)."""
        return self._engine.purge_expired()

    def append(self, key: str, value: Any, *, idempotency_id: str | None = None) -> int:
        return self._engine.append(key, value, idempotency_id)

    def extend(self, key: str, values: Iterable[Any], *, idempotency_id: str | None = None) -> int:
        return self._engine.extend(key, list(values), idempotency_id)

    def get_range(self, key: str, start: int, end: int) -> list[Any]:
        return self._engine.get_range(key, start, end)

    def get_length(self, key: str) -> int:
        return self._engine.get_length(key)

    def close(self) -> None:
        engine = self._engine
        if isinstance(engine, _Closed):
            return
        self._engine = _Closed(type(self).__name__, "sqlite")  # type: ignore[assignment]  # duck-typed stand-in
        engine.close()
