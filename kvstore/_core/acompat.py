"""Paired names for code written once as async and generated as sync (psycopg ``_acompat.py`` style).

Each async name here has a sync twin that ``tools/unasync.py`` maps it to (``AsyncWorker``
-> ``Worker`` by its ``Async<Name>`` rule, ``aclose`` -> ``close``), so the async source
needs no ``if True:  # ASYNC`` block for what differs between the two worlds.
"""

from __future__ import annotations

import asyncio
import os
import weakref
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

__all__ = ["AsyncWorker", "Worker", "gather", "gather_async"]

T = TypeVar("T")


class AsyncWorker:
    """Runs a blocking driver's calls on one thread of its own: in order, off the event loop.

    A store on a blocking driver (apsw) awaits ``run(fn, *args)``; its sync twin, `Worker`,
    calls ``fn`` directly. The thread does not survive ``fork``: in a forked child each
    worker starts a new one on first use (DESIGN.md §8).
    """

    def __init__(self, name: str) -> None:
        self._name = name
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        _workers.add(self)

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` on the worker thread."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    def at_init(self, fn: Callable[..., object], *args: Any) -> None:
        """Nothing: a constructor cannot await, so the async store does this on its first call."""

    def direct(self, owner: object, target: object, names: Iterable[str]) -> None:
        """Nothing: async hooks await `run` (the sync twin binds ``target``'s methods as hooks)."""

    async def aclose(self) -> None:
        """Let the thread finish what it runs and stop; calls after this fail."""
        self._executor.shutdown(wait=False)

    def _after_fork_in_child(self) -> None:
        # The parent's thread does not exist here (its executor would queue calls forever).
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=self._name)


class Worker:
    """The sync twin of `AsyncWorker`: every call runs directly in the caller's thread."""

    def __init__(self, name: str) -> None:
        self._name = name

    def run(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)``, now."""
        return fn(*args)

    def at_init(self, fn: Callable[..., object], *args: Any) -> None:
        """``fn(*args)`` now: a sync store does its blocking setup in its constructor."""
        fn(*args)

    def direct(self, owner: object, target: object, names: Iterable[str]) -> None:
        """Bind ``target.<name>`` as ``owner._<name>`` for each name: a hook without a frame of its own."""
        for name in names:
            setattr(owner, f"_{name}", getattr(target, name))

    def close(self) -> None:
        """Nothing to release."""


async def gather_async(*calls: Any) -> list[Any]:
    """Await ``calls`` concurrently; their results in order (`asyncio.gather`)."""
    return list(await asyncio.gather(*calls))


def gather(*results: Any) -> list[Any]:
    """The sync twin of `gather_async`: the calls already ran, one after the other; their results."""
    return list(results)


_workers: weakref.WeakSet[AsyncWorker] = weakref.WeakSet()


def _reset_in_child() -> None:
    for worker in list(_workers):
        worker._after_fork_in_child()


os.register_at_fork(after_in_child=_reset_in_child)
