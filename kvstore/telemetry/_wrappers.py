# Generated from kvstore/telemetry/_wrappers_async.py by tools/unasync.py: do not edit; edit the async source.
"""Instrumented stores: every public operation of the wrapped store, traced and measured, or only counted."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from kvstore._core.items import MsetItems
from kvstore._core.ttl import TTL
from kvstore._core.watch import ListItem
from kvstore.base import Cache, Database, Store, Subscription
from kvstore.telemetry._instruments import Wrapper, delegated

__all__ = ["InstrumentedCache", "InstrumentedDatabase", "InstrumentedStore"]


class InstrumentedStore(Wrapper, Store):
    """What both instrumented tiers share."""

    def get(self, key: str, *, touch: TTL | None = None) -> Any:
        with self._tel.op("get"):
            if touch is None:
                result = self._inner.get(key)
            else:
                result = self._inner.get(key, touch=touch)
        if result is None:
            self._counts.misses += 1
        else:
            self._counts.hits += 1
        return result

    def delete_many(self, keys: Iterable[str]) -> int:
        with self._tel.op("delete_many"):
            result: int = self._inner.delete_many(keys)
            return result

    def incr(self, key: str, by: int = 1) -> int:
        with self._tel.op("incr"):
            result: int = self._inner.incr(key, by)
            return result

    def set(self, key: str, value: Any, ttl: TTL | None = None, *, only_if_absent: bool = False) -> bool:
        with self._tel.op("set"):
            result: bool = self._inner.set(key, value, ttl, only_if_absent=only_if_absent)
            return result

    def delete(self, key: str) -> bool:
        with self._tel.op("delete"):
            result: bool = self._inner.delete(key)
            return result

    def exists(self, key: str) -> bool:
        with self._tel.op("exists"):
            result: bool = self._inner.exists(key)
            return result

    def mget(self, keys: Iterable[str]) -> list[Any]:
        with self._tel.op("mget"):
            result: list[Any] = self._inner.mget(keys)
        missing = result.count(None)
        self._counts.found(len(result) - missing, missing)
        return result

    def mset(self, items: MsetItems) -> None:
        with self._tel.op("mset"):
            self._inner.mset(items)

    def iter_keys(self, pattern: str = "*") -> Iterator[str]:
        with self._tel.stream("iter_keys"):
            yield from self._inner.iter_keys(pattern)

    def keys(self, pattern: str = "*") -> list[str]:
        with self._tel.op("keys"):
            result: list[str] = self._inner.keys(pattern)
            return result

    def clear(self) -> None:
        with self._tel.op("clear"):
            self._inner.clear()

    def ttl(self, key: str) -> float | None:
        with self._tel.op("ttl"):
            result: float | None = self._inner.ttl(key)
            return result

    def expire(self, key: str, ttl: TTL | None) -> bool:
        with self._tel.op("expire"):
            result: bool = self._inner.expire(key, ttl)
            return result

    def ping(self) -> None:
        with self._tel.op("ping"):
            self._inner.ping()

    def close(self) -> None:
        self._inner.close()


class InstrumentedCache(InstrumentedStore, Cache):
    """An async cache whose operations are traced and measured (see `instrument`)."""

    def publish(self, channel: str, message: Any) -> int:
        with self._tel.op("publish"):
            result: int = self._inner.publish(channel, message)
            return result

    def subscribe(self, channel: str) -> Subscription:
        result: Subscription = self._inner.subscribe(channel)
        return result


class InstrumentedDatabase(InstrumentedStore, Database):
    """An async database whose operations are traced and measured (see `instrument`)."""

    def append(self, key: str, value: Any, *, idempotency_id: str | None = None) -> int:
        with self._tel.op("append"):
            result: int = self._inner.append(key, value, idempotency_id=idempotency_id)
            return result

    def extend(self, key: str, values: Iterable[Any], *, idempotency_id: str | None = None) -> int:
        with self._tel.op("extend"):
            result: int = self._inner.extend(key, values, idempotency_id=idempotency_id)
            return result

    def get_range(self, key: str, start: int, end: int) -> list[Any]:
        with self._tel.op("get_range"):
            result: list[Any] = self._inner.get_range(key, start, end)
            return result

    def extend_json(self, key: str, items: list[bytes], *, idempotency_id: str | None = None) -> int | None:
        """The wrapped store's `extend_json`, measured as ``append`` (one item) or ``extend`` (``None``: it
        takes decoded values only)."""
        with self._tel.op("append" if len(items) == 1 else "extend"):
            result: int | None = self._inner.extend_json(key, items, idempotency_id=idempotency_id)
            return result

    def get_range_json(self, key: str, start: int, end: int) -> list[bytes] | list[str] | None:
        """The wrapped store's `get_range_json`, measured as ``get_range`` (``None``: it has no undecoded form)."""
        with self._tel.op("get_range"):
            result: list[bytes] | list[str] | None = self._inner.get_range_json(key, start, end)
            return result

    def get_length(self, key: str) -> int:
        with self._tel.op("get_length"):
            result: int = self._inner.get_length(key)
            return result

    def trim(self, key: str, start: int, end: int) -> int:
        with self._tel.op("trim"):
            result: int = self._inner.trim(key, start, end)
            return result

    def watch(self, key: str, *, start: int | None = None, poll_interval: float | None = None) -> Iterator[ListItem]:
        """The wrapped store's `watch` (a stream: not counted as an operation)."""
        result: Iterator[ListItem] = self._inner.watch(key, start=start, poll_interval=poll_interval)
        return result

    def server_time(self) -> float:
        result: float = self._inner.server_time()
        return result

    def changed_since(self, keys: Iterable[str], since: float) -> set[str]:
        result: set[str] = self._inner.changed_since(keys, since)
        return result


# The class-level facts of a store (backend, durable, tracks_changes) are the wrapped store's.
for _cls in (InstrumentedCache, InstrumentedDatabase):
    for _name in ("backend", "durable", "tracks_changes"):
        setattr(_cls, _name, delegated(_name))
