# Generated from tests/_async/test_queue.py by tools/unasync.py: do not edit; edit the async source.
"""The job queue's contract on every database backend (the ``db`` fixture): `Queue`."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from kvstore import ClosedError, ConfigError, InvalidKeyError, MemoryCache, SerializationError
from kvstore.queue import Job, LeaseLostError, Queue, QueueStats
from tests._sync.backends import Harness


class Email(BaseModel):
    """A typed payload."""

    to: str
    subject: str = ""


def _queue(db: Harness, **options: Any) -> Queue[Any]:
    # A fresh name per test: the PostgreSQL table is shared by every test on the server.
    return Queue(db.store, f"q-{uuid.uuid4().hex[:10]}", **options)


def _claim(queue: Queue[Any], **options: Any) -> Job[Any]:
    job = queue.claim(**options)
    assert job is not None
    return job


def test_enqueue_claim_ack(db: Harness) -> None:
    """A job goes in, comes out once with its payload and attempt 1, and is done after ack."""
    queue = _queue(db)
    job_id = queue.enqueue({"to": "a@example.com", "n": [1, 2.5, None]})
    assert queue.stats() == QueueStats(ready=1)
    job = _claim(queue, lease=30)
    assert (job.id, job.payload, job.attempt, job.queue) == (
        job_id,
        {"to": "a@example.com", "n": [1, 2.5, None]},
        1,
        queue.name,
    )
    assert job.lease_until > job.enqueued_at
    assert queue.claim() is None  # held: nobody else gets it
    assert queue.stats() == QueueStats(running=1)
    queue.ack(job)
    assert queue.stats() == QueueStats(done=1)
    assert queue.claim() is None


def test_fifo_order(db: Harness) -> None:
    """Due jobs come out oldest first."""
    queue = _queue(db)
    ids = [queue.enqueue(i) for i in range(5)]
    claimed = [_claim(queue) for _ in range(5)]
    assert [j.id for j in claimed] == ids
    assert [j.payload for j in claimed] == list(range(5))


def test_delay_and_run_at(db: Harness) -> None:
    """A delayed job is counted as delayed and is not claimable until its time."""
    queue = _queue(db)
    queue.enqueue("later", delay=0.6)
    queue.enqueue("at", run_at=datetime.now(UTC) + timedelta(hours=1))
    assert queue.stats() == QueueStats(delayed=2)
    assert queue.claim() is None
    db.advance(1.0)
    job = _claim(queue)
    assert job.payload == "later"
    assert queue.claim() is None
    with pytest.raises(ValueError, match="aware"):
        queue.enqueue(1, run_at=datetime(2030, 1, 1))  # naive on purpose
    with pytest.raises(ValueError, match="not both"):
        queue.enqueue(1, delay=1, run_at=1.0)
    with pytest.raises(ValueError, match="delay"):
        queue.enqueue(1, delay=-1)


def test_dedupe_key(db: Harness) -> None:
    """While a job with a dedupe key is live, enqueueing the key again returns it; once done, it is new."""
    queue = _queue(db)
    first = queue.enqueue({"v": 1}, dedupe_key="user:7")
    assert queue.enqueue({"v": 2}, dedupe_key="user:7") == first
    assert queue.enqueue({"v": 3}, dedupe_key="user:8") != first
    job = _claim(queue)
    assert job.payload == {"v": 1}
    assert job.dedupe_key == "user:7"
    assert queue.enqueue({"v": 4}, dedupe_key="user:7") == first  # running counts as live
    queue.ack(job)
    assert queue.enqueue({"v": 5}, dedupe_key="user:7") != first


def test_expired_lease_comes_back_and_stale_ack_fails(db: Harness) -> None:
    """A lease that expires returns the job with its attempt counted; the old holder can no longer ack."""
    queue = _queue(db)
    queue.enqueue("work")
    old = _claim(queue, lease=0.3)
    db.advance(0.6)
    new = _claim(queue, lease=30)
    assert (new.id, new.attempt, new.last_error) == (old.id, 2, "lease expired")
    with pytest.raises(LeaseLostError) as info:
        queue.ack(old)
    assert info.value.job_id == old.id
    with pytest.raises(LeaseLostError):
        queue.heartbeat(old)
    with pytest.raises(LeaseLostError):
        queue.fail(old, "late")
    queue.ack(new)
    queue.ack(new)  # the same lease again: a no-op, not a second acknowledgement
    assert queue.stats() == QueueStats(done=1)


def test_expired_lease_not_reclaimed_can_still_ack(db: Harness) -> None:
    """A lease past its time that nobody claimed again still holds the job: its ack counts."""
    queue = _queue(db)
    queue.enqueue("work")
    job = _claim(queue, lease=0.3)
    db.advance(0.6)
    queue.ack(job)
    assert queue.claim() is None
    assert queue.stats() == QueueStats(done=1)


def test_heartbeat_extends_the_lease(db: Harness) -> None:
    """A heartbeat pushes the lease out, so the job is not handed to anyone else."""
    queue = _queue(db)
    queue.enqueue("long")
    job = _claim(queue, lease=0.5)
    db.advance(0.3)
    beat = queue.heartbeat(job, lease=5)
    assert beat.lease_until > job.lease_until
    assert (beat.id, beat.attempt) == (job.id, job.attempt)
    db.advance(0.5)
    assert queue.claim() is None
    queue.ack(beat)


def test_fail_retries_then_dead_letters(db: Harness) -> None:
    """A failed job comes back after its delay, attempt counted, until max_attempts; then it is dead."""
    queue = _queue(db, max_attempts=3)
    job_id = queue.enqueue("flaky")
    for attempt in (1, 2):
        job = _claim(queue)
        assert job.attempt == attempt
        assert queue.fail(job, ValueError(f"boom {attempt}"), delay=0.3) is True
        assert queue.stats() == QueueStats(failed=1)
        assert queue.claim() is None  # its retry is not due yet
        db.advance(0.6)
    job = _claim(queue)
    assert (job.attempt, job.last_error) == (3, "ValueError: boom 2")
    assert queue.fail(job, "final") is False
    assert queue.stats() == QueueStats(dead=1)
    assert queue.claim() is None
    [dead] = queue.dead()
    assert (dead.id, dead.attempt, dead.last_error, dead.payload) == (job_id, 3, "final", "flaky")


def test_fail_without_retry_and_backoff(db: Harness) -> None:
    """retry=False dead-letters at once; the default retry waits an exponential, jittered backoff."""
    queue = _queue(db, backoff=10.0)
    queue.enqueue("a")
    queue.enqueue("b")
    a = _claim(queue)
    queue.fail(a, "bad input", retry=False)
    b = _claim(queue)
    assert queue.fail(b, "transient") is True
    db.advance(1.0)
    assert queue.claim() is None  # backoff is at least 5 s for the first retry
    assert queue.stats() == QueueStats(failed=1, dead=1)
    assert [j.payload for j in queue.dead()] == ["a"]
    assert queue.dead(limit=0) == []


def test_expired_lease_at_max_attempts_is_dead(db: Harness) -> None:
    """A worker that dies on the last attempt dead-letters the job (it is not run again)."""
    queue = _queue(db, max_attempts=1)
    queue.enqueue("crashy")
    _claim(queue, lease=0.3)
    db.advance(0.6)
    assert queue.claim() is None
    assert queue.stats() == QueueStats(dead=1)
    [dead] = queue.dead()
    assert (dead.payload, dead.last_error) == ("crashy", "lease expired")


def test_per_job_max_attempts(db: Harness) -> None:
    """max_attempts given to enqueue overrides the queue's."""
    queue = _queue(db, max_attempts=5)
    queue.enqueue("once", max_attempts=1)
    job = _claim(queue)
    assert job.max_attempts == 1
    assert queue.fail(job, "x") is False
    assert (queue.stats()).dead == 1


def test_typed_payloads(db: Harness) -> None:
    """A queue with a model validates on enqueue and parses on claim."""
    queue: Queue[Email] = Queue(db.store, f"typed-{uuid.uuid4().hex[:8]}", model=Email)
    queue.enqueue(Email(to="x@example.com"))
    queue.enqueue({"to": "y@example.com", "subject": "hi"})
    with pytest.raises(ValidationError):
        queue.enqueue({"subject": "no recipient"})
    first, second = _claim(queue), _claim(queue)
    assert first.payload == Email(to="x@example.com")
    assert second.payload == Email(to="y@example.com", subject="hi")


def test_bad_input_writes_nothing(db: Harness) -> None:
    """Invalid names, payloads and options raise typed errors and enqueue nothing."""
    queue = _queue(db)
    with pytest.raises(SerializationError):
        queue.enqueue({"x": object()})
    with pytest.raises(SerializationError):
        queue.enqueue(float("nan"))
    with pytest.raises(InvalidKeyError):
        queue.enqueue(1, dedupe_key="")
    with pytest.raises(ValueError, match="max_attempts"):
        queue.enqueue(1, max_attempts=0)
    with pytest.raises(ValueError, match="lease"):
        queue.claim(lease=0)
    assert queue.stats() == QueueStats()
    for bad in ("", "a\x00b", "x" * 201, 7):
        with pytest.raises(InvalidKeyError):
            Queue(db.store, bad)  # type: ignore[arg-type]


def test_queues_are_independent(db: Harness) -> None:
    """Two names, or the same name under another key prefix, never see each other's jobs."""
    one, two = _queue(db), _queue(db)
    other = Queue(db.sibling(key_prefix="other:"), one.name)
    one.enqueue("for one")
    assert two.claim() is None
    assert other.claim() is None
    assert (_claim(one)).payload == "for one"


def test_shared_between_stores(db: Harness) -> None:
    """Two stores on the same data (another process, in production) share the queue; one claim wins."""
    queue = _queue(db)
    # A memory store's data lives in that store only: there the twin is a second queue object on it.
    twin = Queue(db.store if db.name == "memory" else db.sibling(), queue.name)
    queue.enqueue("only once")
    job = _claim(twin)
    assert queue.claim() is None
    queue.ack(job)
    assert (twin.stats()).done == 1


def test_worker_loop_and_graceful_stop(db: Harness) -> None:
    """`jobs()` yields due jobs and ends after the job in hand once `stop` is called."""
    queue = _queue(db)
    for i in range(3):
        queue.enqueue(i)
    seen = []
    for job in queue.jobs(lease=30):
        seen.append(job.payload)
        queue.ack(job)
        if len(seen) == 2:
            queue.stop()
    assert seen == [0, 1]
    assert queue.stats() == QueueStats(ready=1, done=2)


def test_closed_queue_and_wrong_tier(db: Harness) -> None:
    """A closed queue raises ClosedError; a cache-tier store cannot hold a queue."""
    queue = _queue(db)
    queue.close()
    queue.close()
    with pytest.raises(ClosedError):
        queue.enqueue(1)
    cache = MemoryCache()
    with pytest.raises(ConfigError, match="database-tier"):
        Queue(cache, "q").enqueue(1)
    cache.close()
