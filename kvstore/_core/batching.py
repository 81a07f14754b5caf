"""Async auto-batching: concurrent point ``get``s of one store share one round trip.

Only the async stores batch (this module has no sync twin: a sync caller has nothing
concurrent to coalesce). `AsyncStore.get` hands every plain ``get`` of a store whose
``batching`` is on to that store's `GetBatcher`:

- When nothing of the store is in flight, the call goes straight to the ``_get`` hook,
  as without batching: a lone caller in a loop pays one counter and one frame.
- While a ``get`` (or a batch) of the store is in flight, a new ``get`` joins the batch
  of the current event-loop tick instead: every ``get`` issued until the loop runs the
  batch's runner task (DataLoader style) is read by one ``_get_batch`` round trip.

So 100 ``get``s gathered at once cost two round trips (the first caller's own, which
overlaps with the others queueing, and one batch of 99), not 100.

Each caller gets its own result and its own error: a key holding a list fails that
caller only (``_get_batch`` reports it per key), a failed round trip fails every caller
of the batch with its own copy of the error. A caller cancelled while waiting leaves the
batch to the others; a batch whose runner is cancelled (the loop shutting down, or a
task reaper) sends each caller that was not cancelled itself back to its own ``_get``.
"""

from __future__ import annotations

import asyncio
import copy
import functools
import itertools
import types
from typing import TYPE_CHECKING, Any

from kvstore.errors import KVStoreError

if TYPE_CHECKING:
    from kvstore.base_async import AsyncStore

__all__ = ["MAX_BATCH", "GetBatcher"]

_Coroutine = types.CoroutineType

#: Most keys one batch reads; later ``get``s of the same tick start another batch.
MAX_BATCH = 512

#: Numbers the failed round trips of batches: every caller's copy of one failure carries its
#: number as ``batch_failure``, so a failover tier counts that round trip once for its breaker.
_failures = itertools.count(1)


class _Batch:
    """The ``get``s of one tick: each distinct key with the futures of its callers."""

    __slots__ = ("loop", "waiters")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.waiters: dict[str, list[asyncio.Future[Any]]] = {}


class GetBatcher:
    """Coalesces the concurrent ``get``s of one store (see the module docstring)."""

    __slots__ = ("_busy", "_pending", "_store", "_tasks")

    def __init__(self, store: AsyncStore) -> None:
        self._store = store
        #: Direct ``get``s and batches of the store in flight now.
        self._busy = 0
        #: The batch of the current tick, until its runner starts.
        self._pending: _Batch | None = None
        #: The runner tasks (the loop keeps only weak references to tasks).
        self._tasks: set[asyncio.Task[None]] = set()

    async def get(self, key: str) -> Any:
        """The stored bytes (or text) of ``key``, ``None`` when absent; ``key`` is validated."""
        if not self._busy:  # nothing in flight: straight to the hook, as without batching
            self._busy += 1
            try:
                raw: Any = self._store._get(key)
                if raw.__class__ is _Coroutine:
                    raw = await raw
                return raw
            finally:
                self._busy -= 1
        loop = asyncio.get_running_loop()
        batch = self._pending
        if batch is None or batch.loop is not loop or len(batch.waiters) >= MAX_BATCH:
            batch = self._pending = _Batch(loop)
            self._busy += 1
            # A new task runs after every callback already queued: the rest of this tick. Made as
            # `asyncio.Task` itself, never started eagerly (a loop's eager_task_factory, 3.12+): the
            # runner would then read the batch before any caller joined it (batching silently off).
            task = asyncio.Task(self._run(batch), loop=loop)
            self._tasks.add(task)
            task.add_done_callback(functools.partial(self._ran, batch))
        future: asyncio.Future[Any] = loop.create_future()
        waiters = batch.waiters.get(key)
        if waiters is None:
            batch.waiters[key] = [future]
        else:
            waiters.append(future)
        try:
            return await future
        except asyncio.CancelledError:
            me = asyncio.current_task()
            if me is None or me.cancelling():
                if future.done() and not future.cancelled():
                    future.exception()  # answered just before the cancellation: mark the error seen
                raise  # this caller was cancelled: the batch goes on for the others
        # The runner was cancelled, not this caller: read the key on its own.
        raw = self._store._get(key)
        if raw.__class__ is _Coroutine:
            raw = await raw
        return raw

    async def _run(self, batch: _Batch) -> None:
        if self._pending is batch:
            self._pending = None  # the gets from now on form the next batch
        try:
            # Keys whose every caller was cancelled before the batch left are not read.
            keys = [key for key, futures in batch.waiters.items() if not all(f.done() for f in futures)]
            if not keys:
                return
            raws = await self._store._get_batch(keys)
            for key, raw in zip(keys, raws, strict=True):
                for i, future in enumerate(batch.waiters[key]):
                    if future.done():  # cancelled while waiting
                        continue
                    if isinstance(raw, BaseException):  # this key's own error (a list)
                        future.set_exception(raw if i == 0 else _own(raw, key))
                    else:
                        future.set_result(raw)
        except Exception as exc:
            failure = next(_failures)
            for key, futures in batch.waiters.items():
                for future in futures:
                    if not future.done():
                        future.set_exception(_own(exc, key, failure))

    def _ran(self, batch: _Batch, task: asyncio.Task[None]) -> None:
        """The runner is done, whatever happened: even cancelled before it started, no caller hangs."""
        self._tasks.discard(task)
        if self._pending is batch:
            self._pending = None
        self._busy -= 1
        # Left unanswered only when the runner was cancelled (or the process is stopping): each
        # caller that was not cancelled itself then reads its key on its own (see `get`).
        for futures in batch.waiters.values():
            for future in futures:
                future.cancel()


def _own(exc: BaseException, key: str, failure: int = 0) -> BaseException:
    """A copy of ``exc`` for one caller of a batch (its traceback and cause kept, its key set).

    A copy for a failed round trip (``failure``, its number) carries it as ``batch_failure``:
    one round trip failed, however many callers it carried (see `_AsyncFailover._primary_failed`).
    """
    try:
        mine = copy.copy(exc)
        mine.__dict__.update(exc.__dict__)
    except Exception:  # an exception class copy cannot rebuild: share the one instance
        return exc
    mine.__cause__, mine.__context__ = exc.__cause__, exc.__context__
    mine.__suppress_context__ = exc.__suppress_context__
    mine.__traceback__ = exc.__traceback__
    if isinstance(mine, KVStoreError):
        if mine.key is None:
            mine.key = key
        mine.operation = "get"
        if failure:
            mine.batch_failure = failure  # type: ignore[attr-defined]  # read with getattr by the failover
    return mine
