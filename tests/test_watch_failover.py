"""`watch` through the manager's failover database: it follows the primary across an outage."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from kvstore import AsyncStorageManager
from kvstore.errors import BackendUnavailableError
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
