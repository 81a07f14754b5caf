"""The job queue's contract on every database backend (the ``db`` fixture): `AsyncQueue`."""

from __future__ import annotations

import contextlib
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from kvstore import AsyncMemoryCache, ClosedError, ConfigError, InvalidKeyError, SerializationError
from kvstore.queue import AsyncQueue, Job, LeaseLostError, QueueStats
from tests._async.backends import AsyncHarness


class Email(BaseModel):
    """A typed payload."""

    to: str
    subject: str = ""


def _queue(db: AsyncHarness, **options: Any) -> AsyncQueue[Any]:
    # A fresh name per test: the PostgreSQL table is shared by every test on the server.
    return AsyncQueue(db.store, f"q-{uuid.uuid4().hex[:10]}", **options)


async def _claim(queue: AsyncQueue[Any], **options: Any) -> Job[Any]:
    job = await queue.claim(**options)
    assert job is not None
    return job


async def test_enqueue_claim_ack(db: AsyncHarness) -> None:
    """A job goes in, comes out once with its payload and attempt 1, and is done after ack."""
    queue = _queue(db)
    job_id = await queue.enqueue({"to": "a@example.com", "n": [1, 2.5, None]})
    assert await queue.stats() == QueueStats(ready=1)
    job = await _claim(queue, lease=30)
    assert (job.id, job.payload, job.attempt, job.queue) == (
        job_id,
        {"to": "a@example.com", "n": [1, 2.5, None]},
        1,
        queue.name,
    )
    assert job.lease_until > job.enqueued_at
    assert await queue.claim() is None  # held: nobody else gets it
    assert await queue.stats() == QueueStats(running=1)
    await queue.ack(job)
    assert await queue.stats() == QueueStats(done=1)
    assert await queue.claim() is None


async def test_fifo_order(db: AsyncHarness) -> None:
    """Due jobs come out oldest first."""
    queue = _queue(db)
    ids = [await queue.enqueue(i) for i in range(5)]
    claimed = [await _claim(queue) for _ in range(5)]
    assert [j.id for j in claimed] == ids
    assert [j.payload for j in claimed] == list(range(5))


async def test_delay_and_run_at(db: AsyncHarness) -> None:
    """A delayed job is counted as delayed and is not claimable until its time."""
    queue = _queue(db)
    await queue.enqueue("later", delay=0.6)
    await queue.enqueue("at", run_at=datetime.now(UTC) + timedelta(hours=1))
    assert await queue.stats() == QueueStats(delayed=2)
    assert await queue.claim() is None
    await db.advance(1.0)
    job = await _claim(queue)
    assert job.payload == "later"
    assert await queue.claim() is None
    with pytest.raises(ValueError, match="aware"):
        await queue.enqueue(1, run_at=datetime(2030, 1, 1))  # naive on purpose
    with pytest.raises(ValueError, match="not both"):
        await queue.enqueue(1, delay=1, run_at=1.0)
    with pytest.raises(ValueError, match="delay"):
        await queue.enqueue(1, delay=-1)


async def test_dedupe_key(db: AsyncHarness) -> None:
    """While a job with a dedupe key is live, enqueueing the key again returns it; once done, it is new."""
    queue = _queue(db)
    first = await queue.enqueue({"v": 1}, dedupe_key="user:7")
    assert await queue.enqueue({"v": 2}, dedupe_key="user:7") == first
    assert await queue.enqueue({"v": 3}, dedupe_key="user:8") != first
    job = await _claim(queue)
    assert job.payload == {"v": 1}
    assert job.dedupe_key == "user:7"
    assert await queue.enqueue({"v": 4}, dedupe_key="user:7") == first  # running counts as live
    await queue.ack(job)
    assert await queue.enqueue({"v": 5}, dedupe_key="user:7") != first


async def test_expired_lease_comes_back_and_stale_ack_fails(db: AsyncHarness) -> None:
    """A lease that expires returns the job with its attempt counted; the old holder can no longer ack."""
    queue = _queue(db)
    await queue.enqueue("work")
    old = await _claim(queue, lease=0.3)
    await db.advance(0.6)
    new = await _claim(queue, lease=30)
    assert (new.id, new.attempt, new.last_error) == (old.id, 2, "lease expired")
    with pytest.raises(LeaseLostError) as info:
        await queue.ack(old)
    assert info.value.job_id == old.id
    with pytest.raises(LeaseLostError):
        await queue.heartbeat(old)
    with pytest.raises(LeaseLostError):
        await queue.fail(old, "late")
    await queue.ack(new)
    await queue.ack(new)  # the same lease again: a no-op, not a second acknowledgement
    assert await queue.stats() == QueueStats(done=1)


async def test_expired_lease_not_reclaimed_can_still_ack(db: AsyncHarness) -> None:
    """A lease past its time that nobody claimed again still holds the job: its ack counts."""
    queue = _queue(db)
    await queue.enqueue("work")
    job = await _claim(queue, lease=0.3)
    await db.advance(0.6)
    await queue.ack(job)
    assert await queue.claim() is None
    assert await queue.stats() == QueueStats(done=1)


async def test_heartbeat_extends_the_lease(db: AsyncHarness) -> None:
    """A heartbeat pushes the lease out, so the job is not handed to anyone else."""
    queue = _queue(db)
    await queue.enqueue("long")
    job = await _claim(queue, lease=0.5)
    await db.advance(0.3)
    beat = await queue.heartbeat(job, lease=5)
    assert beat.lease_until > job.lease_until
    assert (beat.id, beat.attempt) == (job.id, job.attempt)
    await db.advance(0.5)
    assert await queue.claim() is None
    await queue.ack(beat)


async def test_fail_retries_then_dead_letters(db: AsyncHarness) -> None:
    """A failed job comes back after its delay, attempt counted, until max_attempts; then it is dead."""
    queue = _queue(db, max_attempts=3)
    job_id = await queue.enqueue("flaky")
    for attempt in (1, 2):
        job = await _claim(queue)
        assert job.attempt == attempt
        assert await queue.fail(job, ValueError(f"boom {attempt}"), delay=0.3) is True
        assert await queue.stats() == QueueStats(failed=1)
        assert await queue.claim() is None  # its retry is not due yet
        await db.advance(0.6)
    job = await _claim(queue)
    assert (job.attempt, job.last_error) == (3, "ValueError: boom 2")
    assert await queue.fail(job, "final") is False
    assert await queue.stats() == QueueStats(dead=1)
    assert await queue.claim() is None
    [dead] = await queue.dead()
    assert (dead.id, dead.attempt, dead.last_error, dead.payload) == (job_id, 3, "final", "flaky")


async def test_fail_without_retry_and_backoff(db: AsyncHarness) -> None:
    """retry=False dead-letters at once; the default retry waits an exponential, jittered backoff."""
    queue = _queue(db, backoff=10.0)
    await queue.enqueue("a")
    await queue.enqueue("b")
    a = await _claim(queue)
    await queue.fail(a, "bad input", retry=False)
    b = await _claim(queue)
    assert await queue.fail(b, "transient") is True
    await db.advance(1.0)
    assert await queue.claim() is None  # backoff is at least 5 s for the first retry
    assert await queue.stats() == QueueStats(failed=1, dead=1)
    assert [j.payload for j in await queue.dead()] == ["a"]
    assert await queue.dead(limit=0) == []


async def test_expired_lease_at_max_attempts_is_dead(db: AsyncHarness) -> None:
    """A worker that dies on the last attempt dead-letters the job (it is not run again)."""
    queue = _queue(db, max_attempts=1)
    await queue.enqueue("crashy")
    await _claim(queue, lease=0.3)
    await db.advance(0.6)
    assert await queue.claim() is None
    assert await queue.stats() == QueueStats(dead=1)
    [dead] = await queue.dead()
    assert (dead.payload, dead.last_error) == ("crashy", "lease expired")


async def test_per_job_max_attempts(db: AsyncHarness) -> None:
    """max_attempts given to enqueue overrides the queue's."""
    queue = _queue(db, max_attempts=5)
    await queue.enqueue("once", max_attempts=1)
    job = await _claim(queue)
    assert job.max_attempts == 1
    assert await queue.fail(job, "x") is False
    assert (await queue.stats()).dead == 1


async def test_typed_payloads(db: AsyncHarness) -> None:
    """A queue with a model validates on enqueue and parses on claim."""
    queue: AsyncQueue[Email] = AsyncQueue(db.store, f"typed-{uuid.uuid4().hex[:8]}", model=Email)
    await queue.enqueue(Email(to="x@example.com"))
    await queue.enqueue({"to": "y@example.com", "subject": "hi"})
    with pytest.raises(ValidationError):
        await queue.enqueue({"subject": "no recipient"})
    first, second = await _claim(queue), await _claim(queue)
    assert first.payload == Email(to="x@example.com")
    assert second.payload == Email(to="y@example.com", subject="hi")


async def test_bad_input_writes_nothing(db: AsyncHarness) -> None:
    """Invalid names, payloads and options raise typed errors and enqueue nothing."""
    queue = _queue(db)
    with pytest.raises(SerializationError):
        await queue.enqueue({"x": object()})
    with pytest.raises(SerializationError):
        await queue.enqueue(float("nan"))
    with pytest.raises(InvalidKeyError):
        await queue.enqueue(1, dedupe_key="")
    with pytest.raises(ValueError, match="max_attempts"):
        await queue.enqueue(1, max_attempts=0)
    with pytest.raises(ValueError, match="lease"):
        await queue.claim(lease=0)
    assert await queue.stats() == QueueStats()
    for bad in ("", "a\x00b", "x" * 201, 7):
        with pytest.raises(InvalidKeyError):
            AsyncQueue(db.store, bad)  # type: ignore[arg-type]


async def test_queues_are_independent(db: AsyncHarness) -> None:
    """Two names, or the same name under another key prefix, never see each other's jobs."""
    one, two = _queue(db), _queue(db)
    other = AsyncQueue(await db.sibling(key_prefix="other:"), one.name)
    await one.enqueue("for one")
    assert await two.claim() is None
    assert await other.claim() is None
    assert (await _claim(one)).payload == "for one"


async def test_shared_between_stores(db: AsyncHarness) -> None:
    """Two stores on the same data (another process, in production) share the queue; one claim wins."""
    queue = _queue(db)
    # A memory store's data lives in that store only: there the twin is a second queue object on it.
    twin = AsyncQueue(db.store if db.name == "memory" else await db.sibling(), queue.name)
    await queue.enqueue("only once")
    job = await _claim(twin)
    assert await queue.claim() is None
    await queue.ack(job)
    assert (await twin.stats()).done == 1


async def test_worker_loop_and_graceful_stop(db: AsyncHarness) -> None:
    """`jobs()` yields due jobs and ends after the job in hand once `stop` is called."""
    queue = _queue(db)
    for i in range(3):
        await queue.enqueue(i)
    seen = []
    async for job in queue.jobs(lease=30):
        seen.append(job.payload)
        await queue.ack(job)
        if len(seen) == 2:
            queue.stop()
    assert seen == [0, 1]
    assert await queue.stats() == QueueStats(ready=1, done=2)


async def test_closed_queue_and_wrong_tier(db: AsyncHarness) -> None:
    """A closed queue raises ClosedError; a cache-tier store cannot hold a queue."""
    queue = _queue(db)
    await queue.aclose()
    await queue.aclose()
    with pytest.raises(ClosedError):
        await queue.enqueue(1)
    cache = AsyncMemoryCache()
    with pytest.raises(ConfigError, match="database-tier"):
        await AsyncQueue(cache, "q").enqueue(1)
    await cache.aclose()


if True:  # ASYNC
    import asyncio

    async def test_claim_cancelled_at_every_await_leaves_the_job_whole(db: AsyncHarness) -> None:
        """A claim cancelled anywhere either hands its job over with a lease or leaves it in the queue."""
        queue = _queue(db, max_attempts=1000)
        await queue.enqueue("x")
        taken = 0
        for step in range(30):
            task = asyncio.create_task(queue.claim(lease=30))
            for _ in range(step % 10):
                await asyncio.sleep(0)
            if step >= 10:
                await asyncio.sleep(0.0005 * (step - 10))
            task.cancel()
            try:
                job = await task
            except asyncio.CancelledError:
                job = None
            stats = await queue.stats()
            if job is None:
                assert stats.running == 0, f"step {step}: a cancelled claim kept the job: {stats}"
                assert stats.ready + stats.failed == 1
            else:
                taken += 1
                assert job.attempt == taken, f"step {step}: attempt {job.attempt}, {taken} claims returned"
                assert stats == QueueStats(running=1)
                await queue.fail(job, "again", delay=0)
        last = await _claim(queue)
        assert last.attempt == taken + 1

    async def test_ack_cancelled_completes_or_not_at_all(db: AsyncHarness) -> None:
        """An ack cancelled mid-way is either applied or not; the lease still decides the next ack."""
        queue = _queue(db)
        for step in range(10):
            await queue.enqueue(step)
            job = await _claim(queue)
            task = asyncio.create_task(queue.ack(job))
            for _ in range(step):
                await asyncio.sleep(0)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await queue.ack(job)  # applied or not, acking again with the same lease succeeds exactly once
        assert await queue.stats() == QueueStats(done=10)
