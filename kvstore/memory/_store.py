# Generated from kvstore/memory/_store_async.py by tools/unasync.py: do not edit; edit the async source.
"""In-process memory backends: bounded, TTL-aware, storing encoded bytes."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from kvstore._core.closed import Closed as _Closed
from kvstore._core.codec import DEFAULT_MAX_VALUE_BYTES
from kvstore._core.idempotency import DEFAULT_IDEMPOTENCY_WINDOW
from kvstore._core.keys import validate_keys, validate_prefix
from kvstore._core.watch import ChannelHub, Wakeup, check_poll_interval
from kvstore.base import LIST_HOOKS, VALUE_HOOKS, Cache, Database
from kvstore.memory._keyspace import MemoryKeyspace

__all__ = ["MemoryCache", "MemoryDatabase"]

#: Messages a memory subscriber keeps while it does not read; beyond, the oldest are dropped
#: (Redis, likewise, disconnects a subscriber that falls too far behind).
MAX_PENDING = 10_000


#: Raw hooks that are the keyspace's own methods, bound per instance: one frame less per call.
#: In the async store only the hot ones are (the base awaits a hook's result only when it is
#: a coroutine); the others stay coroutines, like every other backend's.
_HOT = ("get", "set", "mget", "mset", "extend", "get_range")
#: In the sync store, every hook is.
_BOUND = VALUE_HOOKS + LIST_HOOKS


class _MemoryStore:
    """What both memory tiers share: a `MemoryKeyspace` (the raw hooks) and its lifecycle."""

    backend = "memory"
    durable = False
    _space: MemoryKeyspace

    def __init__(
        self,
        *,
        key_prefix: str = "",
        max_entries: int | None,
        max_value_bytes: int = DEFAULT_MAX_VALUE_BYTES,
        clock: Callable[[], float] = time.monotonic,
        idempotency_window: float = DEFAULT_IDEMPOTENCY_WINDOW,
    ) -> None:
        # Each memory store owns its keyspace, so the prefix never needs storing.
        self.key_prefix = validate_prefix(key_prefix)
        self.max_entries = max_entries
        self.max_value_bytes = max_value_bytes
        self._space = MemoryKeyspace(
            backend="memory", max_entries=max_entries, clock=clock, idempotency_window=idempotency_window
        )
        for name in _BOUND:
            setattr(self, f"_{name}", getattr(self._space, name))

    def __repr__(self) -> str:
        state = "closed" if isinstance(self._space, _Closed) else f"{len(self._space)} keys"
        return f"<{type(self).__name__} prefix={self.key_prefix!r} {state}>"

    def _get(self, key: str) -> bytes | None:
        return self._space.get(key)

    def _get_touch(self, key: str, ms: int) -> bytes | None:
        return self._space.get_touch(key, ms)

    def _set(self, key: str, data: bytes, ms: int | None, only_if_absent: bool) -> bool:
        return self._space.set(key, data, ms, only_if_absent)

    def _delete(self, key: str) -> bool:
        return self._space.delete(key)

    def _delete_many(self, keys: list[str]) -> int:
        return self._space.delete_many(keys)

    def _exists(self, key: str) -> bool:
        return self._space.exists(key)

    def _mget(self, keys: list[str]) -> list[bytes | None]:
        return self._space.mget(keys)

    def _mset(self, rows: list[tuple[str, bytes, int | None]]) -> None:
        self._space.mset(rows)

    def mget(self, keys: Iterable[str]) -> list[Any]:
        """One result per key, in order, ``None`` for missing (and for a list key).

        The stored bytes of the whole batch are decoded by one ``orjson.loads`` (see
        `MemoryKeyspace.mget_values`); the keys are checked as `Store.mget` does.
        """
        names = validate_keys(keys)
        return self._space.mget_values(names) if names else []

    def _iter_keys(self, pattern: str) -> Iterator[str]:
        yield from self._space.iter_keys(pattern)

    def _clear(self) -> None:
        self._space.clear()

    def _ttl(self, key: str) -> float | None:
        return self._space.ttl(key)

    def _expire(self, key: str, ms: int | None) -> bool:
        return self._space.expire(key, ms)

    def _incr(self, key: str, by: int) -> int:
        return self._space.incr(key, by)

    def ping(self) -> None:
        self._space.get  # noqa: B018  # raises ClosedError once closed

    def close(self) -> None:
        if not isinstance(self._space, _Closed):
            self._space.clear()
            self._space = _Closed(type(self).__name__, "memory")  # type: ignore[assignment]  # duck-typed stand-in
            for name in _BOUND:  # drop the direct bindings: calls now reach _Closed and raise
                self.__dict__.pop(f"_{name}", None)


class MemoryCache(_MemoryStore, Cache):
    """Cache tier in this process: LRU-bounded at ``max_entries``, expired keys swept."""

    def __init__(
        self,
        *,
        key_prefix: str = "",
        max_entries: int = 100_000,
        max_value_bytes: int = DEFAULT_MAX_VALUE_BYTES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(key_prefix=key_prefix, max_entries=max_entries, max_value_bytes=max_value_bytes, clock=clock)
        self._hub = ChannelHub()

    def _publish(self, channel: str, data: bytes) -> int:
        self._space.get  # noqa: B018  # raises ClosedError once closed
        return self._hub.publish(channel, data)

    def _subscribe(self, channel: str) -> MemoryChannel:
        self._space.get  # noqa: B018  # raises ClosedError once closed
        return MemoryChannel(self._hub, channel)


class MemoryChannel:
    """One subscription of a memory cache: a bounded queue filled by `publish` (any thread)."""

    def __init__(self, hub: ChannelHub, channel: str) -> None:
        self._hub = hub
        self._channel = channel
        self._queue: deque[bytes] = deque(maxlen=MAX_PENDING)
        self._wakeup = Wakeup()
        hub.add(channel, self)

    def push(self, data: bytes) -> None:
        self._queue.append(data)
        self._wakeup.set()

    def receive(self) -> bytes:
        while not self._queue:
            self._wakeup.wait(1.0)
        return self._queue.popleft()

    def close(self) -> None:
        self._hub.discard(self._channel, self)


class MemoryDatabase(_MemoryStore, Database):
    """Database tier in this process: values and lists, not durable.

    ``idempotency_window`` (seconds, default one day) is how long an append's
    idempotency id is remembered; at most 100,000 ids are kept (the oldest go first).
    """

    def __init__(
        self,
        *,
        key_prefix: str = "",
        max_entries: int | None = 1_000_000,
        max_value_bytes: int = DEFAULT_MAX_VALUE_BYTES,
        clock: Callable[[], float] = time.monotonic,
        idempotency_window: float = DEFAULT_IDEMPOTENCY_WINDOW,
    ) -> None:
        super().__init__(
            key_prefix=key_prefix,
            max_entries=max_entries,
            max_value_bytes=max_value_bytes,
            clock=clock,
            idempotency_window=idempotency_window,
        )

    def _extend(self, key: str, items: list[bytes], idempotency_id: str | None) -> int:
        return self._space.extend(key, items, idempotency_id)

    def _get_range(self, key: str, start: int, end: int) -> list[bytes]:
        return self._space.get_range(key, start, end)

    def _get_length(self, key: str) -> int:
        return self._space.get_length(key)

    def _trim(self, key: str, start: int, end: int) -> int:
        return self._space.trim(key, start, end)

    def _watcher(self, key: str, poll_interval: float | None) -> MemoryWatcher:
        return MemoryWatcher(self, key, check_poll_interval(poll_interval, 1.0))


class MemoryWatcher:
    """A watcher of one list of a memory database: woken in process by every append."""

    def __init__(self, store: MemoryDatabase, key: str, interval: float) -> None:
        self._store = store
        self._key = key
        self._interval = interval

    def __enter__(self) -> MemoryWatcher:
        self._space = self._store._space
        self._wakeup = Wakeup()
        self._wake = self._wakeup.set
        self._space.watchers.add(self._wake)
        return self

    def __exit__(self, *exc: object) -> None:
        self._space.watchers.discard(self._wake)

    def read(self, position: int, limit: int) -> tuple[list[tuple[int, bytes]], int]:
        return self._store._space.watch_read(self._key, position, limit)

    def wait(self) -> bool:
        """Until an append wakes it, at most the poll interval; always read again (a safety net)."""
        self._wakeup.wait(self._interval)
        return True
