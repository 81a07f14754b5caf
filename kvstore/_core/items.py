"""Normalising ``mset`` arguments, shared by every backend."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from kvstore._core.keys import _valid, validate_key
from kvstore._core.ttl import TTL, ttl_ms

__all__ = ["LowerBound", "MsetItems", "normalize_items"]


class LowerBound(int):
    """A list length known only as a lower bound.

    An append buffered during a database outage cannot know how many items the
    primary already holds; its length counts the items known locally. Compare it
    as an int; ``isinstance(n, LowerBound)`` tells it is not exact.
    """

    __slots__ = ()

    exact = False


MsetItems = Mapping[str, Any] | Iterable[tuple[str, Any] | tuple[str, Any, TTL | None]]


def normalize_items(items: MsetItems) -> list[tuple[str, Any, int | None]]:
    """Return ``[(key, value, ttl_ms)]``, validating every key and TTL before any I/O.

    A key given twice keeps its last value, as sequential ``set`` calls would.
    """
    if isinstance(items, Mapping):
        for key in items:
            if key.__class__ is not str or key not in _valid:  # the memo spares a call per known key
                validate_key(key)
        return [(k, v, None) for k, v in items.items()]
    if isinstance(items, str | bytes):
        raise TypeError("mset takes a mapping or (key, value[, ttl]) tuples")
    out: list[tuple[str, Any, int | None]] = []
    for item in items:
        if not isinstance(item, tuple) or len(item) not in (2, 3):
            raise TypeError(f"mset items are (key, value) or (key, value, ttl) tuples, not {item!r:.80}")
        ttl = item[2] if len(item) == 3 else None
        out.append((validate_key(item[0]), item[1], ttl_ms(ttl)))
    return out
