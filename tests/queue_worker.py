"""A queue worker process for the kill -9 tests (tests/test_queue_processes.py).

Usage: python -m tests.queue_worker BACKEND TARGET QUEUE RECORD_FILE MODE

``MODE`` is ``async`` or ``sync``. Each job's payload says how it behaves: ``ok`` jobs
succeed, ``flaky`` jobs fail while their attempt is below ``ok_at``, ``doomed`` jobs
always fail (they must end dead-lettered). Every step is written to ``RECORD_FILE`` with
one unbuffered ``write`` before the next step (a ``kill -9`` loses nothing written):
``C id attempt`` claimed, ``T`` about to ack, ``A`` acked, ``L`` lease lost, ``F`` failed.
SIGTERM stops the loop gracefully.
"""

from __future__ import annotations

import signal
from typing import Any

_STATE: dict[str, Any] = {"queue": None, "stopped": False}


def _on_term(*_: object) -> None:
    # Installed before the imports: a SIGTERM while starting up also ends the worker gracefully.
    _STATE["stopped"] = True
    if _STATE["queue"] is not None:
        _STATE["queue"].stop()


signal.signal(signal.SIGTERM, _on_term)

import asyncio  # noqa: E402
import os  # noqa: E402
import random  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

from kvstore import BackendUnavailableError  # noqa: E402
from kvstore.queue import AsyncQueue, Job, LeaseLostError, Queue  # noqa: E402

LEASE = 2.0
OPTIONS: dict[str, Any] = {"max_attempts": 4, "backoff": 0.05, "max_backoff": 0.2, "keep_done": 86400.0}


def open_store(backend: str, target: str, sync: bool) -> Any:
    if backend == "sqlite":
        from kvstore.sqlite import AsyncSqliteDatabase, SqliteDatabase

        return SqliteDatabase(target, busy_timeout=10.0) if sync else AsyncSqliteDatabase(target, busy_timeout=10.0)
    from kvstore.postgres import AsyncPostgresDatabase, PostgresDatabase

    options = {"max_size": 2, "connect_timeout": 2.0, "statement_timeout": 5.0}
    return PostgresDatabase(target, **options) if sync else AsyncPostgresDatabase(target, **options)


class Recorder:
    def __init__(self, path: str) -> None:
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)

    def __call__(self, tag: str, job: Job[Any]) -> None:
        os.write(self._fd, f"{tag} {job.id} {job.attempt}\n".encode())


def _watch(queue: Any) -> None:
    _STATE["queue"] = queue
    if _STATE["stopped"]:
        queue.stop()


#: Up to how long a job's work takes (s): the small runs make it longer, so that their few kills
#: find a job in hand (the test asserts one did).
WORK = float(os.environ.get("KVSTORE_TEST_QUEUE_WORK", "0.002"))


def _should_fail(job: Job[Any]) -> bool:
    kind = job.payload["kind"]
    return kind == "doomed" or (kind == "flaky" and job.attempt < job.payload["ok_at"])


async def run_async(store: Any, name: str, record: Recorder) -> None:
    queue: AsyncQueue[Any] = AsyncQueue(store, name, **OPTIONS)
    _watch(queue)
    async for job in queue.jobs(lease=LEASE, fallback_poll=1.0):
        record("C", job)
        await asyncio.sleep(random.random() * WORK)  # the work: a kill often finds a job in hand
        while True:  # an outage (server restart) is waited out: ack and fail are idempotent per lease
            try:
                if _should_fail(job):
                    await queue.fail(job, "designed to fail")
                    record("F", job)
                else:
                    record("T", job)
                    await queue.ack(job)
                    record("A", job)
                break
            except LeaseLostError:
                record("L", job)
                break
            except BackendUnavailableError:
                await asyncio.sleep(0.1)
    await store.aclose()


def run_sync(store: Any, name: str, record: Recorder) -> None:
    queue: Queue[Any] = Queue(store, name, **OPTIONS)
    _watch(queue)
    for job in queue.jobs(lease=LEASE, fallback_poll=1.0):
        record("C", job)
        time.sleep(random.random() * WORK)
        while True:
            try:
                if _should_fail(job):
                    queue.fail(job, "designed to fail")
                    record("F", job)
                else:
                    record("T", job)
                    queue.ack(job)
                    record("A", job)
                break
            except LeaseLostError:
                record("L", job)
                break
            except BackendUnavailableError:
                time.sleep(0.1)
    store.close()


def main() -> None:
    backend, target, name, path, mode = sys.argv[1:6]
    record = Recorder(path)
    sync = mode == "sync"
    store = open_store(backend, target, sync)
    if sync:
        run_sync(store, name, record)
    else:
        asyncio.run(run_async(store, name, record))


if __name__ == "__main__":
    main()
