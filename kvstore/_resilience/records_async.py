"""Typed write records: one type per kind of database-tier write made during an outage.

A record knows the keys it touches, its JSON form in the outage journal, how it
changes what this process may truthfully say about a key (`fold`, the degraded
read overlay) and how to apply itself to a store (`apply`, used on replay and to
mirror the write onto the fallback). Values are held in their stored JSON form
(what any backend would read back), TTLs as absolute wall-clock expiries, so a
replay long after the write leaves the key with the time it had left — or
removes it when that time has passed. A new write operation is one new record
type here and one registry entry in `RECORDS`.

Writes whose outcome depends on the key's current value (``incr``, and ``expire``
or ``get(touch=)`` of a value this outage wrote) are decided from the journal
and journaled as the value they produced (`SetRecord` with a ``basis``,
`IncrRecord`): the record names the journal entry its value was derived from,
and is not replayed when that entry was itself kept as a conflict.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, ClassVar

from kvstore._core.lists import lrange_bounds
from kvstore.base_async import AsyncDatabase

__all__ = [
    "RECORDS",
    "AppendRecord",
    "ClearRecord",
    "DeleteManyRecord",
    "DeleteRecord",
    "ExpireRecord",
    "IncrRecord",
    "KeyView",
    "MsetRecord",
    "SetRecord",
    "TrimRecord",
    "WriteRecord",
    "decode_record",
    "seconds_left",
]


@dataclass(slots=True)
class KeyView:
    """What the outage journal says about one key (the degraded-read overlay).

    ``state`` is ``"unknown"`` (nothing written in this outage: only the primary
    knows), ``"absent"``, ``"value"`` or ``"list"``. A list is ``full`` when it
    was known absent before its first outage append (its items are all of it);
    otherwise ``items`` is only its tail.
    """

    state: str = "unknown"
    value: Any = None
    expires_at: float | None = None
    items: list[Any] = field(default_factory=list)
    full: bool = False
    #: Idempotency ids of this outage's appends to the list -> the item count after each.
    ids: dict[str, int] = field(default_factory=dict)
    #: The journal entry (seq) whose write this state derives from: the last set, mset,
    #: delete or clear of the key (what a value computed from this view depends on).
    basis: int | None = None

    def settle(self, now: float) -> KeyView:
        """This view with an elapsed expiry applied (an expired key is known absent)."""
        if self.state in ("value", "list") and self.expires_at is not None and self.expires_at <= now:
            return KeyView("absent", basis=self.basis)
        return self


def seconds_left(expires_at: float | None) -> float | None:
    """Seconds left until ``expires_at`` (``None``: never expires)."""
    return None if expires_at is None else expires_at - time.time()


class WriteRecord:
    """One journaled write."""

    kind: ClassVar[str]

    def keys(self) -> list[str]:
        """The keys this write touches (empty for `ClearRecord`: it touches all)."""
        raise NotImplementedError

    def derived_from(self) -> int | None:
        """The journal entry (seq) this write's value was computed from, ``None`` for a blind write.

        Replay keeps a derived write as a conflict when that entry was not applied.
        """
        return None

    def to_json(self) -> dict[str, Any]:
        """The record's arguments as a JSON object."""
        raise NotImplementedError

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> WriteRecord:
        """The record of `to_json`'s output."""
        raise NotImplementedError

    def fold(self, key: str, view: KeyView) -> KeyView:
        """``view`` of ``key`` after this write."""
        raise NotImplementedError

    def fold_all(self, keys: list[str], views: dict[str, KeyView]) -> None:
        """Fold this write into the views of ``keys`` (in place)."""
        for key in keys:
            views[key] = self.fold(key, views[key])

    async def apply(self, store: AsyncDatabase) -> Any:
        """Apply this write to ``store`` (a primary on replay, or the fallback)."""
        raise NotImplementedError


@dataclass(frozen=True, slots=True)
class SetRecord(WriteRecord):
    """A ``set``; with ``basis``, a value this outage computed from an earlier entry of the key.

    ``expire`` and ``get(touch=)`` of a value the outage wrote are journaled as the whole
    value with its new expiry (a replay then never depends on an earlier record whose
    own TTL has run out), derived from the entry that wrote the value.
    """

    key: str
    value: Any
    expires_at: float | None = None
    basis: int | None = None
    kind: ClassVar[str] = "set"

    def keys(self) -> list[str]:
        return [self.key]

    def derived_from(self) -> int | None:
        return self.basis

    def to_json(self) -> dict[str, Any]:
        data = {"k": self.key, "v": self.value, "x": self.expires_at}
        if self.basis is not None:
            data["b"] = self.basis
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SetRecord:
        return cls(data["k"], data["v"], data["x"], data.get("b"))

    def fold(self, key: str, view: KeyView) -> KeyView:
        return KeyView("value", self.value, self.expires_at, basis=self.basis)

    async def apply(self, store: AsyncDatabase) -> Any:
        ttl = seconds_left(self.expires_at)
        if ttl is not None and ttl <= 0:
            return await store.delete(self.key)  # set, then expired: what is left is nothing
        return await store.set(self.key, self.value, ttl)


@dataclass(frozen=True, slots=True)
class MsetRecord(WriteRecord):
    items: tuple[tuple[str, Any, float | None], ...]
    kind: ClassVar[str] = "mset"

    def keys(self) -> list[str]:
        return [k for k, _, _ in self.items]

    def to_json(self) -> dict[str, Any]:
        return {"i": [list(item) for item in self.items]}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> MsetRecord:
        return cls(tuple((k, v, x) for k, v, x in data["i"]))

    def fold(self, key: str, view: KeyView) -> KeyView:
        for k, value, expires_at in self.items:
            if k == key:
                view = KeyView("value", value, expires_at)
        return view

    def fold_all(self, keys: list[str], views: dict[str, KeyView]) -> None:
        last = self.last_items()  # O(items + keys), not O(items x keys)
        for key in keys:
            if key in last:
                value, expires_at = last[key]
                views[key] = KeyView("value", value, expires_at)

    def last_items(self) -> dict[str, tuple[Any, float | None]]:
        """Each key's last value and expiry (a key given twice keeps its last, as sequential sets would)."""
        return {k: (v, x) for k, v, x in self.items}

    def without(self, keys: set[str]) -> MsetRecord:
        """The same write minus the items of ``keys`` (conflicting on replay)."""
        return MsetRecord(tuple(item for item in self.items if item[0] not in keys))

    async def apply(self, store: AsyncDatabase) -> Any:
        live: list[tuple[str, Any, float | None]] = []
        for key, (value, expires_at) in self.last_items().items():
            ttl = seconds_left(expires_at)
            if ttl is not None and ttl <= 0:
                await store.delete(key)
            else:
                live.append((key, value, ttl))
        if live:
            await store.mset(live)


@dataclass(frozen=True, slots=True)
class DeleteRecord(WriteRecord):
    key: str
    kind: ClassVar[str] = "delete"

    def keys(self) -> list[str]:
        return [self.key]

    def to_json(self) -> dict[str, Any]:
        return {"k": self.key}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> DeleteRecord:
        return cls(data["k"])

    def fold(self, key: str, view: KeyView) -> KeyView:
        return KeyView("absent")

    async def apply(self, store: AsyncDatabase) -> Any:
        return await store.delete(self.key)


@dataclass(frozen=True, slots=True)
class ExpireRecord(WriteRecord):
    key: str
    expires_at: float | None
    kind: ClassVar[str] = "expire"

    def keys(self) -> list[str]:
        return [self.key]

    def to_json(self) -> dict[str, Any]:
        return {"k": self.key, "x": self.expires_at}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ExpireRecord:
        return cls(data["k"], data["x"])

    def fold(self, key: str, view: KeyView) -> KeyView:
        if view.state in ("value", "list"):
            return KeyView(view.state, view.value, self.expires_at, view.items, view.full, view.ids, view.basis)
        return view  # absent stays absent; unknown stays unknown (only the primary knows)

    async def apply(self, store: AsyncDatabase) -> Any:
        ttl = seconds_left(self.expires_at)
        if ttl is not None and ttl <= 0:
            return await store.delete(self.key)
        return await store.expire(self.key, ttl)


@dataclass(frozen=True, slots=True)
class ClearRecord(WriteRecord):
    kind: ClassVar[str] = "clear"

    def keys(self) -> list[str]:
        return []

    def to_json(self) -> dict[str, Any]:
        return {}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ClearRecord:
        return cls()

    def fold(self, key: str, view: KeyView) -> KeyView:
        return KeyView("absent")

    async def apply(self, store: AsyncDatabase) -> Any:
        return await store.clear()


@dataclass(frozen=True, slots=True)
class AppendRecord(WriteRecord):
    """An ``append`` (one value) or ``extend`` (several), with its idempotency id."""

    key: str
    values: tuple[Any, ...]
    idempotency_id: str
    kind: ClassVar[str] = "append"

    def keys(self) -> list[str]:
        return [self.key]

    def to_json(self) -> dict[str, Any]:
        return {"k": self.key, "v": list(self.values), "id": self.idempotency_id}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> AppendRecord:
        return cls(data["k"], tuple(data["v"]), data["id"])

    def fold(self, key: str, view: KeyView) -> KeyView:
        if self.idempotency_id in view.ids:
            return view  # a retry journaled again: applied once, on replay as here
        if view.state == "list":
            items = [*view.items, *self.values]
            return KeyView(
                "list",
                None,
                view.expires_at,
                items,
                view.full,
                {**view.ids, self.idempotency_id: len(items)},
                view.basis,
            )
        # Known absent before: the outage items are the whole list; unknown: only its tail.
        items = list(self.values)
        return KeyView("list", None, None, items, view.state == "absent", {self.idempotency_id: len(items)})

    async def apply(self, store: AsyncDatabase) -> Any:
        # The write's own idempotency id: applied once however often it is replayed.
        return await store.extend(self.key, self.values, idempotency_id=self.idempotency_id)


@dataclass(frozen=True, slots=True)
class IncrRecord(SetRecord):
    """An ``incr`` decided during the outage: the counter's new value, derived from entry ``basis``.

    ``incr`` is buffered only when this outage's journal knows the key's value (it set,
    deleted or counted it); otherwise it raises `BackendUnavailableError`, as a
    conditional write does. The record holds the *result* and replays as a set of it
    (checked, written and dated like `SetRecord`), not as ``INCRBY by``:

    * a set of the result is idempotent. The replay loop re-applies an entry whose
      reply was lost, or that a crash interrupted before it was marked done; ``INCRBY``
      would then count twice, and the primary would hold a value no caller was told.
    * the primary ends with exactly the value the caller was told, or the write is kept
      as a conflict: when another instance changed the key after the incr (the set
      rule), or after the entry the value was computed from (that entry is then itself
      a conflict, and so is everything derived from it).

    It keeps the expiry the key had (an existing key keeps its TTL; a new one has none).
    """

    by: int = 1
    kind: ClassVar[str] = "incr"

    def to_json(self) -> dict[str, Any]:
        return {"k": self.key, "v": self.value, "x": self.expires_at, "b": self.basis, "by": self.by}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> IncrRecord:
        return cls(data["k"], data["v"], data["x"], data["b"], data["by"])


@dataclass(frozen=True, slots=True)
class DeleteManyRecord(WriteRecord):
    """A ``delete_many``: one journal entry (atomic) touching every key, replayed key by key as ``delete``."""

    names: tuple[str, ...]
    kind: ClassVar[str] = "delete_many"

    def keys(self) -> list[str]:
        return list(self.names)

    def to_json(self) -> dict[str, Any]:
        return {"ks": list(self.names)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> DeleteManyRecord:
        return cls(tuple(data["ks"]))

    def fold(self, key: str, view: KeyView) -> KeyView:
        return KeyView("absent")

    async def apply(self, store: AsyncDatabase) -> Any:
        return await store.delete_many(self.names)


@dataclass(frozen=True, slots=True)
class TrimRecord(WriteRecord):
    """A ``trim`` (Redis ``LTRIM``), replayed as a trim unless the list changed after it was made.

    Its degraded-read fold is exact for a list the outage knows whole; of a list whose
    older items only the primary holds it keeps what the trim cannot have touched (a
    range counted from the tail), and makes the key unknown when the outcome depends on
    the primary's part (strict reads of it then raise).
    """

    key: str
    start: int
    end: int
    kind: ClassVar[str] = "trim"

    def keys(self) -> list[str]:
        return [self.key]

    def to_json(self) -> dict[str, Any]:
        return {"k": self.key, "s": self.start, "e": self.end}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TrimRecord:
        return cls(data["k"], data["s"], data["e"])

    def fold(self, key: str, view: KeyView) -> KeyView:
        if view.state != "list":
            return view  # absent stays absent; a value is refused (by the primary too); unknown stays unknown
        start, end, items = self.start, self.end, view.items
        if (start < 0) == (end < 0) and start > end:
            return KeyView("absent")  # an empty selection whatever the length: the list is removed
        if view.full or (start < 0 and end < 0 and -start <= len(items)):
            # The kept range lies inside what is known: the result is exactly known (and whole).
            lo, hi = lrange_bounds(len(items), start, end)
            if lo == hi:
                return KeyView("absent")
            return KeyView("list", None, view.expires_at, items[lo:hi], True, view.ids, view.basis)
        if end < 0 and (start < 0 or start == 0) and len(items) + end + 1 > 0:
            # Keeps from somewhere in the older part through tail item ``end``: the known tail
            # up to it is still the list's tail; how much older data is left only the primary knows.
            kept = items[: len(items) + end + 1]
            return KeyView("list", None, view.expires_at, kept, False, view.ids, view.basis)
        # Depends on how many items the primary holds: only the primary knows.
        return KeyView("unknown", ids=view.ids)

    def removed(self, view: KeyView) -> tuple[int, bool]:
        """``(count, exact)``: how many items this trim removes from the list in ``view``.

        Not exact (a lower bound: the known items it removes) when the primary holds
        older items of the list, or the key is unknown to this outage.
        """
        if view.state != "list":
            return 0, view.state == "absent"
        after = self.fold(self.key, view)
        if after.state == "unknown":
            return 0, False
        left = len(after.items) if after.state == "list" else 0
        return len(view.items) - left, view.full

    async def apply(self, store: AsyncDatabase) -> Any:
        return await store.trim(self.key, self.start, self.end)


#: kind -> record type; the journal stores ``kind`` and `WriteRecord.to_json`.
RECORDS: dict[str, type[WriteRecord]] = {
    cls.kind: cls
    for cls in (
        SetRecord,
        MsetRecord,
        DeleteRecord,
        ExpireRecord,
        ClearRecord,
        AppendRecord,
        IncrRecord,
        DeleteManyRecord,
        TrimRecord,
    )
}


def decode_record(kind: str, data: dict[str, Any]) -> WriteRecord:
    """The record of one journal row."""
    try:
        cls = RECORDS[kind]
    except KeyError:
        raise ValueError(f"unknown journal record kind {kind!r}") from None
    return cls.from_json(data)
