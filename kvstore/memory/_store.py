# Generated from kvstore/memory/_store_async.py by tools/unasync.py: do not edit; edit the async source.
"""In-process memory backends: bounded, TTL-aware, storing encoded bytes."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Self

from kvstore._core.closed import Closed as _Closed
from kvstore._core.codec import DEFAULT_MAX_VALUE_BYTES
from kvstore._core.idempotency import DEFAULT_IDEMPOTENCY_WINDOW
from kvstore._core.items import MsetItems
from kvstore._core.ttl import TTL
from kvstore.base import Cache, Database
from kvstore.config import MemoryCacheConfig, MemoryDatabaseConfig
from kvstore.memory._keyspace import MemoryKeyspace

__all__ = ["MemoryCache", "MemoryDatabase"]


#: Methods whose sync form is the keyspace's own method, bound per instance.
_DIRECT = ("get", "set", "delete", "exists", "mget", "mset", "keys", "append", "get_range", "get_length")


class _MemoryStore:
    """What both memory tiers share: a `MemoryKeyspace` and its lifecycle."""

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
        self.key_prefix = key_prefix
        self.max_entries = max_entries
        self._space = MemoryKeyspace(
            backend="memory",
            max_entries=max_entries,
            max_value_bytes=max_value_bytes,
            clock=clock,
            idempotency_window=idempotency_window,
        )
        # Sync calls go straight to the keyspace: one Python frame less per call.
        for name in _DIRECT:
            if hasattr(type(self), name):
                setattr(self, name, getattr(self._space, name))

    def __repr__(self) -> str:
        state = "closed" if isinstance(self._space, _Closed) else f"{len(self._space)} keys"
        return f"<{type(self).__name__} prefix={self.key_prefix!r} {state}>"

    def get(self, key: str) -> Any:
        return self._space.get(key)

    def set(self, key: str, value: Any, ttl: TTL | None = None, *, only_if_absent: bool = False) -> bool:
        return self._space.set(key, value, ttl, only_if_absent=only_if_absent)

    def delete(self, key: str) -> bool:
        return self._space.delete(key)

    def exists(self, key: str) -> bool:
        return self._space.exists(key)

    def mget(self, keys: Iterable[str]) -> list[Any]:
        return self._space.mget(keys)

    def mset(self, items: MsetItems) -> None:
        self._space.mset(items)

    def iter_keys(self, pattern: str = "*") -> Iterator[str]:
        yield from self._space.iter_keys(pattern)

    def keys(self, pattern: str = "*") -> list[str]:
        return self._space.keys(pattern)

    def clear(self) -> None:
        self._space.clear()

    def ttl(self, key: str) -> float | None:
        return self._space.ttl(key)

    def expire(self, key: str, ttl: TTL | None) -> bool:
        return self._space.expire(key, ttl)

    def ping(self) -> None:
        self._space.get  # noqa: B018  # raises ClosedError once closed

    def close(self) -> None:
        if not isinstance(self._space, _Closed):
            self._space.clear()
            self._space = _Closed(type(self).__name__, "memory")  # type: ignore[assignment]  # duck-typed stand-in
            for name in _DIRECT:  # drop the direct bindings: calls now reach _Closed and raise
                self.__dict__.pop(name, None)


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

    @classmethod
    def from_config(cls, config: MemoryCacheConfig) -> Self:
        """Build from a `MemoryCacheConfig`."""
        return cls(key_prefix=config.key_prefix, max_entries=config.max_entries, max_value_bytes=config.max_value_bytes)


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

    @classmethod
    def from_config(cls, config: MemoryDatabaseConfig) -> Self:
        """Build from a `MemoryDatabaseConfig`."""
        return cls(key_prefix=config.key_prefix, max_entries=config.max_entries, max_value_bytes=config.max_value_bytes)

    def append(self, key: str, value: Any, *, idempotency_id: str | None = None) -> int:
        return self._space.append(key, value, idempotency_id=idempotency_id)

    def extend(self, key: str, values: Iterable[Any], *, idempotency_id: str | None = None) -> int:
        return self._space.extend(key, values, idempotency_id=idempotency_id)

    def get_range(self, key: str, start: int, end: int) -> list[Any]:
        return self._space.get_range(key, start, end)

    def get_length(self, key: str) -> int:
        return self._space.get_length(key)
