"""A durable job queue on the database tier (DESIGN.md §11): `AsyncQueue` / `Queue`."""

from __future__ import annotations

from kvstore.queue._job import Job, LeaseLostError, QueueStats
from kvstore.queue._queue import Queue
from kvstore.queue._queue_async import AsyncQueue

__all__ = ["AsyncQueue", "Job", "LeaseLostError", "Queue", "QueueStats"]
