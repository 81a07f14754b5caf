"""Busy is not an outage: an exhausted pool and a server at maxclients raise BackendBusyError;
refused, reset and timed-out commands stay BackendUnavailableError."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kvstore.errors import BackendBusyError, BackendUnavailableError
from kvstore.redis import AsyncRedisCache, RedisCache
from tests.fixtures_redis import RedisServer, _free_port, start_redis_server, stop_redis_server

pytestmark = pytest.mark.redis

CALLERS = 50
PAYLOAD = {"blob": "x" * 512_000}  # a few ms on the wire: callers overlap and queue for the 2 connections


def _tally(outcomes: Counter[str], exc: BaseException | None) -> None:
    if exc is None:
        outcomes["ok"] += 1
    elif isinstance(exc, BackendBusyError):
        outcomes["busy"] += 1
    else:  # an outage, or anything else, is a failure of the contract
        raise exc


# --- the pool is exhausted ---------------------------------------------------------------


async def test_async_callers_beyond_the_pool_get_success_or_busy(redis_server: RedisServer) -> None:
    """50 tasks on max_connections=2 with a 512 KB payload: each set+get succeeds or raises BackendBusyError."""
    store = AsyncRedisCache(redis_server.url, key_prefix="busy-async:", max_connections=2, pool_timeout=0.005)
    outcomes: Counter[str] = Counter()

    async def caller(i: int) -> None:
        try:
            await store.set(f"k{i}", PAYLOAD)
            assert await store.get(f"k{i}") == PAYLOAD
        except BackendBusyError as exc:
            _tally(outcomes, exc)
        else:
            _tally(outcomes, None)

    try:
        for _ in range(3):
            await asyncio.gather(*(caller(i) for i in range(CALLERS)))
        assert outcomes["ok"] > 0
        assert outcomes["ok"] + outcomes["busy"] == 3 * CALLERS
        print(f"\n{CALLERS} tasks x 3 on 2 connections: {dict(outcomes)}")  # how many gave up is load-dependent
        # The pool recovers: nothing leaked, every connection is back.
        assert await store.get("k0") in (PAYLOAD, None)
    finally:
        await store.clear()
        await store.aclose()


def test_threads_beyond_the_pool_get_success_or_busy(redis_server: RedisServer) -> None:
    """50 threads on max_connections=2 with a 512 KB payload: each set+get succeeds or raises BackendBusyError."""
    store = RedisCache(redis_server.url, key_prefix="busy-sync:", max_connections=2, pool_timeout=0.005)
    outcomes: Counter[str] = Counter()
    failures: list[BaseException] = []
    lock = threading.Lock()

    def caller(i: int) -> None:
        for _ in range(3):
            try:
                store.set(f"k{i}", PAYLOAD)
                assert store.get(f"k{i}") == PAYLOAD
                exc: BaseException | None = None
            except BaseException as error:
                exc = error
            with lock:
                try:
                    _tally(outcomes, exc)
                except BaseException as unexpected:
                    failures.append(unexpected)

    threads = [threading.Thread(target=caller, args=(i,)) for i in range(CALLERS)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        assert failures == []
        assert outcomes["ok"] > 0
        assert outcomes["ok"] + outcomes["busy"] == 3 * CALLERS
        print(f"\n{CALLERS} threads x 3 on 2 connections: {dict(outcomes)}")
        assert store.get("k0") in (PAYLOAD, None)
    finally:
        store.clear()
        store.close()


async def test_async_busy_after_waiting_pool_timeout_then_recovers(redis_server: RedisServer) -> None:
    """Both pooled connections taken: a call waits pool_timeout, raises BackendBusyError with context, then works."""
    store = AsyncRedisCache(redis_server.url, key_prefix="held-async:", max_connections=2, pool_timeout=0.2)
    pool = store._client.connection_pool
    held = [await pool.get_connection(), await pool.get_connection()]
    try:
        started = time.monotonic()
        with pytest.raises(BackendBusyError) as info:
            await store.get("k")
        assert 0.15 < time.monotonic() - started < 2
        assert (info.value.backend, info.value.operation, info.value.key) == ("redis", "get", "k")
        assert "max_connections" in str(info.value)
    finally:
        for conn in held:
            await pool.release(conn)
    await store.set("k", 1)
    assert await store.get("k") == 1
    await store.clear()
    await store.aclose()


def test_sync_busy_after_waiting_pool_timeout_then_recovers(redis_server: RedisServer) -> None:
    """Both pooled connections taken: a sync call waits pool_timeout, raises BackendBusyError, then works."""
    store = RedisCache(redis_server.url, key_prefix="held-sync:", max_connections=2, pool_timeout=0.2)
    pool = store._client.connection_pool
    held = [pool.get_connection(), pool.get_connection()]
    try:
        started = time.monotonic()
        with pytest.raises(BackendBusyError) as info:
            store.set("k", 1)
        assert 0.15 < time.monotonic() - started < 2
        assert (info.value.operation, info.value.key) == ("set", "k")
    finally:
        for conn in held:
            pool.release(conn)
    store.set("k", 1)
    assert store.get("k") == 1
    store.clear()
    store.close()


async def test_cluster_callers_beyond_the_pool_get_success_or_busy(redis_cluster: list[RedisServer]) -> None:
    """Redis Cluster, max_connections=2 per node, 50 tasks: success or BackendBusyError only."""
    store = AsyncRedisCache(redis_cluster[0].url, key_prefix="busy-cluster:", max_connections=2)
    outcomes: Counter[str] = Counter()

    async def caller(i: int) -> None:
        try:
            await store.set(f"k{i}", PAYLOAD)
            assert await store.get(f"k{i}") == PAYLOAD
        except BackendBusyError as exc:
            _tally(outcomes, exc)
        else:
            _tally(outcomes, None)

    try:
        await asyncio.gather(*(caller(i) for i in range(CALLERS)))
        assert outcomes["ok"] + outcomes["busy"] == CALLERS
        assert outcomes["ok"] > 0
        assert outcomes["busy"] > 0  # the cluster's node pools do not wait: the burst overflows them
    finally:
        await store.clear()
        await store.aclose()


# --- the server is at maxclients -----------------------------------------------------------


@pytest.fixture
def crowded_server(tmp_path: Path) -> Iterator[tuple[RedisServer, list[socket.socket]]]:
    """A redis-server with --maxclients 4 and 4 raw clients holding every slot."""
    server = start_redis_server(tmp_path / "crowded", "--maxclients", "4")
    holders: list[socket.socket] = []
    try:
        for _ in range(4):
            sock = socket.create_connection(("127.0.0.1", server.port), timeout=2)
            sock.sendall(b"PING\r\n")
            assert sock.recv(64) == b"+PONG\r\n"
            holders.append(sock)
        yield server, holders
    finally:
        for sock in holders:
            sock.close()
        stop_redis_server(server)


def _free_slots(holders: list[socket.socket]) -> None:
    for sock in holders:
        sock.close()
    holders.clear()
    time.sleep(0.2)  # let the server notice


def test_max_clients_reached_is_busy_sync(crowded_server: tuple[RedisServer, list[socket.socket]]) -> None:
    """Every slot of --maxclients taken: the sync store raises BackendBusyError; once a slot frees, it works."""
    server, holders = crowded_server
    store = RedisCache(server.url, key_prefix="crowd:")
    for call in (lambda: store.get("k"), lambda: store.set("k", 1), store.ping):
        with pytest.raises(BackendBusyError, match="max number of clients"):
            call()
    _free_slots(holders)
    store.set("k", 1)
    assert store.get("k") == 1
    store.close()


async def test_max_clients_reached_is_busy_async(crowded_server: tuple[RedisServer, list[socket.socket]]) -> None:
    """Every slot of --maxclients taken: the async store raises BackendBusyError; once a slot frees, it works."""
    server, holders = crowded_server
    store = AsyncRedisCache(server.url, key_prefix="crowd:")
    for _ in range(3):
        with pytest.raises(BackendBusyError, match="max number of clients") as info:
            await store.get("k")
        assert info.value.operation == "get"
    _free_slots(holders)
    await store.set("k", 1)
    assert await store.get("k") == 1
    await store.aclose()


# --- outages stay outages ------------------------------------------------------------------


def _assert_outage(exc: BaseException) -> None:
    assert isinstance(exc, BackendUnavailableError)
    assert not isinstance(exc, BackendBusyError), exc


def test_refused_connection_is_unavailable_not_busy() -> None:
    """Nothing listening on the port: BackendUnavailableError, never BackendBusyError."""
    port = _free_port()
    store = RedisCache(f"redis://127.0.0.1:{port}/0")
    with pytest.raises(BackendUnavailableError) as info:
        store.get("k")
    _assert_outage(info.value)
    store.close()


async def test_reset_connection_is_unavailable_not_busy() -> None:
    """A server that accepts and closes at once: BackendUnavailableError, never BackendBusyError."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    stop = threading.Event()

    def serve() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            conn.close()

    thread = threading.Thread(target=serve)
    thread.start()
    store = AsyncRedisCache(f"redis://127.0.0.1:{port}/0")
    try:
        with pytest.raises(BackendUnavailableError) as info:
            await store.get("k")
        _assert_outage(info.value)
    finally:
        await store.aclose()
        stop.set()
        thread.join()
        listener.close()


def test_timed_out_command_is_unavailable_not_busy(tmp_path: Path) -> None:
    """A frozen server (kill -STOP): the command times out as BackendUnavailableError, never BackendBusyError."""
    server = start_redis_server(tmp_path / "frozen")
    store = RedisCache(server.url, socket_timeout=0.2, max_connections=2)
    try:
        store.set("k", 1)
        server.stop()
        errors: list[Any] = []
        for _ in range(2):
            with pytest.raises(BackendUnavailableError) as info:
                store.get("k")
            errors.append(info.value)
        for exc in errors:
            _assert_outage(exc)
    finally:
        server.cont()
        store.close()
        stop_redis_server(server)
