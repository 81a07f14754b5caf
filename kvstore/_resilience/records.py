# Generated from kvstore/_resilience/records_async.py by tools/unasync.py: do not edit; edit the async source.
"""Typed write records: one type per kind of database-tier write made during an outage.

A record knows the keys it touches, its JSON form in the outage journal, how it
changes what this process may truthfully say about a key (`fold`, the degraded
read overlay) and how to apply itself to a store (`apply`, used on replay and to
mirror the write onto the fallback). Values are held in their stored JSON form
(what any backend would read back), TTLs as absolute wall-clock expiries, so a
replay long after the write leaves the key with the time it had left — or
removes it when that time has passed. A new write operation is one new record
type here and one registry entry in `RECORDS`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, ClassVar

from kvstore.base import Database

__all__ = [
    "RECORDS",
    "AppendRecord",
    "ClearRecord",
    "DeleteRecord",
    "ExpireRecord",
    "KeyView",
    "MsetRecord",
    "SetRecord",
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

    def settle(self, now: float) -> KeyView:
        """This view with an elapsed expiry applied (an expired key is known absent)."""
        if self.state in ("value", "list") and self.expires_at is not None and self.expires_at <= now:
            return KeyView("absent")
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

    def apply(self, store: Database) -> Any:
        """Apply this write to ``store`` (a primary on replay, or the fallback)."""
        raise NotImplementedError


@dataclass(frozen=True, slots=True)
class SetRecord(WriteRecord):
    key: str
    value: Any
    expires_at: float | None = None
    kind: ClassVar[str] = "set"

    def keys(self) -> list[str]:
        return [self.key]

    def to_json(self) -> dict[str, Any]:
        return {"k": self.key, "v": self.value, "x": self.expires_at}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SetRecord:
        return cls(data["k"], data["v"], data["x"])

    def fold(self, key: str, view: KeyView) -> KeyView:
        return KeyView("value", self.value, self.expires_at)

    def apply(self, store: Database) -> Any:
        ttl = seconds_left(self.expires_at)
        if ttl is not None and ttl <= 0:
            return store.delete(self.key)  # set, then expired: what is left is nothing
        return store.set(self.key, self.value, ttl)


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

    def apply(self, store: Database) -> Any:
        live: list[tuple[str, Any, float | None]] = []
        for key, (value, expires_at) in self.last_items().items():
            ttl = seconds_left(expires_at)
            if ttl is not None and ttl <= 0:
                store.delete(key)
            else:
                live.append((key, value, ttl))
        if live:
            store.mset(live)


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

    def apply(self, store: Database) -> Any:
        return store.delete(self.key)


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
            return KeyView(view.state, view.value, self.expires_at, view.items, view.full, view.ids)
        return view  # absent stays absent; unknown stays unknown (only the primary knows)

    def apply(self, store: Database) -> Any:
        ttl = seconds_left(self.expires_at)
        if ttl is not None and ttl <= 0:
            return store.delete(self.key)
        return store.expire(self.key, ttl)


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

    def apply(self, store: Database) -> Any:
        return store.clear()


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
        if view.state == "list":
            if self.idempotency_id in view.ids:
                return view  # a retry journaled again: applied once, on replay as here
            items = [*view.items, *self.values]
            return KeyView(
                "list", None, view.expires_at, items, view.full, {**view.ids, self.idempotency_id: len(items)}
            )
        # Known absent before: the outage items are the whole list; unknown: only its tail.
        items = list(self.values)
        return KeyView("list", None, None, items, view.state == "absent", {self.idempotency_id: len(items)})

    def apply(self, store: Database) -> Any:
        # The write's own idempotency id: applied once however often it is replayed.
        return store.extend(self.key, self.values, idempotency_id=self.idempotency_id)


#: kind -> record type; the journal stores ``kind`` and `WriteRecord.to_json`.
RECORDS: dict[str, type[WriteRecord]] = {
    cls.kind: cls for cls in (SetRecord, MsetRecord, DeleteRecord, ExpireRecord, ClearRecord, AppendRecord)
}


def decode_record(kind: str, data: dict[str, Any]) -> WriteRecord:
    """The record of one journal row."""
    try:
        cls = RECORDS[kind]
    except KeyError:
        raise ValueError(f"unknown journal record kind {kind!r}") from None
    return cls.from_json(data)
