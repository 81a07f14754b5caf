# Generated from kvstore/memory/_queue_async.py by tools/unasync.py: do not edit; edit the async source.
"""Memory job queue engine: in-process, the jobs held beside the store (not durable), waiters woken at once."""

from __future__ import annotations

import threading
import weakref
from dataclasses import dataclass
from typing import Any

from kvstore.memory._store import MemoryDatabase
from kvstore.queue._job import QueueStats, RawJob

__all__ = ["MemoryListener", "MemoryQueueEngine"]


@dataclass
class _Row:
    id: int
    payload: str
    max_attempts: int
    visible_at: float
    enqueued_at: float
    dedupe_key: str | None
    state: str = "ready"
    attempt: int = 0
    last_error: str | None = None
    finished_at: float | None = None

    def raw(self) -> RawJob:
        return (
            self.id,
            self.payload,
            self.attempt,
            self.max_attempts,
            self.enqueued_at,
            self.visible_at,
            self.dedupe_key,
            self.last_error,
        )


class _Jobs:
    """One named queue of one memory store: its rows, under a lock (threads may share a sync store)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.rows: dict[int, _Row] = {}
        self.live: dict[int, _Row] = {}
        self.dedupe: dict[str, int] = {}
        self.waiters: set[Any] = set()

    def wake(self) -> None:
        for waiter in list(self.waiters):
            waiter.wake()


#: store -> {(key_prefix, queue name): jobs}; the counter of ids is per store.
_STATE: weakref.WeakKeyDictionary[Any, dict[Any, Any]] = weakref.WeakKeyDictionary()
_STATE_LOCK = threading.Lock()


class MemoryQueueEngine:
    """The queue operations of one named queue on one memory store (ids unique within the store)."""

    backend = "memory"

    def __init__(self, store: MemoryDatabase, name: str, *, keep_done: float) -> None:
        self._store = store
        self._keep_done = keep_done
        with _STATE_LOCK:
            state = _STATE.setdefault(store, {"next_id": [0]})
            self._ids: list[int] = state["next_id"]
            self._jobs: _Jobs = state.setdefault((store.key_prefix, name), _Jobs())

    def _now(self) -> float:
        # A closed store's keyspace is a `Closed` stand-in: reading its clock raises ClosedError.
        return float(self._store._space._clock())

    def _purge(self, now: float) -> None:
        jobs = self._jobs
        old = [r.id for r in jobs.rows.values() if r.state == "done" and (r.finished_at or now) < now - self._keep_done]
        for id_ in old:
            del jobs.rows[id_]

    def enqueue(self, payload: str, delay: float, dedupe_key: str | None, max_attempts: int) -> tuple[int, bool]:
        now = self._now()
        jobs = self._jobs
        with jobs.lock:
            if dedupe_key is not None and dedupe_key in jobs.dedupe:
                return jobs.dedupe[dedupe_key], False
            self._ids[0] += 1
            row = _Row(self._ids[0], payload, max_attempts, now + delay, now, dedupe_key)
            jobs.rows[row.id] = jobs.live[row.id] = row
            if dedupe_key is not None:
                jobs.dedupe[dedupe_key] = row.id
        jobs.wake()
        return row.id, True

    def _finish(self, row: _Row, state: str, now: float) -> None:
        row.state, row.finished_at = state, now
        self._jobs.live.pop(row.id, None)
        if row.dedupe_key is not None and self._jobs.dedupe.get(row.dedupe_key) == row.id:
            del self._jobs.dedupe[row.dedupe_key]

    def claim(self, lease: float) -> RawJob | None:
        now = self._now()
        jobs = self._jobs
        with jobs.lock:
            self._purge(now)
            while True:
                due = [r for r in jobs.live.values() if r.visible_at <= now]
                if not due:
                    return None
                row = min(due, key=lambda r: (r.visible_at, r.id))
                if row.state == "running" and row.attempt >= row.max_attempts:
                    row.last_error = "lease expired"
                    self._finish(row, "dead", now)
                    continue
                if row.state == "running":
                    row.last_error = "lease expired"
                row.state, row.attempt, row.visible_at = "running", row.attempt + 1, now + lease
                return row.raw()

    def _held(self, job_id: int, attempt: int) -> _Row | None:
        row = self._jobs.rows.get(job_id)
        return row if row is not None and row.state == "running" and row.attempt == attempt else None

    def release(self, job_id: int, attempt: int) -> None:
        now = self._now()
        with self._jobs.lock:
            row = self._held(job_id, attempt)
            if row is not None:
                row.state = "ready" if row.last_error is None else "failed"
                row.attempt -= 1
                row.visible_at = now
        self._jobs.wake()

    def heartbeat(self, job_id: int, attempt: int, lease: float) -> float | None:
        now = self._now()
        with self._jobs.lock:
            row = self._held(job_id, attempt)
            if row is None:
                return None
            row.visible_at = now + lease
            return row.visible_at

    def ack(self, job_id: int, attempt: int) -> bool:
        now = self._now()
        with self._jobs.lock:
            row = self._jobs.rows.get(job_id)
            if row is not None and row.state == "done" and row.attempt == attempt:
                return True  # acknowledged by this very lease already: nothing to do
            row = self._held(job_id, attempt)
            if row is None:
                return False
            self._finish(row, "done", now)
            return True

    def fail(self, job_id: int, attempt: int, error: str, delay: float | None) -> bool:
        now = self._now()
        with self._jobs.lock:
            row = self._held(job_id, attempt)
            if row is None:
                return False
            row.last_error = error
            if delay is None:
                self._finish(row, "dead", now)
            else:
                row.state, row.visible_at = "failed", now + delay
        self._jobs.wake()
        return True

    def stats(self) -> QueueStats:
        now = self._now()
        counts = dict.fromkeys(("ready", "delayed", "running", "failed", "dead", "done"), 0)
        with self._jobs.lock:
            for row in self._jobs.rows.values():
                state = "delayed" if row.state == "ready" and row.visible_at > now else row.state
                counts[state] += 1
        return QueueStats(**counts)

    def dead(self, limit: int) -> list[RawJob]:
        with self._jobs.lock:
            return [r.raw() for r in sorted(self._jobs.rows.values(), key=lambda r: r.id) if r.state == "dead"][:limit]

    def next_due(self) -> float | None:
        now = self._now()
        with self._jobs.lock:
            times = [r.visible_at for r in self._jobs.live.values()]
        return min(times) - now if times else None

    def listener(self) -> MemoryListener:
        return MemoryListener(self._jobs)

    def close(self) -> None:
        """Nothing to close: the jobs live as long as the store."""


class MemoryListener:
    """Woken at once by an enqueue or a failure of the same queue in this process."""

    def __init__(self, jobs: _Jobs) -> None:
        self._jobs = jobs
        self._event = threading.Event()

    def wake(self) -> None:
        self._event.set()

    def start(self) -> None:
        """Register: a wake-up after this returns wakes the next `wait`."""
        self._jobs.waiters.add(self)

    def wait(self, seconds: float) -> bool:
        """Whether the queue was woken within ``seconds`` seconds."""
        if self not in self._jobs.waiters:
            self.start()
        woken = self._event.wait(seconds)
        self._event.clear()
        return woken

    def close(self) -> None:
        self._jobs.waiters.discard(self)
