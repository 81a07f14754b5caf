"""PostgreSQL job queue engine: claims with ``FOR UPDATE SKIP LOCKED``, wakes workers with LISTEN/NOTIFY.

It runs on the store's pool and deadlines (`AsyncPostgresDatabase._run`); the statements
live in `kvstore.postgres._queue_sql`. The listener of a worker loop is one connection of
its own (a pooled connection cannot keep a LISTEN), opened with the store's conninfo.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

import psycopg

from kvstore.postgres import _errors as _err
from kvstore.postgres._queue_sql import PURGE_BATCH, QueueQueries, channel
from kvstore.postgres._store_async import AsyncPostgresDatabase
from kvstore.queue._job import QueueStats, RawJob

__all__ = ["AsyncPostgresListener", "AsyncPostgresQueueEngine"]

logger = logging.getLogger("kvstore")

#: Seconds between sweeps of acknowledged rows older than ``keep_done``.
_PURGE_EVERY = 30.0


def _raw(row: Any) -> RawJob:
    _state, id_, payload, attempt, max_attempts, enqueued_at, visible_at, dedupe, error = row
    return (int(id_), payload, int(attempt), int(max_attempts), float(enqueued_at), float(visible_at), dedupe, error)


class AsyncPostgresQueueEngine:
    """The queue operations of one named queue on one PostgreSQL store."""

    backend = "postgres"

    def __init__(self, store: AsyncPostgresDatabase, name: str, *, keep_done: float) -> None:
        self._store = store
        self._q = QueueQueries.build(store.schema, store.table_prefix)
        self._base = {"ns": store.key_prefix, "queue": name}
        self._channel = channel(store.schema, store.table_prefix, store.key_prefix, name)
        self._keep_done = keep_done
        self._ready = False
        self._next_purge = time.monotonic() + _PURGE_EVERY
        self._lock = asyncio.Lock()

    async def _ensure(self) -> None:
        """Create the table and indexes if missing, once, under the schema's advisory lock."""
        if self._ready:
            return
        async with self._lock:
            if self._ready:
                return
            store = self._store
            pool = await store._start()
            deadline = time.monotonic() + store._call_timeout
            with _err.map_errors("queue", None, store._secret):
                conn = await store._getconn(pool, deadline, "queue", None)
                try:
                    row = await (await conn.execute(self._q.exists)).fetchone()
                    if not (row and row[0]):
                        async with conn.transaction():
                            # Several processes creating at once queue here (CREATE IF NOT EXISTS alone races).
                            await conn.execute("SELECT pg_advisory_xact_lock(%s)", (store._lock_id,))
                            for statement in self._q.create:
                                await conn.execute(statement)
                except psycopg.Error as exc:
                    await store._raise_if_cut(conn, exc, "queue", None, store._call_timeout)
                    raise
                finally:
                    await store._putconn(pool, conn)
            self._ready = True

    async def _one(self, op: str, query: str, params: dict[str, Any], retry: bool) -> Any:
        if not self._ready:
            await self._ensure()
        return await self._store._run(op, None, query, {**self._base, **params}, "one", retry=retry)

    async def enqueue(self, payload: str, delay: float, dedupe_key: str | None, max_attempts: int) -> tuple[int, bool]:
        params = {"payload": payload, "delay": delay, "dedupe": dedupe_key, "max_attempts": max_attempts}
        params["channel"] = self._channel
        for _ in range(8):
            # Without a dedupe key a lost reply cannot tell whether the row was written: not retried.
            row = await self._one("enqueue", self._q.enqueue, params, retry=dedupe_key is not None)
            if row is not None:
                return int(row[0]), True
            found = await self._one("enqueue", self._q.find_dedupe, params, retry=True)
            if found is not None:
                return int(found[0]), False
            # The duplicate finished between the two statements: insert again.
        raise _err.busy_error("enqueue", None, self._store._call_timeout)

    async def claim(self, lease: float) -> RawJob | None:
        if time.monotonic() >= self._next_purge:
            await self._purge()
        while True:
            # Not idempotent (a lost reply may have taken a job: its lease expires and it comes back).
            row = await self._one("claim", self._q.claim, {"lease": lease}, retry=False)
            if row is None:
                return None
            if row[0] == "running":
                return _raw(row)
            # An expired lease of a job out of attempts was dead-lettered: look further.

    async def release(self, job_id: int, attempt: int) -> None:
        if not self._ready:
            await self._ensure()
        params = {**self._base, "id": job_id, "attempt": attempt}
        await self._store._run("release", None, self._q.release, params, "rowcount", retry=True)

    async def heartbeat(self, job_id: int, attempt: int, lease: float) -> float | None:
        row = await self._one("heartbeat", self._q.heartbeat, {"id": job_id, "attempt": attempt, "lease": lease}, True)
        return None if row is None else float(row[0])

    async def ack(self, job_id: int, attempt: int) -> bool:
        if not self._ready:
            await self._ensure()
        params = {**self._base, "id": job_id, "attempt": attempt}
        count: int = await self._store._run("ack", None, self._q.ack, params, "rowcount", retry=True)
        return count > 0

    async def fail(self, job_id: int, attempt: int, error: str, delay: float | None) -> bool:
        params = {"id": job_id, "attempt": attempt, "error": error, "channel": self._channel}
        params.update({"state": "dead", "delay": 0.0} if delay is None else {"state": "failed", "delay": delay})
        row = await self._one("fail", self._q.fail, params, retry=True)
        return bool(row and row[0])

    async def stats(self) -> QueueStats:
        row = await self._one("stats", self._q.stats, {}, retry=True)
        return QueueStats(*(int(n) for n in row))

    async def dead(self, limit: int) -> list[RawJob]:
        if not self._ready:
            await self._ensure()
        rows = await self._store._run("dead", None, self._q.dead, {**self._base, "limit": limit}, "all")
        return [_raw(row) for row in rows]

    async def next_due(self) -> float | None:
        row = await self._one("next_due", self._q.next_due, {}, retry=True)
        return None if row is None or row[0] is None else float(row[0])

    async def _purge(self) -> None:
        self._next_purge = time.monotonic() + _PURGE_EVERY
        try:
            if not self._ready:
                await self._ensure()
            params = {**self._base, "keep": self._keep_done}
            removed = await self._store._run("purge", None, self._q.purge_done, params, "rowcount", retry=True)
        except Exception as exc:  # a failed sweep must not fail the claim that triggered it
            logger.debug("kvstore: sweep of acknowledged jobs failed: %s", type(exc).__name__)
            return
        if removed >= PURGE_BATCH:
            self._next_purge = 0.0  # a backlog: sweep again at the next claim until it is gone

    def listener(self) -> AsyncPostgresListener:
        return AsyncPostgresListener(self._store, self._channel)

    async def aclose(self) -> None:
        """Nothing of its own to close: the store's pool is the store's."""


class AsyncPostgresListener:
    """One worker loop's LISTEN connection: `wait` returns on a NOTIFY of the queue, or after ``timeout``.

    Opened lazily, re-opened after a failure (server restart): while it cannot connect,
    `wait` sleeps for its timeout and the loop polls (the queue stays correct, only
    slower to wake). A store handed a ready pool has no conninfo to open a connection of
    its own; its workers poll.
    """

    def __init__(self, store: AsyncPostgresDatabase, channel_name: str) -> None:
        self._store = store
        self._channel = channel_name
        self._conn: psycopg.AsyncConnection[Any] | None = None
        self._retry_at = 0.0

    async def start(self) -> None:
        """LISTEN now (a NOTIFY sent after this returns wakes the next `wait`); failures are left to `wait`."""
        if self._conn is not None or not self._store._conninfo or time.monotonic() < self._retry_at:
            return
        try:
            conn = await psycopg.AsyncConnection.connect(self._store._conninfo, **self._store._connect_kwargs)
        except psycopg.Error as exc:
            self._retry_at = time.monotonic() + 1.0
            logger.debug("kvstore: queue listener cannot connect: %s", type(exc).__name__)
            return
        try:
            await conn.execute(psycopg.sql.SQL("LISTEN {}").format(psycopg.sql.Identifier(self._channel)))
        except psycopg.Error:
            await conn.close()
            self._retry_at = time.monotonic() + 1.0
            return
        self._conn = conn

    async def wait(self, seconds: float) -> bool:
        """Whether a notification came within ``seconds`` seconds."""
        if self._conn is None:
            await self.start()
            if self._conn is not None:
                return True  # (re)connected: a notification may have been missed meanwhile, look now
            await asyncio.sleep(seconds)
            return False
        conn = self._conn
        got = False
        try:
            async for _ in conn.notifies(timeout=seconds, stop_after=1):
                got = True
        except psycopg.Error as exc:
            logger.debug("kvstore: queue listener lost its connection: %s", type(exc).__name__)
            self._conn = None
            with contextlib.suppress(psycopg.Error):
                await conn.close()
        return got

    async def aclose(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(psycopg.Error):
                await conn.close()
