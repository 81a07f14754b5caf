"""What every backend's `watch` shares (I/O-free, plus the wake-up pair for generated twins).

Positions are the cursor of `AsyncDatabase.watch` (DESIGN.md §11). The position of an
item is its index counted from the first item ever appended to the list, **not** from
the current head: `trim` from the front moves the head and never renumbers the items it
keeps, so a position stays valid across trims and resuming with ``start=position + 1``
never repeats and never skips an item that is still there. (`get_range` indexes, by
contrast, are relative to the head and shift after a trim.)
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import threading
from typing import Any, NamedTuple

__all__ = [
    "DEFAULT_BATCH",
    "AsyncWakeup",
    "ChannelHub",
    "ListItem",
    "Wakeup",
    "check_poll_interval",
    "key_tag",
    "start_position",
]

#: Items read per round trip by a watcher that is behind.
DEFAULT_BATCH = 500


class ListItem(NamedTuple):
    """One item yielded by `watch`: its position (the cursor) and its decoded value.

    ``position`` counts from the first item ever appended to the list (a trim from the
    front does not renumber it); resume a watch after it with ``start=item.position + 1``.
    """

    position: int
    value: Any


def start_position(start: int | None, end: int) -> int:
    """The first position to yield, for ``start`` and a list whose next position is ``end``.

    ``None``: only items appended from now on (``end``); ``n >= 0``: from position ``n``;
    ``n < 0``: the last ``-n`` items, then new ones.
    """
    if start is None:
        return end
    if start < 0:
        return max(end + start, 0)
    return start


def check_poll_interval(interval: float | None, default: float) -> float:
    """``interval`` (seconds) or ``default``: a positive finite number, else `ValueError`."""
    if interval is None:
        return default
    if isinstance(interval, bool) or not isinstance(interval, int | float) or not 0 < interval < float("inf"):
        raise ValueError(f"poll_interval must be a positive number of seconds, not {interval!r}")
    return float(interval)


def key_tag(ns: str, key: str) -> str:
    """A short, encoding-proof tag of (namespace, key): what a PostgreSQL notification carries.

    The same as the SQL ``left(md5(octet_length(ns)::text || ':' || ns || key), 16)`` of
    the notify trigger (the length makes the pair unambiguous; a collision only wakes a
    watcher for nothing). A tag keeps every payload small whatever the key's length.
    """
    raw = f"{len(ns.encode())}:{ns}{key}".encode()
    return hashlib.md5(raw, usedforsecurity=False).hexdigest()[:16]


class AsyncWakeup:
    """A flag set from any thread (an appending thread or loop) and awaited in one event loop."""

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._event = asyncio.Event()

    def set(self) -> None:
        """Wake the waiter (thread-safe; nothing happens once its loop is closed)."""
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
            self._loop.call_soon_threadsafe(self._event.set)

    async def wait(self, timeout: float) -> bool:  # noqa: ASYNC109  # the twin of Event.wait(timeout)
        """Whether the flag was set within ``timeout`` seconds; it is cleared either way."""
        try:
            async with asyncio.timeout(timeout):
                await self._event.wait()
            return True
        except TimeoutError:
            return False
        finally:
            self._event.clear()


class Wakeup:
    """The sync twin of `AsyncWakeup`: a `threading.Event`."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def set(self) -> None:
        """Wake the waiter."""
        self._event.set()

    def wait(self, timeout: float) -> bool:
        """Whether the flag was set within ``timeout`` seconds; it is cleared either way."""
        try:
            return self._event.wait(timeout)
        finally:
            self._event.clear()


class ChannelHub:
    """In-process pub/sub: channel -> subscribers (each with a ``push(data)``), thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._channels: dict[str, set[Any]] = {}

    def add(self, channel: str, subscriber: Any) -> None:
        with self._lock:
            self._channels.setdefault(channel, set()).add(subscriber)

    def discard(self, channel: str, subscriber: Any) -> None:
        with self._lock:
            subscribers = self._channels.get(channel)
            if subscribers is not None:
                subscribers.discard(subscriber)
                if not subscribers:
                    del self._channels[channel]

    def publish(self, channel: str, data: bytes) -> int:
        """Hand ``data`` to every subscriber of ``channel``; how many there were."""
        with self._lock:
            subscribers = list(self._channels.get(channel, ()))
        for subscriber in subscribers:
            subscriber.push(data)
        return len(subscribers)

    def __len__(self) -> int:
        with self._lock:
            return sum(len(s) for s in self._channels.values())
