# Generated from kvstore/base_async.py by tools/unasync.py: do not edit; edit the async source.
"""The store interfaces: the contract documented once, implemented by every backend."""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from types import TracebackType
from typing import Any, ClassVar, Generic, Self, TypeVar

from kvstore._core.items import MsetItems
from kvstore._core.ttl import TTL
from kvstore._core.typed import TypeCodec

__all__ = ["Cache", "Database", "Store", "TypedStore"]

T = TypeVar("T")


class Store(ABC):
    """Operations both tiers share. See DESIGN.md §1-§4 for the full contract.

    Keys are non-empty ``str`` (at most 1024 UTF-8 bytes, no NUL, no lone
    surrogate) or `InvalidKeyError` is raised before any I/O. Values are JSON
    documents; what cannot be encoded raises `SerializationError`. A key holds a
    value or a list, never both. Every method raises `BackendUnavailableError`
    when the backend cannot be reached in time, and `ClosedError` after close.
    """

    #: Short backend name used in errors and health (``"memory"``, ``"redis"``...).
    backend: ClassVar[str]
    #: Whether what is written survives a restart of the process.
    durable: ClassVar[bool] = True
    key_prefix: str

    @abstractmethod
    def get(self, key: str) -> Any:
        """The value of ``key``, or ``None`` when absent or expired."""

    @abstractmethod
    def set(self, key: str, value: Any, ttl: TTL | None = None, *, only_if_absent: bool = False) -> bool:
        """Create or replace ``key``; ``ttl`` in seconds (or a timedelta), ``None`` for never.

        With ``only_if_absent`` nothing is written when the key exists. Returns
        whether the value was written.
        """

    @abstractmethod
    def delete(self, key: str) -> bool:
        """Remove ``key`` (value or list); ``True`` when something was removed."""

    @abstractmethod
    def exists(self, key: str) -> bool:
        """Whether ``key`` holds a value or list that has not expired."""

    @abstractmethod
    def mget(self, keys: Iterable[str]) -> list[Any]:
        """One result per key, in order, ``None`` for missing; one round trip."""

    @abstractmethod
    def mset(self, items: MsetItems) -> None:
        """Write a mapping or ``(key, value[, ttl])`` tuples; one round trip, atomic where possible."""

    @abstractmethod
    def iter_keys(self, pattern: str = "*") -> Iterator[str]:
        """Stream the keys matching the Redis glob ``pattern`` (without the prefix)."""

    def keys(self, pattern: str = "*") -> list[str]:
        """The keys matching the Redis glob ``pattern``, without the store's prefix."""
        return [key for key in self.iter_keys(pattern)]

    @abstractmethod
    def clear(self) -> None:
        """Remove every key of this store's prefix, and nothing else."""

    @abstractmethod
    def ttl(self, key: str) -> float | None:
        """Seconds until ``key`` expires; ``None`` when it has no TTL or does not exist."""

    @abstractmethod
    def expire(self, key: str, ttl: TTL | None) -> bool:
        """Set the TTL of an existing key (``None`` removes it); ``False`` when absent."""

    @abstractmethod
    def ping(self) -> None:
        """One round trip to the backend; raises `BackendUnavailableError` when it fails."""

    @abstractmethod
    def close(self) -> None:
        """Release what the store owns. Idempotent; later calls raise `ClosedError`."""

    def typed(self, type_: type[T] | Any) -> TypedStore[T]:
        """A view that validates values as ``type_`` on write and parses them on read."""
        return TypedStore(self, type_)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class Cache(Store):
    """The cache tier: ephemeral values with TTL."""


class Database(Store):
    """The database tier: persistent values plus append-only lists.

    **Idempotency ids** (DESIGN.md §8a). `append` and `extend` take an optional
    ``idempotency_id``: when a write with the same id was already applied to the
    same key within the retention window (``idempotency_window``, default 24 h),
    nothing is written again and the call returns the list length that the first
    application returned, so a write whose reply was lost can be retried safely
    (also concurrently: exactly one of the racing calls writes). The id is
    recorded in the same transaction as the items. An id is a non-empty ``str``
    of at most 200 characters, no NUL, no lone surrogate; anything else raises
    ``ValueError`` before any I/O. Ids are scoped to (store prefix, key) and are
    forgotten only by age (swept with the expired rows): deleting the list,
    replacing it with a value, or `clear` does **not** forget them, so a late
    retry after a delete returns the old length and does not resurrect its item.
    A retry is recognised by its id alone: the same id with other values is
    still a retry.
    """

    @abstractmethod
    def append(self, key: str, value: Any, *, idempotency_id: str | None = None) -> int:
        """Push ``value`` to the tail of the list at ``key``; return the new length.

        With ``idempotency_id``, a repeat of an applied write returns its length and writes nothing.
        """

    @abstractmethod
    def extend(self, key: str, values: Iterable[Any], *, idempotency_id: str | None = None) -> int:
        """Push every value to the tail in order, atomically; return the new length.

        With ``idempotency_id``, a repeat of an applied write returns its length and writes nothing.
        """

    @abstractmethod
    def get_range(self, key: str, start: int, end: int) -> list[Any]:
        """Redis ``LRANGE``: ``end`` inclusive, negatives from the tail, clamped, ``[]`` when empty."""

    @abstractmethod
    def get_length(self, key: str) -> int:
        """Length of the list at ``key``; ``0`` when missing."""

    # --- replay guard (used by the failover; DESIGN.md §8 "replay never overwrites newer data") ---

    #: Whether `changed_since` is implemented (a backend that can be a failover primary).
    tracks_changes: ClassVar[bool] = False

    def server_time(self) -> float:
        """The backend's clock now, in Unix seconds (the local clock for an embedded backend)."""
        return time.time()

    def changed_since(self, keys: Iterable[str], since: float) -> set[str]:
        """Which of ``keys`` were written, expired by `expire`, deleted or cleared after ``since``.

        ``since`` is a time on the backend's own clock (see `server_time`). A failover
        replaying an outage journal skips (and records as a conflict) a write whose key
        another instance changed after the journaled write was made. Backends that do
        not track changes (``tracks_changes`` false) return an empty set.
        """
        return set()

    def replay_set(self, key: str, value: Any, ttl: float | None, since: float) -> bool:
        """Set ``key`` (dated ``since``) unless it changed after ``since``; whether it was applied.

        Used by the failover's replay. This default checks, writes and dates in three calls;
        a backend that can do it in one atomic statement should (PostgreSQL does).
        """
        if self.changed_since([key], since):
            return False
        self.set(key, value, ttl)
        self.restamp([key], since)
        return True

    def replay_delete(self, key: str, since: float) -> bool:
        """Delete ``key`` (the deletion dated ``since``) unless it changed after ``since``; whether applied."""
        if self.changed_since([key], since):
            return False
        self.delete(key)
        self.restamp([key], since)
        return True

    def mark_cleared(self, at: float) -> None:
        """Record that this store's prefix was cleared at ``at`` (a replayed `clear`; never moved back).

        Backends that do not track changes ignore it.
        """

    def restamp(self, keys: Iterable[str], at: float) -> None:
        """Date the last change of ``keys`` (write or deletion) at ``at`` on the backend's clock.

        A failover replaying an outage journal dates what it applied at the time the write
        was made, not the time of the replay, so another instance's replay of an older
        write of the same key sees this one as newer (and not the other way round).
        Backends that do not track changes ignore it.
        """


class TypedStore(Generic[T]):
    """A typed view of a store (see `Store.typed`)."""

    def __init__(self, store: Store, type_: Any) -> None:
        self.store = store
        self._codec: TypeCodec[T] = TypeCodec(type_)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self._codec.type!r} of {self.store!r}>"

    def get(self, key: str) -> T | None:
        """The parsed value of ``key``, or ``None``."""
        return self._codec.load(key, self.store.get(key))

    def set(self, key: str, value: T, ttl: TTL | None = None, *, only_if_absent: bool = False) -> bool:
        """Validate and store ``value``."""
        data = self._codec.dump(key, value)
        return self.store.set(key, data, ttl, only_if_absent=only_if_absent)

    def mget(self, keys: Iterable[str]) -> list[T | None]:
        """Parsed values of ``keys``, ``None`` for missing."""
        keys = list(keys)
        raws = self.store.mget(keys)
        return [self._codec.load(k, raw) for k, raw in zip(keys, raws, strict=True)]

    def mset(self, items: Iterable[tuple[str, T]] | dict[str, T]) -> None:
        """Validate every value, then store them together."""
        pairs = items.items() if isinstance(items, dict) else items
        self.store.mset([(k, self._codec.dump(k, v)) for k, v in pairs])

    def append(self, key: str, value: T, *, idempotency_id: str | None = None) -> int:
        """Validate ``value`` and append it to the list at ``key`` (database tier)."""
        return self._database.append(key, self._codec.dump(key, value), idempotency_id=idempotency_id)

    def extend(self, key: str, values: Iterable[T], *, idempotency_id: str | None = None) -> int:
        """Validate every value and append them in order (database tier)."""
        data = [self._codec.dump(key, v) for v in values]
        return self._database.extend(key, data, idempotency_id=idempotency_id)

    def get_range(self, key: str, start: int, end: int) -> list[T]:
        """Parsed items of the list at ``key`` (database tier)."""
        raws = self._database.get_range(key, start, end)
        return [self._codec.load(key, raw) for raw in raws]  # type: ignore[misc]  # items are never None

    @property
    def _database(self) -> Database:
        if not isinstance(self.store, Database):
            raise TypeError(f"{type(self.store).__name__} has no lists; use the database tier")
        return self.store
