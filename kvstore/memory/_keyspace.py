"""The in-process keyspace behind both memory backends (I/O-free, thread-safe)."""

from __future__ import annotations

import heapq
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import Any

from orjson import JSONDecodeError
from orjson import loads as _loads

from kvstore._core.idempotency import DEFAULT_IDEMPOTENCY_WINDOW, validate_window
from kvstore._core.keys import compile_glob
from kvstore._core.lists import lrange_bounds
from kvstore.base_async import BEYOND_64_BITS, MAX_INT, holds_list, holds_value, not_an_integer

__all__ = ["MemoryKeyspace"]

Clock = Callable[[], float]

#: Idempotency ids remembered at most (the oldest go first beyond it): memory stays bounded.
MAX_IDS = 100_000


class _List(list[bytes]):
    """Marks a list entry; a plain ``bytes`` entry is a value.

    ``head`` counts the items `trim` removed from the front: item ``i`` is at watch
    position ``head + i`` (positions never renumber, see `kvstore._core.watch`).
    """

    __slots__ = ("head",)

    def __init__(self) -> None:
        super().__init__()
        self.head = 0


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
        #: Wake-up callbacks of the watchers (`watch`): called after every append, thread-safe.
        self.watchers: set[Callable[[], None]] = set()

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

    def _list(self, key: str, operation: str) -> _List | None:
        entry = self._live(key)
        if entry is None or isinstance(entry, _List):
            return entry
        raise holds_value(key, operation, self._backend)

    # --- values (keys arrive validated, values encoded: see kvstore.base_async) -------------

    def get(self, key: str) -> bytes | None:
        # The hot path takes no lock: each dict operation is atomic on its own, and a
        # read that races a write sees the state before or after it. Expiry removal,
        # which must re-check, goes through the locked slow path.
        entry = self._data.get(key)
        if entry is None:
            return None
        exp = self._expiry.get(key)
        if exp is not None and exp <= self._clock():
            with self._lock:
                entry = self._live(key)
            if entry is None:
                return None
        if entry.__class__ is _List:
            raise holds_list(key, "get", self._backend)
        try:  # noqa: SIM105  # contextlib.suppress costs more on this hot path
            self._data.move_to_end(key)
        except KeyError:  # deleted meanwhile: the read happened just before the delete
            pass
        return entry  # type: ignore[return-value]  # a value entry is bytes

    def get_touch(self, key: str, ms: int) -> bytes | None:
        with self._lock:
            entry = self._live(key)
            if entry is None:
                return None
            if isinstance(entry, _List):
                raise holds_list(key, "get", self._backend)
            self._data.move_to_end(key)
            self._set_expiry(key, ms)
            return entry

    def set(self, key: str, data: bytes, ms: int | None, only_if_absent: bool) -> bool:
        with self._lock:
            if only_if_absent and self._live(key) is not None:
                return False
            self._store(key, data, ms)
        return True

    def delete(self, key: str) -> bool:
        with self._lock:
            return self._live(key) is not None and self._remove(key)

    def delete_many(self, keys: list[str]) -> int:
        with self._lock:
            return sum([self._live(key) is not None and self._remove(key) for key in keys])

    def exists(self, key: str) -> bool:
        with self._lock:
            return self._live(key) is not None

    def _entries(self, keys: list[str]) -> list[bytes | _List | None]:
        """The live entry of each key (lock held): one C-level pass, expiry checked only where set."""
        entries = list(map(self._data.get, keys))
        expiry = self._expiry
        if expiry and not expiry.keys().isdisjoint(keys):
            now = self._clock()
            for i, key in enumerate(keys):
                exp = expiry.get(key)
                if exp is not None and exp <= now:
                    self._remove(key)
                    entries[i] = None
        return entries

    def mget(self, keys: list[str]) -> list[bytes | None]:
        with self._lock:
            entries = self._entries(keys)
        # Like Redis MGET, a list key reads as missing rather than failing the batch.
        return [e if e.__class__ is bytes else None for e in entries]

    def mget_values(self, keys: list[str]) -> list[Any]:
        """`mget`, decoded: one ``orjson.loads`` of the stored bytes joined into a JSON array.

        Safe here (not for a backend whose bytes another program may have written): every
        entry was made by `kvstore._core.codec.encode`, so each is one whole JSON document.
        """
        with self._lock:
            entries = self._entries(keys)
        try:
            joined = b",".join(entries)  # type: ignore[arg-type]  # TypeError unless all are bytes
        except TypeError:  # a missing key or a list: null in its place
            joined = b",".join([e if e.__class__ is bytes else b"null" for e in entries])
        values: list[Any] = _loads(b"[" + joined + b"]")
        return values

    def mset(self, rows: list[tuple[str, bytes, int | None]]) -> None:
        with self._lock:
            data, expiry = self._data, self._expiry
            to_end = data.move_to_end
            for key, entry, ms in rows:
                data[key] = entry
                to_end(key)
                if ms is not None:
                    self._set_expiry(key, ms)
                elif expiry:
                    expiry.pop(key, None)
            limit = self._max_entries
            while limit is not None and len(data) > limit:  # the same keys as evicting row by row
                oldest, _ = data.popitem(last=False)
                expiry.pop(oldest, None)
            self._maybe_sweep()

    def iter_keys(self, pattern: str) -> Iterator[str]:
        match = compile_glob(pattern)
        with self._lock:
            now = self._clock()
            expiry = self._expiry
            found = [k for k in self._data if match(k) and not (k in expiry and expiry[k] <= now)]
        return iter(found)

    def clear(self) -> None:
        with self._lock:
            self._data.clear()
            self._expiry.clear()
            self._heap.clear()

    def ttl(self, key: str) -> float | None:
        """Seconds left before ``key`` expires; ``None`` when it has no TTL or is absent."""
        with self._lock:
            if self._live(key) is None:
                return None
            exp = self._expiry.get(key)
            return None if exp is None else max(0.0, exp - self._clock())

    def expire(self, key: str, ms: int | None) -> bool:
        """Set (or with ``None`` remove) the TTL of an existing key."""
        with self._lock:
            if self._live(key) is None:
                return False
            self._set_expiry(key, ms)
            return True

    def incr(self, key: str, by: int) -> int:
        with self._lock:
            entry = self._live(key)
            if entry is None:
                value = by
            else:
                if isinstance(entry, _List):
                    raise holds_list(key, "incr", self._backend)
                current = _integer(entry)
                if current is None:
                    raise not_an_integer(key, self._backend)
                if not -MAX_INT - 1 <= current <= MAX_INT:
                    raise not_an_integer(key, self._backend, BEYOND_64_BITS)
                value = current + by
            if not -MAX_INT - 1 <= value <= MAX_INT:
                raise not_an_integer(key, self._backend, "would leave the signed 64-bit range")
            data = str(value).encode()
            if entry is None:
                self._store(key, data, None)
            else:
                self._data[key] = data
                self._data.move_to_end(key)
            return value

    def __len__(self) -> int:
        with self._lock:
            self.sweep()
            return len(self._data)

    # --- lists ----------------------------------------------------------------------

    def extend(self, key: str, items: list[bytes], idempotency_id: str | None) -> int:
        with self._lock:
            # An empty extend writes nothing, so its id is neither looked up nor recorded.
            if items and idempotency_id is not None and (seen := self._seen(key, idempotency_id)) is not None:
                return seen
            stored = self._list(key, "append")
            if stored is None:
                if not items:
                    return 0
                stored = _List()
                self._store(key, stored, None)
            else:
                self._data.move_to_end(key)
            stored.extend(items)
            if idempotency_id is not None and items:
                self._remember(key, idempotency_id, len(stored))
            if self.watchers:
                for wake in list(self.watchers):
                    wake()
            return len(stored)

    def get_range(self, key: str, start: int, end: int) -> list[bytes]:
        with self._lock:
            items = self._list(key, "get_range")
            if items is None:
                return []
            lo, hi = lrange_bounds(len(items), start, end)
            return items[lo:hi]

    def get_length(self, key: str) -> int:
        with self._lock:
            items = self._list(key, "get_length")
            return 0 if items is None else len(items)

    def trim(self, key: str, start: int, end: int) -> int:
        with self._lock:
            items = self._list(key, "trim")
            if items is None:
                return 0
            length = len(items)
            lo, hi = lrange_bounds(length, start, end)
            if lo == hi:
                self._remove(key)
                return length
            del items[hi:]
            del items[:lo]
            items.head += lo
            return length - len(items)

    def watch_read(self, key: str, position: int, limit: int) -> tuple[list[tuple[int, bytes]], int]:
        """Up to ``limit`` ``(position, item)`` from watch position ``position`` on, and the next position."""
        with self._lock:
            items = self._list(key, "watch")
            if items is None:
                return [], 0
            head = items.head
            lo = max(position - head, 0)
            return [(head + i, items[i]) for i in range(lo, min(lo + limit, len(items)))], head + len(items)


def _integer(data: bytes) -> int | None:
    """The integer a stored value encodes, or ``None`` (a float, bool, string... is not one)."""
    try:
        value = _loads(data)
    except JSONDecodeError:
        return None
    return value if value.__class__ is int else None
