"""SQLite job queue engine: every call one ``BEGIN IMMEDIATE`` transaction on the store's connection.

The async engine runs a call on the event loop when it cannot block and on the store's
worker thread when it could, by the store's own rules (`AsyncSqliteDatabase._run_write`).

The transaction bodies live in `kvstore.sqlite._queue_sql`. An idle worker loop polls
``PRAGMA data_version`` (which changes when another connection commits to the file)
and the connection's own change count every ``poll_interval``: a cheap read without a
lock, so it claims only when something was written.
"""

from __future__ import annotations

import asyncio
import time
import types
from typing import Any

from kvstore.queue._job import QueueStats, RawJob
from kvstore.sqlite import _queue_sql as qs
from kvstore.sqlite._engine import LOOP_BYTES
from kvstore.sqlite._store_async import AsyncSqliteDatabase

__all__ = ["AsyncSqliteListener", "AsyncSqliteQueueEngine"]

_Coroutine = types.CoroutineType
#: Seconds between sweeps of acknowledged rows older than ``keep_done``.
_PURGE_EVERY = 30.0


class AsyncSqliteQueueEngine:
    """The queue operations of one named queue on one SQLite store."""

    backend = "sqlite"

    def __init__(self, store: AsyncSqliteDatabase, name: str, *, keep_done: float, poll_interval: float) -> None:
        self._store = store
        self._ns = store.key_prefix
        self._name = name
        self._keep_done = keep_done
        self.poll_interval = poll_interval
        self._ready = False
        self._next_purge = time.monotonic() + _PURGE_EVERY

    def _write(self, op: str, body: object, *args: object, on_loop: bool = True) -> Any:
        """One queue transaction, like the store's own writes (`AsyncSqliteDatabase._run_write`).

        On the event loop when it cannot block (the write lock free at once, a payload
        small enough to copy there): then the answer itself, not a coroutine (the queue
        awaits only a coroutine). Otherwise a coroutine: the loop looks again without
        holding the connection, or the worker runs it, never waiting there for another
        connection's lock. ``on_loop=False``: on the worker in any case (work of any size).
        """
        store = self._store
        if not self._ready:
            return self._create_first(op, body, args, on_loop)
        if not on_loop:
            return store._worker_write(store._engine._write, op, None, body, *args)
        return store._run_write(store._engine._write, op, None, body, *args)

    async def _create_first(self, op: str, body: object, args: tuple[object, ...], on_loop: bool) -> Any:
        store = self._store
        await store._worker_write(store._engine._write, "queue", None, qs.create)
        self._ready = True
        result: Any = self._write(op, body, *args, on_loop=on_loop)
        if result.__class__ is _Coroutine:
            result = await result
        return result

    def enqueue(self, payload: str, delay: float, dedupe_key: str | None, max_attempts: int) -> Any:
        """``(job id, created)``, or a coroutine of it; a payload that may be more than
        `LOOP_BYTES` as UTF-8 is written on the worker."""
        small = len(payload) <= LOOP_BYTES // 4
        return self._write(
            "enqueue", qs.enqueue, self._ns, self._name, payload, delay, dedupe_key, max_attempts, on_loop=small
        )

    def claim(self, lease: float) -> Any:
        """The claimed `RawJob` or ``None``, or a coroutine of it (see `_write`)."""
        if time.monotonic() >= self._next_purge:
            return self._purge_then_claim(lease)
        return self._write("claim", qs.claim, self._ns, self._name, lease, self._store._engine.check_loop_bytes)

    async def _purge_then_claim(self, lease: float) -> RawJob | None:
        self._next_purge = time.monotonic() + _PURGE_EVERY
        # Deletes any number of rows: on the worker.
        removed = await self._write("purge", qs.purge_done, self._ns, self._name, self._keep_done, on_loop=False)
        if removed >= qs.PURGE_BATCH:
            self._next_purge = 0.0  # a backlog: sweep again at the next claim until it is gone
        result: Any = self._write("claim", qs.claim, self._ns, self._name, lease, self._store._engine.check_loop_bytes)
        if result.__class__ is _Coroutine:
            result = await result
        return result  # type: ignore[no-any-return]  # qs.claim's answer

    def release(self, job_id: int, attempt: int) -> Any:
        return self._write("release", qs.release, self._ns, self._name, job_id, attempt)

    def heartbeat(self, job_id: int, attempt: int, lease: float) -> Any:
        return self._write("heartbeat", qs.heartbeat, self._ns, self._name, job_id, attempt, lease)

    def ack(self, job_id: int, attempt: int) -> Any:
        return self._write("ack", qs.ack, self._ns, self._name, job_id, attempt)

    def fail(self, job_id: int, attempt: int, error: str, delay: float | None) -> Any:
        return self._write("fail", qs.fail, self._ns, self._name, job_id, attempt, error, delay)

    async def _read(self, op: str, body: object, *args: object) -> object:
        # One read snapshot on the worker: a WAL reader takes no lock and never waits for a writer.
        store = self._store
        return await store._off_loop(store._engine._snapshot, op, None, body, *args)

    async def stats(self) -> QueueStats:
        return await self._read("stats", qs.stats, self._ns, self._name)  # type: ignore[return-value]

    async def dead(self, limit: int) -> list[RawJob]:
        return await self._read("dead", qs.dead, self._ns, self._name, limit)  # type: ignore[return-value]

    async def next_due(self) -> float | None:
        return await self._read("next_due", qs.next_due, self._ns, self._name)  # type: ignore[return-value]

    def listener(self) -> AsyncSqliteListener:
        return AsyncSqliteListener(self._store, self.poll_interval)

    async def aclose(self) -> None:
        """Nothing of its own to close: the connection is the store's."""


class AsyncSqliteListener:
    """Waits until the file changed (``PRAGMA data_version`` or this connection's own writes), polling."""

    def __init__(self, store: AsyncSqliteDatabase, poll_interval: float) -> None:
        self._store = store
        self._poll = poll_interval
        self._seen: tuple[int, int] | None = None

    def _version(self) -> tuple[int, int]:
        engine = self._store._engine
        rows = engine._query("queue", None, "PRAGMA data_version", ())
        conn = engine._conn
        return int(rows[0][0]), int(conn.total_changes()) if conn is not None else 0

    async def _read_version(self) -> tuple[int, int]:
        # A pragma read takes no lock: on the loop when the connection is free.
        version: Any = self._store._run_read(self._version)
        if version.__class__ is _Coroutine:
            version = await version
        return version  # type: ignore[no-any-return]  # _version's answer

    async def start(self) -> None:
        """Remember the file's version now: a change after this wakes the next `wait`."""
        self._seen = await self._read_version()

    async def wait(self, seconds: float) -> bool:
        """Whether the file changed within ``seconds`` seconds (polled every ``poll_interval``)."""
        deadline = time.monotonic() + seconds
        if self._seen is None:
            await self.start()
        while True:
            version = await self._read_version()
            if version != self._seen:
                self._seen = version
                return True
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            await asyncio.sleep(min(self._poll, left))

    async def aclose(self) -> None:
        """Nothing to close."""
