# Generated from kvstore/queue/_queue_async.py by tools/unasync.py: do not edit; edit the async source.
"""A durable job queue on the database tier: enqueue, claim with a lease, heartbeat, ack, fail with retry."""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Iterator
from datetime import datetime
from types import TracebackType
from typing import Any, Generic, TypeVar

from kvstore._core.codec import DEFAULT_MAX_VALUE_BYTES, decode, encode
from kvstore._core.typed import TypeCodec
from kvstore.base import Database
from kvstore.errors import BackendUnavailableError, ClosedError, ConfigError
from kvstore.queue._job import (
    DEFAULT_LEASE,
    DEFAULT_MAX_ATTEMPTS,
    Job,
    LeaseLostError,
    QueueStats,
    RawJob,
    backoff_delay,
    validate_delay,
    validate_lease,
    validate_name,
)

__all__ = ["Queue"]

logger = logging.getLogger("kvstore")

P = TypeVar("P")

#: Longest error text kept with a failed job.
_MAX_ERROR = 2000
#: Seconds an idle worker loop waits at most between looks at `stop` (no query: a local check).
_STOP_CHECK = 0.2
#: Seconds an idle worker loop waits, doubling up to the most, before claiming again a job
#: that is due but was not claimable (its row locked by another transaction).
_LOCKED_FIRST, _LOCKED_MAX = 0.01, 1.0
#: Default seconds between fallback claims of an idle worker, per backend (a notification or
#: a file change normally wakes it first; memory wakes at once).
_FALLBACK_POLL = {"postgres": 10.0, "sqlite": 5.0, "memory": 5.0}


def _tier(store: Any) -> Any:
    """The failover tier under telemetry wrappers (a manager's ``storage.database``), or ``None``."""
    for _ in range(8):
        if hasattr(store, "primary") and hasattr(store, "journal_path"):
            return store
        store = getattr(store, "_inner", None)
        if store is None:
            return None
    return None


def _unwrap(store: Any) -> Any:
    """The concrete database store under telemetry and failover wrappers.

    A queue does not fail over (DESIGN.md §11): jobs split between a primary and a
    fallback could run twice or never. On a failover tier it runs on the primary, and
    while the primary is down its calls raise `BackendUnavailableError`.
    """
    for _ in range(8):
        inner = getattr(store, "_inner", None)
        if inner is not None:
            store = inner
            continue
        if hasattr(store, "primary") and hasattr(store, "journal_path"):
            if store.primary is None:
                raise BackendUnavailableError(
                    "the queue runs on the configured database only and it has not been reachable since connect; "
                    "jobs are never split between a primary and its fallback",
                    backend=getattr(store, "backend", None),
                    operation="queue",
                )
            store = store.primary
            continue
        return store
    raise ConfigError("cannot find the database store under its wrappers")


def _error_text(error: BaseException | str) -> str:
    text = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
    # Text every backend stores: no NUL (PostgreSQL text), no lone surrogate (UTF-8), both escaped.
    text = text.encode("utf-8", "backslashreplace").decode("utf-8").replace("\x00", "\\x00")
    return text[:_MAX_ERROR]


class Queue(Generic[P]):
    """A durable job queue named ``name`` on a database-tier store (PostgreSQL, SQLite or memory).

    Execution is at-least-once, acknowledgement exactly-once: a claim takes a job with a
    lease; a worker that dies (``kill -9``) lets the lease expire and the job comes back,
    its attempt counted; `ack` succeeds only for the lease that last claimed the job, so a
    worker whose lease expired and whose job was claimed again gets `LeaseLostError`.

    Args:
        store: A database-tier store, or a manager's ``storage.database``. A queue runs on
            the configured database only: during an outage it raises
            `BackendUnavailableError` rather than splitting jobs onto the fallback.
        name: The queue's name (1-200 characters; queues of one store are independent,
            and so are the same names under another ``key_prefix``).
        model: A pydantic model (or any type pydantic validates): payloads are validated
            on `enqueue` and parsed on `claim`.
        max_attempts: Default claims per job before it is dead-lettered.
        lease: Default seconds a claim holds its job (extend with `heartbeat`).
        backoff: Seconds before the first retry of a failed job; doubles per attempt,
            with jitter (each delay is drawn from [0.5, 1) of the exponential value).
        max_backoff: Longest retry delay.
        keep_done: Seconds acknowledged jobs are remembered (counted as ``done``) before
            they are swept.
        poll_interval: SQLite: seconds between looks at the file while idle (default 0.01).
        fallback_poll: Seconds an idle worker loop claims anyway without a wake-up (a
            safety net; PostgreSQL wakes it with LISTEN/NOTIFY, SQLite on a file change).
    """

    def __init__(
        self,
        store: Any,
        name: str,
        *,
        model: Any = None,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        lease: float = DEFAULT_LEASE,
        backoff: float = 1.0,
        max_backoff: float = 300.0,
        keep_done: float = 3600.0,
        poll_interval: float = 0.01,
        fallback_poll: float | None = None,
    ) -> None:
        self.name = validate_name(name)
        self.max_attempts = self._attempts(max_attempts)
        self.lease = validate_lease(lease)
        self.backoff = validate_lease(backoff, "backoff")
        self.max_backoff = validate_lease(max_backoff, "max_backoff")
        self.keep_done = validate_delay(keep_done)
        self.poll_interval = validate_lease(poll_interval, "poll_interval")
        self._fallback_poll = None if fallback_poll is None else validate_lease(fallback_poll, "fallback_poll")
        self._codec: TypeCodec[Any] | None = None if model is None else TypeCodec(model)
        self._store = store
        self._engine: Any = None
        self._stopping = False
        self._closed = False

    @staticmethod
    def _attempts(value: object) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 1_000_000:
            raise ValueError(f"max_attempts must be an int in [1, 1000000], not {value!r}")
        return value

    def __repr__(self) -> str:
        state = "closed" if self._closed else "stopping" if self._stopping else "open"
        return f"<{type(self).__name__} {self.name!r} on {type(self._store).__name__} {state}>"

    # --- the engine of the store's backend ----------------------------------------------

    def _get_engine(self) -> Any:
        if self._closed:
            raise ClosedError(f"queue {self.name!r} is closed", operation="queue")
        if self._engine is not None:
            return self._engine
        store = _unwrap(self._store)
        if not isinstance(store, Database):
            raise ConfigError(
                f"a queue needs a database-tier store (PostgreSQL, SQLite or memory), not {type(store).__name__}"
            )
        backend = getattr(store, "backend", None)
        if backend == "postgres":
            from kvstore.postgres._queue import PostgresQueueEngine

            engine: Any = PostgresQueueEngine(store, self.name, keep_done=self.keep_done)  # type: ignore[arg-type]
        elif backend == "sqlite":
            from kvstore.sqlite._queue import SqliteQueueEngine

            engine = SqliteQueueEngine(
                store,  # type: ignore[arg-type]
                self.name,
                keep_done=self.keep_done,
                poll_interval=self.poll_interval,
            )
        elif backend == "memory":
            from kvstore.memory._queue import MemoryQueueEngine

            engine = MemoryQueueEngine(store, self.name, keep_done=self.keep_done)  # type: ignore[arg-type]
        else:
            raise ConfigError(f"no job queue for the {backend!r} backend (PostgreSQL, SQLite or memory)")
        self._engine = engine
        return engine

    def _engine_now(self) -> Any:
        """The engine; first, a failover tier whose primary was down at connect may open it.

        The tier opens it when its probe is due (as any call of the tier would): a worker
        started before its database came up begins working once it answers.
        """
        if self._engine is None and not self._closed:
            tier = _tier(self._store)
            if tier is not None and tier.primary is None:
                tier.reach_primary()
        return self._get_engine()

    def _shielded(self, call: Any) -> Any:
        """Await ``call`` to its end even if the caller is cancelled: a statement is never cut mid-way.

        An engine call that finished already (SQLite's, on the event loop) is its own result.
        """
        return call

    # --- producing ----------------------------------------------------------------------

    def enqueue(
        self,
        payload: Any,
        *,
        delay: float | None = None,
        run_at: datetime | float | None = None,
        dedupe_key: str | None = None,
        max_attempts: int | None = None,
    ) -> int:
        """Add a job; return its id.

        Args:
            payload: A JSON value (or the queue's model), validated and encoded now.
            delay: Seconds before the job may be claimed.
            run_at: When it may be claimed: an aware `datetime` or Unix seconds (turned
                into a delay with this process's clock). Not with ``delay``.
            dedupe_key: While a job with this key is waiting, running or failed-for-retry,
                enqueueing another returns the existing job's id and adds nothing.
            max_attempts: Claims before it is dead-lettered (default: the queue's).

        Raises:
            SerializationError: ``payload`` is not JSON. ``ValidationError``: it does not
                fit the queue's model. ``ValueError``: a bad delay, run_at or max_attempts.
        """
        value = payload if self._codec is None else self._codec.dump(self.name, payload)
        data = encode(self.name, value, DEFAULT_MAX_VALUE_BYTES).decode()
        if delay is not None and run_at is not None:
            raise ValueError("give delay or run_at, not both")
        if run_at is not None:
            if isinstance(run_at, datetime):
                if run_at.tzinfo is None:
                    raise ValueError("run_at must be an aware datetime (with a tzinfo)")
                run_at = run_at.timestamp()
            if isinstance(run_at, bool) or not isinstance(run_at, int | float) or not math.isfinite(run_at):
                raise ValueError(f"run_at must be a datetime or finite Unix seconds, not {run_at!r}")
            delay = min(max(0.0, float(run_at) - time.time()), 366 * 86400.0)
        seconds = 0.0 if delay is None else validate_delay(delay)
        dedupe = None if dedupe_key is None else validate_name(dedupe_key, "dedupe key")
        attempts = self.max_attempts if max_attempts is None else self._attempts(max_attempts)
        engine = self._engine_now()
        job_id, _ = self._shielded(engine.enqueue(data, seconds, dedupe, attempts))
        return int(job_id)

    # --- consuming ----------------------------------------------------------------------

    def _job(self, raw: RawJob) -> Job[P]:
        job_id, text, attempt, max_attempts, enqueued_at, lease_until, dedupe, error = raw
        value = decode(text, self.name)
        payload: Any = value if self._codec is None else self._codec.load(self.name, value)
        return Job(job_id, self.name, payload, attempt, max_attempts, enqueued_at, lease_until, dedupe, error)

    def claim(self, *, lease: float | None = None) -> Job[P] | None:
        """Take the oldest due job with a lease of ``lease`` seconds, or ``None`` when none is due.

        A job whose lease expired counts as due: it comes back with its attempt counted
        (and is dead-lettered instead when it has used ``max_attempts``). Cancelled while
        claiming, the claim completes and the job is given back untouched: it is either
        this caller's, with a lease, or still in the queue.

        A job whose payload cannot be decoded, or does not fit the queue's ``model`` (a
        producer that enqueued an older shape), is dead-lettered at once with that error
        (see `dead`) and the next due job is taken: one poison job never stops a worker.
        """
        seconds = self.lease if lease is None else validate_lease(lease)
        engine = self._engine_now()
        while True:
            raw = engine.claim(seconds)
            if raw is None:
                return None
            try:
                return self._job(raw)
            except Exception as exc:  # SerializationError, ValidationError, a validator's own error
                # pydantic wraps only a validator's ValueError and AssertionError; any other
                # exception of the model's code says as much that the payload does not fit (and
                # may be a bug of that code: logged with its traceback).
                logger.log(
                    logging.WARNING if isinstance(exc, ValueError) else logging.ERROR,
                    "kvstore: queue %r: job %s dead-lettered: its payload does not fit the queue (%s)",
                    self.name,
                    raw[0],
                    type(exc).__name__,
                    exc_info=not isinstance(exc, ValueError),
                )
                self._shielded(engine.fail(raw[0], raw[2], _error_text(exc), None))

    def _lost(self, job: Job[Any], operation: str) -> LeaseLostError:
        return LeaseLostError(
            f"job {job.id} of queue {self.name!r}: the lease of attempt {job.attempt} is no longer held "
            "(it expired and the job was claimed again, or it was already acknowledged or failed)",
            job_id=job.id,
            backend=self._get_engine().backend,
            operation=operation,
        )

    def heartbeat(self, job: Job[P], *, lease: float | None = None) -> Job[P]:
        """Extend ``job``'s lease to ``lease`` seconds from now; return the job with its new ``lease_until``.

        Raises:
            LeaseLostError: the lease was lost (stop working on the job: another worker has it).
        """
        seconds = self.lease if lease is None else validate_lease(lease)
        engine = self._engine_now()
        until = self._shielded(engine.heartbeat(job.id, job.attempt, seconds))
        if until is None:
            raise self._lost(job, "heartbeat")
        return Job(
            job.id,
            job.queue,
            job.payload,
            job.attempt,
            job.max_attempts,
            job.enqueued_at,
            until,
            job.dedupe_key,
            job.last_error,
        )

    def ack(self, job: Job[P]) -> None:
        """Acknowledge ``job``: done, never claimed again. Exactly once per job.

        Raises:
            LeaseLostError: this lease no longer holds the job (it expired and another
                worker claimed it, or the job was failed or acknowledged already).
        """
        engine = self._engine_now()
        if not self._shielded(engine.ack(job.id, job.attempt)):
            raise self._lost(job, "ack")

    def fail(self, job: Job[P], error: BaseException | str, *, retry: bool = True, delay: float | None = None) -> bool:
        """Record a failed attempt; return whether the job will be retried.

        With ``retry`` and attempts left, the job comes back after ``delay`` (default:
        exponential backoff with jitter); otherwise it is dead-lettered (see `dead`).

        Raises:
            LeaseLostError: this lease no longer holds the job.
        """
        again = retry and job.attempt < job.max_attempts
        wait = None
        if again:
            wait = (
                backoff_delay(job.attempt, self.backoff, self.max_backoff) if delay is None else validate_delay(delay)
            )
        engine = self._engine_now()
        if not self._shielded(engine.fail(job.id, job.attempt, _error_text(error), wait)):
            raise self._lost(job, "fail")
        return again

    def stats(self) -> QueueStats:
        """How many jobs are ready, delayed, running, failed (waiting to retry), dead and done."""
        engine = self._engine_now()
        result: QueueStats = self._shielded(engine.stats())
        return result

    def dead(self, limit: int = 100) -> list[Job[P]]:
        """The dead-lettered jobs, oldest first (``attempt`` is the last attempt, ``last_error`` its error).

        A job dead-lettered because its payload did not fit the queue's ``model`` carries
        its payload as stored (the decoded JSON value), for inspection.
        """
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
            raise ValueError(f"limit must be a non-negative int, not {limit!r}")
        # A limit past what SQL's LIMIT holds (bigint) lists them all, as it does on memory.
        engine = self._engine_now()
        raws = self._shielded(engine.dead(min(limit, 2**63 - 1)))
        return [self._dead_job(raw) for raw in raws]

    def _dead_job(self, raw: RawJob) -> Job[P]:
        """A dead job; one whose payload does not fit the model carries its JSON value as stored."""
        try:
            return self._job(raw)
        except Exception:  # as in `claim`: whatever the model's code raised
            job_id, text, attempt, max_attempts, enqueued_at, lease_until, dedupe, error = raw
            try:
                value: Any = decode(text, self.name)
            except ValueError:
                value = text
            return Job(job_id, self.name, value, attempt, max_attempts, enqueued_at, lease_until, dedupe, error)

    # --- the worker loop ---------------------------------------------------------------

    def jobs(self, *, lease: float | None = None, fallback_poll: float | None = None) -> Iterator[Job[P]]:
        """Claimed jobs, one at a time, waiting while the queue is empty, until `stop` is called.

        The caller acks or fails each job before asking for the next (a job it drops
        comes back when its lease expires). An idle loop sleeps until a job is enqueued
        (PostgreSQL LISTEN/NOTIFY, a SQLite file change, memory at once) or becomes due,
        with a fallback claim every ``fallback_poll`` seconds. While the database is
        unavailable the loop logs, waits (up to 2 s, doubling) and tries again: it
        ends only on `stop` (graceful: the job in hand is finished first) or `close`,
        and raises `ClosedError` when its store is closed under it.
        """
        seconds = self.lease if lease is None else validate_lease(lease)
        poll = fallback_poll if fallback_poll is not None else self._fallback_poll
        return self._loop(seconds, None if poll is None else validate_lease(poll, "fallback_poll"))

    def _loop(self, lease: float, poll: float | None) -> Iterator[Job[P]]:
        listener: Any = None
        idle = 5.0
        pause = locked = 0.0
        try:
            while not self._stopping:
                try:
                    if listener is None:
                        # In the retry loop: a database down since connect is waited for like an outage.
                        engine = self._engine_now()
                        idle = _FALLBACK_POLL.get(engine.backend, 5.0) if poll is None else poll
                        listener = engine.listener()
                        listener.start()
                    job = self.claim(lease=lease)
                    if job is None:
                        due = engine.next_due()
                        if due is not None and due <= 0:
                            # Due, yet not claimed: its row is locked by another transaction
                            # (SKIP LOCKED), or it became due just now. Look again soon, backing
                            # off while it stays so (a notification still wakes the loop at once).
                            locked = min(idle, _LOCKED_MAX, max(_LOCKED_FIRST, locked * 2))
                            wait = locked
                        else:
                            locked = 0.0
                            wait = idle if due is None else min(idle, due)
                        deadline = time.monotonic() + wait
                        while not self._stopping:
                            left = deadline - time.monotonic()
                            if left <= 0 or listener.wait(min(left, _STOP_CHECK)):
                                break
                except ClosedError:
                    if self._closed or self._stopping:
                        return  # this queue was closed: the loop ends as on `stop`
                    raise  # the store was closed under the loop: no retry can succeed
                except BackendUnavailableError as exc:
                    pause = min(2.0, max(0.05, pause * 2))
                    logger.warning("kvstore: queue %r: %s; trying again in %.2f s", self.name, exc, pause)
                    self._sleep(pause)
                    continue
                pause = 0.0
                if job is not None:
                    locked = 0.0
                    yield job
        finally:
            if listener is not None:
                listener.close()

    def _sleep(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while not self._stopping and time.monotonic() < deadline:
            time.sleep(min(_STOP_CHECK, deadline - time.monotonic()))

    def stop(self) -> None:
        """Ask every `jobs` loop of this queue to end: each returns after the job in hand (within 0.2 s when idle)."""
        self._stopping = True

    def close(self) -> None:
        """Stop the worker loops; the store stays open (it is the caller's). Idempotent."""
        self._stopping = True
        if not self._closed and self._engine is not None:
            self._engine.close()
        self._closed = True

    def __enter__(self) -> Queue[P]:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def _consume(task: Any) -> None:
    """Retrieve a background task's exception (its caller was cancelled and no longer waits)."""
    if not task.cancelled():
        with contextlib.suppress(BaseException):
            task.exception()
