"""`watch` through the manager's failover database: it follows the primary across an outage."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from kvstore import AsyncStorageManager
from kvstore._resilience.breaker import BreakerState
from kvstore.errors import BackendUnavailableError, WatchRestartError
from tests.fixtures_postgres import PgServer


async def test_watch_through_the_manager_on_the_embedded_default(tmp_path: Path) -> None:
    config = {"database": {"type": "sqlite", "path": str(tmp_path / "kv.db")}}
    async with AsyncStorageManager(config) as storage:
        database: Any = storage.database
        await database.extend("log", ["a", "b"])
        items = database.watch("log", start=0, poll_interval=0.02)
        try:
            got = [await anext(items), await anext(items)]
            await database.append("log", "c")
            got.append(await anext(items))
        finally:
            await items.aclose()
    assert got == [(0, "a"), (1, "b"), (2, "c")]


@pytest.mark.slow
@pytest.mark.postgres
async def test_watch_follows_the_primary_through_an_outage_and_the_replay(
    tmp_path: Path, owned_postgres: PgServer
) -> None:
    """PostgreSQL stopped 6 s while a writer appends through the manager: the watcher waits out the
    outage, and its sequence is the primary's final list, the replayed outage writes included."""
    config = {
        "cache": {"type": "memory"},
        "database": {
            "type": "postgres",
            "url": owned_postgres.url,
            "probe_interval": 0.5,
            "statement_timeout": 1.0,
            "pool_timeout": 1.0,
            "connect_timeout": 1.0,
            "fallback": [{"type": "sqlite", "path": str(tmp_path / "fb.db")}],
            "state_dir": str(tmp_path / "state"),
        },
    }
    acked: list[int] = []
    async with AsyncStorageManager(config) as storage:
        database: Any = storage.database
        stop = asyncio.Event()

        async def writer() -> None:
            i = 0
            while not stop.is_set():
                try:
                    await database.append("log", i)
                except BackendUnavailableError:
                    pass  # not acknowledged (it may still be applied once: idempotency ids)
                else:
                    acked.append(i)
                i += 1
                await asyncio.sleep(0.01)

        got: list[tuple[int, Any]] = []

        async def watcher() -> None:
            async for position, value in database.watch("log", start=0):
                got.append((position, value))

        watching = asyncio.create_task(watcher())
        writing = asyncio.create_task(writer())
        await asyncio.sleep(1.0)
        await asyncio.to_thread(owned_postgres.pg_ctl, "-m", "fast", "-w", "stop")
        await asyncio.sleep(6.0)
        seen_in_outage = len(got)
        await asyncio.to_thread(owned_postgres.start)
        async with asyncio.timeout(30):
            while database.active != "postgres":
                await asyncio.sleep(0.05)
        await asyncio.sleep(1.0)
        stop.set()
        await writing
        final = await database.get_range("log", 0, -1)
        async with asyncio.timeout(30):
            while len(got) < len(final):
                await asyncio.sleep(0.05)
        watching.cancel()
        with pytest.raises(asyncio.CancelledError):
            await watching
        replayed = database.events["replayed"]
    assert replayed > 0, database.events  # the outage really buffered writes, replayed on failback
    assert len(got) > seen_in_outage
    assert [value for _, value in got] == final
    assert [position for position, _ in got] == list(range(len(final)))
    assert set(acked) <= set(final)


@pytest.mark.slow
@pytest.mark.postgres
async def test_a_fallback_watch_cancelled_in_its_wait_or_its_probe_ends_leaves_nothing_and_a_new_one_still_ends(
    tmp_path: Path, owned_postgres: PgServer
) -> None:
    """A manager started with its PostgreSQL primary down watches its (memory) fallback, and the
    watch probes the primary when a probe is due. Watches cancelled at spread-out moments of
    their wait and their probe, server stopped (a probe is refused at once: a cancellation that
    arrives as the open fails was swallowed by ``asyncio.wait_for`` and the watch went on) and
    frozen (the probe hangs in connect), end, and leave no task, no fallback watcher and no
    half-open breaker. Once the server answers, a new watch still ends with the typed error."""
    owned_postgres.pg_ctl("-m", "fast", "-w", "stop")
    config = {
        "cache": {"type": "memory"},
        "database": {
            "type": "postgres",
            "url": owned_postgres.url,
            "probe_interval": 0.001,  # each watch probes as it catches up
            "connect_timeout": 0.5,
            "statement_timeout": 1.0,
            "pool_timeout": 1.0,
            "fallback": ["memory"],
            "state_dir": str(tmp_path / "state"),
        },
    }
    tasks = asyncio.all_tasks()
    async with AsyncStorageManager(config) as storage:
        database: Any = storage.database
        space = database.fallback._space  # the memory fallback's watchers are countable
        await database.append("log", "a")
        threads = threading.active_count()

        async def cancel_watches(delays: list[float], spins: int = 0) -> None:
            """A watch per delay, cancelled after ``delay`` seconds, then ``spins`` turns of the loop."""
            for delay in delays:
                got: list[Any] = []

                async def follow() -> None:
                    async for item in database.watch("log", start=0, poll_interval=0.02):
                        got.append(item)  # noqa: B023  # awaited before the next round

                task = asyncio.create_task(follow())
                await asyncio.sleep(delay)
                for _ in range(spins):
                    await asyncio.sleep(0)
                task.cancel()
                done, _ = await asyncio.wait([task], timeout=5)
                assert done, f"a watch cancelled after {delay} s and {spins} turns goes on"
                assert task.cancelled()
                assert asyncio.all_tasks() == tasks
                assert not space.watchers
                assert database.breaker.state is not BreakerState.HALF_OPEN
                assert database.active == "memory"
                assert [item.value for item in got] in ([], ["a"])  # at most the one item, once

        await cancel_watches([0.0, 0.01, 0.03, 0.07])
        for spins in range(1, 100):  # the probe's refused open ends within these turns of the loop
            await cancel_watches([0.0], spins)
        await asyncio.to_thread(owned_postgres.start)
        with owned_postgres.frozen():
            await cancel_watches([0.05, 0.15, 0.3, 0.45])
            assert database.breaker.last_error == "probe interrupted"  # a cancel landed in a probe
        assert threading.active_count() <= threads + 1  # at most one idle executor thread more

        # The server answers: a new watch of the fallback ends with the typed error.
        got: list[Any] = []

        async def follow_to_the_end() -> None:
            async with asyncio.timeout(15):
                async for item in database.watch("log", start=0, poll_interval=0.02):
                    got.append(item)

        started = time.monotonic()
        with pytest.raises(WatchRestartError, match="answers again") as raised:
            await follow_to_the_end()
        assert time.monotonic() - started < 5.0
        assert raised.value.operation == "watch"
        assert [item.value for item in got] == ["a"]
        assert database.active == "postgres"
        assert not space.watchers
    for _ in range(3):
        await asyncio.sleep(0)
    assert asyncio.all_tasks() == tasks  # the primary's pool closed with the manager
