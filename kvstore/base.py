# Generated from kvstore/base_async.py by tools/unasync.py: do not edit; edit the async source.
"""The store contract in code: concrete public methods that hold every rule once.

Every public data method of `Store` and `Database` is written here, once:
key validation, TTL normalisation, encoding and the size limit, decoding, list index
checks, idempotency-id checks. A backend implements only the raw hooks (``_get``,
``_set``, ``_extend``... below): they receive a validated key (without the store's
prefix), encoded bytes and TTLs in whole milliseconds, and return raw bytes. A hook
raises `WrongTypeError` (built with `holds_list` / `holds_value` / `not_an_integer`)
and translates its driver's errors through its backend's error map.

See DESIGN.md §1-§4 for the whole contract.
"""

from __future__ import annotations

import functools
import inspect
import time
import types
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator
from types import TracebackType
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Protocol, Self, TypeVar

from orjson import JSONDecodeError
from orjson import loads as _loads

from kvstore._core.codec import DEFAULT_MAX_VALUE_BYTES, decode, encode, encode_rows
from kvstore._core.idempotency import validate_idempotency_id
from kvstore._core.items import MsetItems, normalize_items
from kvstore._core.keys import _valid as _valid_keys
from kvstore._core.keys import validate_key, validate_keys
from kvstore._core.lists import check_index
from kvstore._core.ttl import TTL, ttl_ms
from kvstore._core.typed import TypeCodec
from kvstore._core.watch import DEFAULT_BATCH, ListItem, check_poll_interval, start_position
from kvstore.errors import SerializationError, ValueTooLargeError, WrongTypeError

if TYPE_CHECKING:
    from kvstore.telemetry._stats import StoreStats

__all__ = [
    "BEYOND_64_BITS",
    "LIST_HOOKS",
    "MAX_INT",
    "VALUE_HOOKS",
    "Cache",
    "Channel",
    "Database",
    "ListWatcher",
    "Store",
    "Subscription",
    "TypedStore",
    "check_incr_by",
    "config_options",
    "holds_list",
    "holds_value",
    "not_an_integer",
]

T = TypeVar("T")

#: What an ``def`` hook returns. The hot hooks (``_get``, ``_set``, ``_mget``, ``_mset``,
#: ``_extend``, ``_get_range``) of an in-process backend may be plain functions instead: the
#: async methods a hook's result only when it is a coroutine (one frame less per call).
_Coroutine = types.CoroutineType

#: The counter range of `incr` (a signed 64-bit integer, as in Redis).
MAX_INT = 2**63 - 1
#: `not_an_integer`'s detail for a stored integer outside that range (orjson can store one).
BEYOND_64_BITS = "holds an integer beyond the signed 64-bit range"


#: The raw hooks a backend implements, by name without the leading underscore (``_get`` ...),
#: apart from ``iter_keys`` (a stream). An in-process backend may bind its engine's methods
#: of these names as its hooks (see the memory and SQLite stores).
VALUE_HOOKS = (
    "get",
    "get_touch",
    "set",
    "delete",
    "delete_many",
    "exists",
    "mget",
    "mset",
    "clear",
    "ttl",
    "expire",
    "incr",
)
LIST_HOOKS = ("extend", "get_range", "get_length", "trim")


def holds_list(key: str, operation: str, backend: str | None = None) -> WrongTypeError:
    """The error of a value operation on a key that holds a list."""
    return WrongTypeError(f"key {key!r} holds a list; use get_range", key=key, backend=backend, operation=operation)


def holds_value(key: str, operation: str, backend: str | None = None) -> WrongTypeError:
    """The error of a list operation on a key that holds a value."""
    return WrongTypeError(f"key {key!r} holds a value, not a list", key=key, backend=backend, operation=operation)


def not_an_integer(key: str, backend: str | None = None, detail: str = "") -> WrongTypeError:
    """The error of `incr` on a value that is not an integer, or would leave the 64-bit range."""
    what = detail or "holds a value that is not an integer"
    return WrongTypeError(
        f"key {key!r} {what}; incr needs an integer value", key=key, backend=backend, operation="incr"
    )


def check_incr_by(by: object) -> int:
    """``by`` of `incr` as an int: `TypeError` for a bool or non-integer, `ValueError` beyond 64 bits."""
    if by.__class__ is not int:
        if isinstance(by, bool) or not hasattr(by, "__index__"):
            raise TypeError(f"incr takes an int, not {type(by).__name__}")
        by = by.__index__()
    if not -MAX_INT - 1 <= by <= MAX_INT:  # type: ignore[operator]  # an int by now
        raise ValueError(f"incr takes a 64-bit integer, not {by!r}")
    return by  # type: ignore[return-value]  # an int by now


@functools.cache
def _init_keywords(cls: type) -> frozenset[str]:
    params = inspect.signature(cls).parameters.values()
    return frozenset(p.name for p in params if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD))


def config_options(cls: type, config: Any) -> dict[str, Any]:
    """The constructor keywords of ``cls`` that ``config`` (a pydantic model) has fields for."""
    wanted = _init_keywords(cls)
    return {name: getattr(config, name) for name in type(config).model_fields if name in wanted}


def _missing(store: object, hook: str) -> NotImplementedError:
    return NotImplementedError(f"{type(store).__name__} does not implement the raw hook {hook}")


def _decode(raw: bytes, key: str) -> Any:
    try:
        return _loads(raw)
    except JSONDecodeError:
        return decode(raw, key)  # raises SerializationError naming the key


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
    #: Largest encoded value accepted (`ValueTooLargeError` beyond it).
    max_value_bytes: int = DEFAULT_MAX_VALUE_BYTES
    #: The config model the store was built from (`from_config`), else ``None``.
    config: Any = None

    @classmethod
    def from_config(cls, config: Any) -> Self:
        """Build from the backend's config model, which the store keeps as ``store.config``.

        Each field of ``config`` named like a keyword of the constructor is passed to it
        (one place for every option: the config model). The store owns what it opens and
        closes it; a store handed a ready client or pool instead borrows it. A backend
        with a server checks it here (`_opened`) and closes what it opened on failure.
        """
        store = cls(**config_options(cls, config))
        store.config = config
        try:
            store._opened()
        except BaseException:
            store.close()
            raise
        return store

    def _opened(self) -> None:  # noqa: B027  # optional hook, empty on purpose
        """Called once by `from_config` after construction (a server backend pings here)."""

    # --- the public methods: every rule, once ------------------------------------------

    def get(self, key: str, *, touch: TTL | None = None) -> Any:
        """The value of ``key``, or ``None`` when absent or expired.

        With ``touch`` (seconds or a timedelta) the key's TTL restarts at ``touch`` in
        the same round trip (Redis ``GETEX``): a sliding expiry.
        """
        if key.__class__ is not str or key not in _valid_keys:
            validate_key(key)
        raw: Any
        if touch is None:
            raw = self._get(key)
        else:
            raw = self._get_touch(key, ttl_ms(touch))  # type: ignore[arg-type]  # never None here
        if raw is None:
            return None
        try:
            return _loads(raw)
        except JSONDecodeError:
            return decode(raw, key)

    def set(self, key: str, value: Any, ttl: TTL | None = None, *, only_if_absent: bool = False) -> bool:
        """Create or replace ``key``; ``ttl`` in seconds (or a timedelta), ``None`` for never.

        With ``only_if_absent`` nothing is written when the key exists. Returns
        whether the value was written.
        """
        if key.__class__ is not str or key not in _valid_keys:
            validate_key(key)
        ms = None if ttl is None else ttl_ms(ttl)
        written: Any = self._set(key, encode(key, value, self.max_value_bytes), ms, only_if_absent)
        return written  # type: ignore[no-any-return]  # a hook's bool

    def delete(self, key: str) -> bool:
        """Remove ``key`` (value or list); ``True`` when something was removed."""
        return self._delete(validate_key(key))

    def delete_many(self, keys: Iterable[str]) -> int:
        """Remove every key of ``keys`` (values or lists) in one round trip; how many were removed."""
        names = list(dict.fromkeys(validate_keys(keys)))
        return self._delete_many(names) if names else 0

    def exists(self, key: str) -> bool:
        """Whether ``key`` holds a value or list that has not expired."""
        return self._exists(validate_key(key))

    def mget(self, keys: Iterable[str]) -> list[Any]:
        """One result per key, in order, ``None`` for missing (and for a list key); one round trip."""
        names = validate_keys(keys)
        if not names:
            return []
        raws: Any = self._mget(names)
        try:
            return [None if raw is None else _loads(raw) for raw in raws]
        except JSONDecodeError:
            return [None if raw is None else decode(raw, k) for raw, k in zip(raws, names, strict=True)]

    def mset(self, items: MsetItems) -> None:
        """Write a mapping or ``(key, value[, ttl])`` tuples; one round trip, atomic where possible."""
        rows = encode_rows(normalize_items(items), self.max_value_bytes)
        if rows:
            self._mset(rows)

    def iter_keys(self, pattern: str = "*") -> Iterator[str]:
        """Stream the keys matching the Redis glob ``pattern`` (without the prefix)."""
        if not isinstance(pattern, str):
            raise TypeError(f"pattern must be str, not {type(pattern).__name__}")
        return self._iter_keys(pattern)

    def keys(self, pattern: str = "*") -> list[str]:
        """The keys matching the Redis glob ``pattern``, without the store's prefix, each once."""
        return list(dict.fromkeys([key for key in self.iter_keys(pattern)]))

    def clear(self) -> None:
        """Remove every key of this store's prefix, and nothing else."""
        self._clear()

    def ttl(self, key: str) -> float | None:
        """Seconds until ``key`` expires; ``None`` when it has no TTL or does not exist."""
        return self._ttl(validate_key(key))

    def expire(self, key: str, ttl: TTL | None) -> bool:
        """Set the TTL of an existing key (``None`` removes it); ``False`` when absent."""
        key = validate_key(key)
        return self._expire(key, ttl_ms(ttl))

    def incr(self, key: str, by: int = 1) -> int:
        """Add ``by`` to the integer at ``key`` atomically and return the result.

        A missing (or expired) key counts from 0 and gets no TTL; an existing key keeps
        its TTL. A value that is not an integer, a list, or a result outside the signed
        64-bit range raises `WrongTypeError` and changes nothing.
        """
        key = validate_key(key)
        return self._incr(key, check_incr_by(by))

    @abstractmethod
    def ping(self) -> None:
        """One round trip to the backend; raises `BackendUnavailableError` when it fails."""

    @abstractmethod
    def close(self) -> None:
        """Release what the store owns. Idempotent; later calls raise `ClosedError`."""

    def typed(self, type_: type[T] | Any) -> TypedStore[T]:
        """A view that validates values as ``type_`` on write and parses them on read."""
        return TypedStore(self, type_)

    def stats(self) -> StoreStats:
        """Counts of this store's operations, read hits and misses, errors and fallbacks; no I/O.

        Only a counting store counts operations (``StorageManager(stats=True)``,
        ``telemetry = true``, or `kvstore.instrument`): on any other ``counting`` is false and
        the counts are 0, because nothing is added to its calls. A failover tier reports its
        failovers and failbacks either way. See the stats page of the docs.
        """
        from kvstore.telemetry._stats import store_stats

        return store_stats(self)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # --- the raw hooks a backend implements ---------------------------------------------
    #
    # Keys arrive validated and without the prefix, values encoded, TTLs in whole
    # milliseconds (``None``: no expiry). Values leave as the stored bytes.

    def _get(self, key: str) -> bytes | None:
        """The stored bytes of ``key``, ``None`` when absent; raise `holds_list` for a list."""
        raise _missing(self, "_get")

    def _get_touch(self, key: str, ms: int) -> bytes | None:
        """Read ``key`` and restart its TTL at ``ms``; backends with a one-round-trip form override this."""
        raw = self._get(key)
        if raw is not None:
            self._expire(key, ms)
        return raw

    def _set(self, key: str, data: bytes, ms: int | None, only_if_absent: bool) -> bool:
        """Store ``data`` (replacing a value or list); with ``only_if_absent`` only when ``key`` is absent."""
        raise _missing(self, "_set")

    def _delete(self, key: str) -> bool:
        """Remove ``key``; whether it existed."""
        raise _missing(self, "_delete")

    def _delete_many(self, keys: list[str]) -> int:
        """Remove distinct ``keys``; how many existed. Backends override this with one round trip."""
        return sum([self._delete(key) for key in keys])

    def _exists(self, key: str) -> bool:
        """Whether ``key`` is present and not expired."""
        raise _missing(self, "_exists")

    def _mget(self, keys: list[str]) -> list[bytes | None]:
        """The stored bytes of each key (``None`` for a missing or list key), in one round trip."""
        raise _missing(self, "_mget")

    def _mset(self, rows: list[tuple[str, bytes, int | None]]) -> None:
        """Store every ``(key, data, ms)`` in one round trip, atomically where the backend can."""
        raise _missing(self, "_mset")

    def _iter_keys(self, pattern: str) -> Iterator[str]:
        """Stream this prefix's live keys matching the Redis glob ``pattern``."""
        raise _missing(self, "_iter_keys")

    def _clear(self) -> None:
        """Remove every key of this prefix."""
        raise _missing(self, "_clear")

    def _ttl(self, key: str) -> float | None:
        """Seconds left, ``None`` for no TTL or a missing key."""
        raise _missing(self, "_ttl")

    def _expire(self, key: str, ms: int | None) -> bool:
        """Set (``None``: remove) the TTL of an existing key; whether it exists."""
        raise _missing(self, "_expire")

    def _incr(self, key: str, by: int) -> int:
        """Add ``by`` atomically; raise `not_an_integer` for a non-integer value or overflow."""
        raise _missing(self, "_incr")


class Cache(Store):
    """The cache tier: ephemeral values with TTL, and pub/sub (`publish` / `subscribe`)."""

    def publish(self, channel: str, message: Any) -> int:
        """Send ``message`` (any JSON value) to the current subscribers of ``channel``; how many got it.

        Fire and forget, at most once (Redis ``PUBLISH``): a subscriber that is not
        subscribed at that moment never sees it. For a durable stream that a reader can
        resume, append to a list on the database tier and `Database.watch` it.
        Channel names follow the key rules and live in the store's namespace.
        """
        channel = validate_key(channel)
        return self._publish(channel, encode(channel, message, self.max_value_bytes))

    def subscribe(self, channel: str) -> Subscription:
        """Subscribe to ``channel``; subscribed when this returns. Iterate the result for messages.

        ``with cache.subscribe("news") as messages: for m in messages: ...``
        Close it (``close``/``close``, or the ``with`` block) to unsubscribe.
        """
        channel = validate_key(channel)
        return Subscription(channel, self._subscribe(channel))

    def _publish(self, channel: str, data: bytes) -> int:
        """Send ``data`` to ``channel``'s subscribers; how many received it."""
        raise _missing(self, "_publish")

    def _subscribe(self, channel: str) -> Channel:
        """A subscribed source of ``channel``'s messages (raw bytes)."""
        raise _missing(self, "_subscribe")


class Channel(Protocol):
    """What a cache backend's `Cache._subscribe` returns: one live subscription."""

    def receive(self) -> bytes:
        """The next message's bytes (waits for one)."""
        ...

    def close(self) -> None:
        """Unsubscribe and release the connection. Idempotent."""
        ...


class Subscription:
    """Messages of one channel as they are published (see `Cache.subscribe`)."""

    def __init__(self, channel: str, source: Channel) -> None:
        self.channel = channel
        self._source = source

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.channel!r}>"

    def __iter__(self) -> Iterator[Any]:
        return self._messages()

    def _messages(self) -> Iterator[Any]:
        while True:
            yield _decode(self._source.receive(), self.channel)

    def close(self) -> None:
        """Unsubscribe. Idempotent."""
        self._source.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


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

    def append(self, key: str, value: Any, *, idempotency_id: str | None = None) -> int:
        """Push ``value`` to the tail of the list at ``key``; return the new length.

        With ``idempotency_id``, a repeat of an applied write returns its length and writes nothing.
        """
        if key.__class__ is not str or key not in _valid_keys:
            validate_key(key)
        if idempotency_id is not None:
            idempotency_id = validate_idempotency_id(idempotency_id)
        length: Any = self._extend(key, [encode(key, value, self.max_value_bytes)], idempotency_id)
        return length  # type: ignore[no-any-return]  # a hook's int

    def extend(self, key: str, values: Iterable[Any], *, idempotency_id: str | None = None) -> int:
        """Push every value to the tail in order, atomically; return the new length.

        With ``idempotency_id``, a repeat of an applied write returns its length and writes
        nothing. An empty ``values`` writes nothing (its id is neither looked up nor recorded).
        """
        key = validate_key(key)
        if idempotency_id is not None:
            idempotency_id = validate_idempotency_id(idempotency_id)
        if isinstance(values, str | bytes):
            raise TypeError("extend takes an iterable of values, not a single str or bytes")
        limit = self.max_value_bytes
        length: Any = self._extend(key, [encode(key, v, limit) for v in values], idempotency_id)
        return length  # type: ignore[no-any-return]  # a hook's int

    def get_range(self, key: str, start: int, end: int) -> list[Any]:
        """Redis ``LRANGE``: ``end`` inclusive, negatives from the tail, clamped, ``[]`` when empty."""
        key = validate_key(key)
        raws: Any = self._get_range(key, check_index(start), check_index(end))
        try:
            return [_loads(raw) for raw in raws]
        except JSONDecodeError:
            return [_decode(raw, key) for raw in raws]

    def extend_json(self, key: str, items: list[bytes], *, idempotency_id: str | None = None) -> int | None:
        """`extend` with values the caller already encoded, each one JSON document (pydantic's
        ``dump_json``): stored as they are, not encoded again. An item that is not one JSON
        document raises `SerializationError` naming the key and nothing is written, on every
        backend (PostgreSQL's ``json`` column checks them; elsewhere each is parsed once first,
        so no list is left holding bytes no read can decode).

        ``None``, writing nothing, when this store takes decoded values only (a store that
        overrides the public list calls instead of the raw hooks); use `extend` then. The
        failover and instrumented tiers serve it.
        """
        if "_extend" not in vars(self) and type(self)._extend is Database._extend:
            return None
        key = validate_key(key)
        if idempotency_id is not None:
            idempotency_id = validate_idempotency_id(idempotency_id)
        for i, data in enumerate(items):
            if len(data) > self.max_value_bytes:
                raise ValueTooLargeError(
                    f"the value of key {key!r} is {len(data)} bytes encoded; the limit is {self.max_value_bytes}",
                    key=key,
                    operation="encode",
                )
            # Parsed here on every backend, PostgreSQL included: its json type accepts what no read
            # decodes (a lone surrogate escape, 1e400, nesting past 1024), and items that are not one
            # document each can join into an array of the right count ([b"1,2", b"[3", b"4]"]).
            try:
                _loads(data)
            except JSONDecodeError as exc:
                raise SerializationError(
                    f"item {i} appended to key {key!r} is not one JSON document: {exc}",
                    key=key,
                    operation="append",
                    backend=getattr(self, "backend", None),
                ) from exc
        length: Any = self._extend(key, items, idempotency_id)
        return length  # type: ignore[no-any-return]  # a hook's int

    def get_range_json(self, key: str, start: int, end: int) -> list[bytes] | list[str] | None:
        """`get_range` undecoded: each item's stored JSON (bytes; str on PostgreSQL), for a one-pass parse.

        ``None`` when this store has only the decoded form (a store that overrides the public
        list calls instead of the raw hooks); use `get_range` then. The failover and
        instrumented tiers serve it. `ChatHistory` validates a page in one
        pydantic call on ``b"[" + b",".join(items) + b"]"``.
        """
        if "_get_range" not in vars(self) and type(self)._get_range is Database._get_range:
            return None
        key = validate_key(key)
        raws: Any = self._get_range(key, check_index(start), check_index(end))
        return raws  # type: ignore[no-any-return]  # a hook's list

    def get_length(self, key: str) -> int:
        """Length of the list at ``key``; ``0`` when missing."""
        return self._get_length(validate_key(key))

    def trim(self, key: str, start: int, end: int) -> int:
        """Redis ``LTRIM``: keep only the items ``start..end`` (inclusive, negatives from the tail).

        An empty selection removes the list. Costs O(removed), not O(length). Returns
        how many items were removed (``0`` for a missing list).
        """
        key = validate_key(key)
        return self._trim(key, check_index(start), check_index(end))

    # --- list hooks (see `Store` for the conventions) --------------------------------

    def _extend(self, key: str, items: list[bytes], idempotency_id: str | None) -> int:
        """Push ``items`` (possibly none) atomically; the new length; raise `holds_value` for a value.

        With an id already applied to ``key`` in the window, write nothing and return the
        length that write returned; an empty ``items`` neither looks up nor records its id.
        """
        raise _missing(self, "_extend")

    def _get_range(self, key: str, start: int, end: int) -> list[bytes]:
        """The stored bytes of items ``start..end`` (LRANGE semantics); raise `holds_value` for a value."""
        raise _missing(self, "_get_range")

    def _get_length(self, key: str) -> int:
        """The list's length, ``0`` when missing; raise `holds_value` for a value."""
        raise _missing(self, "_get_length")

    def _trim(self, key: str, start: int, end: int) -> int:
        """Keep items ``start..end`` (LTRIM semantics); how many were removed; `holds_value` for a value."""
        raise _missing(self, "_trim")

    # --- live updates (DESIGN.md §11) --------------------------------------------------

    def watch(self, key: str, *, start: int | None = None, poll_interval: float | None = None) -> Iterator[ListItem]:
        """Stream the list at ``key``: each item as a `ListItem` ``(position, value)``, in list order.

        Items appended by any process or thread are yielded as they commit, each exactly
        once, in list order. ``start``: ``None`` (default) yields only items appended from
        now on; ``n >= 0`` starts at position ``n`` (``0``: the whole list, then new items);
        ``n < 0`` the last ``-n`` items, then new ones. A position counts from the first
        item ever appended to the list (a `trim` from the front does not renumber), so a
        watcher that stops, or loses its connection, resumes with
        ``start=last.position + 1`` with no gap and no duplicate.

        Items trimmed away before the watcher read them are skipped. A list that is deleted
        (or trimmed from the tail) and appended to again numbers its items from its new
        end: the watcher notices the shorter list at its next read and follows from there.
        A key that holds a value raises `WrongTypeError`. The iterator never ends by
        itself: break out of it, cancel its task, or close it (``close``/``close``, or
        ``contextlib.aclosing``) to release what it holds (its connection on PostgreSQL).

        ``poll_interval`` (seconds) is how often the backend looks for new items when
        nothing wakes it: SQLite polls ``PRAGMA data_version`` at this rate (default
        0.05 s); PostgreSQL is woken by ``LISTEN/NOTIFY`` and re-reads at this rate only
        as a safety net (default 1 s); memory is woken in process (default 1 s).
        """
        key = validate_key(key)
        if start is not None:
            start = check_index(start)
        check_poll_interval(poll_interval, 1.0)  # a bad interval fails here, not at the first item
        return self._watch(key, start, poll_interval)

    def _watch(
        self,
        key: str,
        start: int | None,
        poll_interval: float | None,
        idle: Callable[[], None] | None = None,
    ) -> Iterator[ListItem]:
        """`watch` after validation. ``idle`` is awaited each time the watch has caught up, before
        each wait of its watcher (so once per poll interval while nothing arrives): what it raises
        ends the watch."""
        # The watcher subscribes before its first read, so nothing committed after that
        # read can be missed: its wake-up is already on the way.
        with self._watcher(key, poll_interval) as watcher:
            cursor = start
            if cursor is None or cursor < 0:
                cursor = start_position(start, (watcher.read(0, 0))[1])
            while True:
                rows, end = watcher.read(cursor, DEFAULT_BATCH)
                if not rows and end < cursor:
                    cursor = end  # the list was deleted or trimmed from the tail: it renumbers from here
                for position, raw in rows:
                    cursor = position + 1
                    try:
                        value = _decode(raw, key)
                    except SerializationError as exc:  # say where: positions may skip (trims)
                        raise SerializationError(
                            f"{exc.message} (watch: the item at position {position}; resume after it "
                            f"with start={position + 1})",
                            backend=exc.backend,
                            key=key,
                            operation="watch",
                        ) from exc
                    yield ListItem(position, value)
                if len(rows) < DEFAULT_BATCH:
                    while True:
                        if idle is not None:
                            idle()
                        if watcher.wait() is not False:  # None: a watcher of the older protocol
                            break

    def _watcher(self, key: str, poll_interval: float | None) -> ListWatcher:
        """A new watcher of ``key`` (an async context manager: subscribed on entry, released on exit)."""
        raise _missing(self, "_watcher")

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


class ListWatcher(Protocol):
    """What a backend's `Database._watcher` returns: one subscription to one list."""

    def __enter__(self) -> ListWatcher: ...

    def __exit__(self, *exc: object) -> None: ...

    def read(self, position: int, limit: int) -> tuple[list[tuple[int, Any]], int]:
        """Up to ``limit`` ``(position, stored bytes or text)`` from ``position`` on, and the
        list's next position (``0`` when absent); `holds_value` for a value."""
        ...

    def wait(self) -> bool:
        """Return when something may have been appended, or after the poll interval: whether to read again.

        ``False`` says nothing changed (the next read would find nothing new): the watch
        waits again without reading.
        """
        ...


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
