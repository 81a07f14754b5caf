"""The queue's I/O-free parts: the job record, its statistics, its errors, names and backoff."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from kvstore._core.keys import text_problem
from kvstore.errors import InvalidKeyError, KVStoreError

__all__ = [
    "DEFAULT_LEASE",
    "DEFAULT_MAX_ATTEMPTS",
    "Job",
    "LeaseLostError",
    "QueueStats",
    "RawJob",
    "backoff_delay",
    "validate_lease",
    "validate_name",
]

P = TypeVar("P")

#: Seconds a claim holds a job before it returns to the queue (unless heartbeated).
DEFAULT_LEASE = 30.0
#: Claims a job gets before a failure (or an expired lease) dead-letters it.
DEFAULT_MAX_ATTEMPTS = 5
#: Longest queue name (and dedupe key), in characters.
MAX_NAME = 200

#: What an engine hands back for a claimed job: id, payload (JSON text), attempt,
#: max_attempts, enqueued_at, lease_until (the backend's clock, seconds), dedupe_key, last_error.
RawJob = tuple[int, str, int, int, float, float, "str | None", "str | None"]


class LeaseLostError(KVStoreError):
    """The job's lease is no longer this worker's: it expired and the job was claimed again, or the
    job was already acknowledged, failed or dead-lettered by this lease. Nothing was changed.

    Attributes:
        job_id: The job concerned.
    """

    def __init__(self, message: str, *, job_id: int, backend: str | None = None, operation: str | None = None) -> None:
        super().__init__(message, backend=backend, operation=operation)
        self.job_id = job_id

    def __reduce__(self) -> tuple[object, ...]:
        return (_rebuild_lost, (self.message, self.job_id, self.backend, self.operation))


def _rebuild_lost(message: str, job_id: int, backend: str | None, operation: str | None) -> LeaseLostError:
    return LeaseLostError(message, job_id=job_id, backend=backend, operation=operation)


@dataclass(frozen=True, slots=True)
class Job(Generic[P]):
    """One claimed job: what a worker runs, and the lease it holds.

    Attributes:
        id: The job's id (unique within the queue's tables).
        queue: The queue's name.
        payload: The enqueued value (decoded JSON, or the queue's pydantic model).
        attempt: Which claim this is, from 1 (an expired lease counts as an attempt).
        max_attempts: Claims allowed before the job is dead-lettered.
        enqueued_at: When it was enqueued (the backend's clock, seconds).
        lease_until: When the lease expires unless heartbeated (the backend's clock, seconds).
        dedupe_key: The dedupe key it was enqueued with, if any.
        last_error: The error of the previous attempt, if it failed.
    """

    id: int
    queue: str
    payload: P
    attempt: int
    max_attempts: int
    enqueued_at: float
    lease_until: float
    dedupe_key: str | None = None
    last_error: str | None = None


@dataclass(frozen=True, slots=True)
class QueueStats:
    """How many jobs of one queue are in each state.

    Attributes:
        ready: Claimable now.
        delayed: Enqueued with a delay that has not passed yet.
        running: Claimed, lease held (or expired and not yet claimed again).
        failed: Failed and waiting for their retry (backoff).
        dead: Dead-lettered: failed ``max_attempts`` times, or failed with ``retry=False``.
        done: Acknowledged and still remembered (they are swept after ``keep_done`` seconds).
    """

    ready: int = 0
    delayed: int = 0
    running: int = 0
    failed: int = 0
    dead: int = 0
    done: int = 0

    def as_dict(self) -> dict[str, int]:
        """The counts by state name."""
        return {name: getattr(self, name) for name in ("ready", "delayed", "running", "failed", "dead", "done")}


def validate_name(name: object, what: str = "queue name") -> str:
    """``name`` if it can name a queue (or a dedupe key) on every backend, else `InvalidKeyError`."""
    if not isinstance(name, str):
        raise InvalidKeyError(f"a {what} must be a str, not {type(name).__name__}")
    if not name:
        raise InvalidKeyError(f"a {what} must not be empty")
    if len(name) > MAX_NAME:
        raise InvalidKeyError(f"a {what} is at most {MAX_NAME} characters, not {len(name)}")
    problem = text_problem(name)
    if problem is not None:
        raise InvalidKeyError(f"the {what} {name!r} {problem}")
    return name


def validate_lease(lease: object, what: str = "lease") -> float:
    """A positive, finite number of seconds (at most a day), else `ValueError`."""
    if isinstance(lease, bool) or not isinstance(lease, int | float) or not 0 < lease <= 86400:
        raise ValueError(f"{what} must be a number of seconds in (0, 86400], not {lease!r}")
    return float(lease)


def validate_delay(delay: object) -> float:
    """A finite, non-negative delay in seconds (at most a year), else `ValueError`."""
    if isinstance(delay, bool) or not isinstance(delay, int | float) or not 0 <= delay <= 366 * 86400:
        raise ValueError(f"delay must be a number of seconds in [0, 1 year], not {delay!r}")
    return float(delay)


def backoff_delay(attempt: int, base: float, cap: float, rng: Any = random) -> float:
    """Seconds before retry ``attempt + 1``: ``base * 2**(attempt-1)``, capped, times a jitter in [0.5, 1).

    The jitter keeps workers that failed together (a downstream outage) from retrying in lockstep.
    """
    exp = min(cap, base * 2.0 ** min(max(attempt - 1, 0), 62))
    return float(exp * (0.5 + 0.5 * rng.random()))
