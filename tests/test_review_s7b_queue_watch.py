"""Review s7b of the job queue and of watch: each test failed before its fix."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest

from kvstore import AsyncStorageManager
from kvstore.queue import AsyncQueue


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class _Proxy:
    """A TCP forwarder to ``target`` on ``port``, started later: PostgreSQL 'comes up' when it starts."""

    def __init__(self, port: int, target: tuple[str, int]) -> None:
        self.port = port
        self.target = target
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self.target)

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.close()

        for task in (asyncio.create_task(pipe(reader, up_writer)), asyncio.create_task(pipe(up_reader, writer))):
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


def _via(url: str, port: int) -> str:
    parts = urlsplit(url)
    netloc = parts.netloc.rsplit("@", 1)
    host = f"127.0.0.1:{port}"
    return urlunsplit(parts._replace(netloc=f"{netloc[0]}@{host}" if len(netloc) == 2 else host))


@pytest.mark.postgres
async def test_worker_started_while_postgres_is_down_waits_and_then_works(postgres_url: str, tmp_path: Path) -> None:
    """A worker whose manager connected while PostgreSQL was down (container start order) waits for it.

    Before: `jobs()` raised BackendUnavailableError at once ("not reachable at connect"), and
    a producer's `enqueue` kept raising even after the server came up, since queue calls never
    let the tier reopen its primary.
    """
    target = urlsplit(postgres_url)
    proxy = _Proxy(_free_port(), (target.hostname or "127.0.0.1", target.port or 5432))
    prefix = f"s7b-{uuid.uuid4().hex[:8]}:"
    config = {
        "cache": {"type": "memory"},
        "database": {
            "type": "postgres",
            "url": _via(postgres_url, proxy.port),
            "key_prefix": prefix,
            "connect_timeout": 0.5,
            "probe_interval": 0.2,
            "state_dir": str(tmp_path / "state"),
        },
    }
    try:
        async with AsyncStorageManager(config) as storage:
            queue: AsyncQueue[Any] = AsyncQueue(storage.database, "mail", fallback_poll=0.2)
            got: list[Any] = []

            async def work() -> None:
                async for job in queue.jobs(lease=30):
                    got.append(job.payload)
                    await queue.ack(job)

            worker = asyncio.create_task(work())
            await asyncio.sleep(0.5)
            assert not worker.done(), worker.exception()  # waiting, not dead
            await proxy.start()  # PostgreSQL "comes up"
            for _ in range(100):
                with contextlib.suppress(Exception):
                    await queue.enqueue({"n": 1})
                    break
                await asyncio.sleep(0.1)
            else:
                raise AssertionError("enqueue never succeeded after the server came up")
            for _ in range(100):
                if got:
                    break
                await asyncio.sleep(0.1)
            queue.stop()
            await asyncio.wait_for(worker, 5)
            assert got == [{"n": 1}]
    finally:
        await proxy.stop()
