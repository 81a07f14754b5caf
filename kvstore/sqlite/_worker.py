"""The async SQLite store's worker thread: the blocking calls, in order, off the event loop, and whether it is idle.

`AsyncSqliteDatabase` runs a call on the event loop when it cannot block and on this
worker when it could (a long batch, opening the file, a checkpoint). The loop may use
the connection only while the worker has nothing to do (`idle`): a call that went to
the worker, even one whose caller was cancelled meanwhile, always ends before the
loop touches the connection again, so the two never use it at once and calls made
one after the other keep their order. `SqliteWorker`, the sync twin, is
`kvstore._core.acompat.Worker`: every call runs in the caller's thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from kvstore._core.acompat import AsyncWorker, Worker
from kvstore.errors import ClosedError

__all__ = ["TURN_BUDGET", "AsyncSqliteWorker", "SqliteWorker", "begin_turn", "turn"]

T = TypeVar("T")


def _settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.done():  # the caller was cancelled meanwhile
        return
    if error is None:
        future.set_result(result)
    else:
        future.set_exception(error)


class AsyncSqliteWorker(AsyncWorker):
    """One thread running a store's blocking calls in order; `idle` tells the loop when the connection is free.

    Two counters: the loops count the calls they hand over, the thread the calls it has
    finished. And one lock, held by whoever uses the connection: the thread during a call,
    a loop during a call on it (`claim`). With one loop it is always free when the thread is
    idle; with several (threads each running asyncio on one store) it keeps the thread's
    patient calls (their busy timeout, see `SqliteEngine.patiently`) and another loop's
    calls apart.
    """

    #: The store's engine serves an event loop: it runs calls that cannot block on it.
    serves_loop = True

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self._handed = 0  # written under _hand_lock (by the loops)
        self._finished = 0  # written on the worker thread only
        self._closed = False
        self._hand_lock = threading.Lock()
        self._owner = threading.Lock()

    def idle(self) -> bool:
        """Whether every call handed to the thread has ended (the connection is the loop's)."""
        return self._finished == self._handed

    def claim(self) -> bool:
        """Whether the calling loop may use the connection now: the thread is idle and no other
        loop uses it. Then `release` when done (at once: the call must not await meanwhile)."""
        return self._finished == self._handed and self._owner.acquire(False)

    def release(self) -> None:
        self._owner.release()

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` on the worker thread; skipped if the caller is cancelled before it starts.

        A call that started runs to its end even when its caller is cancelled: SQLite
        commits or rolls back the whole transaction, never half of it.
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._hand(self._call, loop, future, fn, args)
        return await future

    def start(self, fn: Callable[..., object], *args: Any) -> None:
        """``fn(*args)`` on the worker thread; nobody waits for it and its errors are dropped (a checkpoint)."""
        self._hand(self._call, None, None, fn, args)

    def _hand(self, job: Callable[..., None], *args: Any) -> None:
        if self._closed:
            raise ClosedError(f"{self._name} is closed", backend="sqlite")
        with self._hand_lock:  # loops of several threads may hand calls at once
            self._handed += 1
            self._executor.submit(job, self._handed, *args)

    def _call(
        self,
        number: int,
        loop: asyncio.AbstractEventLoop | None,
        future: asyncio.Future[Any] | None,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
    ) -> None:
        result: Any = None
        error: BaseException | None = None
        try:
            if future is None or not future.cancelled():
                with self._owner:
                    result = fn(*args)
        except BaseException as exc:  # handed to the caller on the loop
            error = exc
        finally:
            self._finished = number  # after fn returned: the connection is free again
        if loop is not None and future is not None:
            with contextlib.suppress(RuntimeError):  # the caller's loop is closed: nobody waits any more
                loop.call_soon_threadsafe(_settle, future, result, error)

    async def aclose(self) -> None:
        """Let the thread finish what it runs and stop; calls after this raise `ClosedError`."""
        self._closed = True
        await super().aclose()

    def _after_fork_in_child(self) -> None:
        # The parent's thread and its calls do not exist here: nothing is running.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=self._name)
        self._handed = self._finished = 0
        self._hand_lock = threading.Lock()
        self._owner = threading.Lock()  # may have been held by the parent's thread at fork


class _Turn(threading.local):
    """When the event loop of this thread started running store calls without running anything else (0: it ran).

    One per thread: threads each running a loop on their stores must not end or restart each other's turn.
    """

    def __init__(self) -> None:
        self.started = 0.0
        #: The loop whose pass the turn belongs to (a turn of a closed loop is never reset).
        self.loop: asyncio.AbstractEventLoop | None = None


#: Shared by every store of a thread, so that a loop of calls on several stores yields as one.
turn = _Turn()
#: Seconds of store calls on the loop after which the next call first lets the loop run its other tasks:
#: a caller awaiting call after call (each finishing on the loop, so never suspending) starves no one.
TURN_BUDGET = 0.002


def _end_turn() -> None:
    turn.started = 0.0


def begin_turn() -> None:
    """A store call runs on the loop after the loop ran other work: start counting, until the loop runs again."""
    loop = asyncio.get_running_loop()
    turn.started, turn.loop = time.perf_counter(), loop
    loop.call_soon(_end_turn)


class SqliteWorker(Worker):
    """The sync twin of `AsyncSqliteWorker`: every call runs directly in the caller's thread."""

    #: The sync store's engine always blocks: it waits for locks itself.
    serves_loop = False
