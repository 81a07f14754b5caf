# Generated from kvstore/sqlite/_queue_async.py by tools/unasync.py: do not edit; edit the async source.
"""SQLite job queue engine: every claim in ``BEGIN IMMEDIATE`` on the store's connection and worker thread.

The transaction bodies live in `kvstore.sqlite._queue_sql`. An idle worker loop polls
``PRAGMA data_version`` (which changes when another connection commits to the file)
and the connection's own change count every ``poll_interval``: a cheap read without a
lock, so it claims only when something was written.
"""

from __future__ import annotations

import time

from kvstore.queue._job import QueueStats, RawJob
from kvstore.sqlite import _queue_sql as qs
from kvstore.sqlite._store import SqliteDatabase

__all__ = ["SqliteListener", "SqliteQueueEngine"]

#: Seconds between sweeps of acknowledged rows older than ``keep_done``.
_PURGE_EVERY = 30.0


class SqliteQueueEngine:
    """The queue operations of one named queue on one SQLite store."""

    backend = "sqlite"

    def __init__(self, store: SqliteDatabase, name: str, *, keep_done: float, poll_interval: float) -> None:
        self._store = store
        self._ns = store.key_prefix
        self._name = name
        self._keep_done = keep_done
        self.poll_interval = poll_interval
        self._ready = False
        self._next_purge = time.monotonic() + _PURGE_EVERY

    def _write(self, op: str, body: object, *args: object) -> object:
        store = self._store
        # On the worker without waiting there for another connection's lock (which would hold the
        # store's connection: its reads would wait too); the loop looks again until busy_timeout.
        if not self._ready:
            store._worker_write(store._engine._write, "queue", None, qs.create)
            self._ready = True
        return store._worker_write(store._engine._write, op, None, body, *args)

    def enqueue(self, payload: str, delay: float, dedupe_key: str | None, max_attempts: int) -> tuple[int, bool]:
        found = self._write("enqueue", qs.enqueue, self._ns, self._name, payload, delay, dedupe_key, max_attempts)
        return found  # type: ignore[return-value]  # qs.enqueue's answer

    def claim(self, lease: float) -> RawJob | None:
        if time.monotonic() >= self._next_purge:
            self._next_purge = time.monotonic() + _PURGE_EVERY
            self._write("purge", qs.purge_done, self._ns, self._name, self._keep_done)
        return self._write("claim", qs.claim, self._ns, self._name, lease)  # type: ignore[return-value]

    def release(self, job_id: int, attempt: int) -> None:
        self._write("release", qs.release, self._ns, self._name, job_id, attempt)

    def heartbeat(self, job_id: int, attempt: int, lease: float) -> float | None:
        return self._write("heartbeat", qs.heartbeat, self._ns, self._name, job_id, attempt, lease)  # type: ignore[return-value]

    def ack(self, job_id: int, attempt: int) -> bool:
        return self._write("ack", qs.ack, self._ns, self._name, job_id, attempt)  # type: ignore[return-value]

    def fail(self, job_id: int, attempt: int, error: str, delay: float | None) -> bool:
        return self._write("fail", qs.fail, self._ns, self._name, job_id, attempt, error, delay)  # type: ignore[return-value]

    def _read(self, op: str, body: object, *args: object) -> object:
        # One read snapshot on the worker: a WAL reader takes no lock and never waits for a writer.
        store = self._store
        return store._off_loop(store._engine._snapshot, op, None, body, *args)

    def stats(self) -> QueueStats:
        return self._read("stats", qs.stats, self._ns, self._name)  # type: ignore[return-value]

    def dead(self, limit: int) -> list[RawJob]:
        return self._read("dead", qs.dead, self._ns, self._name, limit)  # type: ignore[return-value]

    def next_due(self) -> float | None:
        return self._read("next_due", qs.next_due, self._ns, self._name)  # type: ignore[return-value]

    def listener(self) -> SqliteListener:
        return SqliteListener(self._store, self.poll_interval)

    def close(self) -> None:
        """Nothing of its own to close: the connection is the store's."""


class SqliteListener:
    """Waits until the file changed (``PRAGMA data_version`` or this connection's own writes), polling."""

    def __init__(self, store: SqliteDatabase, poll_interval: float) -> None:
        self._store = store
        self._poll = poll_interval
        self._seen: tuple[int, int] | None = None

    def _version(self) -> tuple[int, int]:
        engine = self._store._engine
        rows = engine._query("queue", None, "PRAGMA data_version", ())
        conn = engine._conn
        return int(rows[0][0]), int(conn.total_changes()) if conn is not None else 0

    def start(self) -> None:
        """Remember the file's version now: a change after this wakes the next `wait`."""
        self._seen = self._store._off_loop(self._version)

    def wait(self, seconds: float) -> bool:
        """Whether the file changed within ``seconds`` seconds (polled every ``poll_interval``)."""
        deadline = time.monotonic() + seconds
        if self._seen is None:
            self.start()
        while True:
            version = self._store._off_loop(self._version)
            if version != self._seen:
                self._seen = version
                return True
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            time.sleep(min(self._poll, left))

    def close(self) -> None:
        """Nothing to close."""
