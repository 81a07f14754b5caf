"""The in-process keyspace behind both memory backends (I/O-free, thread-safe)."""

from __future__ import annotations

import heapq
import operator
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from orjson import JSONDecodeError
from orjson import loads as _loads

from kvstore._core.codec import DEFAULT_MAX_VALUE_BYTES, decode, encode
from kvstore._core.idempotency import DEFAULT_IDEMPOTENCY_WINDOW, validate_idempotency_id, validate_window
from kvstore._core.items import MsetItems, normalize_items
from kvstore._core.keys import _valid as _valid_keys
from kvstore._core.keys import compile_glob, validate_key, validate_keys
from kvstore._core.ttl import TTL, ttl_ms
from kvstore.errors import WrongTypeError

__all__ = ["MemoryKeyspace"]

Clock = Callable[[], float]

#: Idempotency ids remembered at most (the oldest go first beyond it): memory stays bounded.
MAX_IDS = 100_000


class _List(list[bytes]):
    """Marks a list entry; a plain ``bytes`` entry is a value."""

    __slots__ = ()


class MemoryKeyspace:
    """One keyspace of values and lists, bounded by LRU, with lazy and swept expiry.

    Every entry is stored encoded, so callers never share objects with the store.
    The lock makes each operation atomic across threads; no operation waits on
    anything else while holding it. Idempotency ids of list writes live in a
    dict of their own, in the order they were recorded, bounded by ``max_ids``
    and by age (``idempotency_window``); deleting a key does not forget them.
    """

    def __init__(
        self,
        *,
        backend: str,
        max_entries: int | None = 100_000,
        max_value_bytes: int = DEFAULT_MAX_VALUE_BYTES,
        clock: Clock = time.monotonic,
        idempotency_window: float = DEFAULT_IDEMPOTENCY_WINDOW,
        max_ids: int = MAX_IDS,
    ) -> None:
        if max_entries is not None and max_entries <= 0:
            raise ValueError("max_entries must be > 0")
        if max_ids <= 0:
            raise ValueError("max_ids must be > 0")
        self._backend = backend
        self._max_entries = max_entries
        self._max_value_bytes = max_value_bytes
        self._clock = clock
        self._data: OrderedDict[str, bytes | _List] = OrderedDict()
        self._expiry: dict[str, float] = {}
        self._heap: list[tuple[float, str]] = []
        self._lock = threading.RLock()
        self._next_sweep = 0.0
        # (key, id) -> (length the first write returned, when it was recorded), oldest first.
        self._ids: OrderedDict[tuple[str, str], tuple[int, float]] = OrderedDict()
        self._window = validate_window(idempotency_window)
        self._max_ids = max_ids

    # --- internal helpers (call with the lock held) ---------------------------------

    def _live(self, key: str) -> bytes | _List | None:
        entry = self._data.get(key)
        if entry is None:
            return None
        exp = self._expiry.get(key)
        if exp is not None and exp <= self._clock():
            self._remove(key)
            return None
        return entry

    def _remove(self, key: str) -> bool:
        self._expiry.pop(key, None)
        return self._data.pop(key, None) is not None

    def _set_expiry(self, key: str, ms: int | None) -> None:
        if ms is None:
            self._expiry.pop(key, None)
            return
        exp = self._clock() + ms / 1000
        self._expiry[key] = exp
        heapq.heappush(self._heap, (exp, key))

    def _store(self, key: str, entry: bytes | _List, ms: int | None) -> None:
        data = self._data
        data[key] = entry
        data.move_to_end(key)
        self._set_expiry(key, ms)
        if self._max_entries is not None and len(data) > self._max_entries:
            oldest, _ = data.popitem(last=False)
            self._expiry.pop(oldest, None)
        self._maybe_sweep()

    def _maybe_sweep(self) -> None:
        if not self._heap:
            return
        now = self._clock()
        if now < self._next_sweep and len(self._heap) <= 2 * len(self._expiry) + 1024:
            return
        self.sweep(now)

    def sweep(self, now: float | None = None) -> int:
        """Remove every expired entry now; return how many were removed."""
        with self._lock:
            now = self._clock() if now is None else now
            heap, expiry, removed = self._heap, self._expiry, 0
            while heap and heap[0][0] <= now:
                exp, key = heapq.heappop(heap)
                if expiry.get(key) == exp:
                    self._remove(key)
                    removed += 1
            if len(heap) > 2 * len(expiry) + 1024:  # drop heap items of overwritten keys
                self._heap = [(e, k) for k, e in expiry.items()]
                heapq.heapify(self._heap)
            self._next_sweep = now + 1.0
            self._forget_ids(now)
            return removed

    def _forget_ids(self, now: float) -> None:
        """Drop the ids older than the window, then the oldest beyond ``max_ids`` (lock held)."""
        ids, stale = self._ids, now - self._window
        while ids:
            first = next(iter(ids.values()))
            if first[1] > stale and len(ids) <= self._max_ids:
                return
            ids.popitem(last=False)

    def _seen(self, key: str, idempotency_id: str) -> int | None:
        """The length an earlier write with this id returned, if it is remembered (lock held)."""
        found = self._ids.get((key, idempotency_id))
        if found is None or found[1] <= self._clock() - self._window:
            return None
        return found[0]

    def _remember(self, key: str, idempotency_id: str, length: int) -> None:
        now = self._clock()
        ids = self._ids
        ids[(key, idempotency_id)] = (length, now)
        ids.move_to_end((key, idempotency_id))  # a stale id recorded again is the newest
        self._forget_ids(now)

    def _value(self, key: str, entry: bytes | _List | None) -> Any:
        if entry is None:
            return None
        if isinstance(entry, _List):
            raise WrongTypeError(
                f"key {key!r} holds a list; use get_range", key=key, backend=self._backend, operation="get"
            )
        return decode(entry, key)

    def _list(self, key: str, operation: str) -> _List | None:
        entry = self._live(key)
        if entry is None or isinstance(entry, _List):
            return entry
        raise WrongTypeError(
            f"key {key!r} holds a value, not a list", key=key, backend=self._backend, operation=operation
        )

    # --- values ---------------------------------------------------------------------

    def get(self, key: str) -> Any:
        # The hot path takes no lock: each dict operation is atomic on its own, and a
        # read that races a write sees the state before or after it. Expiry removal,
        # which must re-check, goes through the locked slow path.
        if key.__class__ is not str or key not in _valid_keys:
            validate_key(key)
        entry = self._data.get(key)
        if entry is None:
            return None
        exp = self._expiry.get(key)
        if exp is not None and exp <= self._clock():
            with self._lock:
                entry = self._live(key)
            if entry is None:
                return None
        if isinstance(entry, _List):
            return self._value(key, entry)  # raises WrongTypeError
        try:  # noqa: SIM105  # contextlib.suppress costs more on this hot path
            self._data.move_to_end(key)
        except KeyError:  # deleted meanwhile: the read happened just before the delete
            pass
        try:
            return _loads(entry)
        except JSONDecodeError:
            return decode(entry, key)  # raises SerializationError naming the key

    def set(self, key: str, value: Any, ttl: TTL | None = None, *, only_if_absent: bool = False) -> bool:
        key = validate_key(key)
        ms = ttl_ms(ttl)
        data = encode(key, value, self._max_value_bytes)
        with self._lock:
            if only_if_absent and self._live(key) is not None:
                return False
            self._store(key, data, ms)
        return True

    def delete(self, key: str) -> bool:
        key = validate_key(key)
        with self._lock:
            return self._live(key) is not None and self._remove(key)

    def exists(self, key: str) -> bool:
        key = validate_key(key)
        with self._lock:
            return self._live(key) is not None

    def mget(self, keys: Iterable[str]) -> list[Any]:
        keys = validate_keys(keys)
        with self._lock:
            entries = [self._live(k) for k in keys]
        # Like Redis MGET, a list key reads as missing rather than failing the batch.
        return [None if e is None or isinstance(e, _List) else decode(e, k) for k, e in zip(keys, entries, strict=True)]

    def mset(self, items: MsetItems) -> None:
        encoded = [(key, encode(key, value, self._max_value_bytes), ms) for key, value, ms in normalize_items(items)]
        with self._lock:
            for key, data, ms in encoded:
                self._store(key, data, ms)

    def iter_keys(self, pattern: str = "*") -> Iterator[str]:
        match = compile_glob(pattern)
        with self._lock:
            now = self._clock()
            expiry = self._expiry
            found = [k for k in self._data if match(k) and not (k in expiry and expiry[k] <= now)]
        return iter(found)

    def keys(self, pattern: str = "*") -> list[str]:
        return list(self.iter_keys(pattern))

    def clear(self) -> None:
        with self._lock:
            self._data.clear()
            self._expiry.clear()
            self._heap.clear()

    def ttl(self, key: str) -> float | None:
        """Seconds left before ``key`` expires; ``None`` when it has no TTL or is absent."""
        key = validate_key(key)
        with self._lock:
            if self._live(key) is None:
                return None
            exp = self._expiry.get(key)
            return None if exp is None else max(0.0, exp - self._clock())

    def expire(self, key: str, ttl: TTL | None) -> bool:
        """Set (or with ``None`` remove) the TTL of an existing key."""
        key = validate_key(key)
        ms = ttl_ms(ttl)
        with self._lock:
            if self._live(key) is None:
                return False
            self._set_expiry(key, ms)
            return True

    def __len__(self) -> int:
        with self._lock:
            self.sweep()
            return len(self._data)

    # --- lists ----------------------------------------------------------------------

    def append(self, key: str, value: Any, *, idempotency_id: str | None = None) -> int:
        key = validate_key(key)
        if idempotency_id is not None:
            idempotency_id = validate_idempotency_id(idempotency_id)
        data = encode(key, value, self._max_value_bytes)
        with self._lock:
            if idempotency_id is not None and (seen := self._seen(key, idempotency_id)) is not None:
                return seen
            items = self._list(key, "append")
            if items is None:
                items = _List()
                self._store(key, items, None)
            else:
                self._data.move_to_end(key)
            items.append(data)
            if idempotency_id is not None:
                self._remember(key, idempotency_id, len(items))
            return len(items)

    def extend(self, key: str, values: Iterable[Any], *, idempotency_id: str | None = None) -> int:
        key = validate_key(key)
        if idempotency_id is not None:
            idempotency_id = validate_idempotency_id(idempotency_id)
        encoded = [encode(key, v, self._max_value_bytes) for v in values]
        with self._lock:
            # An empty extend writes nothing, so its id is neither looked up nor recorded.
            if encoded and idempotency_id is not None and (seen := self._seen(key, idempotency_id)) is not None:
                return seen
            items = self._list(key, "extend")
            if items is None:
                if not encoded:
                    return 0
                items = _List()
                self._store(key, items, None)
            items.extend(encoded)
            if idempotency_id is not None and encoded:
                self._remember(key, idempotency_id, len(items))
            return len(items)

    def get_range(self, key: str, start: int, end: int) -> list[Any]:
        key = validate_key(key)
        lrange_bounds(0, start, end)  # index types are checked even when the list is missing
        with self._lock:
            items = self._list(key, "get_range")
            if items is None:
                return []
            lo, hi = lrange_bounds(len(items), start, end)
            chunk = items[lo:hi]
        return [decode(b, key) for b in chunk]

    def get_length(self, key: str) -> int:
        key = validate_key(key)
        with self._lock:
            items = self._list(key, "get_length")
            return 0 if items is None else len(items)


def lrange_bounds(length: int, start: int, end: int) -> tuple[int, int]:
    """Redis ``LRANGE`` index arithmetic: a half-open ``[lo, hi)`` slice of a list."""
    if start.__class__ is not int or end.__class__ is not int:
        start, end = _index(start), _index(end)
    if start < 0:
        start = max(length + start, 0)
    if end < 0:
        end += length
    elif end >= length:
        end = length - 1
    if start > end or start >= length:
        return 0, 0
    return start, end + 1


def _index(value: object) -> int:
    if isinstance(value, bool) or not hasattr(value, "__index__"):
        raise TypeError(f"list indexes must be int, not {type(value).__name__}")
    return operator.index(value)
